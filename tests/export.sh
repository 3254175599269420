#!/usr/bin/env bash
# export.sh: end-to-end checks of `husai export` (issue 8, ecosystem). A tiny 2-rank sweep, then one seed
# exported as safetensors + cfg.json and read back with a small independent parser (python3 + numpy:
# struct for the header length, json for the header, np.frombuffer for the tensors; not the safetensors
# package). Checks names, shapes, dtypes, contiguous 8-byte-aligned layout, values bitwise equal to the
# transposed arrays in results.h5, unit-norm W_dec rows, a zero b_dec, that the exported SAE reconstructs
# the data as well as husai reported, cfg.json's SAELens fields and provenance, atomic replacement, nested
# condition names, and one stderr line with exit 1 (errors) or 2 (usage) for every bad invocation.
# Then a second 2-rank sweep over every architecture (decoder bias on): each is exported as its SAELens
# architecture (topk/matryoshka -> topk, jumprelu/batchtopk -> jumprelu with threshold, relu_l1 ->
# standard), its tensors are bitwise equal to results.h5, and numpy inference written from SAELens'
# semantics and cfg.json alone reproduces husai's per-seed L0, EV and MSE; sae.relu reaches the
# provenance; missing, negative or non-constant (batchtopk) thresholds are refused.
# TopK (issue 18): the arch sweep trains with sae.relu = true, so its topk/matryoshka export is SAELens'
# TopK exactly (the numpy forward applies ReLU to the kept values, as SAELens does, and matches husai's
# L0/EV); husai's signed TopK (sae.relu = false, the first sweep; or a config that does not say) is
# refused with one line unless --allow-signed-topk, which cfg.json records as husai.signed_topk.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init export --keep-env

step "tiny 2-rank sweep: k {4, 8} x seeds {11, 22}, 2000 x 16, d_sae 32"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2000 16 24 1
cat >"$tmp/run.ini" <<EOF
[data]
path = $tmp/tiny.h5

[sae]
d_sae = 32

[train]
epochs = 8
batch_size = 256
lr = 0.003

[sweep]
param = k
values = 4, 8
seeds = 11, 22

