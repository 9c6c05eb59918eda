#!/usr/bin/env bash
# Builds a self-contained FreeRADIUS 3.2 (Debian 12) configuration that serves EAP-TLS
# like anchord does, so the two can be benchmarked with the same load generator.
#
#   bench/freeradius-setup.sh OUT_DIR PKI_DIR PORT SECRET [FRAGMENT_SIZE] [SERVER_CERT_STEM]
#
#   OUT_DIR           made if missing; gets raddb/ (the config), run/, radius.log, start.sh
#   PKI_DIR           holds root-ca.pem (CA of the device certs) and STEM.pem / STEM.key
#                     (server cert chain, leaf first, and its unencrypted PKCS#8 key)
#   PORT              auth port, UDP on 127.0.0.1 only
#   SECRET            shared secret of the one client, 127.0.0.1
#   FRAGMENT_SIZE     EAP-TLS fragment size (default 1024)
#   SERVER_CERT_STEM  default "server"; e.g. "server-rsa" for server-rsa.pem/.key
#
# Env: ECDH_CURVE (default "", OpenSSL's own group list, X25519 first as with rustls;
# "prime256v1" restricts it), FREERADIUS (binary, default freeradius), ACCT_PORT (also
# serve accounting on this UDP port of 127.0.0.1: acct_unique, then every record written
# to the detail file, OUT_DIR/radacct/127.0.0.1/detail-YYYYMMDD, as Debian's default
# site does).
#
# /etc/freeradius is only read (copied), never changed. The result accepts any device
# whose certificate chains to root-ca.pem, with TLS 1.2 or 1.3, and puts VLAN 100 in every
# Access-Accept (Tunnel-Type/Tunnel-Medium-Type/Tunnel-Private-Group-Id). The config is
# checked with `freeradius -C`; then the start command is printed and written to
# OUT_DIR/start.sh (foreground, no debug output; it runs as the user who starts it).
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
die() { echo "freeradius-setup: $*" >&2; exit 1; }

