#!/usr/bin/env bash
# sweep_errors.sh: DESIGN.md section 8 "any error ... ends the whole job with one clear message and a non-zero
# exit, never a hang" and section 7 "a failed run leaves no file that looks complete". Each bad input runs
# under `timeout 60 mpirun -np 2`; it must exit 1 (not the timeout's 124, no MPI_Abort banner), print exactly
# one stderr line starting with "husai: error" that contains a keyword naming the problem, and leave no run
# directory (nothing at all under --out: no results.json, no run directory, no staging left behind).
# Also: float16 and float64 datasets are accepted; an existing run directory is refused without --force and
# replaced with it.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init sweep_errors --keep-env
MAKE="$HERE/data/make_tiny.py"
# On an early failure, let the background cases (each bounded by its timeout) end before removing their
# files; the read-only output case (non-root) leaves a directory rm may not empty.
husai_test_cleanup() {
    wait 2>/dev/null
    chmod -R u+w "$tmp" 2>/dev/null
}

# ini FILE [DATA]: a valid small config; callers edit it for their case.
ini() {
    cat >"$1" <<EOF
[data]
path = ${2:-$tmp/good.h5}

[sae]
d_sae = 16

[train]
epochs = 2
batch_size = 64
lr = 0.003

[sweep]
param = k
values = 2, 4
seeds = 1, 2

[metrics]
resamples = 100
EOF
}

# edit FILE SED_EXPR: in-place edit of a config.
edit() { sed -i "$2" "$1"; }

n_case=0
MAX_JOBS=6
# expect_error NAME KEYWORD CONFIG [extra sweep args]: the run must fail cleanly; KEYWORD (a grep -E -i
# pattern) must appear in the one "husai: error" line. Cases run concurrently (most of a failing run's
# wall time is Open MPI's teardown after a non-zero exit, not CPU): each gets its own directory holding a
# snapshot of its config (same file name, so messages naming it are unchanged) and writes its verdict to
# verdict and its status to status; finish_cases reports them in order.
expect_error() {
    local name=$1 keyword=$2 config=$3
    shift 3
    n_case=$((n_case + 1))
    local dir="$tmp/case_$n_case"
    mkdir "$dir"
    if [ -e "$config" ]; then
        cp "$config" "$dir/"
        config="$dir/$(basename "$config")"
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$MAX_JOBS" ]; do wait -n || true; done
    (
        verdict() {
            echo "$1" >"$dir/verdict"
            echo "$2" >"$dir/status"
            exit 0
        }
        local out="$dir/out" rc=0
        timeout 60 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$config" --out "$out" "$@" \
            >"$dir/stdout" 2>"$dir/stderr" || rc=$?
        local show="command: timeout 60 mpirun -np 2 husai sweep $config --out $out $*
--- stdout (tail) ---
$(tail -5 "$dir/stdout")
--- stderr ---
$(cat "$dir/stderr")"
        [ "$rc" -ne 124 ] || verdict "[$name] timed out after 60 s (hang)
$show" 1
        [ "$rc" -ne 0 ] || verdict "[$name] exited 0; expected an error
$show" 1
        local n line
        n=$(grep -c '^husai: error' "$dir/stderr" || true)
        [ "$n" -eq 1 ] || verdict "[$name] expected exactly one 'husai: error' line on stderr, found $n
$show" 1
        if grep -qi 'MPI_ABORT' "$dir/stderr"; then
            verdict "[$name] the job was aborted (MPI_Abort) instead of a clean agreed exit
$show" 1
        fi
        line=$(grep '^husai: error' "$dir/stderr")
        echo "$line" | grep -Eqi -- "$keyword" || verdict "[$name] error line lacks /$keyword/: $line
$show" 1
        [ "$rc" -eq 1 ] || verdict "[$name] exit status $rc, expected 1 from a clean agreed exit
$show" 1
        if [ -e "$out" ]; then
            if find "$out" -name results.json | grep -q .; then verdict "[$name] a results.json was left under $out" 1; fi
            local left
            left=$(ls -A "$out")
            [ -z "$left" ] || verdict "[$name] the output directory is not empty after the failure: $left" 1
        fi
        verdict "$(printf 'ok %-34s exit %d: %s' "[$name]" "$rc" "$line")" 0
    ) &
}

