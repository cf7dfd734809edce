#!/usr/bin/env bash
# Echo (and HTTP) server comparison: tasklet's echo_server vs a hand-written
# mio loop and tokio current-thread, same load generator, same core pinning,
# interleaved in the same run.
#
#   bash benches/echo_compare.sh            # echo rows, 5 interleaved passes
#   REPS=7 bash benches/echo_compare.sh
#   ROWS="100:1000:64" bash benches/echo_compare.sh
#   CALLGRIND=1 bash benches/echo_compare.sh  # + user instructions per round trip
#   HTTP=1 bash benches/echo_compare.sh     # also http_hello vs hyper under wrk
#   PEER=std_echo_server PEER_LABEL=std+hook FEATURES=hook bash benches/echo_compare.sh
#                                           # one other peer server (benches/hook_echo.sh)
#
# Server on core 0, load generator (the echo_client example, itself a
# tasklet program, or wrk) on core 1. Each pass runs every server once, in
# a rotating order; a pass's ratios compare servers measured minutes apart
# at most, so the machine's drift between passes cancels out. Reported per
# row: server CPU per round trip (the server's own CPU time over the
# client's run — `perf stat` task-clock, or utime+stime from /proc in 10 ms
# ticks without perf — divided by the round trips), round trips per second
# (from the client), each as median [min – max] over the passes, and the
# median [min – max] of the per-pass ratios. Ratios are peer CPU ÷ tasklet
# CPU per round trip (> 1: tasklet spends less) and tasklet ÷ peer round
# trips/s (> 1: tasklet faster).
#
# Instruction counts: where the CPU exposes counters to perf,
# `perf stat -e instructions:u,instructions:k -p <server>` adds user and
# kernel instructions per round trip. Virtual machines often have no PMU;
# CALLGRIND=1 then runs each server once more per row under
# `valgrind --tool=callgrind` (pinned to the server core, so echo_server runs
# one worker as in the timed runs; counting only during the client's run) for
# user-space instructions per round trip, which no load on the machine
# moves (benches/echo_callgrind.sh gives the marginal cost of one more round
# trip, with cache misses) (the kernel side is the same system calls for every server: check
# with `strace -c -p <server>`).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
TARGET=${CARGO_TARGET_DIR:-target}
EX="$TARGET/release/examples"
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}

# "binary:label" of every server; the first is ours, the others its peers.
# SERVERS="echo_server:new echo_server_old:old" compares builds: binaries
# that are not examples of this tree must already be in $EX.
if [[ -n "${SERVERS:-}" ]]; then
    read -r -a SERVERS <<<"$SERVERS"
elif [[ -n "${PEER:-}" ]]; then
    SERVERS=("echo_server:tasklet" "$PEER:${PEER_LABEL:-$PEER}")
else
    SERVERS=("echo_server:tasklet" "mio_echo_server:mio" "tokio_echo_server:tokio")
fi
examples=(--example echo_client)
for s in "${SERVERS[@]}"; do
    if [[ -f "examples/${s%%:*}.rs" ]]; then examples+=(--example "${s%%:*}"); fi
done
if [[ "${HTTP:-0}" == 1 ]]; then
    examples+=(--example http_hello --example hyper_hello)
fi
cargo build --release --quiet ${FEATURES:+--features "$FEATURES"} "${examples[@]}"

TCK=$(getconf CLK_TCK)

# CPU time and instruction counters from perf where it works.
PERF_EVENTS=""
if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
    PERF_EVENTS=task-clock
    if perf stat -x, -e instructions:u,instructions:k true 2>&1 >/dev/null |
        grep -q '^[0-9]*,,instructions:u'; then
        PERF_EVENTS+=",instructions:u,instructions:k"
    fi
fi
if [[ "${CALLGRIND:-0}" == 1 ]] && ! command -v valgrind >/dev/null; then
    echo "valgrind not found: installing it (apt-get install -y valgrind)" >&2
    apt-get install -y valgrind >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }
fi

