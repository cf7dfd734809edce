#!/usr/bin/env bash
# Echo (and HTTP) server comparison: tasklet vs tokio current-thread, same
# load generator, same core pinning, same run.
#
#   bash benches/echo_compare.sh            # echo rows, 3 interleaved repetitions
#   REPS=5 bash benches/echo_compare.sh
#   HTTP=1 bash benches/echo_compare.sh     # also http_hello vs hyper under wrk
#   PEER=std_echo_server PEER_LABEL=std+hook FEATURES=hook bash benches/echo_compare.sh
#                                           # another peer server (benches/hook_echo.sh)
#
# Server on core 0, load generator (the echo_client example, itself a
# tasklet program, or wrk) on core 1. Reports round trips per second (from
# the client) and round trips per server CPU-second (the server's own
# utime+stime from /proc/<pid>/stat over the client's run). Medians over
# REPS runs; the two servers alternate within each repetition.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
EX="$TARGET/release/examples"
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}

PEER=${PEER:-tokio_echo_server}
PEER_LABEL=${PEER_LABEL:-tokio}
examples=(--example echo_server --example echo_client --example "$PEER")
if [[ "${HTTP:-0}" == 1 ]]; then
    examples+=(--example http_hello --example hyper_hello)
fi
cargo build --release --quiet ${FEATURES:+--features "$FEATURES"} "${examples[@]}"

TCK=$(getconf CLK_TCK)

# Never leave a server behind (an interrupted run would hold its port).
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# Pick a base port with nothing listening on the next 100 ports' first one.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Waits until server $2 accepts on 127.0.0.1:$1 (fails if it exited).
wait_port() {
    for _ in $(seq 1 200); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "server for port $1 exited (port in use?)" >&2
            return 1
        fi
        if port_busy "$1"; then return 0; fi
        sleep 0.05
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

PORT=${BASE_PORT:-18500}
while port_busy "$PORT" || port_busy $((PORT + 1)); do PORT=$((PORT + 100)); done
# run_echo SERVER_BIN CONNS MESSAGES SIZE PORT -> "rtps rt_per_cpu_s"
run_echo() {
    set +e
    local bin=$1 conns=$2 msgs=$3 size=$4 PORT=$5
    while port_busy "$PORT"; do PORT=$((PORT + 1000)); done
    RUST_LOG=warn taskset -c "$SERVER_CORE" "$EX/$bin" --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
    local pid=$!
    wait_port "$PORT" "$pid" || { kill "$pid" 2>/dev/null; echo "0 0"; return; }
    local c0 c1 out
    c0=$(cpu_ticks "$pid")
    out=$(RUST_LOG=warn taskset -c "$CLIENT_CORE" "$EX/echo_client" --addr "127.0.0.1:$PORT" \
        --conns "$conns" --messages "$msgs" --size "$size" | grep '^RESULT')
    c1=$(cpu_ticks "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local rt rtps
    rt=$(sed 's/.*round_trips=\([0-9]*\).*/\1/' <<<"$out")
    rtps=$(sed 's/.*rtps=\([0-9]*\).*/\1/' <<<"$out")
    awk -v rt="$rt" -v rtps="$rtps" -v t=$((c1 - c0)) -v hz="$TCK" \
        'BEGIN { if (t < 1) t = 1; printf "%d %d\n", rtps, rt / (t / hz) }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "# echo: tasklet echo_server vs $PEER, $REPS reps, server core $SERVER_CORE, client core $CLIENT_CORE"
echo "# $(uname -sr), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| conns x size | tasklet rt/s | $PEER_LABEL rt/s | ratio | tasklet rt/CPU-s | $PEER_LABEL rt/CPU-s | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
ROWS=${ROWS:-"1:20000:64 100:1000:64 1000:100:64 100:1000:4096"}
for row in $ROWS; do
    IFS=: read -r conns msgs size <<<"$row"
    ta=() tc=() ka=() kc=()
    for _ in $(seq 1 "$REPS"); do
        PORT=$((PORT + 2))
        read -r a c < <(run_echo echo_server "$conns" "$msgs" "$size" "$PORT")
        ta+=("$a") tc+=("$c")
        read -r a c < <(run_echo "$PEER" "$conns" "$msgs" "$size" $((PORT + 1)))
        ka+=("$a") kc+=("$c")
    done
    mta=$(printf '%s\n' "${ta[@]}" | median)
    mtc=$(printf '%s\n' "${tc[@]}" | median)
    mka=$(printf '%s\n' "${ka[@]}" | median)
    mkc=$(printf '%s\n' "${kc[@]}" | median)
    awk -v r="$conns x $size B" -v a="$mta" -v b="$mka" -v c="$mtc" -v d="$mkc" \
        'BEGIN { printf "| %s | %d | %d | %.2f | %d | %d | %.2f |\n", r, a, b, a / b, c, d, c / d }'
done

if [[ "${HTTP:-0}" == 1 ]]; then
    if ! command -v wrk >/dev/null; then
        echo "wrk not found: installing it (apt-get install -y wrk)" >&2
        apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    fi
    DUR=${DUR:-5}
    # run_http SERVER_BIN CONNS PORT -> "req_per_s req_per_cpu_s"
    run_http() {
        set +e
        local bin=$1 conns=$2 PORT=$3
        while port_busy "$PORT"; do PORT=$((PORT + 1000)); done
        RUST_LOG=warn taskset -c "$SERVER_CORE" "$EX/$bin" --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
        local pid=$!
        wait_port "$PORT" "$pid" || { kill "$pid" 2>/dev/null; echo "0 0"; return; }
        local c0 c1 out
        c0=$(cpu_ticks "$pid")
        out=$(taskset -c "$CLIENT_CORE" wrk -t1 -c"$conns" -d"${DUR}s" "http://127.0.0.1:$PORT/")
        c1=$(cpu_ticks "$pid")
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        local total rps
        total=$(awk '/requests in/ { print $1 }' <<<"$out")
        rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
        awk -v n="$total" -v rps="$rps" -v t=$((c1 - c0)) -v hz="$TCK" \
            'BEGIN { if (t < 1) t = 1; printf "%d %d\n", rps, n / (t / hz) }'
    }
    echo
    echo "# http: http_hello (tasklet + httparse) vs hyper_hello (tokio current-thread + hyper), wrk -t1 ${DUR}s"
    echo
    echo "| wrk conns | tasklet req/s | hyper req/s | ratio | tasklet req/CPU-s | hyper req/CPU-s | ratio |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    HTTP_CONNS=${HTTP_CONNS:-10 100}
    for conns in $HTTP_CONNS; do
        ta=() tc=() ka=() kc=()
        for _ in $(seq 1 "$REPS"); do
            PORT=$((PORT + 2))
            read -r a c < <(run_http http_hello "$conns" "$PORT")
            ta+=("$a") tc+=("$c")
            read -r a c < <(run_http hyper_hello "$conns" $((PORT + 1)))
            ka+=("$a") kc+=("$c")
        done
        mta=$(printf '%s\n' "${ta[@]}" | median)
        mtc=$(printf '%s\n' "${tc[@]}" | median)
        mka=$(printf '%s\n' "${ka[@]}" | median)
        mkc=$(printf '%s\n' "${kc[@]}" | median)
        awk -v r="$conns" -v a="$mta" -v b="$mka" -v c="$mtc" -v d="$mkc" \
            'BEGIN { printf "| %s | %d | %d | %.2f | %d | %d | %.2f |\n", r, a, b, a / b, c, d, c / d }'
    done
fi