# finish_cases: waits for every case and prints each verdict in order; fails if any case failed.
finish_cases() {
    wait || true
    local i bad=0
    for ((i = 1; i <= n_case; i++)); do
        if [ ! -f "$tmp/case_$i/status" ]; then
            echo "sweep_errors: FAIL: case $i left no verdict (the test script itself broke)" >&2
            bad=$((bad + 1))
        elif [ "$(cat "$tmp/case_$i/status")" -ne 0 ]; then
            echo "sweep_errors: FAIL: $(cat "$tmp/case_$i/verdict")" >&2
            bad=$((bad + 1))
        else
            echo "sweep_errors:   $(cat "$tmp/case_$i/verdict")"
        fi
    done
    [ "$bad" -eq 0 ] || fail "$bad of $n_case error cases failed (details above)"
}

step "generating data files"
"$PY" "$MAKE" "$tmp/good.h5" 300 8 12 1
"$PY" "$MAKE" "$tmp/f16.h5" 300 8 12 2 --dtype float16
"$PY" "$MAKE" "$tmp/f64.h5" 300 8 12 3 --dtype float64
"$PY" "$MAKE" "$tmp/d1.h5" 300 8 12 1 --shape 1d
"$PY" "$MAKE" "$tmp/d3.h5" 300 8 12 1 --shape 3d
"$PY" "$MAKE" "$tmp/int.h5" 300 8 12 1 --int
"$PY" "$MAKE" "$tmp/zero.h5" 0 8 12 1
"$PY" "$MAKE" "$tmp/nan.h5" 300 8 12 1 --nan-row 17
"$PY" "$MAKE" "$tmp/few.h5" 40 8 12 1
"$PY" "$MAKE" "$tmp/one.h5" 1 8 12 1
"$PY" "$MAKE" "$tmp/const.h5" 300 8 12 1 --constant 0.5
echo "this is a text file, not HDF5" >"$tmp/text.h5"

step "bad data"
ini "$tmp/c.ini" "$tmp/does_not_exist.h5"
expect_error "missing data file" "does_not_exist\.h5" "$tmp/c.ini"
ini "$tmp/c.ini"
HUSAI_THREADS=two expect_error "HUSAI_THREADS not a number" "HUSAI_THREADS='two'" "$tmp/c.ini"
HUSAI_THREADS=0 expect_error "HUSAI_THREADS zero" "HUSAI_THREADS='0'.*threads per rank" "$tmp/c.ini"
ini "$tmp/c.ini" "$tmp/text.h5"
expect_error "data file is not HDF5" "not an HDF5" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^\[data\]$|[data]\ndataset = /no_such_dataset|'
expect_error "missing dataset name" "no_such_dataset.*not found|not found.*no_such_dataset" "$tmp/c.ini"
ini "$tmp/c.ini" "$tmp/d1.h5"
expect_error "1-D dataset" "1-D" "$tmp/c.ini"
ini "$tmp/c.ini" "$tmp/d3.h5"
expect_error "3-D dataset" "3-D" "$tmp/c.ini"
ini "$tmp/c.ini" "$tmp/int.h5"
expect_error "integer dtype" "integer" "$tmp/c.ini"
ini "$tmp/c.ini" "$tmp/zero.h5"
expect_error "zero rows" "zero rows" "$tmp/c.ini"
ini "$tmp/c.ini" "$tmp/nan.h5"
expect_error "NaN in row 17" "NaN.*row 17([^0-9]|$)" "$tmp/c.ini"
ini "$tmp/c.ini" "$tmp/few.h5"
expect_error "fewer rows than one batch" "fewer than one batch" "$tmp/c.ini"
# One row passes the batch check with batch_size 1, but no variance (hence no EV) exists: refuse up front,
# not with an MPI_Abort on every rank after training.
ini "$tmp/c.ini" "$tmp/one.h5"
edit "$tmp/c.ini" 's|^batch_size = .*|batch_size = 1|'
expect_error "a single row" "row" "$tmp/c.ini"
# Constant data: var(X) = 0 makes EV undefined; refuse when reading, not with an abort after training.
ini "$tmp/c.ini" "$tmp/const.h5"
expect_error "constant data (zero variance)" "varian|constant" "$tmp/c.ini"

