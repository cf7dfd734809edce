#!/usr/bin/env bash
# Model checking of the runtime's cross-thread state machines with loom
# (docs/reliability.md, "Model checking"): the channel's send/receive
# hand-off, Event, Semaphore permit hand-over (runtime/tests/loom_sync.rs),
# the RemoteJoinHandle completion (runtime/src/remote/loom_tests.rs) and
# the hub's cross-thread wake-up handshake (runtime/src/hub/doorbell/loom_tests.rs).
#
# The production code is compiled with `--cfg loom`, which swaps its
# atomics, locks, Arc, UnsafeCell and thread parking for loom's
# (runtime/src/shim.rs). Each model prints how many executions loom
# explored. LOOM_MAX_PREEMPTIONS bounds the preemptions per execution
# (default 3 here, as in tokio's CI; the three-thread spin-lock models cap
# it at 1, see loom_sync.rs). A separate target directory keeps the normal
# build's cache intact.
#
# Usage: scripts/loom.sh [test-name-filter]
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
filter="${1:-loom_}"
cargo test --release -p tasklet-runtime --test loom_sync -- --test-threads=1 --nocapture "$filter"
cargo test --release -p tasklet-runtime --lib -- --test-threads=1 --nocapture "$filter"
