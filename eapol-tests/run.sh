#!/usr/bin/env bash
# Runs every eapol-tests/*.conf scenario with eapol_test against a RADIUS server and
# checks each outcome against the scenario's "# expect:" line.
#
#   eapol-tests/run.sh HOST PORT SECRET CERT_DIR
#
# CERT_DIR holds the certificates the scenarios name (root-ca.pem, device-*.pem/.key):
# `anchord demo` writes them to demo-out/. Extra eapol_test flags for a scenario come
# from its "# args:" line. Exit status is non-zero if any scenario is not as expected.
set -uo pipefail
if [ $# -ne 4 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
host=$1 port=$2 secret=$3 certs=$4
here=$(cd "$(dirname "$0")" && pwd)
command -v eapol_test >/dev/null || { echo "eapol_test not found: run eapol-tests/install-deps.sh" >&2; exit 2; }
pass=0 fail=0
for conf in "$here"/*.conf; do
  name=$(basename "$conf" .conf)
  expect=$(sed -n 's/^# expect: //p' "$conf")
  args=$(sed -n 's/^# args: //p' "$conf")
  # shellcheck disable=SC2086
  out=$(cd "$certs" && timeout 60 eapol_test -c "$conf" -a "$host" -p "$port" -s "$secret" -t 20 $args 2>&1 </dev/null)
  if grep -qx 'SUCCESS' <<<"$out"; then got=accept; else got=reject; fi
  mppe=-
  if [ "$got" = accept ]; then
    if grep -q 'MPPE keys OK: 1  mismatch: 0' <<<"$out"; then mppe=ok; else mppe=BAD; fi
  fi
  if [ "$got" = "$expect" ] && [ "$mppe" != BAD ]; then
    pass=$((pass + 1)); verdict=PASS
  else
    fail=$((fail + 1)); verdict=FAIL
  fi
  printf '%-4s %-14s expect=%-6s got=%-6s mppe=%s\n' "$verdict" "$name" "$expect" "$got" "$mppe"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