step "bad values"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^values = .*|values = 4, 32|'
expect_error "k > d_sae" "k = 32 exceeds d_sae = 16" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^values = .*|values = 0, 4|'
expect_error "k = 0 (swept value)" "k = 0" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^param = .*|param = d_sae|; s|^values = .*|values = 8, 16|; s|^d_sae = .*|k = 0|'
expect_error "k = 0 ([sae] k)" "sae\.k" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^seeds = .*|seeds =|'
expect_error "empty seed list" "seeds.*empty" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^seeds = .*|seeds = 1, 2, 1|'
expect_error "duplicate seeds" "seed 1 is listed twice" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^seeds = .*|seeds = 7|'
expect_error "a single seed" "at least 2 seeds" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^lr = .*|lr = abc|'
expect_error "non-numeric value (lr = abc)" "lr.*abc" "$tmp/c.ini"
# one number rule (src/common/parse.c): out of range says so, hex is refused everywhere
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^lr = .*|lr = 1e300|'
expect_error "lr beyond float32 (1e300)" "train\.lr = 1e300 is out of range" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^d_sae = .*|d_sae = 2147483647|'
expect_error "d_sae = 2147483647" "sae\.d_sae = 2147483647 is out of range: it exceeds the limit 1000000000" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^values = .*|values = 2, 0x4|'
expect_error "hex in a list (values = 0x4)" "sweep\.values = '0x4' is hexadecimal" "$tmp/c.ini"
# a key given twice, list or not: the second non-indented line is not appended to the first
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^seeds = .*|seeds = 1, 2\nseeds = 3, 4|'
expect_error "seeds given twice" "c\.ini:[0-9]+: key sweep\.seeds is given twice \(first on line [0-9]+\)" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^values = .*|values = 2\nvalues = 4|'
expect_error "values given twice" "key sweep\.values is given twice" "$tmp/c.ini"

step "bad config files"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^epochs = .*|epochs = 2\nwarmup_steps = 5|'
expect_error "unknown key" "unknown key 'warmup_steps'" "$tmp/c.ini"
ini "$tmp/c.ini"
printf '\n[bogus]\nx = 1\n' >>"$tmp/c.ini"
expect_error "unknown section" "unknown section \[bogus\]" "$tmp/c.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" '/^values = /d'
expect_error "missing required key (sweep.values)" "missing required key sweep\.values" "$tmp/c.ini"
"$PY" -c 'import sys, numpy as np; sys.stdout.buffer.write(np.random.default_rng(5).integers(0, 256, 600, dtype=np.uint8).tobytes())' >"$tmp/junk.ini"
expect_error "config is binary junk" "junk\.ini" "$tmp/junk.ini"
ini "$tmp/c.ini"
edit "$tmp/c.ini" 's|^\[train\]$|[train]\nthis line has no equals sign|'
expect_error "config line without '='" "c\.ini:[0-9]+.*not a valid INI" "$tmp/c.ini"
ini "$tmp/c.ini"
expect_error "missing config file" "no_such\.ini" "$tmp/no_such.ini"
expect_error "features.tau above 1" "features\.tau = 1\.5 must be in \(0, 1\]" "$tmp/c.ini" --set features.tau=1.5
expect_error "features.min_seeds above the seeds" "features\.min_seeds = 3 .*2 seeds" "$tmp/c.ini" \
    --set features.min_seeds=3

