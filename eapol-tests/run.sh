#!/usr/bin/env bash
# Runs every eapol-tests/*.conf scenario with eapol_test against a RADIUS server and
# checks each outcome against the scenario's "# expect:" line.
#
#   eapol-tests/run.sh HOST PORT SECRET CERT_DIR
#
# CERT_DIR holds the certificates the scenarios name (root-ca.pem, device-*.pem/.key):
# `anchord demo` writes them to demo-out/. Extra eapol_test flags for a scenario come
# from its "# args:" line. Exit status is non-zero if any scenario is not as expected.
#
# An outcome needs evidence in eapol_test's output: "accept" is an Access-Accept, EAP-Success
# and SUCCESS with exit status 0; "reject" is an Access-Reject, EAP-Failure and FAILURE with a
# plain non-zero exit. Anything else (no answer, a crash, a timeout, a missing certificate or
# config file) is reported as ERROR and fails the run: it says nothing about the server.
set -uo pipefail
if [ $# -ne 4 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
host=$1 port=$2 secret=$3 certs=$4
here=$(cd "$(dirname "$0")" && pwd)
command -v eapol_test >/dev/null || { echo "eapol_test not found: run eapol-tests/install-deps.sh" >&2; exit 2; }
pass=0 fail=0 errors=0
has() { grep -q "$1" <<<"$out"; }
for conf in "$here"/*.conf; do
  name=$(basename "$conf" .conf)
  expect=$(sed -n 's/^# expect: //p' "$conf")
  args=$(sed -n 's/^# args: //p' "$conf")
  # shellcheck disable=SC2086
  out=$(cd "$certs" && timeout 60 eapol_test -c "$conf" -a "$host" -p "$port" -s "$secret" -t 20 $args 2>&1 </dev/null)
  status=$?
  accepted=no rejected=no
  has '^RADIUS message: code=2 (Access-Accept)' && accepted=yes
  has '^RADIUS message: code=3 (Access-Reject)' && rejected=yes
  # 124-127: timed out, or could not run; 129-192: killed by a signal. eapol_test itself
  # exits 252 (-4) on FAILURE.
  case $status in 0) died=no ;; 12[4-7] | 129 | 1[3-8][0-9] | 19[0-2]) died=yes ;; *) died=no ;; esac
  if [ "$status" -eq 0 ] && [ $accepted = yes ] && [ $rejected = no ] \
    && has '^EAP: Received EAP-Success' && grep -qx 'SUCCESS' <<<"$out"; then
    got=accept
  elif [ "$status" -ne 0 ] && [ $died = no ] && [ $rejected = yes ] && [ $accepted = no ] \
    && has '^EAP: Received EAP-Failure' && grep -qx 'FAILURE' <<<"$out"; then
    got=reject
  else
    got=error
  fi
  mppe=-
  if [ "$got" = accept ]; then
    if grep -q 'MPPE keys OK: 1  mismatch: 0' <<<"$out"; then mppe=ok; else mppe=BAD; fi
  fi
  if [ "$got" = error ]; then
    errors=$((errors + 1)); verdict=ERROR
    echo "$name: eapol_test exit status $status, no Access-Accept or Access-Reject outcome; last lines:" >&2
    tail -n 5 <<<"$out" | sed 's/^/  /' >&2
  elif [ "$got" = "$expect" ] && [ "$mppe" != BAD ]; then
    pass=$((pass + 1)); verdict=PASS
  else
    fail=$((fail + 1)); verdict=FAIL
  fi
  printf '%-5s %-14s expect=%-6s got=%-6s mppe=%s\n' "$verdict" "$name" "$expect" "$got" "$mppe"
done
echo "$pass passed, $fail failed, $errors errors"
[ "$fail" -eq 0 ] && [ "$errors" -eq 0 ]
