#!/usr/bin/env bash
# http_hello on all cores: --workers 2 vs --workers 1, beside hyper on tokio's
# multi-thread runtime with 2 workers, same wrk load, same run.
#
#   bash benches/cores_http.sh                 # 3 interleaved repetitions
#   REPS=5 WORK_US=50 DUR=5 bash benches/cores_http.sh
#
# Every request burns WORK_US µs of CPU in the server (`--work-us`, default
# 50) so that the server, not wrk, is what runs out of CPU on a small
# machine. Servers and wrk are not pinned: the servers' workers spread over
# the cores (as they would in production) and wrk takes what is left; the
# configurations alternate within each repetition. Prints medians and the
# spread (min..max) of req/s. hyper with one worker is the scaling peer:
# with wrk on the same two cores, hyper's own 2-vs-1 ratio shows how much
# a second worker can give on this machine at that moment.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DUR=${DUR:-3}
CONNS=${CONNS:-64}
WORK_US=${WORK_US:-50}
TARGET=${CARGO_TARGET_DIR:-target}
EX="$TARGET/release/examples"

if ! command -v wrk >/dev/null; then
    echo "wrk not found: installing it (apt-get install -y wrk)" >&2
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
cargo build --release --quiet --example http_hello --example hyper_hello

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    for _ in $(seq 1 200); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "server for port $1 exited" >&2
            return 1
        fi
        if port_busy "$1"; then return 0; fi
        sleep 0.05
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

PORT=${BASE_PORT:-18700}
# run_http PORT BIN ARGS... -> req/s
run_http() {
    set +e
    local port=$1 bin=$2
    shift 2
    while port_busy "$port"; do port=$((port + 1000)); done
    RUST_LOG=warn "$EX/$bin" --addr "127.0.0.1:$port" --work-us "$WORK_US" "$@" >/dev/null 2>&1 &
    local pid=$!
    wait_port "$port" "$pid" || { kill "$pid" 2>/dev/null; echo 0; return; }
    local out
    out=$(wrk -t2 -c"$CONNS" -d"${DUR}s" "http://127.0.0.1:$port/")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk '/Requests\/sec/ { printf "%d\n", $2 }' <<<"$out"
}

stats() { sort -n | awk '{ a[NR] = $1 } END { printf "%d %d %d\n", a[int((NR + 1) / 2)], a[1], a[NR] }'; }

echo "# http on all cores: wrk -t2 -c$CONNS -d${DUR}s, --work-us $WORK_US, $REPS reps"
echo "# $(uname -sr), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
t1=() t2=() h1=() h2=()
for _ in $(seq 1 "$REPS"); do
    PORT=$((PORT + 3))
    t1+=("$(run_http "$PORT" http_hello --workers 1)")
    t2+=("$(run_http $((PORT + 1)) http_hello --workers 2)")
    h2+=("$(run_http $((PORT + 2)) hyper_hello --workers 2)")
    h1+=("$(run_http $((PORT + 3)) hyper_hello --workers 1)")
    PORT=$((PORT + 1))
done
read -r m1 lo1 hi1 < <(printf '%s\n' "${t1[@]}" | stats)
read -r m2 lo2 hi2 < <(printf '%s\n' "${t2[@]}" | stats)
read -r mh loh hih < <(printf '%s\n' "${h2[@]}" | stats)
read -r mh1 loh1 hih1 < <(printf '%s\n' "${h1[@]}" | stats)
echo
echo "| server | req/s (median) | spread |"
echo "|---|---:|---|"
echo "| http_hello --workers 1 | $m1 | $lo1 .. $hi1 |"
echo "| http_hello --workers 2 | $m2 | $lo2 .. $hi2 |"
echo "| hyper_hello (tokio multi-thread, 2 workers) | $mh | $loh .. $hih |"
echo "| hyper_hello (tokio multi-thread, 1 worker) | $mh1 | $loh1 .. $hih1 |"
echo
awk -v a="$m2" -v b="$m1" -v c="$mh" -v d="$mh1" 'BEGIN {
    printf "tasklet 2 workers / 1 worker: %.2fx (goal >= 1.7)\n", a / b
    printf "tasklet 2 workers / tokio multi-thread 2 workers: %.2fx (goal >= 1.0)\n", a / c
    printf "peer: hyper 2 workers / 1 worker: %.2fx\n", c / d
}'
