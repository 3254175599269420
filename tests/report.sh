#!/usr/bin/env bash
# report.sh: `husai report RUN_DIR` makes a finished run's reports again from results.json and results.h5
# alone, byte for byte as the run wrote them: summary.md, conditions.csv, the SVG plots and report.html.
# Four 2-rank runs on tiny synthetic data (a plain k sweep on 3 seeds, a calibrate run whose retrain has 2
# seeds so intervals are withheld, a consistency run, an arch sweep with a held-out split and a ground-truth
# dictionary); for each, the reports are moved away, regenerated in
# place, and compared with cmp; then regenerated with --out into another directory. Errors: a directory that
# is not a run, and a results.json lacking a key, each give exit 1 and exactly one "husai: error" line naming
# the file (and key), and leave no staging directory behind.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init report --keep-env --openblas

step "generating tiny data: 2000 x 16, 24 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2000 16 24 1
common() {
    printf '[data]\npath = %s\n\n[sae]\nd_sae = 32\nk = 4\n\n' "$tmp/tiny.h5"
    printf '[train]\nepochs = %s\nbatch_size = 256\nlr = 0.003\n\n[metrics]\nresamples = 200\n' "${1:-4}"
}
{
    common
    printf '\n[sweep]\nparam = k\nvalues = 4, 8, 16\nseeds = 11, 22, 33\n'
} >"$tmp/sweep.ini"
{
    common 10
    printf '\n[sweep]\nmode = calibrate\nparam = k\nvalues = 2, 4, 8\nseeds = 11, 22, 33\n'
    printf '\n[calibrate]\nretrain_seeds = 11, 22\nretrain_epochs = 10\nev_floor = 0.0\ncontrol_k = 8\n'
} >"$tmp/calibrate.ini"
{
    common
    printf '\n[sweep]\nmode = consistency\nparam = lambda\nvalues = 0, 1\nseeds = 1, 2, 3\n'
    printf '\n[consistency]\nreference_seed = 42\nmax_ev_drop = 0.5\n'
} >"$tmp/consistency.ini"
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" synth --rows 3000 --d-model 16 --atoms 32 --active 3 --noise 0.01 \
    --seed 11 "$tmp/syn.h5" >/dev/null || fail "husai synth failed"
{
    printf '[data]\npath = %s\ndictionary = /dictionary\nholdout = 0.1\n\n[sae]\nd_sae = 32\n\n' "$tmp/syn.h5"
    printf '[train]\nepochs = 4\nbatch_size = 256\nlr = 0.003\n\n[metrics]\nresamples = 200\n'
    printf '\n[sweep]\nparam = arch\nvalues = topk, relu_l1\nseeds = 5, 6, 7\n'
} >"$tmp/extras.ini"

reports=(summary.md conditions.csv pwmcc_vs_param.svg pwmcc_vs_ev.svg density.svg report.html)

for name in sweep calibrate consistency extras; do
    step "$name: 2-rank run"
    run=$(sweep_ok "$name" "$tmp/$name.ini")
    [ -d "$run" ] || fail "$name: no run directory"
    mkdir "$tmp/orig_$name"
    for f in "${reports[@]}"; do
        [ -s "$run/$f" ] || fail "$name: the run wrote no $f"
        mv "$run/$f" "$tmp/orig_$name/$f"
    done

    step "$name: husai report regenerates every report byte for byte"
    timeout 60 "$HUSAI" report "$run" >"$tmp/report_stdout" 2>"$tmp/report_stderr" || {
        cat "$tmp/report_stdout" "$tmp/report_stderr" >&2
        fail "$name: husai report exited non-zero"
    }
    [ ! -s "$tmp/report_stderr" ] || fail "$name: husai report wrote to stderr: $(cat "$tmp/report_stderr")"
    for f in "${reports[@]}"; do
        cmp "$tmp/orig_$name/$f" "$run/$f" || fail "$name: regenerated $f differs from the run's"
    done
    [ ! -e "$run/.report.partial" ] || fail "$name: staging directory left in the run directory"

    step "$name: --out writes into another directory and leaves the run alone"
    mkdir "$tmp/other_$name"
    before=$(stat -c %Y "$run/summary.md")
    timeout 60 "$HUSAI" report --out "$tmp/other_$name" "$run" >/dev/null || fail "$name: report --out failed"
    for f in "${reports[@]}"; do
        cmp "$tmp/orig_$name/$f" "$tmp/other_$name/$f" || fail "$name: $f written with --out differs"
    done
    [ "$(stat -c %Y "$run/summary.md")" = "$before" ] || fail "$name: --out touched the run directory"
done

for want in "extras:On held-out rows" "extras:Ground-truth recovery" "calibrate:Selected:" \
    "consistency:with reference"; do
    grep -q "${want#*:}" "$tmp/orig_${want%%:*}/summary.md" ||
        fail "the ${want%%:*} run's summary.md lacks '${want#*:}' (that part of the report was not compared)"
done

# expect_error KEYWORD ARGS...: husai report fails with exit 1 and exactly one stderr line, "husai: error ...",
# containing KEYWORD.
expect_error() {
    local keyword=$1 rc=0
    shift
    timeout 60 "$HUSAI" report "$@" >"$tmp/err_stdout" 2>"$tmp/err_stderr" || rc=$?
    [ "$rc" -eq 1 ] || fail "husai report $*: exit $rc, expected 1"
    [ "$(grep -c '^husai: error' "$tmp/err_stderr")" -eq 1 ] || fail "expected one error line: $(cat "$tmp/err_stderr")"
    [ "$(wc -l <"$tmp/err_stderr")" -eq 1 ] || fail "stderr has more than the error line: $(cat "$tmp/err_stderr")"
    grep -q -- "$keyword" "$tmp/err_stderr" || fail "the error does not name '$keyword': $(cat "$tmp/err_stderr")"
    ! grep -q 'HDF5-DIAG' "$tmp/err_stderr" || fail "HDF5 error stack printed"
}

step "errors: not a run directory; a results.json without a key"
mkdir "$tmp/empty"
expect_error "results.json" "$tmp/empty"
[ -z "$(ls -A "$tmp/empty")" ] || fail "husai report left files in a directory that is not a run"
broken="$tmp/broken"
cp -r "$(find "$tmp/out_sweep" -mindepth 1 -maxdepth 1 -type d ! -name '.*')" "$broken"
"$PY" - "$broken/results.json" <<'PY'
import json, sys
p = sys.argv[1]
d = json.load(open(p))
del d["conditions"][1]["explained_variance"]
json.dump(d, open(p, "w"))
PY
cp "$broken/summary.md" "$tmp/broken_summary"
expect_error "explained_variance" "$broken"
cmp "$broken/summary.md" "$tmp/broken_summary" || fail "a failed report changed summary.md"
[ ! -e "$broken/.report.partial" ] || fail "a failed report left its staging directory"

step "PASS"
