#!/usr/bin/env bash
# plan.sh: `husai plan` resolves a config exactly as `husai sweep` does. On a config whose values and
# seeds are written over several indented lines, the plan (human and --json) lists every condition and
# seed, and its conditions, seeds, task count and resolved config equal what a tiny sweep of the same
# config ran (its results.json); --get prints single fields, sweep values exactly (an lr that needs 17
# digits survives the trip through --set); a bad config or field is one "husai: error" line, exit 1; the
# data file is not needed.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init plan --openblas

"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 400 8 12 5 >/dev/null
cat >"$tmp/ml.ini" <<INI
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 16
k = 4
[train]
epochs = 2
batch_size = 100
lr = 0.003
[sweep]
param = k
values = 2, 4
    6
    8
seeds = 31, 7
    12-13
[metrics]
resamples = 200
[output]
dir = $tmp/runs
INI
H() { timeout 20 "$HUSAI" plan "$@"; }

step "human: every condition and the seeds of both lines"
H "$tmp/ml.ini" >"$tmp/human.txt" || fail "plan failed: $(cat "$tmp/human.txt")"
cat "$tmp/human.txt"
grep -q "mode sweep over k: 4 value(s) x 4 seed(s); 16 task(s) in all" "$tmp/human.txt" || fail "summary line"
for k in 2 4 6 8; do grep -Eq "^ +[0-3] +k=$k +$k " "$tmp/human.txt" || fail "no condition k=$k"; done
grep -q "seeds: 31, 7, 12, 13" "$tmp/human.txt" || fail "seeds line"
grep -q -- "--array=0-3" "$tmp/human.txt" || fail "array line"

step "--get: values one per line, scalars, config keys, paths"
[ "$(H "$tmp/ml.ini" --get sweep.values | tr '\n' ' ')" = "2 4 6 8 " ] || fail "--get sweep.values"
[ "$(H "$tmp/ml.ini" --get value_args | tr '\n' ' ')" = "2 4 6 8 " ] || fail "--get value_args"
[ "$(H "$tmp/ml.ini" --get sweep.seeds | tr '\n' ' ')" = "31 7 12 13 " ] || fail "--get sweep.seeds"
[ "$(H "$tmp/ml.ini" --get n_tasks)" = 16 ] || fail "--get n_tasks"
[ "$(H "$tmp/ml.ini" --get n_tasks --set sweep.seeds=1-5)" = 20 ] || fail "--get n_tasks = 20"
[ "$(H "$tmp/ml.ini" --get value_args --set sweep.values="10, 20, 300" --set sae.d_sae=512 | tr '\n' ' ')" = "10 20 300 " ] ||
    fail "--get value_args of 10, 20, 300: $(H "$tmp/ml.ini" --get value_args --set sweep.values="10, 20, 300" --set sae.d_sae=512 | tr '\n' ' ')"
[ "$(H "$tmp/ml.ini" --get mode)" = sweep ] || fail "--get mode"
[ "$(H "$tmp/ml.ini" --get conditions.2.name)" = k=6 ] || fail "--get conditions.2.name"
[ "$(H "$tmp/ml.ini" --get out_dir)" = "$tmp/runs" ] || fail "--get out_dir"
[ "$(H "$tmp/ml.ini" --get out_dir --out "$tmp/o2")" = "$tmp/o2" ] || fail "--out"
[ "$(H "$tmp/ml.ini" --get output.dir --set output.dir=/x/y)" = /x/y ] || fail "--set output.dir"
[ "$(H "$tmp/ml.ini" --get value_args --set sweep.values="3 5" --force --task-order reverse | tr '\n' ' ')" = "3 5 " ] ||
    fail "--set sweep.values with sweep-only flags"

step "no data file needed"
sed "s|^path = .*|path = $tmp/absent.h5|" "$tmp/ml.ini" >"$tmp/nodata.ini"
[ "$(H "$tmp/nodata.ini" --get n_conditions)" = 4 ] || fail "plan needs the data file"

step "sweep values exactly: each value_arg, given back with --set, is the same condition"
H "$tmp/ml.ini" --json --set sweep.param=lr --set "sweep.values=0.00012345678901234567, 3e-4, 1e-3" >"$tmp/lr.json" ||
    fail "lr plan"
mapfile -t args < <(H "$tmp/ml.ini" --get value_args --set sweep.param=lr --set "sweep.values=0.00012345678901234567, 3e-4, 1e-3")
[ "${#args[@]}" -eq 3 ] || fail "expected 3 lr values, got ${#args[@]}"
for i in 0 1 2; do
    H "$tmp/ml.ini" --json --set sweep.param=lr --set "sweep.values=${args[$i]}" >"$tmp/lr$i.json" || fail "lr part $i"
done
"$PY" - "$tmp/lr.json" "$tmp"/lr[0-2].json <<'PY' || fail "lr parts differ from the grid"
import json, sys
whole = json.load(open(sys.argv[1]))
assert whole["values"][0] == 0.00012345678901234567, whole["values"][0]
for i, path in enumerate(sys.argv[2:]):
    part = json.load(open(path))
    a, b = whole["conditions"][i], part["conditions"][0]
    for k in ("name", "value", "lr", "k", "d_sae", "epochs", "batch_size", "arch"):
        assert a[k] == b[k], f"condition {i} {k}: grid {a[k]!r}, part {b[k]!r}"
