#!/usr/bin/env bash
# The `hook` feature's cost: an echo server written with plain std::net types
# under the hooks (examples/std_echo_server.rs) vs the same server on
# tasklet::netio (examples/echo_server.rs), both built with --features hook,
# same load generator, same core pinning, interleaved in the same run.
#
#   bash benches/hook_echo.sh              # 3 interleaved repetitions
#   REPS=5 ROWS="100:1000:64" bash benches/hook_echo.sh
#
# The "ratio" columns are netio / std+hook: a rt/CPU-s ratio of 1.10 means
# the hooked std server spends 10 % more server CPU per round trip.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=std_echo_server PEER_LABEL=std+hook FEATURES=hook exec bash benches/echo_compare.sh
