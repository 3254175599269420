#!/usr/bin/env bash
# run.sh: builds the two libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) and runs
# each for a bounded time; `make fuzz` calls it. Fails (exit 1) if a target crashes, leaks, trips
# UBSan, violates a harness property or times out on an input; the reproducer is kept in
# BUILD/crashes/ and the command to replay it is printed.
#   usage: tests/fuzz/run.sh [BUILD_DIR [SECONDS]]     (defaults: build-fuzz, 60)
# Environment: CLANG (default clang-14, else clang), FUZZ_SECONDS (overrides SECONDS),
# HUSAI_FUZZ_ROUNDTRIP=1 checks the config round trip, which has known open issues (tests/fuzz/README.md),
# also while fuzzing (the stored corpus and regressions are always replayed with it).
# Both targets run at the same time (one core each). The working corpora grow in BUILD/corpus_*; the
# seed corpora in tests/fuzz/ are only read.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-${2:-60}}
mkdir -p "$BUILD" && BUILD=$(cd "$BUILD" && pwd)

say() { echo "fuzz: $*"; }
die() {
    echo "fuzz: FAIL: $*" >&2
    exit 1
}

CC=${CLANG:-}
if [ -z "$CC" ]; then
    for c in clang-14 clang; do command -v "$c" >/dev/null && CC=$c && break; done
fi
[ -n "$CC" ] || die "no clang found (Debian: apt-get install clang-14 libclang-rt-14-dev)"
command -v pkg-config >/dev/null || die "pkg-config missing"

# llvm-symbolizer gives file:line in crash stacks; Debian installs it versioned.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
    for s in llvm-symbolizer /usr/lib/llvm-14/bin/llvm-symbolizer llvm-symbolizer-14; do
        p=$(command -v "$s" 2>/dev/null) && export ASAN_SYMBOLIZER_PATH=$p && break
    done
fi

CFLAGS="-g -O1 -std=c17 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -I$ROOT/src"
say "building with $CC into $BUILD"
# shellcheck disable=SC2046,SC2086
$CC $CFLAGS "$HERE/fuzz_config.c" "$ROOT/src/config/config.c" "$ROOT/src/common/parse.c" "$ROOT/src/common/status.c" \
    "$ROOT"/src/sae/{model,arch*,select,encode,decode,backward,train,adam,align}.c "$ROOT/src/common/rng.c" $(pkg-config --cflags openblas) \
    -o "$BUILD/fuzz_config" $(pkg-config --libs inih openblas) -lm ||
    die "building fuzz_config failed (is libclang-rt-14-dev installed? it provides -fsanitize=fuzzer)"
# shellcheck disable=SC2046,SC2086
$CC $CFLAGS $(pkg-config --cflags hdf5-openmpi) "$HERE/fuzz_dataset.c" "$ROOT/src/mpi/dataset.c" "$ROOT/src/mpi/datacheck.c" \
    "$ROOT/src/mpi/mpicheck.c" "$ROOT/src/common/status.c" "$ROOT/src/common/chunks.c" "$ROOT/src/common/fingerprint.c" "$ROOT/src/common/rng.c" \
    -o "$BUILD/fuzz_dataset" $(pkg-config --libs hdf5-openmpi libxxhash) -lm || die "building fuzz_dataset failed"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export ASAN_OPTIONS="fast_unwind_on_malloc=0:detect_leaks=1:abort_on_error=0"
# use_tls=0: LSan (clang 14, gcc 12) with glibc 2.36 crashes ("Tracer caught signal 11") scanning a
# bogus dynamic-TLS range of the modules Open MPI dlopen()s; no husai pointer lives only in TLS.
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0:use_tls=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
mkdir -p "$BUILD/corpus_config" "$BUILD/corpus_dataset" "$BUILD/crashes" "$BUILD/tmp"
export TMPDIR="$BUILD/tmp"

# Regression inputs first: every one of them must pass before any new fuzzing.
dirs_of() { for d in "$@"; do [ -d "$d" ] && echo "$d"; done; }
say "replaying the seed corpora and regressions"
# shellcheck disable=SC2046
{ HUSAI_FUZZ_ROUNDTRIP=1 "$BUILD/fuzz_config" -runs=0 -artifact_prefix="$BUILD/crashes/config-" \
    $(dirs_of "$HERE/corpus_config" "$HERE/regressions/config") &&
    "$BUILD/fuzz_config" -runs=0 -artifact_prefix="$BUILD/crashes/config-" $(dirs_of "$HERE/known/config_roundtrip"); } \
    >"$BUILD/replay_config.log" 2>&1 ||
    { tail -40 "$BUILD/replay_config.log"; die "fuzz_config fails on a stored input (log: $BUILD/replay_config.log)"; }
# shellcheck disable=SC2046
"$BUILD/fuzz_dataset" -runs=0 -artifact_prefix="$BUILD/crashes/dataset-" $(dirs_of "$HERE/corpus_dataset" "$HERE/regressions/dataset") \
    >"$BUILD/replay_dataset.log" 2>&1 ||
    { tail -40 "$BUILD/replay_dataset.log"; die "fuzz_dataset fails on a stored input (log: $BUILD/replay_dataset.log)"; }

# fuzz NAME SEED_CORPUS [extra libFuzzer flags]: new inputs go to BUILD/corpus_NAME only.
fuzz() {
    local name=$1 seeds=$2
    shift 2
    "$BUILD/fuzz_$name" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=3072 -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="$BUILD/crashes/$name-" "$@" \
        "$BUILD/corpus_$name" "$seeds" >"$BUILD/fuzz_$name.log" 2>&1
    echo $? >"$BUILD/fuzz_$name.rc"
}
say "fuzzing fuzz_config and fuzz_dataset for ${SECONDS_EACH}s each (in parallel)"
start=$(date +%s)
fuzz config "$HERE/corpus_config" -dict="$HERE/config.dict" &
fuzz dataset "$HERE/corpus_dataset" -max_len=256 &
wait
say "done in $(($(date +%s) - start))s"

failed=0
for name in config dataset; do
    rc=$(cat "$BUILD/fuzz_$name.rc")
    runs=$(grep -E '^stat::number_of_executed_units' "$BUILD/fuzz_$name.log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+' "$BUILD/fuzz_$name.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
    say "fuzz_$name: exit $rc, ${runs:-?} inputs, ${cov:-no coverage line}, corpus $(find "$BUILD/corpus_$name" -type f | wc -l) files"
    if [ "$rc" != 0 ]; then
        failed=1
        echo "----- fuzz_$name.log (last 60 lines) -----" >&2
        tail -60 "$BUILD/fuzz_$name.log" >&2
        crash=$(grep -oE "Test unit written to [^ ]+" "$BUILD/fuzz_$name.log" | tail -1 | awk '{print $5}')
        if [ -n "$crash" ]; then
            echo "fuzz: reproduce with: $BUILD/fuzz_$name $crash" >&2
            echo "fuzz: once fixed, keep it: cp $crash $HERE/regressions/$name/" >&2
        fi
    fi
done
[ "$failed" = 0 ] || die "a fuzz target failed (logs in $BUILD)"
say "no crash, leak, UBSan report or property violation"
