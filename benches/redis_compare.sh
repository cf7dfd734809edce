#!/usr/bin/env bash
# mini_redis (the tasklet example) vs redis-server under redis-benchmark,
# same load, same core pinning, same run, interleaved.
#
#   bash benches/redis_compare.sh              # -P 1 and -P 16, 3 repetitions
#   REPS=5 N=200000 bash benches/redis_compare.sh
#
# Server on core 0 (taskset), redis-benchmark on core 1:
#   redis-benchmark -t ping,set,get,incr -c 50 -n $N -P {1,16}
# Reports, per server and pipeline depth, the ops/s redis-benchmark measures
# for each test (PING_INLINE, PING_MBULK, SET, GET, INCR) and the server's
# ops per CPU-second (its utime+stime from /proc/<pid>/stat over the whole
# redis-benchmark run, all five tests). Medians over REPS, with min-max.
# redis-server runs with persistence off (--save '' --appendonly no).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
N=${N:-200000}
CONNS=${CONNS:-50}
PIPELINES=${PIPELINES:-"1 16"}
TARGET=${CARGO_TARGET_DIR:-target}
EX="$TARGET/release/examples"
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "redis-server/redis-benchmark not found: installing redis-server redis-tools" >&2
    apt-get install -y redis-server redis-tools >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y redis-server redis-tools >/dev/null; }
fi
cargo build --release --quiet --example mini_redis

TCK=$(getconf CLK_TCK)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
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

PORT=${BASE_PORT:-18700}
TESTS="PING_INLINE PING_MBULK SET GET INCR"

# run SERVER PIPELINE PORT -> "ops_s_per_test... ops_per_cpu_s"
run() {
    set +e
    local server=$1 pipe=$2 PORT=$3
    while port_busy "$PORT"; do PORT=$((PORT + 1000)); done
    if [[ $server == mini_redis ]]; then
        RUST_LOG=warn taskset -c "$SERVER_CORE" "$EX/mini_redis" --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
    else
        taskset -c "$SERVER_CORE" redis-server --port "$PORT" --bind 127.0.0.1 --save '' \
            --appendonly no --daemonize no --loglevel warning >/dev/null 2>&1 &
    fi
    local pid=$!
    wait_port "$PORT" "$pid" || { kill "$pid" 2>/dev/null; echo "0 0 0 0 0 0"; return; }
    local c0 c1 out
    c0=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CORE" redis-benchmark -p "$PORT" -t ping,set,get,incr \
        -c "$CONNS" -n "$N" -P "$pipe" --csv 2>/dev/null)
    c1=$(cpu_ticks "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local row=()
    for t in $TESTS; do
        row+=("$(awk -F'"' -v t="$t" '$2 == t { printf "%d", $4 }' <<<"$out")")
    done
    local ntests=${#row[@]}
    awk -v n="$N" -v k="$ntests" -v t=$((c1 - c0)) -v hz="$TCK" -v r="${row[*]}" \
        'BEGIN { if (t < 1) t = 1; printf "%s %d\n", r, n * k / (t / hz) }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
spread() { sort -n | awk '{ a[NR] = $1 } END { printf "%d-%d", a[1], a[NR] }'; }

echo "# redis-benchmark -t ping,set,get,incr -c $CONNS -n $N; $REPS reps, server core $SERVER_CORE, client core $CLIENT_CORE"
echo "# $(uname -sr), $(nproc) cores, $(redis-server --version | cut -d' ' -f3), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| -P | server | PING_INLINE | PING_MBULK | SET | GET | INCR | ops per server CPU-s (min-max) |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
for pipe in $PIPELINES; do
    declare -A res=()
    for rep in $(seq 1 "$REPS"); do
        for server in mini_redis redis-server; do
            PORT=$((PORT + 1))
            res[$server,$rep]=$(run "$server" "$pipe" "$PORT")
        done
    done
    declare -A cpu_med=()
    for server in mini_redis redis-server; do
        cols=()
        for i in 1 2 3 4 5 6; do
            vals=$(for rep in $(seq 1 "$REPS"); do awk -v i="$i" '{ print $i }' <<<"${res[$server,$rep]}"; done)
            cols+=("$(median <<<"$vals")")
            if [[ $i == 6 ]]; then cpu_spread=$(spread <<<"$vals"); fi
        done
        cpu_med[$server]=${cols[5]}
        echo "| $pipe | $server | ${cols[0]} | ${cols[1]} | ${cols[2]} | ${cols[3]} | ${cols[4]} | ${cols[5]} ($cpu_spread) |"
    done
    awk -v a="${cpu_med[mini_redis]}" -v b="${cpu_med[redis-server]}" -v p="$pipe" \
        'BEGIN { if (b > 0) printf "| %s | **mini_redis / redis-server** | | | | | | **%.2f** |\n", p, a / b }'
    unset res cpu_med
done
