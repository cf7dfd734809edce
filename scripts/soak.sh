#!/usr/bin/env bash
# Soak test: MINUTES (default 10) of connection churn against the
# echo_server and http_hello examples (64 client tasklets connecting,
# exchanging 1-8 messages, then closing, half-closing, resetting or
# abandoning a half-written request), sampling both servers' RSS and
# descriptor count into a CSV. Passes if, after a warm-up of a tenth of the
# run, the last quarter's medians are within bounds of the first quarter's
# (RSS +10 % or +2 MiB, descriptors +16): flat.
#
#   scripts/soak.sh                  # 10 minutes
#   MINUTES=1 scripts/soak.sh        # a quick one
#   SOAK_CSV=/tmp/soak.csv SOAK_PAUSE_MS=0 scripts/soak.sh
#
# The driver is the ignored test `soak_long` in tests/fault_load.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-10}
SECONDS_TOTAL=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
CSV=${SOAK_CSV:-target/soak/soak-$(date -u +%Y%m%dT%H%M%SZ).csv}
mkdir -p "$(dirname "$CSV")"
cargo build --release --examples
echo "soak: ${MINUTES} min of churn; samples -> $CSV" >&2
SOAK_SECONDS=$SECONDS_TOTAL SOAK_CSV=$CSV \
    cargo test --release -p tasklet --test fault_load -- --ignored --exact soak_long --nocapture
echo "soak: samples in $CSV" >&2
