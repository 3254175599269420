#!/usr/bin/env bash
# export.sh: end-to-end checks of `husai export` (issue 8, ecosystem). A tiny 2-rank sweep, then one seed
# exported as safetensors + cfg.json and read back with a small independent parser (python3 + numpy:
# struct for the header length, json for the header, np.frombuffer for the tensors; not the safetensors
# package). Checks names, shapes, dtypes, contiguous 8-byte-aligned layout, values bitwise equal to the
# transposed arrays in results.h5, unit-norm W_dec rows, a zero b_dec, that the exported SAE reconstructs
# the data as well as husai reported, cfg.json's SAELens fields and provenance, atomic replacement, nested
# condition names, and one stderr line with exit 1 (errors) or 2 (usage) for every bad invocation.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.
set -euo pipefail

: "${HUSAI:?set HUSAI to the path of the husai binary}"
: "${MPIEXEC:?set MPIEXEC to mpirun/mpiexec}"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step() { echo "export: $*"; }
fail() {
    echo "export: FAIL: $*" >&2
    exit 1
}

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
"$HUSAI" export "$run" --condition k=4 --seed 22 --format safetensors "$tmp/sae" >"$tmp/x.out" 2>"$tmp/x.err" || rc=$?
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

# check.py OUT_DIR RUN_DIR CONDITION SEED DATA: the independent reader and every check of the exported SAE.
cat >"$tmp/check.py" <<'EOF'
import json, os, struct, sys
import h5py, numpy as np

out, run, cond, seed, data_path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
def fail(msg):
    print("export: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

# --- a small independent safetensors reader ---
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
if set(hdr) != {"W_enc", "b_enc", "W_dec", "b_dec"}: fail(f"tensor names {sorted(hdr)}")
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

def same_bits(a, b):
    a = np.ascontiguousarray(a, dtype="<f4"); b = np.ascontiguousarray(b, dtype="<f4")
    return a.shape == b.shape and np.array_equal(a.view("<u4"), b.view("<u4"))
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
for key, v in {"run_id": run_id, "condition": cond, "seed": seed, "git_commit": commit}.items():
    if h.get(key) != v: fail(f"cfg.json husai.{key} = {h.get(key)!r}, expected {v!r}")
if os.environ.get("CHECK_DIRNAME", "1") == "1" and run_id != os.path.basename(run): fail(f"run id {run_id} is not the run directory's name")
print(f"export:   {cond} seed {seed}: names, shapes, F32, layout, bitwise values, unit W_dec rows, "
      f"EV {ev:.4f} (husai {ev_husai:.4f}), cfg.json OK")
EOF
"$PY" "$tmp/check.py" "$tmp/sae" "$run" k=4 22 "$tmp/tiny.h5" || fail "check.py rejected the export of k=4 seed 22"

step "re-export into the same directory replaces the files (k=8 seed 11)"
"$HUSAI" export "$run" --condition k=8 --seed 11 "$tmp/sae" >/dev/null || fail "re-export exited $?"
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
"$HUSAI" export "$tmp/nested" --condition search/k=4 --seed 11 "$tmp/sae_nested" >/dev/null || fail "nested export exited $?"
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
"$HUSAI" export "$tmp/nested" --condition search/k=4 --seed 22 "$tmp/sae_bdec" >/dev/null || fail "b_dec export exited $?"
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
    grep -q '^husai export: ' "$tmp/e.err" || fail "export $*: stderr does not start with 'husai export: '"
    grep -qE "$pattern" "$tmp/e.err" || fail "export $*: stderr '$(cat "$tmp/e.err")' does not match /$pattern/"
    [ ! -s "$tmp/e.out" ] || fail "export $*: a failed export wrote to stdout"
}

step "errors: one 'husai export:' line, exit 1; nothing created"
expect_error 1 "'$tmp/none' does not exist" "$tmp/none" --condition k=4 --seed 11 "$tmp/e1"
mkdir "$tmp/empty_run"
expect_error 1 "no results.h5" "$tmp/empty_run" --condition k=4 --seed 11 "$tmp/e1"
expect_error 1 "no condition 'k=5'.*available: k=4, k=8" "$run" --condition k=5 --seed 11 "$tmp/e1"
expect_error 1 "available: k=8, search/k=4" "$tmp/nested" --condition k=4 --seed 11 "$tmp/e1"
expect_error 1 "no condition 'search'" "$tmp/nested" --condition search --seed 11 "$tmp/e1"
expect_error 1 "no condition 'k=4/decoders'" "$run" --condition k=4/decoders --seed 11 "$tmp/e1"
expect_error 1 "no seed 33 \(seeds: 11, 22\)" "$run" --condition k=4 --seed 33 "$tmp/e1"
expect_error 1 "unknown format 'npz'" "$run" --condition k=4 --seed 11 --format npz "$tmp/e1"
[ ! -e "$tmp/e1" ] || fail "a failed export created OUT_DIR"
touch "$tmp/afile"
expect_error 1 "not a directory" "$run" --condition k=4 --seed 11 "$tmp/afile"
"$PY" - "$tmp/nested/results.h5" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["conditions/k=8"].attrs["arch"] = "jumprelu"
EOF
expect_error 1 "architecture 'jumprelu'" "$tmp/nested" --condition k=8 --seed 11 "$tmp/e1"

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

step "PASS"