print("plan:   3 lr conditions identical through --set")
PY

step "--json equals what a sweep of the same config runs (mpirun -np 2)"
H "$tmp/ml.ini" --json >"$tmp/plan.json" || fail "--json"
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/ml.ini" --run-id r >"$tmp/sweep.log" 2>&1 || {
    cat "$tmp/sweep.log"
    fail "sweep failed"
}
"$PY" - "$tmp/plan.json" "$tmp/runs/r/results.json" <<'PY' || fail "plan and sweep disagree"
import configparser, json, sys
plan, res = (json.load(open(p)) for p in sys.argv[1:])
assert plan["mode"] == "sweep" and plan["splittable"] is True
assert plan["values"] == [2, 4, 6, 8], plan["values"]
assert plan["seeds"] == [31, 7, 12, 13], plan["seeds"]
ran = res["conditions"]
assert [c["name"] for c in plan["conditions"]] == [c["name"] for c in ran], "condition names"
for p, r in zip(plan["conditions"], ran):
    for k in ("param", "value", "k", "d_sae", "epochs", "batch_size", "lr", "arch"):
        assert p[k] == r[k], f"{p['name']} {k}: plan {p[k]!r}, sweep {r[k]!r}"
    assert [s["seed"] for s in r["per_seed"]] == plan["seeds"], f"{p['name']} seeds"
    assert p["n_tasks"] == r["n_seeds"] == len(plan["seeds"])
tasks = [(t["condition"], t["seed"]) for t in plan["tasks"]]
ran_tasks = [(c["name"], s["seed"]) for c in ran for s in c["per_seed"]]
assert tasks == ran_tasks and plan["n_tasks"] == len(ran_tasks) == 16, (tasks, ran_tasks)
# The resolved config the sweep recorded, read by Python's own INI reader, key by key.
ini = configparser.ConfigParser(comment_prefixes=(";", "#"))
ini.read_string(res["config"])
n = 0
for section in ini.sections():
    for key, value in ini[section].items():
        got = plan["config"][section][key]
        want = [v for v in value.replace("\n", ",").replace(" ", "").split(",") if v] if isinstance(got, list) else value
        assert got == want, f"{section}.{key}: plan {got!r}, sweep {want!r}"
        n += 1
assert n == sum(len(v) for v in plan["config"].values()), "plan has keys the sweep did not record"
print(f"plan:   {len(ran)} conditions, {len(ran_tasks)} tasks and {n} config keys equal the sweep's")
PY

step "calibrate and consistency: phases and their task counts"
H "$tmp/ml.ini" --json --set sweep.mode=calibrate --set calibrate.control_k=4 --set calibrate.retrain_seeds=1-5 >"$tmp/cal.json" || fail "calibrate plan"
H "$tmp/ml.ini" --json --set sweep.mode=consistency --set sweep.param=lambda --set "sweep.values=0, 0.01" \
    >"$tmp/con.json" || fail "consistency plan"
"$PY" - "$tmp/cal.json" "$tmp/con.json" <<'PY' || fail "phases"
import json, sys
cal, con = (json.load(open(p)) for p in sys.argv[1:])
assert [p["name"] for p in cal["phases"]] == ["search", "retrain"] and not cal["splittable"]
assert cal["n_tasks"] == 4 * 4 + 2 * 5 == len(cal["tasks"]), cal["n_tasks"]
assert [c["name"] for c in cal["phases"][1]["conditions"]] == ["retrain/k=<selected>", "control/k=4"]
assert cal["phases"][1]["conditions"][0]["value"] is None and cal["phases"][1]["after"] == "search"
assert [p["name"] for p in con["phases"]] == ["reference", "lambda"]
assert con["n_tasks"] == 1 + 2 * 4 == len(con["tasks"]) and con["phases"][0]["seeds"] == [42]
PY

step "errors: one husai: error line, exit 1"
expect_error() { # KEYWORD ARGS...: husai plan ARGS fails with one error line naming KEYWORD
    local kw=$1 rc=0
    shift
    H "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" -eq 1 ] || fail "plan $*: exit $rc, expected 1"
    [ "$(grep -c '^husai: error' "$tmp/err")" -eq 1 ] || fail "plan $*: expected one error line: $(cat "$tmp/err")"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "plan $*: more than one stderr line: $(cat "$tmp/err")"
    grep -q -- "$kw" "$tmp/err" || fail "plan $*: error lacks '$kw': $(cat "$tmp/err")"
    [ ! -s "$tmp/out" ] || fail "plan $*: wrote to stdout on error"
}
expect_error "unknown key 'kk'" "$tmp/ml.ini" --set sweep.kk=3
expect_error "need at least 2 seeds" "$tmp/ml.ini" --set sweep.seeds=1
expect_error "absent.ini" "$tmp/absent.ini"
expect_error "no such field" "$tmp/ml.ini" --get nope
expect_error "no such field" "$tmp/ml.ini" --get conditions.9.name
expect_error "empty item" "$tmp/ml.ini" --set "sweep.values=4,,8"
rc=0
H "$tmp/ml.ini" --json --get mode >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "--json with --get: exit $rc, expected 2 (usage)"
step "ok"
