#!/usr/bin/env bash
# sweep_smoke.sh: the CI smoke test of the whole pipeline (DESIGN.md sections 1.3, 7): a 2-rank sweep over
# k {4, 8} x 3 seeds on tiny synthetic data. Checks the exit status, the run directory (exactly one, complete,
# no staging left), the results.json and results.h5 layouts, the progress lines, L0 == k, and then an
# independent numpy recomputation of every metric (tests/check_results.py). A second run with HUSAI's pair
# bootstrap on the numpy generator must reproduce numpy's CIs.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init sweep_smoke --keep-env

step "generating tiny data: 2000 x 16, 24 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2000 16 24 1
cat >"$tmp/smoke.ini" <<EOF
[data]
path = $tmp/tiny.h5

[sae]
d_sae = 32

[train]
epochs = 20
batch_size = 256
lr = 0.003

[sweep]
param = k
values = 4, 8
seeds = 11, 22, 33

[metrics]
resamples = 200
EOF

step "2-rank sweep: k {4, 8} x 3 seeds"
rc=0
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/smoke.ini" --out "$tmp/out" >"$tmp/stdout" 2>"$tmp/stderr" || rc=$?
if [ "$rc" -ne 0 ]; then
    cat "$tmp/stdout" "$tmp/stderr" >&2
    fail "husai sweep exited $rc"
fi

step "exactly one run directory, complete, no staging directory left"
mapfile -t entries < <(ls -A "$tmp/out")
[ "${#entries[@]}" -eq 1 ] || fail "expected exactly one entry in the output directory, found: ${entries[*]}"
run_id=${entries[0]}
run="$tmp/out/$run_id"
[[ "$run_id" != .* ]] || fail "the only entry is hidden (staging left, no run directory): $run_id"
[[ "$run_id" =~ ^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$ ]] || fail "run id '$run_id' is not <UTC stamp>-<hash8>"
for f in results.h5 results.json summary.md conditions.csv; do
    [ -s "$run/$f" ] || fail "$run/$f missing or empty"
done
if find "$tmp/out" -name '*.partial' | grep -q .; then fail "a .partial staging directory was left"; fi
grep -q "run directory: $run" "$tmp/stdout" || fail "stdout does not name the run directory $run"

step "progress: one 'task i/6 done' line per task on stdout"
for i in 1 2 3 4 5 6; do
    n=$(grep -c "task $i/6 done" "$tmp/stdout" || true)
    [ "$n" -eq 1 ] || fail "expected one 'task $i/6 done' line, found $n"
done
n=$(grep -c 'task [0-9]*/[0-9]* done' "$tmp/stdout" || true)
[ "$n" -eq 6 ] || fail "expected 6 progress lines, found $n"
for c in k=4 k=8; do
    for s in 11 22 33; do
        grep -q "done: $c seed=$s " "$tmp/stdout" || fail "no progress line for $c seed=$s"
    done
done
[ ! -s "$tmp/stderr" ] || {
    cat "$tmp/stderr" >&2
    fail "a successful run wrote to stderr"
}

step "results.json: run provenance and every per-condition key; results.h5 layout"
"$PY" - "$run" "$run_id" <<'EOF'
import json, sys
import h5py, numpy as np

