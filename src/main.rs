//! The `anchord` binary: parses the command line and reports errors.

use std::process::ExitCode;

/// mimalloc: per-thread free lists make the many small, short-lived allocations of a
/// round trip (datagrams, TLS records, attribute lists) cheaper than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match anchord::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("anchord: {e:#}");
            ExitCode::FAILURE
        }
    }
}
