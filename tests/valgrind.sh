#!/usr/bin/env bash
# valgrind.sh (ctest valgrind_sweep): husai under valgrind memcheck, on tiny data.
#   1. a 1-rank sweep (600 x 8 rows, d_sae 16, k {4, 8}, 2 seeds, 2 epochs, 100 resamples), run as
#      `mpirun -np 1 valgrind ... husai sweep`; it must finish and leave a complete run directory;
#   2. the same in consistency mode (lambda {0, 0.1}, 3 seeds since consistency needs 3 for its selection: the reference-seed and alignment paths);
#   3. a sweep on data with a NaN row: the error path must exit 1 and free what it allocated;
#   4. `husai ci` (no MPI) on a small file: native and numpy generators, --diff, and a bad file.
# valgrind runs with --leak-check=full --errors-for-leak-kinds=definite --track-origins=yes, Open MPI's
# suppressions and tests/valgrind.supp (Open MPI, PMIx, HDF5 by-design leaks and false positives, each
# anchored on a library frame). tests/valgrind_report.py then sorts every remaining error: the test
# fails if any error or definite leak belongs to husai's own code (first frame outside libc/valgrind in
# the husai binary or src/), and prints library errors without failing.
# Skips (77) without valgrind or when HUSAI is built with AddressSanitizer (the two cannot share a process).
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py. About 40 s here.
set -u

: "${HUSAI:?set HUSAI to the path of the husai binary}"
: "${MPIEXEC:?set MPIEXEC to mpirun/mpiexec}"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OPENBLAS_NUM_THREADS=1
PY=/usr/bin/python3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

step() { echo "valgrind_sweep: $*"; }
fail() {
    echo "valgrind_sweep: FAIL: $*" >&2
    exit 1
}

command -v valgrind >/dev/null || {
    step "SKIP: valgrind is not installed"
    exit 77
}
if ldd "$HUSAI" 2>/dev/null | grep -q 'libasan\|libtsan\|libmsan' || nm "$HUSAI" 2>/dev/null | grep -q '__asan_init'; then
    step "SKIP: $HUSAI is built with a sanitizer; valgrind cannot run it"
    exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
OMPI_SUPP=/usr/share/openmpi/openmpi-valgrind.supp
SUPP=(--suppressions="$HERE/valgrind.supp")
[ -r "$OMPI_SUPP" ] && SUPP+=(--suppressions="$OMPI_SUPP")
# vg NAME: the valgrind command line; one XML file per process in $tmp/NAME.*.xml
vg() {
    echo valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        --track-origins=yes --num-callers=40 "${SUPP[@]}" --xml=yes --xml-file="$tmp/$1.%p.xml"
}
# judge NAME: husai's errors fail the test (after every case has run, so one report shows them all);
# library errors are only listed.
failures=()
judge() {
    local rc=0
    "$PY" "$HERE/valgrind_report.py" "$HUSAI" "$ROOT/src" "$tmp/$1".*.xml >"$tmp/$1.report" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$tmp/$1.report" >&2
        if [ "$rc" -eq 1 ]; then
            failures+=("$1: valgrind reports errors in husai's code")
        else
            failures+=("$1: no complete valgrind report (did valgrind run?)")
        fi
    fi
    grep '^valgrind_report:' "$tmp/$1.report" | sed "s/^valgrind_report:/  $1:/"
}
# expect_rc NAME RC ALLOWED...: the process exit status, where 99 means "valgrind found errors" and is
# then left to judge (library errors do not fail the test).
expect_rc() {
    local name=$1 rc=$2
    shift 2
    for ok in "$@" 99; do [ "$rc" -eq "$ok" ] && return 0; done
    cat "$tmp/$name.out" >&2
    fail "$name: exit status $rc, expected one of: $* (or 99, valgrind's error exit)"
}

