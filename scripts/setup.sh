#!/usr/bin/env bash
# Install and run Holdfast on a fresh Debian 12 machine (README command #1). Idempotent.
#
#   sudo scripts/setup.sh            # install everything, then run the server in the foreground
#   sudo scripts/setup.sh --no-run   # stop after installing
#
# What it does:
#   1. apt: build deps and the test peers (smbclient, samba, samba-testsuite, python3-pip);
#      pip: smbprotocol (scripts/lib.sh install_deps, shared with scripts/test.sh).
#   2. cargo build --release --workspace; installs holdfast-smbd, holdfastctl and holdfast-keeper to
#      /usr/local/sbin (the server then runs from there, not from target/release), and the
#      systemd units of systemd/ to /etc/systemd/system (paths adjusted to PREFIX and
#      HOLDFAST_CONF; checked with `systemd-analyze verify` when it exists; daemon-reload when
#      systemd runs). Nothing is enabled unless --systemd is given.
#   3. /etc/holdfast/smb.conf from `holdfast-smbd --print-default-config` (kept if it exists;
#      a built-in default is written while the server lacks that flag).
#   4. share directory /srv/holdfast/share (and any other `path =` of the config), Unix user
#      `holdfast` (nologin) owning it, SMB user `holdfast` with a random password, printed
#      and kept in /etc/holdfast/holdfast.password (mode 600; printed again on re-runs).
#   5. exec holdfast-smbd --config /etc/holdfast/smb.conf (foreground, logs on stderr), or with
#      --systemd: add `holdfast keeper socket = /run/holdfast/keeper.sock` to the config if it
#      names no keeper, then `systemctl enable --now holdfast-keeper holdfast-smbd`.
#
#   sudo scripts/setup.sh --systemd  # as above, but run keeper and server as systemd services
#
# Environment: PREFIX [/usr/local]  HOLDFAST_CONF [/etc/holdfast/smb.conf]
#   SYSTEMD_UNIT_DIR [/etc/systemd/system]
#   HOLDFAST_RESET_PASSWORD=1 sets a new random password for the SMB user holdfast.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

RUN=1
SYSTEMD=0
for a in "$@"; do
  case $a in
    --no-run) RUN=0 ;;
    --systemd) SYSTEMD=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown option $a (known: --no-run, --systemd)" ;;
  esac
done
need_root "setup.sh"

PREFIX=${PREFIX:-/usr/local}
SBIN=$PREFIX/sbin
CONF=${HOLDFAST_CONF:-/etc/holdfast/smb.conf}
CONFDIR=$(dirname "$CONF")
PWFILE=$CONFDIR/holdfast.password
SHARE=/srv/holdfast/share

banner "1/5 packages"
install_deps
ensure_cargo

banner "2/5 build and install"
(cd "$REPO_ROOT" && cargo build --release --workspace)
install -d "$SBIN"
for b in holdfast-smbd holdfastctl holdfast-keeper; do
  install -m 0755 "$REPO_ROOT/target/release/$b" "$SBIN/$b"
  info "installed $SBIN/$b"
done
SMBD=$SBIN/holdfast-smbd
CTL=$SBIN/holdfastctl

