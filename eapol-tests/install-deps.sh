#!/usr/bin/env bash
# Installs the system packages anchord's demo and tests use (Debian 12):
#   eapoltest (eapol_test, the 802.1X test client), openssl, softhsm2 (PKCS#11 token),
#   opensc (pkcs11-tool, an independent look at the token in tests), python3 (OpenSSL's
#   key export for a known-answer test; POSIX locks that hold a SoftHSM2 token hung),
#   hostapd + wpasupplicant + iproute2 (a real NAS and device for the enforcement tests),
#   freeradius (a real Dynamic Authorization Server taking CoA-Requests in the tests, and
#   the server the benchmarks compare with; its system service is stopped if the install
#   started it).
# Skips apt when everything is already there. Needs root (or sudo) for apt.
set -euo pipefail
need=()
command -v eapol_test >/dev/null 2>&1 || need+=(eapoltest)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# hostapd as a real NAS (wired driver) and wpa_supplicant as the device, in the live
# enforcement tests; iproute2 for their veth pair and network namespace.
command -v hostapd >/dev/null 2>&1 || need+=(hostapd)
command -v wpa_supplicant >/dev/null 2>&1 || need+=(wpasupplicant)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v freeradius >/dev/null 2>&1 || [ -x /usr/sbin/freeradius ] || need+=(freeradius)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${need[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The freeradius package may start its system service (where no policy-rc.d forbids it):
# only the binary is wanted, and nothing else should hold ports 1812/1813.
if [[ " ${need[*]} " == *" freeradius "* ]] && [ -s /run/freeradius/freeradius.pid ] \
  && kill -0 "$(cat /run/freeradius/freeradius.pid)" 2>/dev/null; then
  $SUDO invoke-rc.d freeradius stop >/dev/null 2>&1 || true
fi
