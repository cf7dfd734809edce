#!/usr/bin/env bash
# HTTPS server comparison: tasklet `http_hello --tls-cert/--tls-key`
# (netio::tls on rustls, ring) vs `hyper_tls_hello` (hyper 1 + tokio-rustls,
# ring, tokio current-thread), same certificate (ECDSA P-256), same wrk
# load (HTTPS keep-alive: one handshake per connection, then requests), same
# core pinning, same run.
#
#   bash benches/tls_compare.sh                    # 3 interleaved repetitions
#   REPS=5 DUR=5 CONNS="10 100" bash benches/tls_compare.sh
#
# Server on core 0, wrk on core 1. Reports requests per second (wrk) and
# requests per server CPU-second (the server's utime+stime from
# /proc/<pid>/stat over wrk's run), median and range over REPS runs; the two
# servers alternate within each repetition.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DUR=${DUR:-3}
CONNS=${CONNS:-"10 100"}
TARGET=${CARGO_TARGET_DIR:-target}
EX="$TARGET/release/examples"
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}

for tool in wrk openssl; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: installing it (apt-get install -y $tool)" >&2
        apt-get install -y "$tool" >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y "$tool" >/dev/null; }
    fi
done
cargo build --release --quiet --features tls --example http_hello --example hyper_tls_hello

TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
TLS=(--tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem")
TCK=$(getconf CLK_TCK)

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_port() {
    for _ in $(seq 1 200); do
        kill -0 "$2" 2>/dev/null || { echo "server for port $1 exited" >&2; return 1; }
        port_busy "$1" && return 0
        sleep 0.05
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

PORT=${BASE_PORT:-18700}
# run SERVER_BIN CONNS -> "req_per_s req_per_cpu_s"
run() {
    set +e
    local bin=$1 conns=$2
    PORT=$((PORT + 1))
    while port_busy "$PORT"; do PORT=$((PORT + 1)); done
    RUST_LOG=warn taskset -c "$SERVER_CORE" "$EX/$bin" --addr "127.0.0.1:$PORT" "${TLS[@]}" \
        >/dev/null 2>&1 &
    local pid=$!
    wait_port "$PORT" "$pid" || { kill "$pid" 2>/dev/null; echo "0 0"; return; }
    local c0 c1 out
    c0=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CORE" wrk -t1 -c"$conns" -d"${DUR}s" "https://127.0.0.1:$PORT/")
    c1=$(cpu_ticks "$pid")
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
        echo "warning: $bin: $(grep 'Non-2xx\|Socket errors' <<<"$out")" >&2
    fi
    local total rps
    total=$(awk '/requests in/ { print $1 }' <<<"$out")
    rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
    awk -v n="$total" -v rps="$rps" -v t=$((c1 - c0)) -v hz="$TCK" \
        'BEGIN { if (t < 1) t = 1; printf "%d %d\n", rps, n / (t / hz) }'
}

# "median (min–max)" of the numbers on stdin
stats() { sort -n | awk '{ a[NR] = $1 } END { printf "%d (%d–%d)", a[int((NR + 1) / 2)], a[1], a[NR] }'; }
med() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "# https: http_hello --tls (tasklet + netio::tls) vs hyper_tls_hello (tokio current-thread + hyper + tokio-rustls)"
echo "# wrk -t1 ${DUR}s keep-alive, $REPS reps, server core $SERVER_CORE, wrk core $CLIENT_CORE"
echo "# $(uname -sr), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| wrk conns | tasklet req/s | hyper req/s | ratio | tasklet req/CPU-s | hyper req/CPU-s | ratio (per rep) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for conns in $CONNS; do
    ta=() tc=() ka=() kc=() rc=()
    for _ in $(seq 1 "$REPS"); do
        read -r a c < <(run http_hello "$conns")
        read -r b d < <(run hyper_tls_hello "$conns")
        ta+=("$a") tc+=("$c") ka+=("$b") kc+=("$d")
        rc+=("$(awk -v c="$c" -v d="$d" 'BEGIN { printf "%.2f", (d > 0 ? c / d : 0) }')")
    done
    awk -v r="$conns" \
        -v a="$(printf '%s\n' "${ta[@]}" | stats)" -v b="$(printf '%s\n' "${ka[@]}" | stats)" \
        -v ra="$(printf '%s\n' "${ta[@]}" | med)" -v rb="$(printf '%s\n' "${ka[@]}" | med)" \
        -v c="$(printf '%s\n' "${tc[@]}" | stats)" -v d="$(printf '%s\n' "${kc[@]}" | stats)" \
        -v rc="$(printf '%s\n' "${tc[@]}" | med)" -v rd="$(printf '%s\n' "${kc[@]}" | med)" \
        -v per="${rc[*]}" \
        'BEGIN { printf "| %s | %s | %s | %.2f | %s | %s | %.2f (%s) |\n", r, a, b, ra / rb, c, d, rc / rd, per }'
done