step "bad output directory"
ini "$tmp/c.ini"
expect_error "unwritable output (/proc)" "/proc/husai-x" "$tmp/c.ini" --out /proc/husai-x
echo "a regular file" >"$tmp/regular"
expect_error "output under a regular file" "regular" "$tmp/c.ini" --out "$tmp/regular/sub"
if [ "$(id -u)" -ne 0 ]; then
    mkdir "$tmp/readonly" && chmod 555 "$tmp/readonly"
    expect_error "read-only output directory" "readonly" "$tmp/c.ini" --out "$tmp/readonly"
fi

# ok_run NAME CONFIG OUT [args]: must succeed with one complete run directory.
ok_run() {
    local name=$1 config=$2 out=$3
    shift 3
    local rc=0
    timeout 60 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$config" --out "$out" "$@" \
        >"$tmp/ok.out" 2>"$tmp/ok.err" || rc=$?
    [ "$rc" -eq 0 ] || fail "[$name] exited $rc
$(tail -5 "$tmp/ok.out")
$(cat "$tmp/ok.err")"
    find "$out" -mindepth 2 -maxdepth 2 -name results.json | grep -q . || fail "[$name] no results.json under $out"
    if find "$out" -name '*.partial' | grep -q .; then fail "[$name] staging directory left under $out"; fi
}

step "float16 and float64 datasets are accepted"
for t in 16 64; do
    ini "$tmp/c.ini" "$tmp/f$t.h5"
    ok_run "float$t" "$tmp/c.ini" "$tmp/out_f$t"
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"]; sys.exit(0 if d["dtype"]==sys.argv[2] and d["rows"]==300 else 1)' \
        "$tmp"/out_f$t/*/results.json "float$t" || fail "[float$t] results.json data.dtype/rows wrong"
    echo "sweep_errors:   ok [float$t dataset accepted]"
done

step "an existing run directory is refused without --force and replaced with it"
ini "$tmp/c.ini"
out="$tmp/out_exist"
ok_run "first run" "$tmp/c.ini" "$out"
first=$(basename "$(ls -d "$out"/*/)")
hash=${first##*-}
# The run id is <UTC second>-<config hash>: occupy every id the next run can take in the coming minute.
now=$(date -u +%s)
n_sentinel=0
for off in $(seq -2 60); do
    id="$(date -u -d "@$((now + off))" +%Y%m%dT%H%M%SZ)-$hash"
    [ "$id" = "$first" ] || { mkdir -p "$out/$id" && echo keep >"$out/$id/sentinel" && n_sentinel=$((n_sentinel + 1)); }
done
rc=0
timeout 60 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/c.ini" --out "$out" >"$tmp/case.out" 2>"$tmp/case.err" || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "[existing run directory] exit $rc; expected a refusal
$(cat "$tmp/case.err")"
[ "$(grep -c '^husai: error' "$tmp/case.err" || true)" -eq 1 ] || fail "[existing run directory] expected one error line: $(cat "$tmp/case.err")"
grep '^husai: error' "$tmp/case.err" | grep -q 'already exists.*--force' || fail "[existing run directory] message: $(cat "$tmp/case.err")"
[ "$(find "$out" -name sentinel | wc -l)" -eq "$n_sentinel" ] || fail "[existing run directory] a refused run touched an existing directory"
if find "$out" -name '*.partial' | grep -q .; then fail "[existing run directory] staging directory left"; fi
echo "sweep_errors:   ok [existing run directory refused]   $(grep '^husai: error' "$tmp/case.err")"
ok_run "existing run directory with --force" "$tmp/c.ini" "$out" --force
id=$(grep -o 'run directory: [^ ]*' "$tmp/ok.out" | sed 's|run directory: ||; s|.*/||')
[ -n "$id" ] && [ -f "$out/$id/results.json" ] || fail "[--force] run directory '$id' lacks results.json"
[ ! -e "$out/$id/sentinel" ] || fail "[--force] the replaced directory $id still holds the old sentinel file"
echo "sweep_errors:   ok [--force replaced $id]"

step "waiting for the error cases"
finish_cases
step "PASS ($n_case error cases)"
