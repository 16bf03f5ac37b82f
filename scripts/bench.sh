#!/usr/bin/env bash
# Loopback benchmark: Holdfast vs a private reference Samba, same machine, same tmpfs share size.
#
#   scripts/bench.sh               # both servers, BENCH_RUNS (3) runs each, alternating
#   scripts/bench.sh --samba-only  # only the reference Samba (checks the harness)
#
# Per run and server: smbclient 1 GiB put and get, plain and signed
# (--option='client signing=required'), smbtorture smb2.bench.echo and
# smb2.bench.path-contention-shared (ops/s as in shared/anchor/samba-perf.md), and the
# server's CPU seconds per GiB moved (utime+stime+cutime+cstime from /proc/PID/stat, summed
# over the server's whole process tree: smbd forks a child per connection).
# The servers alternate run by run (H S, S H, H S, ...). Prints a markdown table of medians
# with the Holdfast/Samba ratio and writes it to BENCH_OUT.
#
# Environment: BENCH_RUNS [3]  BENCH_OUT [/tmp/holdfast-bench.md]  BENCH_MB [1024]
#   BENCH_SECONDS [10] (smbtorture bench duration)  BENCH_TMPFS [3g]  BENCH_RAW [/tmp/holdfast-bench-raw]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

SAMBA_ONLY=0
for a in "$@"; do
  case $a in
    --samba-only) SAMBA_ONLY=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option $a (known: --samba-only)" ;;
  esac
done
need_root "bench.sh"
RUNS=${BENCH_RUNS:-3}
OUT=${BENCH_OUT:-/tmp/holdfast-bench.md}
MB=${BENCH_MB:-1024}
SECS=${BENCH_SECONDS:-10}
TMPFS=${BENCH_TMPFS:-3g}
RAW=${BENCH_RAW:-/tmp/holdfast-bench-raw}
CREDS='smbtest%Test123!'
HF_BASE=/tmp/holdfast-bench-hf
SB_BASE=/tmp/holdfast-bench-samba

for t in smbclient smbtorture smbd smbpasswd python3; do
  command -v "$t" >/dev/null 2>&1 || die "$t not found: run scripts/setup.sh --no-run first"
done
if [ "$SAMBA_ONLY" = 0 ]; then
  BIN=$(bin_dir)
  if [ ! -x "$BIN/holdfast-smbd" ] || [ ! -x "$BIN/holdfastctl" ]; then
    die "Holdfast binaries not found in $BIN (cargo build --release, or HOLDFAST_BIN_DIR=...); use --samba-only to bench Samba alone"
  fi
fi