run, run_id = sys.argv[1], sys.argv[2]
def fail(msg):
    print("sweep_smoke: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

js = json.load(open(f"{run}/results.json"))
r = js["run"]
for key in ("id", "version", "git_commit", "command", "hosts", "ranks", "seconds"):
    if key not in r:
        fail(f"results.json run.{key} missing")
if r["id"] != run_id: fail(f"run.id {r['id']} != directory name {run_id}")
if r["ranks"] != 2: fail(f"run.ranks = {r['ranks']}, expected 2")
if not isinstance(r["hosts"], list) or not r["hosts"] or not all(isinstance(h, str) and h for h in r["hosts"]):
    fail(f"run.hosts = {r['hosts']!r}, expected a non-empty list of host names")
if not (isinstance(r["seconds"], (int, float)) and r["seconds"] >= 0): fail(f"run.seconds = {r['seconds']!r}")
if "sweep" not in r["command"] or "smoke.ini" not in r["command"]: fail(f"run.command = {r['command']!r}")
if not r["version"] or not r["git_commit"]: fail("empty run.version or run.git_commit")
d = js["data"]
if (d["rows"], d["d_model"], d["dtype"]) != (2000, 16, "float32"): fail(f"data = {d}")

conds = js["conditions"]
if [c["name"] for c in conds] != ["k=4", "k=8"]: fail(f"condition names {[c['name'] for c in conds]}")
ci_keys = {"mean", "std", "ci95_low", "ci95_high", "n"}
for c in conds:
    nm = c["name"]
    for key in ("trained_pwmcc", "random_pwmcc", "explained_variance", "mse", "l0", "dead_fraction"):
        if key not in c or not isinstance(c[key], dict) or set(c[key]) != ci_keys:
            fail(f"{nm}: {key} must be an object with exactly {sorted(ci_keys)}, got {c.get(key)!r}")
        v = c[key]
        if not all(np.isfinite(v[x]) for x in ci_keys): fail(f"{nm}: {key} has a non-finite entry: {v}")
        if not v["ci95_low"] <= v["ci95_high"]: fail(f"{nm}: {key} CI reversed: {v}")
    for key in ("delta_pwmcc", "delta_pwmcc_ci_low_conservative", "ratio_pwmcc"):
        if not isinstance(c.get(key), (int, float)) or not np.isfinite(c[key]): fail(f"{nm}: {key} = {c.get(key)!r}")
    for key, want in (("param", "k"), ("n_seeds", 3), ("d_sae", 32), ("epochs", 20), ("batch_size", 256)):
        if c.get(key) != want: fail(f"{nm}: {key} = {c.get(key)!r}, expected {want!r}")
    if c["k"] != c["value"]: fail(f"{nm}: k {c['k']} != value {c['value']}")
    ps = c["per_seed"]
    if len(ps) != 3: fail(f"{nm}: per_seed has {len(ps)} entries, expected 3")
    if [e["seed"] for e in ps] != [11, 22, 33]: fail(f"{nm}: per_seed seeds {[e['seed'] for e in ps]}")
    for e in ps:
        for key in ("explained_variance", "mse", "l0", "dead_fraction", "last_epoch_loss", "steps", "seconds", "rank"):
            if key not in e: fail(f"{nm}: per_seed entry lacks {key}")
        if e["l0"] != c["k"]: fail(f"{nm}: seed {e['seed']} l0 = {e['l0']}, expected k = {c['k']}")
        if e["steps"] != 20 * 8: fail(f"{nm}: seed {e['seed']} steps = {e['steps']}, expected 160 (20 epochs x 8 batches)")
        if e["rank"] not in (0, 1): fail(f"{nm}: seed {e['seed']} rank = {e['rank']}")
    if c["l0"]["mean"] != c["k"]: fail(f"{nm}: l0 mean {c['l0']['mean']} != k {c['k']}")
    if not c["explained_variance"]["mean"] > 0.3: fail(f"{nm}: EV mean {c['explained_variance']['mean']} <= 0.3: training did not learn")
    print(f"sweep_smoke:   {nm}: trained PWMCC {c['trained_pwmcc']['mean']:.4f}, random {c['random_pwmcc']['mean']:.4f}, "
          f"EV {c['explained_variance']['mean']:.4f}, L0 {c['l0']['mean']:g}")

with h5py.File(f"{run}/results.h5", "r") as h:
    if sorted(h["conditions"]) != ["k=4", "k=8"]: fail(f"h5 conditions {sorted(h['conditions'])}")
    rand = {}
    for nm, k in (("k=4", 4), ("k=8", 8)):
        g = h["conditions"][nm]
        shapes = {"decoders": (3, 16, 32), "encoders": (3, 32, 16), "b_enc": (3, 32), "seeds": (3,),
                  "pwmcc": (3, 3), "random_pwmcc": (3, 3)}
        for key, shape in shapes.items():
            if key not in g: fail(f"h5 {nm}/{key} missing")
            if g[key].shape != shape: fail(f"h5 {nm}/{key} shape {g[key].shape}, expected {shape}")
        for key in ("decoders", "encoders", "b_enc"):
            if g[key].dtype != np.float32: fail(f"h5 {nm}/{key} dtype {g[key].dtype}, expected float32")
        if list(g["seeds"][...]) != [11, 22, 33]: fail(f"h5 {nm}/seeds = {g['seeds'][...]}")
        P = g["pwmcc"][...]
        if not np.allclose(np.diag(P), 1.0, atol=1e-6): fail(f"h5 {nm}/pwmcc diagonal {np.diag(P)}")
        if not np.array_equal(P, P.T): fail(f"h5 {nm}/pwmcc not symmetric")
        off = P[np.triu_indices(3, 1)]
        if not np.all((off > 0) & (off < 1)): fail(f"h5 {nm}/pwmcc off-diagonal outside (0, 1): {off}")
        dec = g["decoders"][...]
        norms = np.linalg.norm(dec.astype(np.float64), axis=1)
        if not np.allclose(norms, 1.0, atol=1e-5): fail(f"h5 {nm}: decoder columns not unit norm (range {norms.min()}..{norms.max()})")
        a = g.attrs
        for key in ("param", "value"):
            if key not in a: fail(f"h5 {nm} lacks attribute {key}")
        param = a["param"].decode() if isinstance(a["param"], bytes) else str(a["param"])
        if param != "k" or float(a["value"]) != k: fail(f"h5 {nm} attributes param={param!r} value={a['value']!r}")
        rand[nm] = g["random_pwmcc"][...]
    # The random baseline depends only on the shape and the seeds, so both k share it.
    if not np.array_equal(rand["k=4"], rand["k=8"]): fail("random_pwmcc differs between k=4 and k=8 (same shape and seeds)")
    for key in ("run_id", "version", "git_commit", "config"):
        if key not in h.attrs: fail(f"results.h5 lacks root attribute {key}")
print("sweep_smoke:   results.json and results.h5 layouts OK")
EOF

step "conditions.csv: header and one row per condition; summary.md names both conditions"
[ "$(wc -l <"$run/conditions.csv")" -eq 3 ] || fail "conditions.csv should have a header and 2 rows"
head -1 "$run/conditions.csv" | grep -q '^name,param,value,n_seeds,trained_pwmcc' || fail "conditions.csv header: $(head -1 "$run/conditions.csv")"
grep -q '^k=4,k,4,3,' "$run/conditions.csv" && grep -q '^k=8,k,8,3,' "$run/conditions.csv" || fail "conditions.csv rows"
grep -q "$run_id" "$run/summary.md" || fail "summary.md does not name the run id"
grep -qE '^\| 4 \|' "$run/summary.md" && grep -qE '^\| 8 \|' "$run/summary.md" || fail "summary.md lacks the k=4/k=8 rows"

step "independent numpy recomputation (tests/check_results.py)"
"$PY" "$HERE/check_results.py" "$run" || fail "check_results.py found a mismatch in $run"

step "variant: HUSAI's pair bootstrap on the numpy generator reproduces numpy's CIs"
rc=0
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/smoke.ini" --set metrics.bootstrap_unit=pairs \
    --set metrics.bootstrap_rng=numpy --out "$tmp/out_np" >"$tmp/stdout_np" 2>"$tmp/stderr_np" || rc=$?
[ "$rc" -eq 0 ] || {
    cat "$tmp/stdout_np" "$tmp/stderr_np" >&2
    fail "numpy/pairs sweep exited $rc"
}
"$PY" "$HERE/check_results.py" "$tmp"/out_np/*/ || fail "check_results.py failed on the numpy/pairs run"

step "variant: more ranks than tasks (5 ranks, 1 condition x 2 seeds): extra ranks idle, job succeeds"
rc=0
timeout 120 "$MPIEXEC" -np 5 --oversubscribe "$HUSAI" sweep "$tmp/smoke.ini" --set sweep.values=4 --set sweep.seeds=1,2 \
    --out "$tmp/out_idle" >"$tmp/stdout_idle" 2>"$tmp/stderr_idle" || rc=$?
[ "$rc" -eq 0 ] || {
    cat "$tmp/stdout_idle" "$tmp/stderr_idle" >&2
    fail "5 ranks for 2 tasks exited $rc"
}
grep -q "ranks 2..4 stay idle" "$tmp/stdout_idle" || fail "no note about idle ranks"
"$PY" "$HERE/check_results.py" "$tmp"/out_idle/*/ || fail "check_results.py failed on the idle-ranks run"

step "PASS"