WORK=$(mktemp -d)
# Never leave a server behind (an interrupted run would hold its port).
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Waits until server $2 accepts on 127.0.0.1:$1 (fails if it exited).
wait_port() {
    for _ in $(seq 1 600); do
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
while port_busy "$PORT"; do PORT=$((PORT + 100)); done
next_port() {
    PORT=$((PORT + 1))
    while port_busy "$PORT"; do PORT=$((PORT + 1)); done
}

# The run_* functions serve on $PORT: call next_port first (in this shell,
# not in the subshell that reads their output).
# run_echo SERVER_BIN CONNS MESSAGES SIZE
#   -> "rtps cpu_us_per_rt instr_u_per_rt instr_k_per_rt" ("-" where unknown)
run_echo() {
    set +e
    local bin=$1 conns=$2 msgs=$3 size=$4
    RUST_LOG=warn taskset -c "$SERVER_CORE" "$EX/$bin" --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
    local pid=$!
    wait_port "$PORT" "$pid" || { kill "$pid" 2>/dev/null; echo "0 - - -"; return; }
    local c0 c1 out perf_pid=""
    if [[ -n "$PERF_EVENTS" ]]; then
        perf stat -x, -e "$PERF_EVENTS" -p "$pid" -o "$WORK/perf" 2>/dev/null &
        perf_pid=$!
        sleep 0.2 # perf attaches
    fi
    c0=$(cpu_ticks "$pid")
    out=$(RUST_LOG=warn taskset -c "$CLIENT_CORE" "$EX/echo_client" --addr "127.0.0.1:$PORT" \
        --conns "$conns" --messages "$msgs" --size "$size" | grep '^RESULT')
    c1=$(cpu_ticks "$pid")
    if [[ -n "$perf_pid" ]]; then
        kill -INT "$perf_pid" 2>/dev/null
        wait "$perf_pid" 2>/dev/null
    fi
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local rt rtps
    rt=$(sed 's/.*round_trips=\([0-9]*\).*/\1/' <<<"$out")
    rtps=$(sed 's/.*rtps=\([0-9]*\).*/\1/' <<<"$out")
    if [[ -z "$rt" || "$rt" == 0 ]]; then
        echo "$bin: the client failed ($conns x $msgs x $size B)" >&2
        echo "0 - - -"
        return
    fi
    local clock="" iu="" ik=""
    if [[ -n "$perf_pid" && -s "$WORK/perf" ]]; then
        clock=$(awk -F, '$3 == "task-clock" { print $1 }' "$WORK/perf")
        iu=$(awk -F, '$3 ~ /^instructions:u/ && $1 ~ /^[0-9]/ { print $1 }' "$WORK/perf")
        ik=$(awk -F, '$3 ~ /^instructions:k/ && $1 ~ /^[0-9]/ { print $1 }' "$WORK/perf")
    fi
    # task-clock is in ms; the /proc fallback in ticks. The client's run
    # is what perf saw, minus its attach (an idle server spends nothing).
    awk -v rt="$rt" -v rtps="$rtps" -v clock="$clock" -v t=$((c1 - c0)) -v hz="$TCK" \
        -v iu="$iu" -v ik="$ik" 'BEGIN {
            cpu_s = clock != "" ? clock / 1000 : (t < 1 ? 1 : t) / hz
            printf "%d %.3f %s %s\n", rtps, cpu_s * 1e6 / rt,
                iu != "" ? sprintf("%.0f", iu / rt) : "-",
                ik != "" ? sprintf("%.0f", ik / rt) : "-"
        }'
}

# callgrind_run SERVER_BIN CONNS MESSAGES SIZE -> user instructions per round trip
callgrind_run() {
    set +e
    local bin=$1 conns=$2 msgs=$3 size=$4
    rm -f "$WORK"/cg.out*
    RUST_LOG=warn taskset -c "$SERVER_CORE" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$WORK/cg.out" "$EX/$bin" --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
    local pid=$!
    wait_port "$PORT" "$pid" || { kill "$pid" 2>/dev/null; echo "-"; return; }
    callgrind_control -i on "$pid" >/dev/null 2>&1
    local out
    out=$(RUST_LOG=warn taskset -c "$CLIENT_CORE" "$EX/echo_client" --addr "127.0.0.1:$PORT" \
        --conns "$conns" --messages "$msgs" --size "$size" | grep '^RESULT')
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local rt
    rt=$(sed 's/.*round_trips=\([0-9]*\).*/\1/' <<<"$out")
    # The dump made at the end of the client's run (the final one at exit
    # holds only the shutdown).
    cat "$WORK"/cg.out.1 2>/dev/null | awk -v rt="${rt:-0}" '
        /^summary:/ { s += $2 } /^totals:/ { t += $2 }
        END { n = s ? s : t; if (rt > 0 && n > 0) printf "%.0f\n", n / rt; else print "-" }'
}

# stats: reads numbers, prints "median [min – max]" ("-" for none).
stats() {
    sort -g | awk -v fmt="$1" '$1 != "-" && $1 != "" { a[++n] = $1 }
        END {
            if (!n) { print "-"; exit }
            m = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            printf fmt " [" fmt " – " fmt "]\n", m, a[1], a[n]
        }'
}

