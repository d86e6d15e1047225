#!/usr/bin/env bash
# Fuzzes cpevisor-usp's Record and Msg decoding with libFuzzer (cargo-fuzz) for FUZZ_SECONDS per
# target (default 60) and fails on a crash, a leak, a timeout or an oversized allocation.
# Installs a pinned cargo-fuzz into $CPEVISOR_CACHE/tools the first time. Uses rustup's stable
# toolchain: RUSTC_BOOTSTRAP=1 lets it take -Zsanitizer=address (stable ships the ASan runtime).
# FUZZ_SANITIZER=none builds without ASan (coverage-guided only) where ASan is not available.
#
#   FUZZ_SECONDS=300 FUZZ_TARGETS=record scripts/fuzz.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CPEVISOR_CACHE:-$HOME/.cache/cpevisor}
TOOLS=$CACHE/tools
CARGO_FUZZ_VERSION=0.13.1
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-"record msg"}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
# Its own build directory, outside the clone so that later clones reuse it: the fuzz build's
# instrumentation flags would otherwise invalidate the normal build's artefacts.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$CACHE/target-fuzz}
CORPUS=$CACHE/fuzz/usp
ARTIFACTS=$ROOT/target/usp-fuzz-artifacts

if ! "$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
    cargo install --locked --root "$TOOLS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Debian's rustc ships no sanitizer runtimes: coverage-guided fuzzing still works without one.
if [ "$FUZZ_SANITIZER" = address ]; then
    host=$(rustc -vV | sed -n 's/^host: //p')
    if ! compgen -G "$(rustc --print sysroot)/lib/rustlib/$host/lib/*rt.asan*" >/dev/null; then
        echo "fuzz: $(rustc --version) has no ASan runtime; fuzzing with --sanitizer none"
        FUZZ_SANITIZER=none
    fi
fi

cd "$ROOT/usp"
for target in $FUZZ_TARGETS; do
    # Artifacts of an earlier failing run would be stale once it is fixed: start clean.
    rm -rf "${ARTIFACTS:?}/$target"
    mkdir -p "$CORPUS/$target" "$ARTIFACTS/$target"
    # Seeds: one valid Record/Msg of every type (usp/tests/proto_corpus.rs writes them).
    for seed in "$ROOT/usp/fuzz/seeds/$target"/*; do
        [ -e "$CORPUS/$target/${seed##*/}" ] || cp "$seed" "$CORPUS/$target/"
    done
    echo "fuzz: $target for ${FUZZ_SECONDS}s (corpus $CORPUS/$target)"
    # -malloc_limit_mb: one allocation over 64 MiB is a bounding bug on a 256 MiB router;
    # -rss_limit_mb: the whole process likewise (ASan's own overhead included).
    # FUZZ_ARGS: extra libFuzzer flags (a later flag overrides an earlier one).
    set +e
    # shellcheck disable=SC2086
    RUSTC_BOOTSTRAP=1 "$TOOLS/bin/cargo-fuzz" run --fuzz-dir fuzz --sanitizer "$FUZZ_SANITIZER" \
        "$target" "$CORPUS/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len=8192 -timeout=10 \
        -malloc_limit_mb=64 -rss_limit_mb=1024 \
        -artifact_prefix="$ARTIFACTS/$target/" -print_final_stats=1 ${FUZZ_ARGS:-} 2>&1 |
        grep -v -E '^(#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|"|###### )'
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        echo "fuzz: $target FAILED (exit $status)" >&2
        for a in "$ARTIFACTS/$target"/*; do
            [ -e "$a" ] || continue
            echo "  reproduce: RUSTC_BOOTSTRAP=1 $TOOLS/bin/cargo-fuzz run --fuzz-dir usp/fuzz $target $a" >&2
        done
        exit 1
    fi
done
echo "fuzz: no crash in ${FUZZ_TARGETS// /, }"
