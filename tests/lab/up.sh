#!/usr/bin/env bash
# Bring up the protocol-fingerprinting lab: real servers on loopback only.
#
#   127.0.0.1  "Exchange/AD-like host": Samba AD DC (53 tcp+udp, 88, 135, 139, 389, 445, 464, 636,
#              3268, 3269), Postfix (25, 465), Dovecot (110, 143, 993, 995), INN (119, 563),
#              nginx (80, 443), OpenLDAP slapd (379, 390), libiec61850 MMS/ISO-TSAP (102).
#              522 and 691 stay closed: no real server exists for them.
#   127.0.0.2  "second host": OpenLDAP slapd (389, 636), BIND 9 (53 tcp+udp), python-snap7 S7 (102).
#   extra.d/: 127.0.0.3 dnsmasq, 127.0.0.4 samba-dcerpcd (135), 127.0.0.5 Apache (80, 443),
#              127.0.0.6 Unbound, 127.0.0.7 PowerDNS Authoritative, 127.0.0.8 Knot DNS (53 tcp+udp),
#              127.0.0.1:6379 redis (plugin example), 127.0.0.9 MIT krb5 KDC (88, 464), 127.0.0.10 Heimdal
#              KDC (88, 464), 127.0.0.11 vsftpd (21) and OpenSSH sshd (22).
#
# Usage (as root):  ./up.sh                   install what is missing, then start everything
#                   ./up.sh --install-only    only install (apt-get + venv), start nothing
#                   LAB_NO_INSTALL=1 ./up.sh  never call apt-get/pip
# Env: LAB_RUN (state dir, default <lab>/run), LAB_LOGS (default <lab>/logs), LAB_WAIT (seconds to wait per service, default 60),
#      LAB_IP1 / LAB_IP2 (addresses of the two "hosts", default 127.0.0.1 / 127.0.0.2; any other
#      address must already exist on an interface, e.g. a veth inside a netns you created)
# Everything it starts is recorded in $LAB_RUN/pids/*.pid ("PID STARTTIME CMDMATCH"); down.sh stops
# exactly those processes (each daemon runs in its own session/process group, started with setsid).
set -euo pipefail

LAB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${LAB_STATE:-/tmp/portproof-lab}
RUN=${LAB_RUN:-$STATE/run}
LOGS=${LAB_LOGS:-$STATE/logs}
CONF=$LAB/configs
VENV=${LAB_VENV:-$STATE/venv}
WAIT=${LAB_WAIT:-60}
IP1=${LAB_IP1:-127.0.0.1}
IP2=${LAB_IP2:-127.0.0.2}
REALM=LAB.EXAMPLE.TEST
ADMINPASS='Passw0rd!Lab1'

# (krb5-user is left out on purpose: its krb5-config postinst looks up _kerberos SRV records of
#  the default realm through the system resolver, i.e. DNS traffic off the machine)
APT_PKGS=(samba samba-ad-dc winbind smbclient ldb-tools ldap-utils slapd
          dovecot-imapd dovecot-pop3d postfix inn2 bind9 bind9-dnsutils nginx
          python3-venv openssl curl iproute2 procps
          nmap-common)  # nmap's service database, read at run time by scanner/servicedb
