#!/usr/bin/env bash
# What the supervisor's broker costs: the same loopback workloads against Holdfast with
# `holdfast workers = 0` (broker in process) and with workers (broker in the supervisor,
# one socket round trip per broker call).
#
#   scripts/bench-workers.sh                  # WORKERS="0 1 2", BENCH_RUNS (3) runs each
#   PORT=4710 WORKERS="0 1" scripts/bench-workers.sh
#
# Per run: smbtorture smb2.bench.path-contention-shared (open/close ops/s: several broker
# calls per open and close) and smbclient put and get of BENCH_MB MiB (one broker check per
# READ/WRITE). Prints a markdown table of medians.
#
# Environment: PORT [4456]  WORKERS ["0 1 2"]  BENCH_RUNS [3]  BENCH_MB [256]
#   BENCH_SECONDS [10]  BENCH_BASE [/tmp/holdfast-bench-workers]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
need_root "bench-workers.sh"
PORT=${PORT:-4456}
WORKERS=${WORKERS:-"0 1 2"}
RUNS=${BENCH_RUNS:-3}
MB=${BENCH_MB:-256}
SECS=${BENCH_SECONDS:-10}
BASE=${BENCH_BASE:-/tmp/holdfast-bench-workers}
CREDS='smbtest%Test123!'
FILE=$BASE.data
RAW=$BASE.raw
for t in smbclient smbtorture; do
  command -v "$t" >/dev/null 2>&1 || die "$t not found"
done
rm -rf "$RAW"
mkdir -p "$RAW"
head -c $((MB * 1048576)) /dev/urandom >"$FILE"
trap 'BASE=$BASE "$REPO_ROOT/scripts/holdfast-down.sh" >/dev/null 2>&1 || true; rm -f "$FILE"' EXIT

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }

for ((run = 1; run <= RUNS; run++)); do
  for w in $WORKERS; do
    info "run $run/$RUNS: workers = $w"
    BASE=$BASE PORT=$PORT GLOBAL_OPTS="holdfast workers = $w" "$REPO_ROOT/scripts/holdfast-up.sh" >/dev/null
    log=$RAW/w$w.$run
    (cd /tmp && timeout $((SECS + 120)) smbtorture "//127.0.0.1/share" -p "$PORT" -U "$CREDS" \
      --target=samba3 --option=torture:progress=no --option="torture:timelimit=$SECS" \
      smb2.bench.path-contention-shared) >"$log.pc" 2>&1 || true
    v=$(grep -Eo 'open\[num/s=[0-9.]+' "$log.pc" | tail -n 1 | grep -Eo '[0-9.]+$' || true)
    [ -n "$v" ] && echo "$v" >>"$RAW/w$w.pathcont"
    t0=$(now)
    if smbclient "//127.0.0.1/share" -p "$PORT" -U "$CREDS" --option='client max protocol=SMB3_11' \
      -c "put $FILE bench.bin" >"$log.put" 2>&1 && ! grep -q NT_STATUS_ "$log.put"; then
      t1=$(now)
      awk -v b="$MB" -v a="$t0" -v z="$t1" 'BEGIN{printf "%.1f\n", b/(z-a)}' >>"$RAW/w$w.put"
      if smbclient "//127.0.0.1/share" -p "$PORT" -U "$CREDS" --option='client max protocol=SMB3_11' \
        -c "get bench.bin /dev/null" >"$log.get" 2>&1 && ! grep -q NT_STATUS_ "$log.get"; then
        t2=$(now)
        awk -v b="$MB" -v a="$t1" -v z="$t2" 'BEGIN{printf "%.1f\n", b/(z-a)}' >>"$RAW/w$w.get"
      fi
    fi
    BASE=$BASE "$REPO_ROOT/scripts/holdfast-down.sh" >/dev/null
  done
done

echo "| workers | path-contention-shared open/s | put MiB/s | get MiB/s |"
echo "|---|---|---|---|"
for w in $WORKERS; do
  row="| $w"
  for m in pathcont put get; do
    f=$RAW/w$w.$m
    if [ -s "$f" ]; then
      row="$row | $(median <"$f") ($(tr '\n' ' ' <"$f" | sed 's/ $//'))"
    else
      row="$row | -"
    fi
  done
  echo "$row |"
done
