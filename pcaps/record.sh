#!/usr/bin/env bash
# Re-record the bundled captures from the running test lab (bash tests/lab/up.sh first), one capture per
# lab service, with the scanner's own --record. Loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
rec() {  # rec NAME ADDRESS PORTS
  fingerprint "$2" -p "$3" --record "$1.pcap" -o jsonl --no-progress > /dev/null
}
rec smtp-postfix 127.0.0.1 25
rec smtps-postfix 127.0.0.1 465
rec pop3-dovecot 127.0.0.1 110
rec pop3s-dovecot 127.0.0.1 995
rec imap-dovecot 127.0.0.1 143
rec imaps-dovecot 127.0.0.1 993
rec nntp-inn 127.0.0.1 119
rec nntps-inn 127.0.0.1 563
rec http-nginx 127.0.0.1 80
rec https-nginx 127.0.0.1 443
rec ldap-samba 127.0.0.1 389
rec gc-samba 127.0.0.1 3268
rec ldaps-samba 127.0.0.1 636
rec ldap-openldap 127.0.0.1 379
rec msrpc-samba 127.0.0.1 135
rec tsap-libiec61850-mms 127.0.0.1 102
rec tsap-snap7-s7 127.0.0.2 102
rec dns-samba 127.0.0.1 U:53,T:53
rec dns-bind 127.0.0.2 U:53,T:53
rec dns-dnsmasq 127.0.0.3 U:53,T:53
