#!/usr/bin/env bash
# User-space instructions per echoed message under callgrind, for `examples/echo_server` as
# shipped (60 s idle timeout) and with `--idle-timeout 0`, side by side with tokio's
# current-thread server and the two epoll floors of the compare bench, in the same run.
#
#   bench/echo-ir.sh [RUNS] [TRIPS_LOW] [TRIPS_HIGH] [CONNS]      # defaults: 3 200 2000 100
#   ECHO_SERVER=/path/to/echo_server bench/echo-ir.sh             # another build (e.g. before)
#   SERVERS="shipped notimeout" bench/echo-ir.sh                  # some servers only
#
# Each server runs under `valgrind --tool=callgrind` twice, pinned to CPU 0, while the compare
# bench's load generator (not under valgrind, CPU 1) makes CONNS connections × TRIPS round trips
# of 64 B; per message = (total at TRIPS_HIGH - total at TRIPS_LOW) / (difference of the round
# trips), which leaves out start-up, connection set-up and teardown. Prints one line per
# server and run, then min / max per server and the ratios of the issue's goals (#14).
# Needs: valgrind, and the release builds below (made by this script).
set -euo pipefail
RUNS=${1:-3}
LOW=${2:-200}
HIGH=${3:-2000}
CONNS=${4:-100}
# shellcheck source=bench/echo-lib.sh
source "$(dirname "$0")/echo-lib.sh"

# one NAME TRIPS -> "messages instructions"
one() {
    local name=$1 trips=$2 port msgs ir
    local cg="$OUT/cg.$name.$trips" log="$OUT/log.$name.$trips"
    rm -f "$cg" "$log"
    : >"$log" # before the server starts: a log of an earlier run must not say "listening"
    case $name in
        shipped | notimeout)
            port=$(port_free)
            local extra=()
            [ "$name" = notimeout ] && extra=(--idle-timeout 0)
            taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$cg" "$SERVER" \
                "127.0.0.1:$port" "${extra[@]}" >"$log" 2>&1 &
            local pid=$!
            until grep -q listening "$log" 2>/dev/null; do sleep 0.1; done
            msgs=$(load "$port" "$trips")
            kill -TERM "$pid"
            wait "$pid" 2>/dev/null || true
            ir=$(sed -n 's/^totals: *//p' "$cg" | head -1)
            ;;
        *)
            # The compare bench's servers: print PORT, exit when stdin closes.
            coproc SRV { valgrind --tool=callgrind --callgrind-out-file="$cg" "$B" --child echo-ir "$name" \
                cpus=0 role=server 2>"$log"; }
            local pid=$SRV_PID
            read -r line <&"${SRV[0]}"
            port=${line#PORT }
            msgs=$(load "$port" "$trips")
            eval "exec ${SRV[1]}>&-"
            wait "$pid" 2>/dev/null || true
            ir=$(sed -n 's/^totals: *//p' "$cg" | head -1)
            ;;
    esac
    echo "$msgs $ir"
}

read -r -a SERVERS <<<"${SERVERS:-shipped notimeout tokio floor-epoll floor}"
declare -A ALL RUNS_ALL
for run in $(seq 1 "$RUNS"); do
    for s in "${SERVERS[@]}"; do
        read -r m1 i1 < <(one "$s" "$LOW")
        read -r m2 i2 < <(one "$s" "$HIGH")
        per=$(( (i2 - i1) / (m2 - m1) ))
        echo "run $run  $s  $per instructions/message  ($m1 msgs: $i1, $m2 msgs: $i2)"
        ALL[$s]="${ALL[$s]:-} $per"
        RUNS_ALL[$run,$s]=$per
    done
    if [ -n "${RUNS_ALL[$run,shipped]:-}" ] && [ -n "${RUNS_ALL[$run,notimeout]:-}" ]; then
        echo "run $run  shipped / no timeout: $(python3 -c "print(f'{${RUNS_ALL[$run,shipped]}/${RUNS_ALL[$run,notimeout]}:.3f}')")"
    fi
done
echo
declare -A MIN MAX
for s in "${SERVERS[@]}"; do
    read -r -a v <<<"${ALL[$s]}"
    lo=${v[0]} hi=${v[0]}
    for x in "${v[@]}"; do ((x < lo)) && lo=$x; ((x > hi)) && hi=$x; done
    MIN[$s]=$lo MAX[$s]=$hi
    echo "$s: min $lo  max $hi  (all:${ALL[$s]})"
done
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
[ -n "${MIN[tokio]:-}" ] && [ -n "${MIN[floor-epoll]:-}" ] && [ -n "${MIN[shipped]:-}" ] && [ -n "${MIN[notimeout]:-}" ] || exit 0
echo
echo "shipped / tokio:        $(ratio "${MIN[shipped]}" "${MAX[tokio]}") .. $(ratio "${MAX[shipped]}" "${MIN[tokio]}")   (goal <= 0.6)"
echo "shipped / floor (epoll): $(ratio "${MIN[shipped]}" "${MAX[floor-epoll]}") .. $(ratio "${MAX[shipped]}" "${MIN[floor-epoll]}")   (goal <= 1.5)"
echo "shipped / no timeout:   $(ratio "${MIN[shipped]}" "${MAX[notimeout]}") .. $(ratio "${MAX[shipped]}" "${MIN[notimeout]}")   (goal <= 1.10; the same run's pair above)"
