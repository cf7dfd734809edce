#!/usr/bin/env bash
# Deterministic per-message cost of each echo server: user-space
# instructions and simulated cache misses per round trip, by callgrind,
# unmoved by the load on the machine (the companion of echo_compare.sh,
# whose wall-clock CPU figures are what the goal is judged on).
#
#   bash benches/echo_callgrind.sh
#   ROWS="1000:10:30:64" SERVERS="echo_server mio_echo_server" bash benches/echo_callgrind.sh
#
# Each row is CONNS:M1:M2:SIZE. Every server runs twice under
# `valgrind --tool=callgrind --cache-sim=yes` (pinned to one core, so
# echo_server runs one worker as in echo_compare.sh), counting only while
# the echo_client example runs, once with M1 and once with M2 messages per
# connection; the difference divided by CONNS x (M2 - M1) is the cost of one
# more round trip, with connection set-up, buffer allocation and shutdown
# cancelled out. The cache model: D1 48 KiB 12-way, LL 2 MiB 16-way (this
# machine's L1d and per-core L2; valgrind indexes by virtual address and
# does not see the kernel's own cache footprint, so misses are a lower
# bound). Kernel work is not counted at all: compare system calls with
# `strace -c` or perf tracepoints (it is one recvfrom + one sendto per
# message for every server here).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-"1:500:2500:64 100:50:150:64 1000:10:30:64 100:50:150:4096"}
read -r -a SERVERS <<<"${SERVERS:-echo_server mio_echo_server tokio_echo_server}"
TARGET=${CARGO_TARGET_DIR:-target}
EX="$TARGET/release/examples"
CORE=${SERVER_CORE:-0}

if ! command -v valgrind >/dev/null; then
    echo "valgrind not found: installing it (apt-get install -y valgrind)" >&2
    apt-get install -y valgrind >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }
fi
examples=(--example echo_client)
for s in "${SERVERS[@]}"; do
    if [[ -f "examples/$s.rs" ]]; then examples+=(--example "$s"); fi
done
cargo build --release --quiet "${examples[@]}"

WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${BASE_PORT:-18700}

# run SERVER CONNS MSGS SIZE OUT: one callgrind run, counting during the client's.
run() {
    local bin=$1 conns=$2 msgs=$3 size=$4 out=$5
    PORT=$((PORT + 1))
    while port_busy "$PORT"; do PORT=$((PORT + 1)); done
    RUST_LOG=warn taskset -c "$CORE" valgrind --tool=callgrind --instr-atstart=no \
        --cache-sim=yes --D1=49152,12,64 --LL=2097152,16,64 \
        --callgrind-out-file="$out" "$EX/$bin" --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do port_busy "$PORT" && break; sleep 0.05; done
    callgrind_control -i on "$pid" >/dev/null 2>&1
    RUST_LOG=warn "$EX/echo_client" --addr "127.0.0.1:$PORT" --conns "$conns" \
        --messages "$msgs" --size "$size" | grep -q '^RESULT' ||
        echo "$bin: the client failed ($conns x $msgs x $size B)" >&2
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# The summary line of a dump as "event=count" pairs.
totals() {
    awk '/^events:/ { for (i = 2; i <= NF; i++) ev[i] = $i }
         /^(summary|totals):/ { for (i = 2; i <= NF; i++) printf "%s=%s ", ev[i], $i; exit }' "$1"
}

echo "# echo, callgrind: per round trip, from the difference of two runs (M2 - M1 messages per connection)"
echo "# $(uname -sr), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| conns x size | server | instructions | D1 misses | LL misses |"
echo "|---|---|---:|---:|---:|"
for row in $ROWS; do
    IFS=: read -r conns m1 m2 size <<<"$row"
    for s in "${SERVERS[@]}"; do
        run "$s" "$conns" "$m1" "$size" "$WORK/a"
        run "$s" "$conns" "$m2" "$size" "$WORK/b"
        awk -v a="$(totals "$WORK/a.1")" -v b="$(totals "$WORK/b.1")" \
            -v n=$((conns * (m2 - m1))) -v label="$conns x $size B" -v s="$s" 'BEGIN {
                split(a, x, " "); for (i in x) { split(x[i], kv, "="); A[kv[1]] = kv[2] }
                split(b, y, " "); for (i in y) { split(y[i], kv, "="); B[kv[1]] = kv[2] }
                ir = (B["Ir"] - A["Ir"]) / n
                d1 = (B["D1mr"] + B["D1mw"] - A["D1mr"] - A["D1mw"]) / n
                ll = (B["DLmr"] + B["DLmw"] - A["DLmr"] - A["DLmw"]) / n
                printf "| %s | %s | %.0f | %.2f | %.2f |\n", label, s, ir, d1, ll
            }'
        rm -f "$WORK"/a* "$WORK"/b*
    done
done
