#!/usr/bin/env bash
# System calls per echoed message, counted by the kernel's tracepoints (`perf stat -e
# 'syscalls:sys_enter_*'`, and `perf record` of `epoll_wait`'s return value for the events per
# wait), for `examples/echo_server` as shipped (60 s idle timeout), with `--idle-timeout 0`, the
# compare bench's tasklet server, tokio's current-thread server and the raw-epoll floor, under
# the same load, one after the other. Counts, unlike CPU times, do not depend much on the
# machine's other load (the events per wait do somewhat: see docs/benchmarks.md).
#
#   bench/echo-syscalls.sh [RUNS] [CONNS] [TRIPS_LOW] [TRIPS_HIGH]   # defaults: 1 100 200 2000
#   bench/echo-syscalls.sh 1 1000 20 200                             # 1,000 connections
#   SERVERS="shipped tokio" bench/echo-syscalls.sh                   # some servers only
#
# Each server runs pinned to CPU 0 with perf attached to it once it listens, while the compare
# bench's load generator (CPU 1) makes CONNS connections × TRIPS round trips of 64 B, twice
# (TRIPS_LOW and TRIPS_HIGH, each with a fresh server); per message = difference of the two
# counts ÷ difference of the messages, which leaves out connection set-up and teardown.
# Needs: perf (with tracepoints readable), and the release builds below (made by this script).
set -euo pipefail
RUNS=${1:-1}
CONNS=${2:-100}
LOW=${3:-200}
HIGH=${4:-2000}
# shellcheck source=bench/echo-lib.sh
source "$(dirname "$0")/echo-lib.sh"
read -r -a SERVERS <<<"${SERVERS:-shipped notimeout tasklet tokio floor-epoll}"
CALLS=(recvfrom sendto epoll_wait epoll_pwait epoll_ctl read write futex sched_yield)

# measure PID PORT TRIPS TAG -> writes $OUT/TAG.stat, $OUT/TAG.events, echoes messages
measure() {
    local pid=$1 port=$2 trips=$3 tag=$4
    perf stat -x, -e 'syscalls:sys_enter_*' -e page-faults -e context-switches -p "$pid" -o "$OUT/$tag.stat" 2>/dev/null &
    local stat=$!
    perf record -q -e syscalls:sys_exit_epoll_wait -e syscalls:sys_exit_epoll_pwait -p "$pid" \
        -o "$OUT/$tag.data" >/dev/null 2>&1 &
    local rec=$!
    sleep 1 # let perf attach
    load "$port" "$trips"
    kill -INT "$stat" "$rec"
    wait "$stat" "$rec" 2>/dev/null || true
    perf script -i "$OUT/$tag.data" -F trace 2>/dev/null | grep '^0x' |
        python3 -c 'import sys; v=[int(l,16) for l in sys.stdin]; print(len(v), sum(v))' >"$OUT/$tag.events"
}

# one NAME TRIPS TAG -> messages
one() {
    local name=$1 trips=$2 tag=$3 port pid msgs
    local log="$OUT/log.$tag"
    : >"$log"
    case $name in
        shipped | notimeout)
            port=$(port_free)
            local extra=()
            [ "$name" = notimeout ] && extra=(--idle-timeout 0)
            taskset -c 0 "$SERVER" "127.0.0.1:$port" "${extra[@]}" >"$log" 2>&1 &
            pid=$!
            until grep -q listening "$log" 2>/dev/null; do sleep 0.1; done
            msgs=$(measure "$pid" "$port" "$trips" "$tag")
            kill -TERM "$pid"
            wait "$pid" 2>/dev/null || true
            ;;
        *)
            coproc SRV { exec "$B" --child echo-ir "$name" cpus=0 role=server 2>"$log"; }
            pid=$SRV_PID
            read -r line <&"${SRV[0]}"
            port=${line#PORT }
            msgs=$(measure "$pid" "$port" "$trips" "$tag")
            eval "exec ${SRV[1]}>&-"
            wait "$pid" 2>/dev/null || true
            ;;
    esac
    echo "$msgs"
}

count() { # count TAG CALL
    awk -F, -v ev="syscalls:sys_enter_$2" '$3 == ev { print $1 + 0; found = 1 } END { if (!found) print 0 }' "$OUT/$1.stat"
}

sw() { # sw TAG EVENT
    awk -F, -v ev="$2" '$3 == ev { print $1 + 0; found = 1 } END { if (!found) print 0 }' "$OUT/$1.stat"
}

echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $CONNS connections × 64 B, $LOW and $HIGH round trips"
printf '%-10s %4s' server run
for c in "${CALLS[@]}"; do printf ' %11s' "$c"; done
printf ' %11s %11s %11s %11s\n' other events/wait faults cswitches
for run in $(seq 1 "$RUNS"); do
    for s in "${SERVERS[@]}"; do
        m1=$(one "$s" "$LOW" "$s.$run.lo")
        m2=$(one "$s" "$HIGH" "$s.$run.hi")
        d=$((m2 - m1))
        printf '%-10s %4s' "$s" "$run"
        known=0
        for c in "${CALLS[@]}"; do
            x=$(($(count "$s.$run.hi" "$c") - $(count "$s.$run.lo" "$c")))
            known=$((known + x))
            printf ' %11s' "$(python3 -c "print(f'{$x/$d:.3f}')")"
        done
        total_hi=$(awk -F, '$3 ~ /^syscalls:/ { s += $1 } END { print s + 0 }' "$OUT/$s.$run.hi.stat")
        total_lo=$(awk -F, '$3 ~ /^syscalls:/ { s += $1 } END { print s + 0 }' "$OUT/$s.$run.lo.stat")
        other=$((total_hi - total_lo - known))
        read -r w1 e1 <"$OUT/$s.$run.lo.events"
        read -r w2 e2 <"$OUT/$s.$run.hi.events"
        printf ' %11s %11s' "$(python3 -c "print(f'{$other/$d:.3f}')")" \
            "$(python3 -c "print(f'{($e2-$e1)/max($w2-$w1,1):.1f}')")"
        for c in page-faults context-switches; do
            x=$(($(sw "$s.$run.hi" "$c") - $(sw "$s.$run.lo" "$c")))
            printf ' %11s' "$(python3 -c "print(f'{$x/$d:.4f}')")"
        done
        echo
        # Which other calls, if any (a syscall per message nobody expected shows here).
        awk -F, '$3 ~ /^syscalls:/ && $1 > 0 { sub("syscalls:sys_enter_", "", $3); print $3, $1 }' \
            "$OUT/$s.$run.hi.stat" | sort -k2 -rn | head -12 | tr '\n' ' ' | sed 's/^/           high run, all: /'
        echo
    done
done
