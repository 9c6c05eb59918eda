//! The `anchord` binary: parses the command line and reports errors.

use std::process::ExitCode;

fn main() -> ExitCode {
    match anchord::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("anchord: {e:#}");
            ExitCode::FAILURE
        }
    }
}
