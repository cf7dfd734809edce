#!/usr/bin/env bash
# Runs the whole test suite under AddressSanitizer (with LeakSanitizer), on
# nightly, with the `sanitizer` feature on so that corosensei announces every
# tasklet stack switch to ASan. See docs/reliability.md.
#
#   scripts/sanitize.sh                      # the whole workspace suite
#   scripts/sanitize.sh --test sync_channel  # extra arguments go to `cargo test`
#
# The build goes to target/asan (its own directory: sanitized and plain
# artifacts never mix). `--target` is given so RUSTFLAGS reach only the
# target's crates, not build scripts and proc macros; the tests that run the
# example binaries find them next to themselves, under
# target/asan/<triple>/release/examples, built by this same `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=${SANITIZE_TOOLCHAIN:-nightly}
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
TRIPLE=$(rustup run "$TOOLCHAIN" rustc -vV | sed -n 's/^host: //p')
# tests/mini_redis.rs runs the real redis-cli and redis-benchmark.
if ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-tools >/dev/null
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/asan}
# Frame pointers: whole stack traces in reports at no real cost.
export RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes"
export RUSTDOCFLAGS="$RUSTFLAGS"
# detect_leaks: LeakSanitizer at every process exit (tests and the example
# binaries they run). Nothing is suppressed (scripts/lsan.supp is empty):
# tasklets that `dispatch` abandons at exit are announced to LSan by the
# runtime itself (runtime/src/sanitizer.rs).
# detect_stack_use_after_return=0: with it on, every tasklet that runs an
# instrumented frame gets its own ASan "fake stack" (an mmap of 11 x its
# stack size rounded up to a power of two: 5.6 MiB of address space, tens of
# KiB resident), and corosensei 0.3.4 never lets ASan free it when the
# coroutine finishes (it passes a non-null fake_stack_save to
# __sanitizer_start_switch_fiber on its way out): every finished tasklet
# leaks one, so 200,000 spawn/join cycles grew RSS by 8 GB, servers under
# load grow without bound and a low RLIMIT_AS fails in ASan itself. Every
# other check stays on; stack-use-after-return is not detected.
# This machine's llvm-symbolizer cannot symbolize the binaries (and cannot be
# forked once fake stacks have reserved a lot of memory): symbolize a
# report's `(BINARY+0xOFFSET)` frames with `addr2line -f -C -i -e BINARY OFFSET...`.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0:strict_string_checks=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

# The whole workspace, unless packages are named: `scripts/sanitize.sh -p
# tasklet-runtime --lib` (the runtime's unit tests: a cold build of a few
# minutes, without the facade's heavy dev-dependencies).
scope=(--workspace)
for arg in "$@"; do
    case $arg in -p | -p* | --package | --package=*) scope=() ;; esac
done

start=$(date +%s)
cargo "+$TOOLCHAIN" test --release "${scope[@]}" --features tasklet/sanitizer \
    --target "$TRIPLE" "$@"
echo "sanitize.sh: ASan suite passed in $(( $(date +%s) - start )) s"
