#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then format, lint, unit,
# integration (real anchord binary + eapol_test) and data-file tests.
set -euo pipefail
cd "$(dirname "$0")"
eapol-tests/install-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# The sans-IO core must not touch I/O, clocks or async runtimes (STYLE.md §1).
if grep -rnE 'tokio|reqwest|cryptoki|Instant::now|SystemTime::now' src/radius src/eap; then
  echo "pure modules mention I/O or the clock" >&2
  exit 1
fi
# Unit and integration tests (benches are compiled by clippy above and run by `cargo bench`).
cargo test --lib --bins --tests