start=$(date +%s)
step "tiny data: 600 x 8 (12 atoms), and a copy with a NaN in row 7"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 600 8 12 1 >/dev/null || fail "make_tiny.py failed"
"$PY" "$HERE/data/make_tiny.py" "$tmp/nan.h5" 600 8 12 1 --nan-row 7 >/dev/null || fail "make_tiny.py --nan-row failed"
cat >"$tmp/sweep.ini" <<EOF
[data]
path = $tmp/tiny.h5

[sae]
d_sae = 16

[train]
epochs = 2
batch_size = 128
lr = 0.003

[sweep]
param = k
values = 4, 8
seeds = 1, 2

[metrics]
resamples = 100

[checkpoint]
every_seconds = 0
EOF
sed -e 's/^seeds = 1, 2$/seeds = 1, 2, 3/' -e 's/^param = k/mode = consistency\nparam = lambda/' -e 's/^values = 4, 8/values = 0, 0.1/' \
    -e 's/^d_sae = 16/d_sae = 16\nk = 4/' "$tmp/sweep.ini" >"$tmp/consistency.ini"
printf '\n[consistency]\nreference_seed = 42\n' >>"$tmp/consistency.ini"
sed "s|^path = .*|path = $tmp/nan.h5|" "$tmp/sweep.ini" >"$tmp/nan.ini"

# run_sweep NAME CONFIG EXPECTED_RC
run_sweep() {
    local name=$1 config=$2 want=$3 rc=0 t0
    t0=$(date +%s)
    # shellcheck disable=SC2046
    timeout 240 "$MPIEXEC" -np 1 --oversubscribe $(vg "$name") "$HUSAI" sweep "$config" --out "$tmp/out_$name" \
        >"$tmp/$name.out" 2>&1 || rc=$?
    step "$name: exit $rc in $(($(date +%s) - t0))s"
    expect_rc "$name" "$rc" "$want"
}

step "1-rank sweep under valgrind: k {4, 8} x 2 seeds, 2 epochs"
run_sweep sweep "$tmp/sweep.ini" 0
ls "$tmp"/out_sweep/*/results.json >/dev/null 2>&1 || {
    cat "$tmp/sweep.out" >&2
    fail "sweep: no complete run directory (results.json) under valgrind"
}
judge sweep

step "1-rank consistency sweep under valgrind: lambda {0, 0.1}, reference seed 42"
run_sweep consistency "$tmp/consistency.ini" 0
ls "$tmp"/out_consistency/*/results.json >/dev/null 2>&1 || {
    cat "$tmp/consistency.out" >&2
    fail "consistency: no complete run directory (results.json) under valgrind"
}
judge consistency

step "error path under valgrind: NaN in row 7 must exit 1 with a clear message"
run_sweep nan "$tmp/nan.ini" 1
grep -q 'row 7' "$tmp/nan.out" || {
    cat "$tmp/nan.out" >&2
    fail "nan: the error does not name row 7"
}
judge nan

step "husai ci under valgrind: native, numpy, --diff, bad input"
printf '0.2992\n0.2938\n0.2950\n0.2964\n0.2908\n0.2901\n0.2981\n0.2959\n0.2929\n0.2900\n' >"$tmp/a.txt"
printf '0.1\n0.2\n0.3\n0.25\n0.15\n' >"$tmp/b.txt"
printf '0.1\nnot-a-number\n' >"$tmp/bad.txt"
ci_case() {
    local want=$1 rc=0
    shift
    # shellcheck disable=SC2046
    $(vg ci) "$HUSAI" ci "$@" >>"$tmp/ci.out" 2>&1 || rc=$?
    expect_rc ci "$rc" "$want"
}
ci_case 0 --resamples 1000 "$tmp/a.txt"
ci_case 0 --resamples 1000 --rng numpy --seed 13 "$tmp/a.txt"
ci_case 0 --resamples 1000 --diff "$tmp/a.txt" "$tmp/b.txt"
ci_case 1 "$tmp/bad.txt"
judge ci

if [ "${#failures[@]}" -gt 0 ]; then
    printf 'valgrind_sweep: FAIL: %s\n' "${failures[@]}" >&2
    exit 1
fi
step "no valgrind error or definite leak in husai's code ($(($(date +%s) - start))s)"
