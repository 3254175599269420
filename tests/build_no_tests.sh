#!/usr/bin/env bash
# build_no_tests.sh: husai builds where the test-only packages are missing (README "Building on a
# cluster"). cmocka is made invisible (pkg-config sees every .pc file of this machine except cmocka's, and
# CMake may not find a cmocka package config either); then
#   - configuring with the tests (the default) fails at once with one message naming cmocka and the way
#     out (-DHUSAI_TESTS=OFF): the control that shows cmocka really is hidden;
#   - -DHUSAI_TESTS=OFF configures and builds everything with -Werror, no compile command mentions
#     cmocka, no test is registered, and the binary runs (husai --version, a 2-rank synth);
#   - that build is also without oneDNN (-DHUSAI_BF16=OFF, issue 20): it does not link libdnnl, a sweep
#     trains bitwise as the full build's fp32 path, and precision = auto chooses fp32.
# A full scratch build: about a minute or more on 2 shared cores (label slow).

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init build_no_tests --openblas
ROOT=$(cd "$HERE/.." && pwd)
command -v cmake >/dev/null || skip "no cmake"
command -v pkg-config >/dev/null || skip "no pkg-config"

step "pkg-config without cmocka"
mkdir "$tmp/pc"
IFS=: read -r -a pcdirs <<<"$(pkg-config --variable pc_path pkg-config)"
for d in "${pcdirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*.pc; do
        [ -e "$f" ] || continue
        b=$(basename "$f")
        if [ "$b" != cmocka.pc ] && [ ! -e "$tmp/pc/$b" ]; then ln -s "$f" "$tmp/pc/$b"; fi
    done
done
export PKG_CONFIG_LIBDIR="$tmp/pc"
unset PKG_CONFIG_PATH
if pkg-config --exists cmocka; then fail "cmocka is still visible to pkg-config"; fi
pkg-config --exists openblas libcjson inih libxxhash || fail "hiding cmocka also hid husai's own dependencies"
hide=(-DCMAKE_DISABLE_FIND_PACKAGE_cmocka=ON -DCMAKE_DISABLE_FIND_PACKAGE_CMocka=ON)

step "the default (tests on) refuses, naming cmocka and -DHUSAI_TESTS=OFF"
rc=0
cmake -S "$ROOT" -B "$tmp/on" "${hide[@]}" >"$tmp/on.out" 2>"$tmp/on.err" || rc=$?
[ "$rc" -ne 0 ] || fail "configuring with tests succeeded without cmocka"
grep -q "the tests need cmocka" "$tmp/on.err" || fail "no cmocka message: $(cat "$tmp/on.err")"
grep -q -- "-DHUSAI_TESTS=OFF" "$tmp/on.err" || fail "the message does not name -DHUSAI_TESTS=OFF"

step "-DHUSAI_TESTS=OFF configures and builds"
cmake -S "$ROOT" -B "$tmp/off" -DHUSAI_TESTS=OFF -DHUSAI_BF16=OFF -DHUSAI_WERROR=ON "${hide[@]}" >"$tmp/off.out" 2>&1 || {
    cat "$tmp/off.out" >&2
    fail "configure with -DHUSAI_TESTS=OFF failed"
}
if grep -iE "^[^/#].*cmocka" "$tmp/off/CMakeCache.txt" | grep -qv DISABLE_FIND_PACKAGE; then
    fail "CMake looked for cmocka: $(grep -iE "^[^/#].*cmocka" "$tmp/off/CMakeCache.txt" | grep -v DISABLE_FIND_PACKAGE)"
fi
timeout 1200 cmake --build "$tmp/off" -j 2 >"$tmp/build.out" 2>&1 || {
    tail -30 "$tmp/build.out" >&2
    fail "build with -DHUSAI_TESTS=OFF failed"
}
if grep -qi cmocka "$tmp/off/compile_commands.json"; then fail "a compile command mentions cmocka"; fi
[ ! -e "$tmp/off/tests" ] || fail "the test directory was configured"
[ ! -e "$tmp/off/CTestTestfile.cmake" ] || fail "tests were registered"

step "the binary runs"
"$tmp/off/husai" --version | grep -q "^husai " || fail "husai --version failed"
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$tmp/off/husai" synth --rows 100 --d-model 8 --atoms 16 --active 2 \
    "$tmp/s.h5" >"$tmp/synth.out" 2>&1 || {
    cat "$tmp/synth.out" >&2
    fail "husai synth from the -DHUSAI_TESTS=OFF build failed"
}

step "without oneDNN: no libdnnl, fp32 bitwise as the full build, auto chooses fp32"
! ldd "$tmp/off/husai" | grep -q dnnl || fail "the -DHUSAI_BF16=OFF build links oneDNN"
cat >"$tmp/sw.ini" <<INI
[data]
path = $tmp/s.h5
[sae]
d_sae = 32
k = 4
[train]
epochs = 2
batch_size = 50
[sweep]
param = k
values = 4
seeds = 1, 2, 3
[metrics]
resamples = 100
INI
for b in off full; do
    bin=$tmp/off/husai
    [ "$b" = full ] && bin=$HUSAI
    timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$bin" sweep "$tmp/sw.ini" --out "$tmp/runs" --run-id "$b" \
        >"$tmp/$b.log" 2>&1 || fail "the $b build's sweep failed: $(tail -3 "$tmp/$b.log")"
done
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$tmp/off/husai" sweep "$tmp/sw.ini" --set train.precision=auto \
    --out "$tmp/runs" --run-id auto >"$tmp/auto.log" 2>&1 || fail "precision = auto failed: $(tail -3 "$tmp/auto.log")"
"$PY" - "$tmp/runs" <<'PY' || fail "the build without oneDNN does not train as the full build's fp32 path"
import json, sys
import h5py, numpy as np
runs = sys.argv[1]
with h5py.File(f"{runs}/off/results.h5", "r") as a, h5py.File(f"{runs}/full/results.h5", "r") as b:
    for name in ("decoders", "encoders", "b_enc", "pwmcc"):
        x, y = a[f"conditions/k=4/{name}"][()], b[f"conditions/k=4/{name}"][()]
        assert x.tobytes() == y.tobytes(), name
chosen = json.load(open(f"{runs}/auto/results.json"))["run"]["precision"]
assert chosen["requested"] == "auto" and chosen["used"] == "fp32", chosen
print("build_no_tests: decoders, encoders, b_enc, PWMCC bitwise equal; auto chose", chosen["used"])
PY
step "ok"