PIP_PKGS=(python-snap7==3.3.0 pyiec61850==1.5.2a1)
# Extra services: each tests/lab/extra.d/NAME.sh may add to APT_PKGS / PIP_PKGS / EXTRA_PORTS and
# define a function start_NAME (called after the core servers start, with the helpers below in
# scope) and, optionally, ready_NAME (called after the core servers are ready).
EXTRA_NAMES=()
for f in "$LAB"/extra.d/*.sh; do
  [ -e "$f" ] || continue
  # shellcheck source=/dev/null
  source "$f"
  EXTRA_NAMES+=("$(basename "$f" .sh)")
done

log() { printf '[up %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$RUN/pids" "$LOGS"

# ---------------------------------------------------------------- install
need_install() {
  local p
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" > /dev/null || return 0
  done
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import snap7, pyiec61850' 2>/dev/null || return 0
  [ -f "$VENV/.pip-pkgs" ] && [ "$(cat "$VENV/.pip-pkgs")" = "${PIP_PKGS[*]}" ] || return 0
  return 1
}

install_all() {
  local t0; t0=$(now)
  export DEBIAN_FRONTEND=noninteractive
  # Never let package scripts start the distro copies of these daemons (they would take our ports).
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  debconf-set-selections <<'EOF'
slapd slapd/no_configuration boolean true
postfix postfix/main_mailer_type select No configuration
EOF
  apt-get update -q > "$LOGS/apt-update.log" 2>&1 || die "apt-get update failed"
  # inn2's postinst fails when the hostname has no domain, and its newaliases call fails while
  # postfix has no main.cf ("No configuration"): tolerate, fix both, then finish configuring.
  apt-get install -y -q "${APT_PKGS[@]}" > "$LOGS/apt-install.log" 2>&1 || true
  if [ -f /etc/news/inn.conf ] && ! grep -q '^domain:' /etc/news/inn.conf; then
    sed -i 's/^#domain:.*/domain:                      lab.example.test/' /etc/news/inn.conf
  fi
  [ -d /etc/postfix ] && [ ! -e /etc/postfix/main.cf ] && : > /etc/postfix/main.cf
  dpkg --configure -a >> "$LOGS/apt-install.log" 2>&1 || die "dpkg --configure -a failed, see $LOGS/apt-install.log"
  apt-get install -y -q "${APT_PKGS[@]}" >> "$LOGS/apt-install.log" 2>&1 || die "apt-get failed, see $LOGS/apt-install.log"
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  if ! { [ -f "$VENV/.pip-pkgs" ] && [ "$(cat "$VENV/.pip-pkgs")" = "${PIP_PKGS[*]}" ]; }; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${PIP_PKGS[@]}" >> "$LOGS/pip-install.log" 2>&1 || die "pip failed, see $LOGS/pip-install.log"
    echo "${PIP_PKGS[*]}" > "$VENV/.pip-pkgs"
  fi
  log "install done in $(since "$t0") s"
}

if [ -z "${LAB_NO_INSTALL:-}" ] && need_install; then install_all; fi
if [ "${1:-}" = "--install-only" ]; then log "install-only: nothing started"; exit 0; fi

