#!/usr/bin/env bash
# Two echo_server processes behind HAProxy on loopback, and traffic through it.
#
#   bash examples/deploy/run.sh
#   CONNS=200 MESSAGES=2000 bash examples/deploy/run.sh
#
# Installs HAProxy with apt-get if it is missing (needs root or sudo), builds
# the examples, starts two `echo_server --workers 1` processes on free
# loopback ports, HAProxy on a third port in front of them (haproxy.cfg), and
# runs the `echo_client` load generator through HAProxy, which checks every
# echoed byte. Then it shows how the connections were spread, stops one
# backend, shows that traffic keeps flowing to the other, and cleans up
# (every process it started is stopped on exit).
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNS=${CONNS:-100}
MESSAGES=${MESSAGES:-500}
SIZE=${SIZE:-64}
TARGET=${CARGO_TARGET_DIR:-target}
EX="$TARGET/release/examples"
DIR=$(mktemp -d)

if ! command -v haproxy >/dev/null; then
    echo "== installing haproxy"
    SUDO=""
    if [[ $(id -u) != 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy >/dev/null
fi
haproxy -v | head -1

echo "== building the examples"
cargo build --release --quiet --example echo_server --example echo_client

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

port_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A loopback port nothing listens on (and none of ours took).
taken=" "
free_port() {
    local p
    while :; do
        # Below the ephemeral range (32768+), where outgoing connections take ports.
        p=$((12000 + RANDOM % 20000))
        if [[ $taken != *" $p "* ]] && ! port_up "$p"; then
            taken+="$p "
            echo "$p"
            return
        fi
    done
}
wait_port() {
    for _ in $(seq 1 200); do
        if port_up "$1"; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

export FRONT_PORT BACKEND1_PORT BACKEND2_PORT
BACKEND1_PORT=$(free_port); taken+="$BACKEND1_PORT "
BACKEND2_PORT=$(free_port); taken+="$BACKEND2_PORT "
FRONT_PORT=$(free_port)

echo "== two echo servers on ports $BACKEND1_PORT and $BACKEND2_PORT"
for i in 1 2; do
    port_var="BACKEND${i}_PORT"
    RUST_LOG=info "$EX/echo_server" --addr "127.0.0.1:${!port_var}" --workers 1 \
        2>"$DIR/echo$i.log" &
    pids+=($!)
    eval "echo${i}_pid=$!"
    wait_port "${!port_var}"
done

echo "== haproxy on port $FRONT_PORT"
haproxy -db -f examples/deploy/haproxy.cfg >"$DIR/haproxy.log" 2>&1 &
pids+=($!)
wait_port "$FRONT_PORT"
sleep 1.5 # let the first health checks mark both backends up

echo "== $CONNS connections x $MESSAGES messages of $SIZE bytes through haproxy"
RUST_LOG=warn "$EX/echo_client" --addr "127.0.0.1:$FRONT_PORT" \
    --conns "$CONNS" --messages "$MESSAGES" --size "$SIZE" | grep '^RESULT'

c1=$(grep -c ': connected' "$DIR/echo1.log" || true)
c2=$(grep -c ': connected' "$DIR/echo2.log" || true)
echo "connections served: echo1=$c1 echo2=$c2 (health checks included)"
if [[ $c1 -lt 2 || $c2 -lt 2 ]]; then
    echo "FAIL: one backend got no client connections" >&2
    exit 1
fi

echo "== stopping echo1 (SIGTERM): traffic goes to echo2"
# shellcheck disable=SC2154
kill -TERM "$echo1_pid"
wait "$echo1_pid" || { echo "FAIL: echo1 did not exit cleanly" >&2; exit 1; }
sleep 2.5 # the health check takes it out of the rotation
RUST_LOG=warn "$EX/echo_client" --addr "127.0.0.1:$FRONT_PORT" \
    --conns 20 --messages 100 --size "$SIZE" | grep '^RESULT'
echo "OK"
