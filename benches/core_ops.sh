#!/bin/sh
# Instructions per core operation (switch, spawn+join, channel round trip)
# from callgrind over two runs of benches/core_ops.rs (N = 10k and 110k):
# (count at 110k - count at 10k) / 100k, so start-up and teardown cancel out.
# Deterministic (user-space instructions), so it holds on a loaded machine.
# Needs valgrind (apt-get install valgrind).
# The cross-worker cases (xchannel, xspawn, xspawn1000 and tokio's
# tokio_xspawn, tokio_xspawn1000) count both threads, over N = 10k and 50k.
# Usage: [CASES="xchannel xspawn1000"] benches/core_ops.sh [PATH-TO-core_ops-BINARY]
set -eu
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
    cargo bench --bench core_ops --no-run --message-format=json 2>/dev/null >/tmp/core_ops.$$.json
    bin=$(grep -o '"executable":"[^"]*core_ops[^"]*"' /tmp/core_ops.$$.json | tail -1 | cut -d'"' -f4)
    rm -f /tmp/core_ops.$$.json
fi
count() { # case n
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for case in ${CASES:-switch spawn_join channel xchannel xspawn xspawn1000 tokio_xspawn tokio_xspawn1000}; do
    case $case in
    x* | tokio_x*) n=50000 ;;
    *) n=110000 ;;
    esac
    a=$(count "$case" 10000)
    b=$(count "$case" $n)
    d=$((n - 10000))
    echo "$case: $(( (b - a) / d )).$(( (b - a) % d * 10 / d )) instructions per operation"
done