[ $# -ge 4 ] && [ $# -le 6 ] || usage
out_arg=$1 pki_arg=$2 port=$3 secret=$4 frag=${5:-1024} stem=${6:-server}
curve=${ECDH_CURVE:-}
src=/etc/freeradius/3.0

# --- arguments -------------------------------------------------------------------------
[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "bad PORT: $port"
[[ $frag =~ ^[0-9]+$ ]] && [ "$frag" -ge 64 ] && [ "$frag" -le 4000 ] || die "bad FRAGMENT_SIZE: $frag"
[[ $stem =~ ^[A-Za-z0-9._-]+$ ]] || die "bad SERVER_CERT_STEM: $stem"
# The secret goes into a single-quoted config string: keep it to characters that need
# no escaping there.
[[ -n $secret && $secret != *[\'\\]* && $secret =~ ^[[:print:]]+$ ]] \
  || die "SECRET must be printable and contain no ' or \\"
[[ $curve =~ ^[A-Za-z0-9:_-]*$ ]] || die "bad ECDH_CURVE: $curve"
acct_port=${ACCT_PORT:-}
[[ -z $acct_port || ( $acct_port =~ ^[0-9]+$ && $acct_port -ge 1 && $acct_port -le 65535 ) ]] \
  || die "bad ACCT_PORT: $acct_port"
pki=$(cd "$pki_arg" 2>/dev/null && pwd) || die "PKI_DIR not found: $pki_arg"
for f in root-ca.pem "$stem.pem" "$stem.key"; do
  [ -r "$pki/$f" ] || die "missing or unreadable: $pki/$f"
done
# FreeRADIUS config files do not quote paths well: keep them simple.
[[ $pki =~ ^[A-Za-z0-9/._-]+$ ]] || die "PKI_DIR path must not contain spaces or quotes: $pki"

# --- the freeradius binary (Debian package) ----------------------------------------------
frbin=${FREERADIUS:-freeradius}
if ! command -v "$frbin" >/dev/null 2>&1 && [ -x /usr/sbin/freeradius ]; then
  frbin=/usr/sbin/freeradius   # /usr/sbin may be missing from a non-root PATH
fi
if ! command -v "$frbin" >/dev/null 2>&1; then
  echo "freeradius-setup: installing the freeradius package" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    freeradius >/dev/null
  # The package may start the system service (where no policy-rc.d forbids it): we only
  # want the binary, so stop the instance this install just started.
  if [ -s /run/freeradius/freeradius.pid ] && kill -0 "$(cat /run/freeradius/freeradius.pid)" 2>/dev/null; then
    $SUDO invoke-rc.d freeradius stop >/dev/null 2>&1 || true
  fi
  frbin=/usr/sbin/freeradius
  command -v "$frbin" >/dev/null 2>&1 || die "freeradius still not found after apt-get install"
fi
[ -d "$src" ] || die "$src not found (Debian's freeradius-config package)"
frbin=$(command -v "$frbin")   # absolute, for start.sh

# --- the copy --------------------------------------------------------------------------
mkdir -p "$out_arg"
out=$(cd "$out_arg" && pwd)
[[ $out =~ ^[A-Za-z0-9/._-]+$ ]] || die "OUT_DIR path must not contain spaces or quotes: $out"
raddb=$out/raddb
rm -rf "$raddb" "$out/run" "$out/radius.log" "$out/config-check.log"
mkdir -p "$raddb" "$out/run"
# Everything but certs/ (the package's snakeoil certs, possibly readable by freerad only).
# mods-enabled/ and sites-enabled/ hold relative symlinks, which stay valid in the copy.
for f in "$src"/*; do
  [ "$(basename "$f")" = certs ] || cp -a "$f" "$raddb/"
done
# FreeRADIUS refuses a globally writable config directory.
chmod -R go-w "$raddb"

# Only the modules this setup uses: eap, plus always (ok/reject/... used by policies)
# and expr (%{expr:...}). No files/sql/detail/pap/mschap/...: nothing else to load.
find "$raddb/mods-enabled" "$raddb/sites-enabled" -mindepth 1 -delete
ln -s ../mods-available/always "$raddb/mods-enabled/always"
ln -s ../mods-available/expr "$raddb/mods-enabled/expr"
[ -z "$acct_port" ] || ln -s ../mods-available/detail "$raddb/mods-enabled/detail"

# --- radiusd.conf: written whole, paths inside OUT_DIR ----------------------------------
cat >"$raddb/radiusd.conf" <<EOF
# Generated by bench/freeradius-setup.sh for benchmarking EAP-TLS. Do not edit: rerun it.
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = \${exec_prefix}/sbin
logdir = $out
raddbdir = $raddb
radacctdir = \${logdir}/radacct
name = freeradius
confdir = \${raddbdir}
modconfdir = \${confdir}/mods-config
certdir = $pki
cadir = $pki
run_dir = $out/run
db_dir = \${raddbdir}
libdir = /usr/lib/freeradius
pidfile = \${run_dir}/\${name}.pid

max_request_time = 30
# Replies are kept this long to answer retransmissions (like anchord's duplicate window).
cleanup_delay = 5
# Requests tracked at once, including those kept for cleanup_delay: an EAP-TLS
# authentication is 4 to 10 round trips, so a high rate needs a large table.
max_requests = 262144
hostname_lookups = no

log {
	destination = files
	colourise = no
	file = \${logdir}/radius.log
	stripped_names = no
	# No per-authentication log lines.
	auth = no
	auth_badpass = no
	auth_goodpass = no
}

# No "user"/"group": the server keeps the identity of whoever starts it (root in the
# harness), so it can read PKI_DIR and write OUT_DIR without any chown.
security {
	allow_core_dumps = no
	max_attributes = 200
	# Answer rejects at once (the default delays them 1 s).
	reject_delay = 0
	status_server = no
}

proxy_requests = no
\$INCLUDE clients.conf

# 2 cores: EAP-TLS work is CPU-bound, a few threads keep both busy.
thread pool {
	start_servers = 4
	max_servers = 32
	min_spare_servers = 2
	max_spare_servers = 8
	max_requests_per_server = 0
	auto_limit_acct = no
}

modules {
	\$INCLUDE mods-enabled/
}

instantiate {
}

policy {
	\$INCLUDE policy.d/
}

\$INCLUDE sites-enabled/
EOF

# --- the one client ----------------------------------------------------------------------
cat >"$raddb/clients.conf" <<EOF
# Generated by bench/freeradius-setup.sh: the load generator on loopback.
client bench {
	ipaddr = 127.0.0.1
	proto = udp
	secret = '$secret'
	# Like anchord: drop Access-Requests without Message-Authenticator.
	require_message_authenticator = yes
	nas_type = other
}
EOF

# --- EAP: EAP-TLS only ---------------------------------------------------------------------
# Written as a file (not a link to mods-available/eap) so no other EAP type is loaded
# and nothing needs the package's snakeoil certs or a DH file.
cat >"$raddb/mods-enabled/eap" <<EOF
# Generated by bench/freeradius-setup.sh: EAP-TLS only.
eap {
	default_eap_type = tls
	timer_expire = 60
	ignore_unknown_eap_types = no
	cisco_accounting_username_bug = no
	max_sessions = \${max_requests}

	tls-config tls-common {
		# The key is unencrypted PKCS#8.
		private_key_password = ""
		private_key_file = $pki/$stem.key
		# Leaf first, then the issuing CA: sent as the server's chain.
		certificate_file = $pki/$stem.pem
		# Device certificates must chain to this root; devices send their intermediates.
		ca_file = $pki/root-ca.pem
		# No dh_file: only ECDHE key exchange (OpenSSL >= 1.1 needs none).
		fragment_size = $frag
		include_length = yes
		check_crl = no
		check_all_crl = no
		# OpenSSL's default TLS 1.2 suites (ECDHE-ECDSA/RSA with AES-GCM, ChaCha20, ...),
		# which include all that wpa_supplicant offers by default. TLS 1.3 suites are
		# OpenSSL's defaults too.
		cipher_list = "DEFAULT"
		cipher_server_preference = no
		tls_min_version = "1.2"
		tls_max_version = "1.3"
		# "" = OpenSSL's default groups (X25519, P-256, ...).
		ecdh_curve = "$curve"

		# No session resumption: every authentication is a full handshake, as with anchord.
		cache {
			enable = no
		}
		verify {
		}
		ocsp {
			enable = no
		}
	}

	tls {
		tls = tls-common
	}
}
EOF

# --- the virtual server ----------------------------------------------------------------------
cat >"$raddb/sites-enabled/default" <<EOF
# Generated by bench/freeradius-setup.sh: EAP-TLS on 127.0.0.1:$port, VLAN 100 on accept.
server default {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = $port
		proto = udp
	}

	authorize {
		# Sets Auth-Type EAP for every packet that carries an EAP-Message.
		eap {
			ok = return
		}
	}

	authenticate {
		eap
	}

	post-auth {
		update reply {
			&Tunnel-Type := VLAN
			&Tunnel-Medium-Type := IEEE-802
			&Tunnel-Private-Group-Id := "100"
		}

		Post-Auth-Type REJECT {
			# Adds the EAP-Failure to the Access-Reject.
			eap
		}
	}
EOF
if [ -n "$acct_port" ]; then
  cat >>"$raddb/sites-enabled/default" <<EOF

	listen {
		type = acct
		ipaddr = 127.0.0.1
		port = $acct_port
		proto = udp
	}

	preacct {
		# Acct-Unique-Session-Id, as the default site computes it.
		acct_unique
	}

	accounting {
		# One detail record per Accounting-Request, before the Accounting-Response.
		detail
	}
EOF
fi
echo "}" >>"$raddb/sites-enabled/default"

# --- check, then say how to start it ---------------------------------------------------------
start=("$frbin" -f -d "$raddb" -l "$out/radius.log")
if ! "$frbin" -XC -d "$raddb" -l stdout >"$out/config-check.log" 2>&1; then
  echo "freeradius-setup: config check FAILED ($frbin -XC -d $raddb); last lines of $out/config-check.log:" >&2
  tail -n 25 "$out/config-check.log" >&2
  exit 1
fi
{
  echo '#!/bin/sh'
  echo '# Generated by bench/freeradius-setup.sh: FreeRADIUS in the foreground, no debug output.'
  echo "exec ${start[*]} \"\$@\""
} >"$out/start.sh"
chmod +x "$out/start.sh"
echo "freeradius-setup: config OK (check log: $out/config-check.log)" >&2
echo "${start[*]}"