[metrics]
resamples = 100
EOF
rc=0
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/run.ini" --out "$tmp/out" >"$tmp/sweep.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || {
    cat "$tmp/sweep.out" >&2
    fail "husai sweep exited $rc"
}
run=$(ls -d "$tmp"/out/*/)
run=${run%/}

step "export k=4 seed 22"
rc=0
"$HUSAI" export "$run" --condition k=4 --seed 22 --format safetensors --allow-signed-topk "$tmp/sae" >"$tmp/x.out" 2>"$tmp/x.err" || rc=$?
[ "$rc" -eq 0 ] || {
    cat "$tmp/x.out" "$tmp/x.err" >&2
    fail "husai export exited $rc"
}
[ ! -s "$tmp/x.err" ] || fail "a successful export wrote to stderr: $(cat "$tmp/x.err")"
grep -q "sae.safetensors" "$tmp/x.out" || fail "stdout does not name the written file: $(cat "$tmp/x.out")"
mapfile -t files < <(ls -A "$tmp/sae")
[ "${files[*]}" = "cfg.json sae.safetensors sae_weights.safetensors" ] ||
    fail "OUT_DIR holds '${files[*]}', expected cfg.json sae.safetensors sae_weights.safetensors (no temp files)"
if [ ! -L "$tmp/sae/sae_weights.safetensors" ] || [ "$(readlink "$tmp/sae/sae_weights.safetensors")" != sae.safetensors ]; then
    fail "sae_weights.safetensors is not a relative link to sae.safetensors"
fi

# streader.py: a small independent safetensors reader (struct for the header length, json for the header,
# np.frombuffer for the tensors) that checks the layout, shared by the check scripts below.
cat >"$tmp/streader.py" <<'EOF'
import json, os, struct, sys
import numpy as np

def fail(msg):
    print("export: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def read(out):
    """{name: float32 array} of OUT_DIR/sae.safetensors; fails on any layout error."""
    raw = open(os.path.join(out, "sae.safetensors"), "rb").read()
    if len(raw) < 8: fail("file shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n % 8 != 0: fail(f"header length {n} is not a multiple of 8 (data not 8-byte aligned)")
    if 8 + n > len(raw): fail(f"header length {n} runs past the end of the file ({len(raw)} bytes)")
    htext = raw[8:8 + n].decode("utf-8")
    if not htext.startswith("{"): fail("header does not start with '{'")
    if htext.rstrip(" ") != htext.strip() or not htext.rstrip(" ").endswith("}"):
        fail("header padding is not trailing spaces")
    hdr = json.loads(htext)
    data = raw[8 + n:]
    meta = hdr.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        fail(f"__metadata__ must map strings to strings: {meta!r}")
    spans = sorted((t["data_offsets"][0], t["data_offsets"][1], name) for name, t in hdr.items())
    pos = 0
    for b, e, name in spans:
        if b != pos: fail(f"{name} starts at {b}, expected {pos} (tensors must be contiguous, no gaps)")
        pos = e
    if pos != len(data): fail(f"tensors end at {pos}, but the data section is {len(data)} bytes")
    T = {}
    for name, t in hdr.items():
        if t["dtype"] != "F32": fail(f"{name} dtype {t['dtype']}")
        b, e = t["data_offsets"]
        shape = tuple(t["shape"])
        if e - b != 4 * int(np.prod(shape)): fail(f"{name}: {e - b} bytes for shape {shape}")
        T[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(shape)
    return T

def same_bits(a, b):
    a = np.ascontiguousarray(a, dtype="<f4"); b = np.ascontiguousarray(b, dtype="<f4")
    return a.shape == b.shape and np.array_equal(a.view("<u4"), b.view("<u4"))
EOF

# check.py OUT_DIR RUN_DIR CONDITION SEED DATA: every check of an exported HUSAI-recipe topk SAE.
cat >"$tmp/check.py" <<'EOF'
import json, os, sys
import h5py, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from streader import fail, read, same_bits

out, run, cond, seed, data_path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
T = read(out)
# feature_stability [d_sae] rides along (per-feature stability, issue 17): the seed's row of results.h5's
if set(T) != {"W_enc", "b_enc", "W_dec", "b_dec", "feature_stability"}: fail(f"tensor names {sorted(T)}")

with h5py.File(os.path.join(run, "results.h5"), "r") as f:
    g = f["conditions/" + cond]
    seeds = list(g["seeds"][...])
    s = seeds.index(seed)
    enc, dec, benc = g["encoders"][s], g["decoders"][s], g["b_enc"][s]
    k = int(g.attrs["k"])
    run_id = f.attrs["run_id"]
    run_id = run_id.decode() if isinstance(run_id, bytes) else str(run_id)
    commit = f.attrs["git_commit"]
    commit = commit.decode() if isinstance(commit, bytes) else str(commit)
    ev_husai = float(g["explained_variance"][s])
d_model, d_sae = dec.shape
want = {"W_enc": (d_model, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_model), "b_dec": (d_model,)}
for name, shape in want.items():
    if T[name].shape != shape: fail(f"{name} shape {T[name].shape}, expected {shape} (SAELens)")

if not same_bits(T["W_enc"], enc.T): fail("W_enc != encoders[s].T bitwise")
if not same_bits(T["W_dec"], dec.T): fail("W_dec != decoders[s].T bitwise")
if not same_bits(T["b_enc"], benc): fail("b_enc != b_enc[s] bitwise")
if not np.all(T["b_dec"] == 0): fail("b_dec is not zero (HUSAI's recipe has no decoder bias)")
norms = np.linalg.norm(T["W_dec"].astype(np.float64), axis=1)
if not np.allclose(norms, 1.0, atol=1e-5): fail(f"W_dec rows not unit norm ({norms.min()}..{norms.max()})")

# the exported SAE, run SAELens' way (x @ W_enc + b_enc, top k, @ W_dec + b_dec) with husai's signed
# top-k, reconstructs the training data exactly as well as husai reported
with h5py.File(data_path, "r") as f:
    X = f["activations"][...].astype(np.float64)
pre = X @ T["W_enc"].astype(np.float64) + T["b_enc"]
idx = np.argpartition(-pre, k - 1, axis=1)[:, :k]
Z = np.zeros_like(pre)
np.put_along_axis(Z, idx, np.take_along_axis(pre, idx, axis=1), axis=1)
Xh = Z @ T["W_dec"].astype(np.float64) + T["b_dec"]
ev = 1 - np.var(X - Xh, ddof=1) / np.var(X, ddof=1)
if abs(ev - ev_husai) > 2e-3: fail(f"exported SAE's EV {ev:.6f} != husai's {ev_husai:.6f}")

cfg = json.load(open(os.path.join(out, "cfg.json")))
expect = {"d_in": d_model, "d_sae": d_sae, "architecture": "topk", "k": k, "dtype": "float32",
          "apply_b_dec_to_input": False, "normalize_activations": "none"}
for key, v in expect.items():
    if cfg.get(key) != v: fail(f"cfg.json {key} = {cfg.get(key)!r}, expected {v!r}")
if cfg.get("activation_fn_kwargs") != {"k": k}: fail(f"cfg.json activation_fn_kwargs {cfg.get('activation_fn_kwargs')!r}")
h = cfg.get("husai", {})
if h.get("signed_topk") is not True or h.get("relu") is not False:
    fail(f"a signed TopK exported with --allow-signed-topk is not marked: signed_topk {h.get('signed_topk')!r}")
# why it is refused by default: under SAELens' rule (ReLU on the kept values) the code differs
l0_saelens = (np.maximum(Z, 0) != 0).sum(1).mean()
print(f"export:   signed TopK k={k}: L0 {(Z != 0).sum(1).mean():.2f} as husai runs it, {l0_saelens:.2f} under SAELens' rule")
for key, v in {"run_id": run_id, "condition": cond, "seed": seed, "git_commit": commit}.items():
    if h.get(key) != v: fail(f"cfg.json husai.{key} = {h.get(key)!r}, expected {v!r}")
if os.environ.get("CHECK_DIRNAME", "1") == "1" and run_id != os.path.basename(run): fail(f"run id {run_id} is not the run directory's name")
print(f"export:   {cond} seed {seed}: names, shapes, F32, layout, bitwise values, unit W_dec rows, "
      f"EV {ev:.4f} (husai {ev_husai:.4f}), cfg.json OK")
EOF
"$PY" "$tmp/check.py" "$tmp/sae" "$run" k=4 22 "$tmp/tiny.h5" || fail "check.py rejected the export of k=4 seed 22"

step "re-export into the same directory replaces the files (k=8 seed 11)"
"$HUSAI" export "$run" --condition k=8 --seed 11 --allow-signed-topk "$tmp/sae" >/dev/null || fail "re-export exited $?"
"$PY" "$tmp/check.py" "$tmp/sae" "$run" k=8 11 "$tmp/tiny.h5" || fail "check.py rejected the re-export of k=8 seed 11"
mapfile -t files < <(ls -A "$tmp/sae")
[ "${#files[@]}" -eq 3 ] || fail "re-export left extra files: ${files[*]}"

step "nested condition names (as calibrate runs write them: search/k=4)"
mkdir "$tmp/nested"
cp "$run/results.h5" "$tmp/nested/results.h5"
"$PY" - "$tmp/nested/results.h5" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f.create_group("conditions/search")
    f.move("conditions/k=4", "conditions/search/k=4")
EOF
"$HUSAI" export "$tmp/nested" --condition search/k=4 --seed 11 --allow-signed-topk "$tmp/sae_nested" >/dev/null || fail "nested export exited $?"
CHECK_DIRNAME=0 "$PY" "$tmp/check.py" "$tmp/sae_nested" "$tmp/nested" search/k=4 11 "$tmp/tiny.h5" ||
    fail "check.py rejected the nested export"

step "a run that stores a decoder bias (b_dec [S, d_model]) exports it instead of zeros"
"$PY" - "$tmp/nested/results.h5" <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    g = f["conditions/search/k=4"]
    S, d_model = g["decoders"].shape[:2]
    assert np.all(g["b_dec"][()] == 0), "a run without sae.decoder_bias stores a zero b_dec"
    g["b_dec"][...] = np.arange(S * d_model, dtype=np.float32).reshape(S, d_model) / 7
EOF
"$HUSAI" export "$tmp/nested" --condition search/k=4 --seed 22 --allow-signed-topk "$tmp/sae_bdec" >/dev/null || fail "b_dec export exited $?"
"$PY" - "$tmp/sae_bdec" <<'EOF' || fail "b_dec was not exported"
import json, struct, sys, numpy as np
raw = open(sys.argv[1] + "/sae.safetensors", "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
t = json.loads(raw[8:8 + n])["b_dec"]
b, e = t["data_offsets"]
got = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4")
want = (np.arange(2 * 16, dtype=np.float32).reshape(2, 16) / 7)[1]
assert np.array_equal(got, want), (got, want)
cfg = json.load(open(sys.argv[1] + "/cfg.json"))
assert "trained" in cfg["husai"]["b_dec"]
assert cfg["apply_b_dec_to_input"] is True, "husai's encoder sees x - b_dec"

EOF

# expect_error CODE PATTERN ARGS...: husai export ARGS exits CODE with one stderr line matching PATTERN
expect_error() {
    local code=$1 pattern=$2 rc=0
    shift 2
    "$HUSAI" export "$@" >"$tmp/e.out" 2>"$tmp/e.err" || rc=$?
    [ "$rc" -eq "$code" ] || fail "export $* exited $rc, expected $code (stderr: $(cat "$tmp/e.err"))"
    [ "$(wc -l <"$tmp/e.err")" -eq 1 ] || fail "export $*: expected one stderr line, got: $(cat "$tmp/e.err")"
    grep -q '^husai: error: export: ' "$tmp/e.err" || fail "export $*: stderr does not start with 'husai: error: export: '"
    grep -qE "$pattern" "$tmp/e.err" || fail "export $*: stderr '$(cat "$tmp/e.err")' does not match /$pattern/"
    [ ! -s "$tmp/e.out" ] || fail "export $*: a failed export wrote to stdout"
}

step "errors: one 'husai: error: export:' line, exit 1; nothing created"
expect_error 1 "'$tmp/none' does not exist" "$tmp/none" --condition k=4 --seed 11 "$tmp/e1"
mkdir "$tmp/empty_run"
expect_error 1 "no results.h5" "$tmp/empty_run" --condition k=4 --seed 11 "$tmp/e1"
expect_error 1 "no condition 'k=5'.*available: k=4, k=8" "$run" --condition k=5 --seed 11 "$tmp/e1"
expect_error 1 "available: k=8, search/k=4" "$tmp/nested" --condition k=4 --seed 11 "$tmp/e1"
expect_error 1 "no condition 'search'" "$tmp/nested" --condition search --seed 11 "$tmp/e1"
expect_error 1 "no condition 'k=4/decoders'" "$run" --condition k=4/decoders --seed 11 "$tmp/e1"
expect_error 1 "no seed 33 \(seeds: 11, 22\)" "$run" --condition k=4 --seed 33 "$tmp/e1"
expect_error 1 "unknown format 'npz'" "$run" --condition k=4 --seed 11 --format npz "$tmp/e1"
expect_error 1 "condition 'k=4' is husai's signed TopK \(sae.relu = false\): SAELens' TopK applies ReLU to the k kept values.*--allow-signed-topk" \
    "$run" --condition k=4 --seed 11 "$tmp/e1"
[ ! -e "$tmp/e1" ] || fail "a failed export created OUT_DIR"
touch "$tmp/afile"
expect_error 1 "not a directory" "$run" --condition k=4 --seed 11 --allow-signed-topk "$tmp/afile"
"$PY" - "$tmp/nested/results.h5" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["conditions/k=8"].attrs["arch"] = "gated"
EOF
expect_error 1 "architecture 'gated', which export does not know" "$tmp/nested" --condition k=8 --seed 11 "$tmp/e1"

step "usage errors: exit 2"
expect_error 2 "expected RUN_DIR and OUT_DIR" --condition k=4 --seed 11
expect_error 2 "expected RUN_DIR and OUT_DIR" "$run" --condition k=4 --seed 11
expect_error 2 "expected RUN_DIR and OUT_DIR" "$run" --condition k=4 --seed 11 "$tmp/a" "$tmp/b"
expect_error 2 "required" "$run" --seed 11 "$tmp/e1"
expect_error 2 "required" "$run" --condition k=4 "$tmp/e1"
expect_error 2 "non-negative integer" "$run" --condition k=4 --seed -3 "$tmp/e1"
expect_error 2 "non-negative integer" "$run" --condition k=4 --seed 1x "$tmp/e1"
expect_error 2 "unknown option '--bogus'" "$run" --bogus --condition k=4 --seed 11 "$tmp/e1"
expect_error 2 "needs a value" "$run" "$tmp/e1" --condition k=4 --seed
"$HUSAI" export --help | grep -q '^usage: husai export' || fail "--help does not print the usage"
"$HUSAI" --help | grep -q 'export RUN_DIR' || fail "husai --help does not list export"

step "every architecture: 2-rank sweep over arch (topk batchtopk jumprelu relu_l1 matryoshka) x seeds {5, 6}"
"$PY" "$HERE/data/make_tiny.py" "$tmp/arch.h5" 1200 12 24 4
cat >"$tmp/arch.ini" <<EOF
[data]
path = $tmp/arch.h5

[sae]
d_sae = 32
k = 4
decoder_bias = true
relu = true

[train]
epochs = 30
batch_size = 100
lr = 0.003

[sweep]
param = arch
values = topk, batchtopk, jumprelu, relu_l1, matryoshka
seeds = 5, 6

[metrics]
resamples = 100
EOF
rc=0
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/arch.ini" --out "$tmp/arch_out" --run-id a >"$tmp/arch.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || {
    cat "$tmp/arch.out" >&2
    fail "husai sweep over arch exited $rc"
}
arun=$tmp/arch_out/a

# check_arch.py OUT_DIR RUN_DIR CONDITION SEED DATA: the export of any architecture against results.h5,
# then the exported SAE's inference, written from SAELens' documented semantics and cfg.json alone:
#   x_in = x - b_dec if apply_b_dec_to_input else x;  pre = x_in @ W_enc + b_enc
#   standard: relu(pre);  topk: the k largest pre per row, then ReLU (SAELens' TopK; the run set
#   sae.relu = true);  jumprelu: pre * (pre > threshold);  x_hat = z @ W_dec + b_dec
# must reproduce results.h5's per-seed l0 (within 0.05: float32 in husai vs float64 here may flip a code
# sitting at a threshold), explained_variance (within 1e-5; measured ~1e-9) and mse (within 1e-5 * var(X)) on the
# training rows (every row not in /holdout_rows; all rows here).
cat >"$tmp/check_arch.py" <<'EOF'
import json, os, sys
import h5py, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from streader import fail, read, same_bits

out, run, cond, seed, data_path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
def text(v): return v.decode() if isinstance(v, bytes) else str(v)
T = read(out)
cfg = json.load(open(os.path.join(out, "cfg.json")))
with h5py.File(os.path.join(run, "results.h5"), "r") as f:
    g = f["conditions/" + cond]
    s = list(g["seeds"][...]).index(seed)
    arch = text(g.attrs["arch"])
    enc, dec, benc, bdec, th = (g[n][s] for n in ("encoders", "decoders", "b_enc", "b_dec", "thresholds"))
    k = int(g.attrs["k"])
    l0_h, ev_h, mse_h = (float(g[n][s]) for n in ("l0", "explained_variance", "mse"))
    holdout = f["holdout_rows"][()] if "holdout_rows" in f else np.zeros(0, dtype=np.int64)
d_model, d_sae = dec.shape
sae_arch = {"topk": "topk", "matryoshka": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu",
            "relu_l1": "standard"}[arch]
if cfg.get("architecture") != sae_arch: fail(f"{cond}: cfg.json architecture {cfg.get('architecture')!r}, expected {sae_arch!r}")

# tensors: names, shapes, bitwise values
want = {"W_enc": (d_model, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_model), "b_dec": (d_model,)}
if sae_arch == "jumprelu": want["threshold"] = (d_sae,)
want["feature_stability"] = (d_sae,)
if set(T) != set(want): fail(f"{cond}: tensor names {sorted(T)}, expected {sorted(want)}")
for name, shape in want.items():
    if T[name].shape != shape: fail(f"{cond}: {name} shape {T[name].shape}, expected {shape}")
for name, ref in (("W_enc", enc.T), ("W_dec", dec.T), ("b_enc", benc), ("b_dec", bdec)):
    if not same_bits(T[name], ref): fail(f"{cond}: {name} differs from results.h5 (bitwise)")
if not np.any(bdec != 0): fail(f"{cond}: the run trained no decoder bias")
if sae_arch == "jumprelu":
    if not same_bits(T["threshold"], th): fail(f"{cond}: threshold != thresholds[s] (bitwise)")
    if not np.all(th >= 0): fail(f"{cond}: negative thresholds")
    if arch == "batchtopk" and not (th.min() == th.max() > 0): fail(f"{cond}: batchtopk threshold not one positive value")

# cfg.json
expect = {"d_in": d_model, "d_sae": d_sae, "dtype": "float32", "apply_b_dec_to_input": True,
          "normalize_activations": "none", "activation_fn_str": "topk" if sae_arch == "topk" else "relu",
          "reshape_activations": "none", "finetuning_scaling_factor": False, "hook_head_index": None,
          "model_name": None, "hook_name": None, "hook_layer": None,  # data written by h5py: no names
          "context_size": None, "dataset_path": None}
expect["activation_fn"] = expect["activation_fn_str"]
for key in expect:
    if key not in cfg: fail(f"{cond}: cfg.json lacks {key} (SAELens reads it)")
if sae_arch == "topk": expect.update(k=k, activation_fn_kwargs={"k": k})
for key, v in expect.items():
    if cfg.get(key) != v: fail(f"{cond}: cfg.json {key} = {cfg.get(key)!r}, expected {v!r}")
if sae_arch != "topk" and "k" in cfg: fail(f"{cond}: cfg.json has k for architecture {sae_arch}")
h = cfg["husai"]
for key, v in {"arch": arch, "condition": cond, "seed": seed}.items():
    if h.get(key) != v: fail(f"{cond}: cfg.json husai.{key} = {h.get(key)!r}, expected {v!r}")
act = h.get("activation", "")
if arch == "batchtopk":
    if np.float32(h.get("inference_threshold")) != th[0]: fail(f"{cond}: husai.inference_threshold {h.get('inference_threshold')} != {th[0]}")
    if "exactly" not in act or "threshold" not in act: fail(f"{cond}: provenance does not explain the threshold: {act!r}")
if sae_arch == "topk" and (h.get("relu") is not True or h.get("signed_topk") is not False or "agree exactly" not in act):
    fail(f"{cond}: provenance of a relu = true run: relu {h.get('relu')!r}, signed_topk {h.get('signed_topk')!r}, {act!r}")
if arch == "matryoshka" and "matryoshka" not in act: fail(f"{cond}: provenance does not mention matryoshka")

# the exported SAE's inference, from cfg.json and the tensors only
X = h5py.File(data_path, "r")["activations"][()].astype(np.float64)
X = np.delete(X, holdout, axis=0)
W_enc, b_enc, W_dec, b_dec = (T[n].astype(np.float64) for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
x_in = X - b_dec if cfg["apply_b_dec_to_input"] else X
pre = x_in @ W_enc + b_enc
if cfg["architecture"] == "standard":
    z = np.maximum(pre, 0)
elif cfg["architecture"] == "topk":
    kk = cfg["activation_fn_kwargs"]["k"]
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :kk]
    z = np.zeros_like(pre)
    np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
elif cfg["architecture"] == "jumprelu":
    z = pre * (pre > T["threshold"].astype(np.float64))
else:
    fail(f"{cond}: unknown architecture {cfg['architecture']!r}")
e = X - (z @ W_dec + b_dec)
ev, mse, l0 = 1 - e.var(ddof=1) / X.var(ddof=1), (e ** 2).mean(), (z != 0).sum(1).mean()
if abs(ev - ev_h) > 1e-5 or abs(mse - mse_h) > 1e-5 * X.var() or abs(l0 - l0_h) > 0.05:
    fail(f"{cond} seed {seed}: exported SAE (EV, MSE, L0) = {(ev, mse, l0)}, husai {(ev_h, mse_h, l0_h)}")
print(f"export:   {cond} -> {sae_arch}: tensors bitwise, cfg.json, inference EV {ev:.4f} (husai {ev_h:.4f}), "
      f"L0 {l0:.3f} (husai {l0_h:.3f}), |dEV| {abs(ev - ev_h):.1e}")
EOF
for a in topk batchtopk jumprelu relu_l1 matryoshka; do
    "$HUSAI" export "$arun" --condition "arch=$a" --seed 6 "$tmp/x_$a" >"$tmp/x.out" 2>"$tmp/x.err" ||
        fail "export of arch=$a exited non-zero: $(cat "$tmp/x.err")"
    [ ! -s "$tmp/x.err" ] || fail "export of arch=$a wrote to stderr: $(cat "$tmp/x.err")"
    CHECK_DIRNAME=0 "$PY" "$tmp/check_arch.py" "$tmp/x_$a" "$arun" "arch=$a" 6 "$tmp/arch.h5" ||
        fail "check_arch.py rejected the export of arch=$a"
done

step "signed TopK refused by default, exported and marked with --allow-signed-topk (relu = false, or unknown)"
mkdir "$tmp/relu_run" "$tmp/nocfg_run"
cp "$arun/results.h5" "$tmp/relu_run/results.h5"
cp "$arun/results.h5" "$tmp/nocfg_run/results.h5"
"$PY" - "$tmp/relu_run/results.h5" "$tmp/nocfg_run/results.h5" <<'EOF'
import re, sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    c = f.attrs["config"]
    c = c.decode() if isinstance(c, bytes) else str(c)
    new, n = re.subn(r"(?m)^relu = true$", "relu = false", c)
    assert n == 1, "the stored config has no 'relu = true' line"
    f.attrs["config"] = np.bytes_(new)
with h5py.File(sys.argv[2], "r+") as f:
    f.attrs["config"] = np.bytes_("[sae]\nno_such_key = 1\n")
EOF
expect_error 1 "condition 'arch=topk' is husai's signed TopK \(sae.relu = false\)" "$tmp/relu_run" \
    --condition arch=topk --seed 5 "$tmp/x_relu"
expect_error 1 "condition 'arch=matryoshka' is husai's signed TopK \(its stored config does not say sae.relu = true\)" \
    "$tmp/nocfg_run" --condition arch=matryoshka --seed 5 "$tmp/x_nocfg"
[ ! -e "$tmp/x_relu" ] && [ ! -e "$tmp/x_nocfg" ] || fail "a refused export created OUT_DIR"
"$HUSAI" export "$tmp/relu_run" --condition arch=topk --seed 5 --allow-signed-topk "$tmp/x_relu" >/dev/null ||
    fail "signed export with --allow-signed-topk exited $?"
"$HUSAI" export "$tmp/nocfg_run" --condition arch=matryoshka --seed 5 --allow-signed-topk "$tmp/x_nocfg" >/dev/null ||
    fail "no-config export with --allow-signed-topk exited $?"
"$PY" - "$tmp/x_relu/cfg.json" "$tmp/x_nocfg/cfg.json" <<'EOF' || fail "signed provenance is wrong"
import json, sys
c = json.load(open(sys.argv[1]))
h = c["husai"]
assert c["architecture"] == "topk" and h["relu"] is False and h["signed_topk"] is True and "signed" in h["activation"], h
h = json.load(open(sys.argv[2]))["husai"]
assert "relu" not in h and h["signed_topk"] is True and "could not be read" in h["activation"] and "matryoshka" in h["activation"], h
EOF

step "threshold errors: missing, negative (jumprelu), not one value (batchtopk)"
mkdir "$tmp/bad_run"
cp "$arun/results.h5" "$tmp/bad_run/results.h5"
"$PY" - "$tmp/bad_run/results.h5" <<'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    del f["conditions/arch=relu_l1/thresholds"]
    f["conditions/arch=relu_l1"].attrs["arch"] = "jumprelu"
    t = f["conditions/arch=jumprelu/thresholds"]
    v = t[()]; v[1, 3] = -0.5; t[...] = v
    t = f["conditions/arch=batchtopk/thresholds"]
    v = t[()]; v[0, 7] *= 2; t[...] = v
EOF
expect_error 1 "condition 'arch=relu_l1' \(jumprelu\) lacks thresholds" "$tmp/bad_run" --condition arch=relu_l1 --seed 5 "$tmp/e2"
expect_error 1 "threshold of latent 3 is -0.5" "$tmp/bad_run" --condition arch=jumprelu --seed 6 "$tmp/e2"
expect_error 1 "thresholds differ across latents" "$tmp/bad_run" --condition arch=batchtopk --seed 5 "$tmp/e2"
[ ! -e "$tmp/e2" ] || fail "a failed export created OUT_DIR"
"$HUSAI" export "$tmp/bad_run" --condition arch=jumprelu --seed 5 "$tmp/e3" >/dev/null ||
    fail "the other seed of a condition with one bad threshold should export"

step "PASS"
