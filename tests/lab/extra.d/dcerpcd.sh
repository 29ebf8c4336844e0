# shellcheck shell=bash
# Extra lab service: Samba 4.17's standalone samba-dcerpcd as an MS-RPC endpoint mapper on
# 127.0.0.4:135 -- the "EPM alive but empty" case (bind_ack, then ept_lookup answers
# ept_s_not_registered at once). Sourced by up.sh; uses its helpers (start, render, add_lo, ...).
# No smbd, no AD, no NetBIOS; it listens on 127.0.0.4 only and makes no outbound connection.
DCERPCD_ADDR=${LAB_DCERPCD_ADDR:-127.0.0.4}
APT_PKGS+=(samba)

start_dcerpcd() {
  local d=$RUN/dcerpcd
  add_lo "$DCERPCD_ADDR"
  mkdir -p "$d/private" "$d/state" "$d/cache" "$d/lock" "$d/ncalrpc"
  render "$LAB/configs/samba/dcerpcd.conf.in" "$d/dcerpcd.conf.tmp"
  sed -e "s#@ADDR@#$DCERPCD_ADDR#g" "$d/dcerpcd.conf.tmp" > "$d/dcerpcd.conf"
  rm -f "$d/dcerpcd.conf.tmp"
  start dcerpcd "samba-dcerpcd" /usr/libexec/samba/samba-dcerpcd --libexec-rpcds -F --no-process-group \
    -s "$d/dcerpcd.conf"
}

ready_dcerpcd() {
  check dcerpcd "$DCERPCD_ADDR" 135
}
