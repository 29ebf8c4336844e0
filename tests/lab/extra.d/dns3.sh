# shellcheck shell=bash
# Third DNS server for the dns probe: dnsmasq (Debian's dnsmasq-base: the binary only, no service
# that could start on install) on 127.0.0.3:53, tcp and udp.
#
# Local-only, never forwards: --no-resolv (ignore /etc/resolv.conf) and no --server line, so it has
# no upstream at all; --local=/dns3.example.test/ answers that domain from the records below only.
# Any other name gets REFUSED. --bind-interfaces + --listen-address bind 127.0.0.3 alone, so the
# wildcard 0.0.0.0:53 that Samba (127.0.0.1:53) would clash with is never taken. No DHCP range,
# so no DHCP/TFTP/RA either. --conf-file=/dev/null ignores any /etc/dnsmasq.conf on the machine.
# Sourced by up.sh (helpers start, add_lo, wait_tcp and $RUN/$LOGS are in scope).
APT_PKGS+=(dnsmasq-base)
DNS3_IP=${LAB_IP3:-127.0.0.3}

start_dns3() {
  case "$DNS3_IP" in 127.*) add_lo "$DNS3_IP" ;; esac
  # (not up.sh's port_busy: it also counts [::1]:53, where Samba listens, as a clash)
  if ss -Hlntu "( sport = :53 )" | awk '{print $5}' | grep -E "^(\*|0\.0\.0\.0|\[::\]|$DNS3_IP):53$" > /dev/null; then
    die "dns3: $DNS3_IP:53 (or the wildcard) already in use"
  fi
  start dns3 "dnsmasq" dnsmasq --keep-in-foreground --conf-file=/dev/null \
    --no-resolv --no-hosts --no-poll --bind-interfaces --listen-address="$DNS3_IP" --port=53 \
    --user=nobody --group=nogroup --pid-file= --cache-size=0 \
    --log-queries --log-facility=- \
    --local=/dns3.example.test/ --domain=dns3.example.test \
    --host-record=ns3.dns3.example.test,"$DNS3_IP" \
    --address=/www.dns3.example.test/"$DNS3_IP" \
    --txt-record=dns3.example.test,"portproof lab dnsmasq" \
    --srv-host=_ldap._tcp.dns3.example.test,ns3.dns3.example.test,389,0,100
}

ready_dns3() {
  wait_tcp "$DNS3_IP" 53 || die "dns3: $DNS3_IP:53 not listening after ${WAIT}s (see $LOGS/dns3.out)"
}
