# Shared by bench/echo-ir.sh and bench/echo-syscalls.sh (sourced, not run): builds the example
# and the compare bench, and defines where they are and how the load is made.
#
# Sets: T (target dir), B (the compare bench binary), SERVER (the echo_server to measure:
# $ECHO_SERVER, or the build made here), OUT (a scratch directory removed on exit).
# Defines: port_free (a free local port), load PORT TRIPS (the compare bench's load generator
# on CPU 1: $CONNS connections × TRIPS round trips of 64 B; prints the round trips done).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T=${CARGO_TARGET_DIR:-target}
[ -n "${ECHO_SERVER:-}" ] || cargo build -q --release --example echo_server
cargo bench -q -p tasklets-bench --bench compare --no-run 2>/dev/null
B=$(find "$T"/release/deps -maxdepth 1 -type f -executable -name 'compare-*' -printf '%T@ %p\n' | sort -rn | head -1 | cut -d" " -f2)
SERVER=${ECHO_SERVER:-$T/release/examples/echo_server}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

port_free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

load() {
    "$B" --child echo-ir tasklet cpus=1 role=client port="$1" conns="$CONNS" size=64 \
        warm_ms=0 window_ms=0 trips="$2" | tr ' ' '\n' | sed -n 's/^round_trips=//p'
}
