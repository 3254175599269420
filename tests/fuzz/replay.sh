#!/usr/bin/env bash
# replay.sh (ctest fuzz_regressions): replays the fuzz seed corpora, the crash regressions and the
# known-issue inputs through the two fuzz harnesses built WITHOUT libFuzzer: tests/fuzz/driver.c gives
# them a main(), so any C compiler builds them (with AddressSanitizer + UBSan when the compiler has
# them). Every input must pass the harness's properties with no crash, leak or UBSan report.
# The config round trip (HUSAI_FUZZ_ROUNDTRIP) is checked on the corpus and regressions; the inputs of
# its still-open known issues (tests/fuzz/README.md) replay without it unless HUSAI_FUZZ_ROUNDTRIP=1.
# Exit 77 (skipped) only if no C compiler or no pkg-config data for inih / hdf5-openmpi is found.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
say() { echo "fuzz_regressions: $*"; }
die() {
    echo "fuzz_regressions: FAIL: $*" >&2
    exit 1
}

CC=${CC:-}
if [ -z "$CC" ]; then
    for c in cc gcc clang; do command -v "$c" >/dev/null && CC=$c && break; done
fi
[ -n "$CC" ] || {
    say "SKIP: no C compiler"
    exit 77
}
pkg-config --exists inih hdf5-openmpi 2>/dev/null || {
    say "SKIP: pkg-config knows no inih or hdf5-openmpi"
    exit 77
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
echo 'int main(void){return 0;}' >"$tmp/probe.c"
# shellcheck disable=SC2046,SC2086
if ! $CC $SAN "$tmp/probe.c" -o "$tmp/probe" 2>/dev/null || ! "$tmp/probe"; then
    say "note: $CC cannot build with ASan/UBSan here; replaying without sanitizers"
    SAN=""
fi
CFLAGS="-g -O1 -std=c17 -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -I$ROOT/src $SAN"

start=$(date +%s.%N)
# shellcheck disable=SC2046,SC2086
$CC $CFLAGS "$HERE/driver.c" "$HERE/fuzz_config.c" "$ROOT/src/config/config.c" "$ROOT/src/common/parse.c" "$ROOT/src/common/status.c" \
    "$ROOT"/src/sae/{model,arch*,select,encode,decode,backward,train,adam,align,bf16,forward}.c "$ROOT/src/common/rng.c" $(pkg-config --cflags openblas) \
    -o "$tmp/replay_config" $(pkg-config --libs inih openblas) -lm || die "building the config replay driver failed"
# shellcheck disable=SC2046,SC2086
$CC $CFLAGS $(pkg-config --cflags hdf5-openmpi) "$HERE/driver.c" "$HERE/fuzz_dataset.c" \
    "$ROOT/src/mpi/dataset.c" "$ROOT/src/mpi/datacheck.c" "$ROOT/src/mpi/mpicheck.c" "$ROOT/src/common/status.c" "$ROOT/src/common/chunks.c" "$ROOT/src/common/fingerprint.c" "$ROOT/src/common/rng.c" \
    -o "$tmp/replay_dataset" $(pkg-config --libs hdf5-openmpi libxxhash) -lm || die "building the dataset replay driver failed"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="fast_unwind_on_malloc=0:detect_leaks=1:abort_on_error=0"
# use_tls=0: LSan (clang 14, gcc 12) with glibc 2.36 crashes ("Tracer caught signal 11") scanning a
# bogus dynamic-TLS range of the modules Open MPI dlopen()s; no husai pointer lives only in TLS.
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0:use_tls=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TMPDIR="$tmp"

dirs_of() { for d in "$@"; do [ -d "$d" ] && echo "$d"; done; }
# run NAME DIR...: the driver aborts on the first failing input and names it on stderr.
run() {
    local name=$1
    shift
    local log
    log=$(mktemp "$tmp/$name.XXXXXX")
    # shellcheck disable=SC2046
    if ! "$tmp/replay_$name" $(dirs_of "$@") >"$log" 2>&1; then
        grep -v '^driver: /' "$log" | tail -40 >&2
        die "$name harness failed on $(grep '^driver: /' "$log" | tail -1 | cut -d' ' -f2-)"
    fi
    grep -v '^driver: /' "$log"
}
HUSAI_FUZZ_ROUNDTRIP=1 run config "$HERE/corpus_config" "$HERE/regressions/config"
run config "$HERE/known/config_roundtrip"
run dataset "$HERE/corpus_dataset" "$HERE/regressions/dataset"
say "all inputs pass (${SAN:+ASan+UBSan, }$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')s)"
