#!/usr/bin/env bash
# Runs the cross-thread tests under ThreadSanitizer, on nightly, with an
# instrumented standard library (-Zbuild-std), so that every atomic, lock and
# thread hand-off in std, crossbeam, mio and the runtime is seen. The runtime
# notices the TSan build (runtime/build.rs) and tells TSan about every tasklet
# switch: each tasklet runs as its own TSan fiber (runtime/src/tsan.rs). See
# docs/reliability.md, "ThreadSanitizer".
#
#   scripts/tsan.sh                           # the cross-thread set below
#   scripts/tsan.sh --no-fail-fast            # extra `cargo test` arguments
#   TSAN_TESTS="sync_channel offload" scripts/tsan.sh   # other test files
#
# The build goes to target/tsan (its own directory: instrumented and plain
# artifacts never mix). `--target` is given so RUSTFLAGS reach only the
# target's crates, not build scripts and proc macros.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=${TSAN_TOOLCHAIN:-nightly}
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
# -Zbuild-std compiles std from its sources.
if ! rustup component list --toolchain "$TOOLCHAIN" --installed | grep -q '^rust-src'; then
    rustup component add rust-src --toolchain "$TOOLCHAIN"
fi
TRIPLE=$(rustup run "$TOOLCHAIN" rustc -vV | sed -n 's/^host: //p')

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/tsan}
# Frame pointers: whole stack traces in reports at no real cost.
export RUSTFLAGS="-Zsanitizer=thread -Cforce-frame-pointers=yes${TSAN_RUSTFLAGS:+ $TSAN_RUSTFLAGS}"
# halt_on_error: the first race fails the test binary (exit code 66).
# second_deadlock_stack: both stacks of a lock-order inversion.
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

# The cross-thread tests: channels, events, semaphores and mutexes between
# threads and workers, RemoteUnparker and the hub's remote queue, the offload
# pool and fs, signals, Runtime / spawn_on / RemoteJoinHandle, block_on's
# wakers, the watchdog; the core's kill/timeout/panic/shutdown tests (every
# switch path the fiber annotations cover); and the runtime's unit tests
# (with the canary: a race through a tasklet must be reported).
# Left out: runtime_scale (100,000+ live tasklets: TSan maps a 512 KiB shadow
# stack per fiber and runs out of memory maps), the tests that run example
# binaries, and one adversarial test whose quadratic load of stale
# cross-thread wake-ups outruns its 10 s hang bound at TSan's speed.
TESTS=(${TSAN_TESTS:-
    sync_channel sync_primitives sync_select sync_parity sync_pool
    runtime_workers runtime_wakeups runtime_hub runtime_park_timers
    offload fs signal_queue netio_signals netio_crossthread
    interop_block_on watchdog observe
    runtime_semantics runtime_adversarial runtime_chaos runtime_kill_unstarted
})
args=(-p tasklet-runtime -p tasklet --lib)
for t in "${TESTS[@]}"; do args+=(--test "$t"); done
skip=(-- --skip stale_remote_wakes_from_other_threads_hit_reused_slots_harmlessly)
if [ -n "${TSAN_TESTS:-}" ]; then skip=(); fi

start=$(date +%s)
cargo "+$TOOLCHAIN" test -Zbuild-std --release --target "$TRIPLE" "${args[@]}" "$@" "${skip[@]}"
echo "tsan.sh: ThreadSanitizer run passed in $(( $(date +%s) - start )) s"
