#!/bin/sh
# Instructions per core operation (switch, spawn+join, channel round trip)
# from callgrind over two runs of benches/core_ops.rs (N = 10k and 110k):
# (count at 110k - count at 10k) / 100k, so start-up and teardown cancel out.
# Deterministic (user-space instructions), so it holds on a loaded machine.
# Needs valgrind (apt-get install valgrind).
# Usage: benches/core_ops.sh [PATH-TO-core_ops-BINARY]
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
for case in switch spawn_join channel; do
    a=$(count "$case" 10000)
    b=$(count "$case" 110000)
    echo "$case: $(( (b - a) / 100000 )).$(( (b - a) % 100000 / 10000 )) instructions per operation"
done