HF_UP=0 SB_UP=0
cleanup() {
  if [ "$HF_UP" = 1 ]; then BASE=$HF_BASE "$REPO_ROOT/scripts/holdfast-down.sh" >/dev/null 2>&1 || true; fi
  if [ "$SB_UP" = 1 ]; then samba_down >/dev/null 2>&1 || true; fi
  rm -f "$FILE"
}
FILE=$(mktemp /tmp/holdfast-bench-data.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- reference Samba: the anchor's samba-up.sh when shared/ is there, else our own copy
samba_up_own() {
  local base=$1 port=$2
  mkdir -p "$base"/{private,lock,state,cache,pid,log,ncalrpc,binddns,share}
  mountpoint -q "$base/share" || mount -t tmpfs -o "size=$TMPFS,mode=0777" holdfast-bench-samba "$base/share"
  chmod 700 "$base/private"
  ensure_unix_user smbtest
  ensure_unix_user smbtest2
  cat >"$base/smb.conf" <<CONFEOF
[global]
	netbios name = HFBENCH
	server role = standalone server
	interfaces = 127.0.0.1
	bind interfaces only = yes
	smb ports = $port
	disable netbios = yes
	private dir = $base/private
	lock directory = $base/lock
	state directory = $base/state
	cache directory = $base/cache
	pid directory = $base/pid
	ncalrpc dir = $base/ncalrpc
	binddns dir = $base/binddns
	log file = $base/log/log.%m
	log level = 1
	passdb backend = tdbsam:$base/private/passdb.tdb
	map to guest = never
	load printers = no
	disable spoolss = yes
	server min protocol = SMB2_02
	server max protocol = SMB3_11
	smb2 leases = yes
	durable handles = yes
	kernel oplocks = no
	kernel share modes = no
	posix locking = no
[share]
	path = $base/share
	read only = no
CONFEOF
  printf 'Test123!\nTest123!\n' | smbpasswd -c "$base/smb.conf" -a -s smbtest >/dev/null
  printf 'Test123!\nTest123!\n' | smbpasswd -c "$base/smb.conf" -a -s smbtest2 >/dev/null
  smbd -D -s "$base/smb.conf"
  local i
  for ((i = 0; i < 100; i++)); do
    ss -Hltn "sport = :$port" | grep -q . && return 0
    sleep 0.2
  done
  die "reference smbd not listening on $port (logs in $base/log)"
}
samba_down() {
  if [ -n "${ANCHOR:-}" ]; then
    BASE=$SB_BASE "$ANCHOR/samba-down.sh"
    return
  fi
  local f p
  for f in "$SB_BASE"/pid/*.pid; do
    [ -e "$f" ] || continue
    p=$(cat "$f")
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    fi
    rm -f "$f"
  done
  awk -v b="$SB_BASE/" 'index($2, b) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m"; done
}
samba_pid() {
  cat "$SB_BASE/pid/smbd.pid"
}

# CPU seconds (utime+stime+cutime+cstime) of PID and all its live descendants.
cpu_tree() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
tck = os.sysconf("SC_CLK_TCK")
procs = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        s = open("/proc/%s/stat" % d).read()
    except OSError:
        continue
    f = s[s.rindex(")") + 2:].split()
    # f[0]=state f[1]=ppid ... f[11..14]=utime stime cutime cstime
    procs[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]))
kids = {}
for p, (pp, _) in procs.items():
    kids.setdefault(pp, []).append(p)
tot, todo = 0, [root]
while todo:
    p = todo.pop()
    if p in procs:
        tot += procs[p][1]
        todo.extend(kids.get(p, []))
print("%.2f" % (tot / tck))
PY
}

now() { date +%s.%N; }
median() {
  sort -g | awk '{a[NR]=$1} END { if (NR == 0) { print "n/a"; exit } if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2 }'
}

mkdir -p "$RAW"
rm -f "$RAW"/*.log "$RAW"/*.val
info "creating ${MB} MiB of random data in $FILE"
dd if=/dev/urandom of="$FILE" bs=1M count="$MB" status=none
SIZE=$(stat -c %s "$FILE")

# ---- start the servers
declare -A PORT PIDOF NAME
NAME[hf]=Holdfast
NAME[sb]=Samba
if ANCHOR=$(anchor_dir); then
  info "reference Samba: $ANCHOR/samba-up.sh"
else
  ANCHOR=""
  info "reference Samba: built-in config (no shared/anchor)"
fi
PORT[sb]=$(free_port 4470)
SB_UP=1
if [ -n "$ANCHOR" ]; then
  BASE=$SB_BASE PORT=${PORT[sb]} TMPFS_SIZE=$TMPFS "$ANCHOR/samba-up.sh"
else
  samba_up_own "$SB_BASE" "${PORT[sb]}"
fi
PIDOF[sb]=$(samba_pid)
SERVERS=(sb)
if [ "$SAMBA_ONLY" = 0 ]; then
  PORT[hf]=$(free_port $((PORT[sb] + 1)))
  HF_UP=1
  BASE=$HF_BASE PORT=${PORT[hf]} TMPFS_SIZE=$TMPFS RUST_LOG=${RUST_LOG:-warn} "$REPO_ROOT/scripts/holdfast-up.sh"
  PIDOF[hf]=$(cat "$HF_BASE/holdfast.pid")
  SERVERS=(hf sb)
fi
for s in "${SERVERS[@]}"; do info "${NAME[$s]}: 127.0.0.1:${PORT[$s]} pid ${PIDOF[$s]}"; done

record() { # server metric value
  printf '%s\n' "$3" >>"$RAW/$1.$2.val"
}

xfer() { # server mode run extra-args...
  local s=$1 mode=$2 run=$3
  shift 3
  local c0 c1 c2 t0 t1 t2 log
  log=$RAW/$s.$mode.$run
  c0=$(cpu_tree "${PIDOF[$s]}"); t0=$(now)
  if timeout 600 smbclient "//127.0.0.1/share" -p "${PORT[$s]}" -U "$CREDS" \
    --option='client max protocol=SMB3_11' "$@" -c "put $FILE bench.bin" >"$log.put.log" 2>&1 &&
    grep -q 'putting file' "$log.put.log" && ! grep -q NT_STATUS_ "$log.put.log"; then
    t1=$(now); c1=$(cpu_tree "${PIDOF[$s]}")
    record "$s" "put_$mode" "$(awk -v b="$SIZE" -v a="$t0" -v z="$t1" 'BEGIN{printf "%.1f", b/1048576/(z-a)}')"
    record "$s" "cpu_put_$mode" "$(awk -v b="$SIZE" -v a="$c0" -v z="$c1" 'BEGIN{printf "%.2f", (z-a)/(b/1073741824)}')"
  else
    info "${NAME[$s]} put ($mode) failed, see $log.put.log"
    return 0
  fi
  c1=$(cpu_tree "${PIDOF[$s]}"); t1=$(now)
  if timeout 600 smbclient "//127.0.0.1/share" -p "${PORT[$s]}" -U "$CREDS" \
    --option='client max protocol=SMB3_11' "$@" -c "get bench.bin /dev/null" >"$log.get.log" 2>&1 &&
    grep -q 'getting file' "$log.get.log" && ! grep -q NT_STATUS_ "$log.get.log"; then
    t2=$(now); c2=$(cpu_tree "${PIDOF[$s]}")
    record "$s" "get_$mode" "$(awk -v b="$SIZE" -v a="$t1" -v z="$t2" 'BEGIN{printf "%.1f", b/1048576/(z-a)}')"
    record "$s" "cpu_get_$mode" "$(awk -v b="$SIZE" -v a="$c1" -v z="$c2" 'BEGIN{printf "%.2f", (z-a)/(b/1073741824)}')"
  else
    info "${NAME[$s]} get ($mode) failed, see $log.get.log"
  fi
  timeout 60 smbclient "//127.0.0.1/share" -p "${PORT[$s]}" -U "$CREDS" -c "del bench.bin" >/dev/null 2>&1 || true
}

torture_bench() { # server metric test run
  local s=$1 m=$2 t=$3 run=$4 log v
  log=$RAW/$s.$m.$run.log
  (cd /tmp && timeout $((SECS + 120)) smbtorture "//127.0.0.1/share" -p "${PORT[$s]}" -U "$CREDS" \
    --target=samba3 --option=torture:progress=no --option="torture:timelimit=$SECS" "$t") >"$log" 2>&1 || true
  # 4.17 prints "10.00 second: echo[num/s=27025,...]" / "open[num/s=5913,...] close[...]"
  v=$(grep -Eo '(echo|open)\[num/s=[0-9.]+' "$log" | tail -n 1 | grep -Eo '[0-9.]+$' || true)
  if [ -n "$v" ]; then record "$s" "$m" "$v"; else info "${NAME[$s]} $t gave no figure, see $log"; fi
}

for ((run = 1; run <= RUNS; run++)); do
  order=("${SERVERS[@]}")
  if [ $((run % 2)) = 0 ] && [ ${#SERVERS[@]} = 2 ]; then order=("${SERVERS[1]}" "${SERVERS[0]}"); fi
  for s in "${order[@]}"; do
    info "run $run/$RUNS: ${NAME[$s]}"
    xfer "$s" plain "$run"
    xfer "$s" signed "$run" --option='client signing=required'
    torture_bench "$s" echo smb2.bench.echo "$run"
    torture_bench "$s" pathcont smb2.bench.path-contention-shared "$run"
  done
done

# ---- report
cell() { # server metric -> "median (all runs)"
  local f=$RAW/$1.$2.val
  if [ -s "$f" ]; then
    printf '%s (%s)' "$(median <"$f")" "$(tr '\n' ' ' <"$f" | sed 's/ $//')"
  else
    printf 'n/a'
  fi
}
med() {
  local f=$RAW/$1.$2.val
  if [ -s "$f" ]; then median <"$f"; else echo n/a; fi
}
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'
}
{
  echo "# Holdfast vs Samba, loopback"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, kernel $(uname -r); $(smbd --version 2>/dev/null);" \
    "${MB} MiB file; tmpfs shares ($TMPFS); $RUNS runs per server, alternating; median (all runs)."
  echo "Throughput: higher is better. CPU s/GiB: server CPU seconds per GiB moved, lower is better."
  echo
  echo "| metric | Holdfast | Samba | Holdfast/Samba |"
  echo "|---|---|---|---|"
  for m in put_plain get_plain put_signed get_signed echo pathcont cpu_put_plain cpu_get_plain cpu_put_signed cpu_get_signed; do
    case $m in
      put_*|get_*) label="smbclient ${m%%_*} ${m#*_} MiB/s" ;;
      echo) label="smb2.bench.echo ops/s" ;;
      pathcont) label="smb2.bench.path-contention-shared ops/s" ;;
      cpu_*) x=${m#cpu_}; label="CPU s/GiB ${x%%_*} ${x#*_}" ;;
    esac
    if [ "$SAMBA_ONLY" = 1 ]; then hf=-; hm=n/a; else hf=$(cell hf "$m"); hm=$(med hf "$m"); fi
    echo "| $label | $hf | $(cell sb "$m") | $(ratio "$hm" "$(med sb "$m")") |"
  done
  echo
  echo "Raw logs: $RAW"
} | tee "$OUT"
info "written to $OUT"