# systemd units, with the installed binaries' and the config's paths.
UNITDIR=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
install -d "$UNITDIR"
units=()
for u in "$REPO_ROOT"/systemd/*.service "$REPO_ROOT"/systemd/*.socket; do
  [ -e "$u" ] || continue
  dest=$UNITDIR/$(basename "$u")
  sed -e "s#/usr/local/sbin/#$SBIN/#g" -e "s#--config /etc/holdfast/smb.conf#--config $CONF#g" \
    "$u" >"$dest.new"
  chmod 0644 "$dest.new"
  mv "$dest.new" "$dest"
  units+=("$dest")
  info "installed $dest"
done
if command -v systemd-analyze >/dev/null 2>&1; then
  if ! out=$(systemd-analyze verify "${units[@]}" 2>&1) || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    die "systemd-analyze verify found problems in the units above"
  fi
  info "systemd-analyze verify: units clean"
else
  info "no systemd-analyze: units not verified"
fi
SYSTEMD_RUNNING=0
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  SYSTEMD_RUNNING=1
  systemctl daemon-reload
fi

banner "3/5 configuration"
install -d -m 0755 "$CONFDIR"
if [ -s "$CONF" ]; then
  info "keeping existing $CONF"
else
  if def=$("$SMBD" --print-default-config 2>/dev/null) && grep -q '^\[global\]' <<<"$def"; then
    printf '%s\n' "$def" >"$CONF.new"
    info "wrote $CONF from holdfast-smbd --print-default-config"
  else
    info "holdfast-smbd has no --print-default-config yet: writing the built-in default"
    cat >"$CONF.new" <<CONFEOF
# Holdfast configuration (smb.conf syntax, Samba option names). Written by scripts/setup.sh.
[global]
	# loopback only; list real interfaces/addresses here to serve the network
	interfaces = 127.0.0.1
	smb ports = 445
	state directory = /var/lib/holdfast
	server min protocol = SMB2_02
	server max protocol = SMB3_11
	server signing = auto
	log level = 1

[share]
	path = $SHARE
	comment = Holdfast share
	read only = no
	guest ok = no
	valid users = holdfast
	browseable = yes
CONFEOF
  fi
  mv "$CONF.new" "$CONF"
fi

banner "4/5 directories and users"
ensure_unix_user holdfast
install -d -m 0755 /srv/holdfast
install -d -m 0755 -o holdfast -g holdfast "$SHARE"
# every share path and the state directory named in the config
while IFS= read -r p; do
  [ -n "$p" ] || continue
  if [ ! -d "$p" ]; then
    install -d -m 0755 -o holdfast -g holdfast "$p"
    info "created share directory $p"
  fi
done < <(sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*//p' "$CONF" | sed 's/[[:space:]]*$//')
state=$(sed -n 's/^[[:space:]]*state directory[[:space:]]*=[[:space:]]*//p' "$CONF" | sed 's/[[:space:]]*$//' | head -n 1)
if [ -n "$state" ]; then install -d -m 0700 "$state"; fi

if ! out=$("$SMBD" --config "$CONF" --check 2>&1); then
  printf '%s\n' "$out" >&2
  die "holdfast-smbd --check rejected $CONF"
fi
printf '%s\n' "$out"

have_user=0
if "$CTL" --config "$CONF" user list 2>/dev/null | grep -qw holdfast; then
  have_user=1
fi
if [ "$have_user" = 1 ] && [ -s "$PWFILE" ] && [ "${HOLDFAST_RESET_PASSWORD:-0}" != 1 ]; then
  info "SMB user holdfast exists (HOLDFAST_RESET_PASSWORD=1 sets a new password)"
  PASSWORD=$(cat "$PWFILE")
else
  PASSWORD=$(head -c 512 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 20)
  [ ${#PASSWORD} -ge 16 ] || die "could not generate a password"
  if [ "$have_user" = 1 ]; then
    "$CTL" --config "$CONF" user del holdfast
  fi
  "$CTL" --config "$CONF" user add holdfast --unix-user holdfast --password-stdin <<<"$PASSWORD"
  (umask 077 && printf '%s\n' "$PASSWORD" >"$PWFILE")
fi
port=$(sed -n 's/^[[:space:]]*smb ports[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$CONF" | head -n 1)
cat <<MSG

  Holdfast is installed.
    config:    $CONF
    binaries:  $SMBD, $CTL
    share dir: $SHARE
    SMB user:  holdfast
    password:  $PASSWORD     (also in $PWFILE)
    try:       smbclient //127.0.0.1/share -p ${port:-445} -U 'holdfast%$PASSWORD' -c ls

MSG

if [ "$SYSTEMD" = 1 ]; then
  [ "$SYSTEMD_RUNNING" = 1 ] || die "--systemd: systemd is not running on this machine"
  if ! grep -Eq '^[[:space:]]*holdfast keeper socket[[:space:]]*=' "$CONF"; then
    # Under [global], right after its header.
    sed -i '0,/^\[global\]/s##[global]\n\tholdfast keeper socket = /run/holdfast/keeper.sock#' "$CONF"
    info "added 'holdfast keeper socket = /run/holdfast/keeper.sock' to $CONF"
  fi
  if [ "$RUN" = 0 ]; then
    systemctl enable holdfast-keeper.service holdfast-smbd.service
    info "--no-run: services enabled, not started"
  else
    systemctl enable --now holdfast-keeper.service holdfast-smbd.service
    systemctl --no-pager status holdfast-keeper.service holdfast-smbd.service || true
  fi
  exit 0
fi
if [ "$RUN" = 0 ]; then
  info "--no-run: not starting the server"
  exit 0
fi
banner "5/5 holdfast-smbd (foreground; Ctrl-C stops it)"
exec "$SMBD" --config "$CONF"
