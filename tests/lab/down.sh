#!/usr/bin/env bash
# Stop everything up.sh started (and only that): each recorded PID is checked against its
# recorded start time and command before it is signalled, so a recycled PID is never hit.
# Usage (as root): ./down.sh            stop daemons, keep state in $LAB_RUN (fast next start)
#                  ./down.sh --purge    also delete $LAB_RUN (next up.sh re-provisions Samba etc.)
set -uo pipefail

LAB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${LAB_STATE:-/tmp/portproof-lab}
RUN=${LAB_RUN:-$STATE/run}
LOGS=${LAB_LOGS:-$STATE/logs}
log() { printf '[down %(%H:%M:%S)T] %s\n' -1 "$*"; }

# ok NAME -> sets PID if the recorded process is still the one we started
ok() {
  local f="$RUN/pids/$1.pid" st match
  PID=""
  [ -f "$f" ] || return 1
  read -r PID st match < "$f"
  [ -n "$PID" ] && [ -d "/proc/$PID" ] || return 1
  [ "$(awk '{print $22}' "/proc/$PID/stat" 2>/dev/null)" = "$st" ] || return 1
  tr '\0' ' ' 2>/dev/null < "/proc/$PID/cmdline" | grep -- "$match" > /dev/null || return 1
}

# members of the session/process group we created (setsid made PGID == PID)
# (zombies are skipped: they are already dead and only wait for init to reap them)
group_pids() { ps -e -o pid=,pgid=,stat= | awk -v g="$1" '$2 == g && $3 !~ /^Z/ {print $1}'; }

stop_one() {  # stop_one NAME [graceful command...]
  local name=$1; shift
  if ! ok "$name"; then rm -f "$RUN/pids/$name.pid"; return 0; fi
  local pid=$PID i
  if [ $# -gt 0 ]; then timeout 15 "$@" > /dev/null 2>&1 || true; fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do        # up to 10 s for a clean exit
    [ -z "$(group_pids "$pid")" ] && break
    sleep 0.1
  done
  local left; left=$(group_pids "$pid")
  if [ -n "$left" ]; then
    log "$name: still running after 10 s, SIGKILL to its process group $pid"
    kill -KILL -- "-$pid" 2>/dev/null || true
    sleep 0.3
  fi
  rm -f "$RUN/pids/$name.pid"
  log "stopped $name (pid $pid)"
}

[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
[ -d "$RUN/pids" ] || { log "nothing recorded in $RUN/pids"; exit 0; }

stop_one postfix postfix -c "$RUN/postfix/etc" stop
# postfix's master runs in its own session; if "postfix stop" failed, stop it via its pid file
mp=$(tr -dc '0-9' < "$RUN/postfix/queue/pid/master.pid" 2>/dev/null)
if [ -n "$mp" ] && tr '\0' ' ' 2>/dev/null < "/proc/$mp/cmdline" | grep 'postfix/sbin/master' > /dev/null; then
  kill -TERM "$mp" 2>/dev/null; sleep 1; log "stopped postfix master (pid $mp) via its pid file"
fi
stop_one innd env INNCONF="$RUN/inn/etc/inn.conf" /usr/lib/news/bin/ctlinnd -t 10 shutdown lab-down
stop_one nnrpd
stop_one dovecot
stop_one nginx
stop_one named
stop_one slapd
stop_one mms
stop_one s7
stop_one samba
# whatever else was recorded (services from extra.d/)
for f in "$RUN"/pids/*.pid; do
  [ -e "$f" ] || continue
  stop_one "$(basename "$f" .pid)"
done

# smbd starts samba-dcerpcd/rpcd_* helpers on demand (named pipes, e.g. after `smbclient -L`) in
# their own session, so they are not in samba's process group. Stop those that run with OUR
# smb.conf (exact path match on the command line), each by PID.
helpers() {
  local d pid cmd
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    cmd=$(tr '\0' ' ' 2>/dev/null < "$d/cmdline") || continue
    case "$cmd" in
      */samba-dcerpcd\ *"--configfile=$RUN/samba/etc/smb.conf "*|*/rpcd_*\ *"--configfile=$RUN/samba/etc/smb.conf "*)
        echo "$pid" ;;
    esac
  done
}
hp=$(helpers)
if [ -n "$hp" ]; then
  kill -TERM $hp 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do [ -z "$(helpers)" ] && break; sleep 0.1; done
  hp2=$(helpers); [ -z "$hp2" ] || kill -KILL $hp2 2>/dev/null || true
  log "stopped samba rpc helpers: $(echo $hp)"
fi

if [ -f "$RUN/lo-added" ]; then   # loopback addresses that up.sh added
  while read -r ip; do
    [ -n "$ip" ] && ip addr del "$ip/32" dev lo 2>/dev/null && log "removed $ip from lo"
  done < "$RUN/lo-added"
  rm -f "$RUN/lo-added"
fi

if [ "${1:-}" = "--purge" ]; then
  rm -rf "$RUN"
  log "purged $RUN"
fi
left=$(ls "$RUN/pids" 2>/dev/null | tr '\n' ' ')
[ -z "$left" ] || log "pid files left: $left"
log "done"