# ---------------------------------------------------------------- helpers
add_lo() {  # add_lo 127.0.0.N -> make sure the address is on lo; down.sh removes what was added
  ip -4 -o addr show | grep " inet $1/" > /dev/null && return 0
  ip addr add "$1/32" dev lo; echo "$1" >> "$RUN/lo-added"
}
unpack_debs() {  # unpack_debs NAME ROOT MARKER PKG... -> the .debs, fetched into ROOT/../debs, unpacked into ROOT (apt-get download +
  # dpkg -x: no maintainer script runs), unless ROOT/MARKER exists; status 1 when LAB_NO_INSTALL forbids it
  local name=$1 root=$2 marker=$3 f; shift 3
  [ -x "$root/$marker" ] && return 0
  if [ -n "${LAB_NO_INSTALL:-}" ]; then
    log "$name: not unpacked in $root and LAB_NO_INSTALL is set: skipped"
    return 1
  fi
  mkdir -p "${root%/*}/debs"
  (cd "${root%/*}/debs" && apt-get download "$@") > "$LOGS/$name-download.log" 2>&1 \
    || die "$name: apt-get download failed, see $LOGS/$name-download.log"
  for f in "${root%/*}"/debs/*.deb; do dpkg -x "$f" "$root"; done
}
# (no "| grep -q" anywhere: with pipefail an early-exiting grep -q can SIGPIPE the writer)
render() {  # render TEMPLATE DEST
  sed -e "s#@RUN@#$RUN#g" -e "s#@LOGS@#$LOGS#g" -e "s#@LAB@#$LAB#g" -e "s#@IP1@#$IP1#g" -e "s#@IP2@#$IP2#g" "$1" > "$2"
}

port_busy() {  # port_busy PROTO(t|u) ADDR PORT
  local proto=$1 addr=$2 port=$3
  ss -Hln"$proto" "( sport = :$port )" 2>/dev/null | awk '{print $4}' |
    grep -E "^(\*|0\.0\.0\.0|\[::\]|$addr|\[::1\]):$port$" > /dev/null
}

wait_tcp() {  # wait_tcp ADDR PORT
  local i
  for ((i = 0; i < WAIT * 10; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# start NAME MATCH CMD...   -> runs CMD in its own session, records "PID STARTTIME MATCH"
start() {
  local name=$1 match=$2; shift 2
  setsid "$@" < /dev/null > "$LOGS/$name.out" 2>&1 &
  local pid=$!
  sleep 0.05
  local st; st=$(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null || echo 0)
  echo "$pid $st $match" > "$RUN/pids/$name.pid"
}

alive() {  # alive NAME -> 0 if the recorded process still runs
  local f="$RUN/pids/$1.pid" pid st match
  [ -f "$f" ] || return 1
  read -r pid st match < "$f"
  [ -d "/proc/$pid" ] && [ "$(awk '{print $22}' "/proc/$pid/stat")" = "$st" ]
}

T_ALL=$(now)
declare -A TIMES

# ---------------------------------------------------------------- preflight
for f in "$RUN"/pids/*.pid; do
  [ -e "$f" ] || continue
  n=$(basename "$f" .pid)
  alive "$n" && die "$n already running (pid file $RUN/pids/$n.pid); run down.sh first"
done
busy=""
for p in 25 53 80 88 102 110 119 135 139 143 379 389 390 443 445 464 465 563 636 993 995 3268 3269; do
  port_busy t "$IP1" "$p" && busy="$busy $IP1:$p"
done
for p in 53 102 389 636; do port_busy t "$IP2" "$p" && busy="$busy $IP2:$p"; done
for p in 53 88 389 464; do port_busy u "$IP1" "$p" && busy="$busy udp/$IP1:$p"; done
port_busy u "$IP2" 53 && busy="$busy udp/$IP2:53"
[ -z "$busy" ] || die "ports already in use:$busy"

# Both addresses must exist on an interface (BIND and Samba only bind configured addresses).
# Loopback ones (127/8) are added to lo when missing; down.sh removes what was added here.
for ip in "$IP1" "$IP2"; do
  ip -4 -o addr show | grep " inet $ip/" > /dev/null && continue
  case "$ip" in
    127.*) ip addr add "$ip/32" dev lo; echo "$ip" >> "$RUN/lo-added" ;;
    *) die "$ip is not configured on any interface" ;;
  esac
done

# ---------------------------------------------------------------- TLS (one self-signed cert for all)
mkdir -p "$RUN/tls"
if [ ! -s "$RUN/tls/lab.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$RUN/tls/lab.key" -out "$RUN/tls/lab.crt" \
    -subj "/O=Lab/CN=mail.lab.example.test" \
    -addext "subjectAltName=DNS:mail.lab.example.test,DNS:dc1.lab.example.test,DNS:localhost,IP:$IP1,IP:$IP2" \
    > "$LOGS/openssl.log" 2>&1
  chmod 644 "$RUN/tls/lab.key"   # lab only: daemons that drop privileges must read it
fi
chmod 755 "$RUN" "$RUN/tls"

# ---------------------------------------------------------------- Samba AD DC
t0=$(now)
S=$RUN/samba
if [ ! -f "$S/private/sam.ldb" ]; then
  rm -rf "$S"; mkdir -p "$S"
  samba-tool domain provision --targetdir="$S" --realm="$REALM" --domain=LAB --server-role=dc \
    --dns-backend=SAMBA_INTERNAL --adminpass="$ADMINPASS" --use-rfc2307 --host-name=dc1 \
    --option="interfaces=lo" --option="bind interfaces only=yes" > "$LOGS/samba-provision.log" 2>&1 \
    || die "samba provision failed, see $LOGS/samba-provision.log"
  TIMES[samba-provision]=$(since "$t0")
fi
mkdir -p "$S/cache"
render "$CONF/samba/smb.conf.in" "$S/etc/smb.conf"
if [ ! -f "$S/.admin-noexpiry" ]; then   # provisioned passwords expire after 42 days
  samba-tool user setexpiry Administrator --noexpiry -s "$S/etc/smb.conf" -H "$S/private/sam.ldb" \
    > "$LOGS/samba-setexpiry.log" 2>&1 && touch "$S/.admin-noexpiry"
fi
t0=$(now)
start samba "samba" samba -F --no-process-group -s "$S/etc/smb.conf"

# ---------------------------------------------------------------- OpenLDAP slapd
t1=$(now)
mkdir -p "$RUN/slapd/db"
render "$CONF/slapd.conf.in" "$RUN/slapd/slapd.conf"
if [ ! -f "$RUN/slapd/db/data.mdb" ]; then
  slapadd -f "$RUN/slapd/slapd.conf" -l "$CONF/slapd-base.ldif" > "$LOGS/slapadd.log" 2>&1
fi
start slapd "slapd" slapd -f "$RUN/slapd/slapd.conf" -d 256 \
  -h "ldap://$IP1:379/ ldap://$IP1:390/ ldap://$IP2:389/ ldaps://$IP2:636/"

# ---------------------------------------------------------------- Dovecot
mkdir -p "$RUN/dovecot/base" "$RUN/dovecot/state" "$RUN/dovecot/mail"
chown dovenull:dovenull "$RUN/dovecot/mail"
render "$CONF/dovecot.conf.in" "$RUN/dovecot/dovecot.conf"
start dovecot "dovecot" dovecot -c "$RUN/dovecot/dovecot.conf" -F

# ---------------------------------------------------------------- Postfix
mkdir -p "$RUN/postfix/etc" "$RUN/postfix/queue" "$RUN/postfix/data"
chown postfix "$RUN/postfix/data"
render "$CONF/postfix/main.cf.in" "$RUN/postfix/etc/main.cf"
cp "$CONF/postfix/master.cf" "$RUN/postfix/etc/master.cf"
start postfix "postfix-script" postfix -c "$RUN/postfix/etc" start-fg

# ---------------------------------------------------------------- INN (innd 119 + nnrpd TLS 563)
I=$RUN/inn
if [ ! -f "$I/db/history.dir" ]; then
  mkdir -p "$I/etc" "$I/db" "$I/run" "$I/http" "$I/spool/archive" "$I/spool/articles" \
           "$I/spool/incoming/tmp" "$I/spool/outgoing" "$I/spool/overview" "$LOGS/inn"
  cp -a /etc/news/. "$I/etc/"
  install -m 644 /usr/lib/news/examples/active /usr/lib/news/examples/newsgroups "$I/db/"
  touch "$I/db/active.times"
fi
mkdir -p "$LOGS/inn"
render "$CONF/inn/inn.conf.in" "$I/etc/inn.conf"
cp "$CONF/inn/incoming.conf" "$I/etc/incoming.conf"
cp "$CONF/inn/readers.conf" "$I/etc/readers.conf"
install -m 640 "$RUN/tls/lab.crt" "$I/etc/cert.pem"
install -m 600 "$RUN/tls/lab.key" "$I/etc/key.pem"   # nnrpd refuses keys readable by others
chown -R news:news "$I" "$LOGS/inn"
if [ ! -f "$I/db/history.dir" ]; then
  su news -s /bin/sh -c "INNCONF=$I/etc/inn.conf /usr/lib/news/bin/makehistory && cd $I/db && \
     INNCONF=$I/etc/inn.conf /usr/lib/news/bin/makedbz -i -o -s 1000" > "$LOGS/inn-history.log" 2>&1
fi
export INNCONF=$I/etc/inn.conf
start innd "innd" /usr/lib/news/bin/innd -f
start nnrpd "nnrpd" /usr/lib/news/bin/nnrpd -D -f -n -b "$IP1" -p 563 -S
unset INNCONF

# ---------------------------------------------------------------- BIND 9 on 127.0.0.2
mkdir -p "$RUN/bind"
sed -e "s#@RUN@#$RUN#g" -e "s#@ADDR@#$IP2#" -e "s#@PORT@#53#" "$CONF/bind/named.conf.in" > "$RUN/bind/named.conf"
render "$CONF/bind/db.lab.example.test.in" "$RUN/bind/db.lab.example.test"
chown -R bind:bind "$RUN/bind"
start named "named" named -c "$RUN/bind/named.conf" -g -u bind

# ---------------------------------------------------------------- nginx
mkdir -p "$RUN/nginx/tmp"
render "$CONF/nginx/nginx.conf.in" "$RUN/nginx/nginx.conf"
start nginx "nginx" nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -g 'daemon off;'

# ---------------------------------------------------------------- ISO-TSAP 102
start mms "mms_server.py" "$VENV/bin/python" "$LAB/tools/mms_server.py" "$IP1" 102
start s7 "s7_server.py" "$VENV/bin/python" "$LAB/tools/s7_server.py" "$IP2" 102

# ---------------------------------------------------------------- extra services (extra.d/*.sh)
for n in "${EXTRA_NAMES[@]}"; do
  if declare -F "start_$n" > /dev/null; then "start_$n"; fi
done

# ---------------------------------------------------------------- wait for readiness
check() {  # check NAME ADDR PORT...
  local name=$1 addr=$2; shift 2
  local p
  for p in "$@"; do wait_tcp "$addr" "$p" || die "$name: $addr:$p not listening after ${WAIT}s (see $LOGS)"; done
}
check postfix $IP1 25 465;   check dovecot $IP1 110 143 993 995
check innd $IP1 119;         check nnrpd $IP1 563
check nginx $IP1 80 443;     check slapd $IP1 379 390; check slapd $IP2 389 636
check named $IP2 53;         check mms $IP1 102;       check s7 $IP2 102
TIMES[others-ready]=$(since "$t1")
check samba $IP1 53 88 135 389 445 636 3268 3269
# Samba answers LDAP a moment after it listens; wait for a real rootDSE reply
for ((i = 0; i < WAIT * 4; i++)); do
  ldapsearch -x -H "ldap://$IP1" -b '' -s base -o nettimeout=2 dnsHostName 2>/dev/null | grep '^dnsHostName' > /dev/null && break
  sleep 0.25
done
TIMES[samba-ready]=$(since "$t0")
if [ ! -f "$S/.dc1-a-record" ]; then   # provision skips loopback addresses: add dc1 A 127.0.0.1 once
  samba-tool dns add $IP1 lab.example.test dc1 A $IP1 -U "Administrator%$ADMINPASS" > "$LOGS/samba-dns-add.log" 2>&1 \
    && touch "$S/.dc1-a-record"
fi

for n in "${EXTRA_NAMES[@]}"; do
  if declare -F "ready_$n" > /dev/null; then "ready_$n"; fi
done
for f in "$RUN"/pids/*.pid; do
  n=$(basename "$f" .pid)
  alive "$n" || die "$n died during start-up, see $LOGS/$n.out"
done
log "lab up in $(since "$T_ALL") s  (${TIMES[samba-provision]:+samba provision ${TIMES[samba-provision]} s, }samba ready ${TIMES[samba-ready]} s, others ready ${TIMES[others-ready]} s)"
ss -Hltnu | awk '{print $1, $5}' | grep -E "^(tcp|udp) ($IP1|$IP2|\[::1\]):" | sort -t: -k2 -n | uniq | tr "\n" " " | fold -w 150 || true; echo
