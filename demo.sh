#!/usr/bin/env bash
# The demo: installs what it needs, builds anchord, makes a CA on a fresh SoftHSM2 CA token and
# the server key on a separate server token in demo-out/softhsm/ (keys never leave them; the
# server logs into its own token only, read-only), issues the demo devices, starts the server
# on loopback and authenticates them with eapol_test.
# `./demo.sh --files` runs the same demo with the server key in PEM files instead.
set -euo pipefail
cd "$(dirname "$0")"
eapol-tests/install-deps.sh
cargo build --release --quiet
mode=--hsm
if [ "${1:-}" = --files ]; then mode=; shift; fi
out=$PWD/demo-out
mkdir -p "$out"
# Throwaway tokens for the demo; real deployments keep PINs in files readable by their user only.
rm -rf "$out/softhsm"
mkdir -p "$out/softhsm/tokens"
export SOFTHSM2_CONF=$out/softhsm/softhsm2.conf
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$out/softhsm/tokens" >"$SOFTHSM2_CONF"
export ANCHORD_HSM_PIN=${ANCHORD_HSM_PIN:-demo-user-pin}   # the server token's PIN
export ANCHORD_CA_PIN=${ANCHORD_CA_PIN:-demo-ca-pin}        # the CA token's: not in the server config
export ANCHORD_HSM_SO_PIN=${ANCHORD_HSM_SO_PIN:-demo-so-pin}
exec target/release/anchord demo --dir "$out" $mode "$@"
