#!/usr/bin/env bash
# The demo: installs what it needs, builds anchord, makes a dev PKI in demo-out/, starts
# the server on loopback and authenticates the demo devices with eapol_test.
set -euo pipefail
cd "$(dirname "$0")"
eapol-tests/install-deps.sh
cargo build --release --quiet
exec target/release/anchord demo --dir demo-out "$@"
