#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for FUZZ_SECS seconds each (default
# 60), on nightly, with libFuzzer and AddressSanitizer; installs cargo-fuzz
# if it is missing. See docs/reliability.md.
#
#   scripts/fuzz.sh                     # every target, 60 s each
#   FUZZ_SECS=20 scripts/fuzz.sh        # shorter (what .ci/run does)
#   scripts/fuzz.sh resp_codec          # some targets only
#
# Each run starts from the committed seed corpus (fuzz/corpus/<target>,
# read only) plus what earlier runs on this machine found
# (target/fuzz-corpus/<target>, where new inputs go). A finding stops the
# script with the input libFuzzer saved under fuzz/artifacts/<target>/:
# fix it, and commit the input to fuzz/regressions/<target>/, which
# tests/fuzz_corpus.rs replays in the normal test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${FUZZ_SECS:-60}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo "+$TOOLCHAIN" fuzz list --fuzz-dir fuzz)
fi

# One build of every target (release, debug assertions on, ASan: cargo
# fuzz's defaults).
cargo "+$TOOLCHAIN" fuzz build --fuzz-dir fuzz

summary=()
for t in "${TARGETS[@]}"; do
    work="target/fuzz-corpus/$t"
    mkdir -p "$work" "fuzz/corpus/$t"
    log="target/fuzz-corpus/$t.log"
    echo "fuzz.sh: $t for ${SECS}s"
    # -rss_limit_mb: the scheduler target spawns tasklets (their stacks are
    # mapped lazily, but ASan's shadow counts): well above a real leak's
    # slow climb, well below the machine.
    if ! cargo "+$TOOLCHAIN" fuzz run --fuzz-dir fuzz "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$SECS" -timeout=20 -rss_limit_mb=4096 -max_len="${FUZZ_MAX_LEN:-1024}" \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz.sh: $t FAILED (input saved under fuzz/artifacts/$t/; log $log)"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    summary+=("$t: ${runs:-?} executions in ${SECS}s, ${cov:-cov: ?}, no findings")
done
printf 'fuzz.sh: %s\n' "${summary[@]}"
