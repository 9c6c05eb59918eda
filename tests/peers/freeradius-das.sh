#!/usr/bin/env bash
# FreeRADIUS 3.2 (Debian) as a NAS's Dynamic Authorization Server (RFC 5176) for the
# integration tests: it verifies each CoA-Request and Disconnect-Request (Request
# Authenticator and Message-Authenticator, with SECRET for the client 127.0.0.1), appends
# it to OUT_DIR/das.detail, and answers CoA-ACK / Disconnect-ACK — or a NAK with
# Error-Cause 503 (Session Context Not Found) for an Acct-Session-Id starting "GONE".
#
#   tests/peers/freeradius-das.sh OUT_DIR PORT SECRET
#
# Writes the configuration to OUT_DIR/raddb (checked with `freeradius -C`) and then runs
# FreeRADIUS in the foreground (exec), listening on 127.0.0.1:PORT; logs to
# OUT_DIR/radius.log. /etc/freeradius is only read. eapol-tests/install-deps.sh installs
# the freeradius package.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
out=$1 port=$2 secret=$3
src=/etc/freeradius/3.0
[[ $port =~ ^[0-9]+$ ]] || { echo "bad PORT: $port" >&2; exit 2; }
[[ -n $secret && $secret != *[\'\\]* && $secret =~ ^[[:print:]]+$ ]] \
  || { echo "SECRET must be printable and contain no ' or \\" >&2; exit 2; }
frbin=$(command -v freeradius || echo /usr/sbin/freeradius)
[ -x "$frbin" ] && [ -d "$src" ] || { echo "freeradius is not installed (eapol-tests/install-deps.sh)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
raddb=$out/raddb
rm -rf "$raddb" "$out/run"
mkdir -p "$raddb" "$out/run"
for f in "$src"/*; do
  [ "$(basename "$f")" = certs ] || cp -a "$f" "$raddb/"
done
chmod -R go-w "$raddb"
find "$raddb/mods-enabled" "$raddb/sites-enabled" -mindepth 1 -delete
ln -s ../mods-available/always "$raddb/mods-enabled/always"

cat >"$raddb/radiusd.conf" <<CONF
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = $out
raddbdir = $raddb
radacctdir = $out
name = freeradius
confdir = $raddb
modconfdir = $raddb/mods-config
certdir = $raddb
cadir = $raddb
run_dir = $out/run
db_dir = $raddb
libdir = /usr/lib/freeradius
pidfile = $out/run/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {
	destination = files
	colourise = no
	file = $out/radius.log
}
security {
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}
proxy_requests = no
\$INCLUDE clients.conf
thread pool {
	start_servers = 1
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 2
}
modules {
	\$INCLUDE mods-enabled/
	detail das_log {
		filename = $out/das.detail
		escape_filenames = no
		permissions = 0600
		header = "%t"
	}
}
instantiate {
}
policy {
	\$INCLUDE policy.d/
}
\$INCLUDE sites-enabled/
CONF

cat >"$raddb/clients.conf" <<CONF
client anchord {
	ipaddr = 127.0.0.1
	secret = '$secret'
	require_message_authenticator = yes
}
CONF

cat >"$raddb/sites-enabled/das" <<CONF
listen {
	type = coa
	ipaddr = 127.0.0.1
	port = $port
	virtual_server = das
}
server das {
	recv-coa {
		das_log
		if (&Acct-Session-Id =~ /^GONE/) {
			update reply {
				&Error-Cause := Session-Context-Not-Found
			}
			reject
		}
		ok
	}
	send-coa {
		ok
	}
}
CONF

"$frbin" -C -d "$raddb" -l "$out/radius.log" >/dev/null 2>&1 \
  || { "$frbin" -XC -d "$raddb" -l stdout | tail -20 >&2; exit 1; }
exec "$frbin" -f -d "$raddb" -l "$out/radius.log"