ours=${SERVERS[0]#*:}
echo "# echo: ${SERVERS[*]}; $REPS passes, server core $SERVER_CORE, client core $CLIENT_CORE"
echo "# $(uname -sr), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), CPU from ${PERF_EVENTS:-/proc ticks}"
echo "# cells: median [min – max] over the passes; ratios are computed per pass."
echo "# CPU ratio = peer CPU/rt ÷ $ours CPU/rt (> 1: $ours cheaper); rt/s ratio = $ours ÷ peer."
ROWS=${ROWS:-"1:20000:64 100:1000:64 1000:100:64 100:1000:4096"}
for row in $ROWS; do
    IFS=: read -r conns msgs size <<<"$row"
    declare -A rtps=() cpu=() iu=() ik=()
    for pass in $(seq 1 "$REPS"); do
        # Rotate the order so no server always runs first (or after the same one).
        n=${#SERVERS[@]}
        for i in $(seq 0 $((n - 1))); do
            s=${SERVERS[$(((i + pass) % n))]}
            next_port
            read -r a c u k < <(run_echo "${s%%:*}" "$conns" "$msgs" "$size")
            rtps[$s,$pass]=$a cpu[$s,$pass]=$c iu[$s,$pass]=$u ik[$s,$pass]=$k
        done
    done
    echo
    echo "## $conns conns x $size B, $msgs messages each"
    echo
    echo "| server | CPU µs / round trip | round trips / s | instr:u / rt | instr:k / rt |"
    echo "|---|---:|---:|---:|---:|"
    for s in "${SERVERS[@]}"; do
        c=$(for p in $(seq 1 "$REPS"); do echo "${cpu[$s,$p]}"; done | stats %.2f)
        r=$(for p in $(seq 1 "$REPS"); do echo "${rtps[$s,$p]}"; done | stats %.0f)
        u=$(for p in $(seq 1 "$REPS"); do echo "${iu[$s,$p]}"; done | stats %.0f)
        k=$(for p in $(seq 1 "$REPS"); do echo "${ik[$s,$p]}"; done | stats %.0f)
        echo "| ${s#*:} | $c | $r | $u | $k |"
    done
    echo
    echo "| $ours vs | CPU ratio (per pass) | rt/s ratio (per pass) |"
    echo "|---|---|---|"
    t=${SERVERS[0]}
    for s in "${SERVERS[@]:1}"; do
        cr=() rr=()
        for p in $(seq 1 "$REPS"); do
            cr+=("$(awk -v a="${cpu[$t,$p]}" -v b="${cpu[$s,$p]}" \
                'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.3f", b / a; else print "-" }')")
            rr+=("$(awk -v a="${rtps[$t,$p]}" -v b="${rtps[$s,$p]}" \
                'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.3f", a / b; else print "-" }')")
        done
        echo "| ${s#*:} | $(printf '%s\n' "${cr[@]}" | stats %.2f) ($(echo "${cr[@]}")) |" \
            "$(printf '%s\n' "${rr[@]}" | stats %.2f) ($(echo "${rr[@]}")) |"
    done
    if [[ "${CALLGRIND:-0}" == 1 ]]; then
        # Fewer messages: valgrind runs the server ~50x slower (but at least
        # 20 per connection, so that connection setup does not dominate).
        cmsgs=$(((msgs + 9) / 10))
        if ((cmsgs < 20)); then cmsgs=20; fi
        echo
        echo "callgrind, $conns x $cmsgs x $size B, user instructions per round trip (deterministic):"
        for s in "${SERVERS[@]}"; do
            next_port
            echo "- ${s#*:}: $(callgrind_run "${s%%:*}" "$conns" "$cmsgs" "$size")"
        done
    fi
    unset rtps cpu iu ik
done

if [[ "${HTTP:-0}" == 1 ]]; then
    if ! command -v wrk >/dev/null; then
        echo "wrk not found: installing it (apt-get install -y wrk)" >&2
        apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    fi
    DUR=${DUR:-5}
    median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
    # run_http SERVER_BIN CONNS -> "req_per_s req_per_cpu_s"
    run_http() {
        set +e
        local bin=$1 conns=$2
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
            next_port
            read -r a c < <(run_http http_hello "$conns")
            ta+=("$a") tc+=("$c")
            next_port
            read -r a c < <(run_http hyper_hello "$conns")
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
