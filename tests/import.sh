#!/usr/bin/env bash
# import.sh: `husai import` (issue 18). Activations written by numpy as .npy (format 1.0 float32, 2.0
# float16, a 3-D array) and as safetensors shards (F32 in three shards with a 1-D tensor and metadata
# beside the rows, F16, BF16, a file with two 2-D tensors picked by --tensor; the safetensors files are
# written by hand here: 8-byte little-endian header length, JSON header, raw bytes) are imported and
# compared bitwise against numpy's own conversion to float32 (bf16 decoded by shifting its bits into a
# float32). Checks the dataset's layout (float32, chunked) and attributes (model_name, hook_name,
# source_files, source_rows), that memory stays bounded on 96 MB of input, and that every bad input
# (a shard of another width, truncated .npy and safetensors, a bad header, float64, int32, I32,
# Fortran order, NaN, a file of neither format, a missing file, two candidate tensors, an existing
# output, a full disk) gives exit 1, one "husai: error: import:" line naming the file and problem, no HDF5 error
# stack, and nothing under OUT (nor its staging name). Then a 2-rank sweep on the imported shards and on
# the imported .npy trains decoders bitwise equal to a sweep on the same rows written by h5py, results.json
# carries model_name/hook_name, and export's cfg.json too.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init import --keep-env --openblas

step "inputs: rows written by h5py (tiny.h5), then as .npy and safetensors by numpy"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 1200 12 24 3
# stw.py: a safetensors writer (no safetensors package) and the expected float32 of each dtype
cat >"$tmp/stw.py" <<'EOF'
import json, struct
import numpy as np

def bf16_bits(x):
    """float32 -> bfloat16 bit patterns (truncation: what matters is that they are valid bf16)."""
    return (np.ascontiguousarray(x, dtype="<f4").view("<u4") >> 16).astype("<u2")

def bf16_to_f32(bits):
    return (bits.astype("<u4") << 16).view("<f4")

def write(path, tensors, metadata=None, pad=True):
    """tensors: {name: (dtype string, shape, raw bytes)} in file order."""
    hdr, off, blobs = {}, 0, []
    if metadata is not None:
        hdr["__metadata__"] = metadata
    for name, (dt, shape, raw) in tensors.items():
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(hdr).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
EOF
"$PY" - "$tmp" <<'EOF'
import sys, h5py, numpy as np
sys.path.insert(0, sys.argv[1])
import stw
t = sys.argv[1]
X = h5py.File(t + "/tiny.h5", "r")["activations"][()]
assert X.dtype == np.float32 and X.shape == (1200, 12)
np.save(t + "/x.npy", X)                                         # format 1.0
with open(t + "/x16.npy", "wb") as f:
    np.lib.format.write_array(f, X.astype(np.float16), version=(2, 0))
np.save(t + "/x3d.npy", X.reshape(100, 12, 12))                  # [batch, seq, d]
np.save(t + "/exp_x.npy", X)
np.save(t + "/exp_x16.npy", X.astype(np.float16).astype(np.float32))
for i, (a, b) in enumerate([(0, 500), (500, 900), (900, 1200)]):  # F32 shards + a 1-D tensor + metadata
    stw.write(f"{t}/s{i}.safetensors",
              {"norms": ("F32", (b - a,), np.linalg.norm(X[a:b], axis=1).astype("<f4").tobytes()),
               "acts": ("F32", X[a:b].shape, X[a:b].astype("<f4").tobytes())},
              metadata={"format": "pt"})
h = X.astype("<f2")
stw.write(t + "/h0.safetensors", {"acts": ("F16", h[:700].shape, h[:700].tobytes())})
stw.write(t + "/h1.safetensors", {"acts": ("F16", h[700:].shape, h[700:].tobytes())}, pad=False)
bb = stw.bf16_bits(X)
stw.write(t + "/b0.safetensors", {"acts": ("BF16", X.shape, bb.tobytes())})
np.save(t + "/exp_bf16.npy", stw.bf16_to_f32(bb))
stw.write(t + "/two.safetensors", {"mlp": ("F32", (1200, 12), (2 * X).astype("<f4").tobytes()),
                                    "resid": ("F32", (1200, 12), X.astype("<f4").tobytes())})
EOF

# check.py OUT.h5 EXPECTED.npy N_SOURCES [MODEL HOOK]: the imported dataset against numpy, bitwise
cat >"$tmp/check.py" <<'EOF'
import os, sys, h5py, numpy as np
out, exp, n = sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3])
def text(v): return v.decode() if isinstance(v, bytes) else str(v)
with h5py.File(out, "r") as f:
    d = f["activations"]
    assert d.dtype == np.dtype("<f4"), d.dtype
    assert d.chunks is not None and d.chunks[1] == d.shape[1], d.chunks
    got = d[()]
    a = dict(d.attrs)
assert got.shape == exp.shape, (got.shape, exp.shape)
assert np.array_equal(got.view("<u4"), np.ascontiguousarray(exp, dtype="<f4").view("<u4")), \
    f"values differ at {np.argwhere(got.view('<u4') != exp.view('<u4'))[:3]}"
src = [text(s) for s in a["source_files"]]
assert len(src) == n and all(os.path.isabs(s) and os.path.exists(s) for s in src), src
assert int(np.sum(a["source_rows"])) == exp.shape[0], a["source_rows"]
if len(sys.argv) > 4:
    assert text(a["model_name"]) == sys.argv[4] and text(a["hook_name"]) == sys.argv[5], a
else:
    assert "model_name" not in a and "hook_name" not in a, a
EOF

# imp NAME EXPECTED N_SOURCES MODEL HOOK OUT [OPTIONS and INPUTS...]: husai import OUT ..., then check.py
imp() {
    local name=$1 exp=$2 n=$3 m=$4 h=$5 out=$6
    shift 6
    "$HUSAI" import "$out" "$@" >"$tmp/i.out" 2>"$tmp/i.err" || fail "$name: husai import exited $?: $(cat "$tmp/i.err")"
    [ ! -s "$tmp/i.err" ] || fail "$name: a successful import wrote to stderr: $(cat "$tmp/i.err")"
    grep -q "^husai: import: $n file" "$tmp/i.out" || fail "$name: stdout '$(cat "$tmp/i.out")'"
    local extra=()
    [ -z "$m" ] || extra=("$m" "$h")
    "$PY" "$tmp/check.py" "$out" "$tmp/$exp" "$n" "${extra[@]}" || fail "$name: the imported data differ"
    [ ! -e "$out.partial" ] || fail "$name: the staging file was left behind"
    step "  $name: bitwise equal to numpy's float32"
}

step "round trips"
imp "npy 1.0 float32" exp_x.npy 1 "" "" "$tmp/n32.h5" "$tmp/x.npy"
imp "npy 2.0 float16" exp_x16.npy 1 "" "" "$tmp/n16.h5" "$tmp/x16.npy"
imp "npy 3-D float32 (leading axes as rows)" exp_x.npy 1 "" "" "$tmp/n3d.h5" "$tmp/x3d.npy"
imp "safetensors F32, 3 shards" exp_x.npy 3 gpt2 blocks.3.hook_resid_post "$tmp/s32.h5" --model-name gpt2 \
    --hook-name blocks.3.hook_resid_post --chunk-rows 7 "$tmp/s0.safetensors" "$tmp/s1.safetensors" \
    "$tmp/s2.safetensors"
imp "safetensors F16, 2 shards (one unpadded header)" exp_x16.npy 2 "" "" "$tmp/s16.h5" \
    "$tmp/h0.safetensors" "$tmp/h1.safetensors"
imp "safetensors BF16" exp_bf16.npy 1 "" "" "$tmp/sbf.h5" "$tmp/b0.safetensors"
imp "safetensors --tensor resid of two" exp_x.npy 1 "" "" "$tmp/two.h5" --tensor resid "$tmp/two.safetensors"
# every finite float16 and bfloat16 bit pattern (subnormals, signed zeros, the largest values)
"$PY" - "$tmp" <<'EOF'
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import stw
t = sys.argv[1]
h = np.arange(65536, dtype=np.uint32).astype("<u2").view("<f2")
h = h[np.isfinite(h)].reshape(-1, 16)
np.save(t + "/allh.npy", h)
np.save(t + "/exp_allh.npy", h.astype(np.float32))
b = np.arange(65536, dtype=np.uint32).astype("<u2")
b = b[np.isfinite(stw.bf16_to_f32(b))].reshape(-1, 16)
stw.write(t + "/allb.safetensors", {"x": ("BF16", b.shape, b.tobytes())})
np.save(t + "/exp_allb.npy", stw.bf16_to_f32(b))
EOF
imp "every finite float16 (.npy)" exp_allh.npy 1 "" "" "$tmp/allh.h5" "$tmp/allh.npy"
imp "every finite bfloat16 (safetensors)" exp_allb.npy 1 "" "" "$tmp/allb.h5" "$tmp/allb.safetensors"
"$HUSAI" import "$tmp/mix.h5" "$tmp/s0.safetensors" "$tmp/x.npy" >/dev/null || fail "mixed import exited $?"
"$PY" - "$tmp/mix.h5" "$tmp/x.npy" <<'EOF' || fail "mixed inputs are not concatenated in order"
import sys, h5py, numpy as np
X = np.load(sys.argv[2])
got = h5py.File(sys.argv[1], "r")["activations"][()]
assert np.array_equal(got, np.concatenate([X[:500], X])), "rows not in input order"
EOF
"$PY" - "$tmp/s32.h5" <<'EOF' || fail "--chunk-rows not honoured"
import sys, h5py
assert h5py.File(sys.argv[1], "r")["activations"].chunks == (7, 12)
EOF
"$HUSAI" import --force "$tmp/n16.h5" "$tmp/x.npy" >/dev/null || fail "--force did not replace the output"
"$PY" "$tmp/check.py" "$tmp/n16.h5" "$tmp/exp_x.npy" 1 || fail "--force output differs"

step "bounded memory: 96 MB of F32 shards (3 x 2048 x 4096) through a fixed buffer"
"$PY" - "$tmp" <<'EOF'
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import stw
rng = np.random.default_rng(5)
for i in range(3):
    B = rng.standard_normal((2048, 4096), dtype=np.float32)
    stw.write(f"{sys.argv[1]}/big{i}.safetensors", {"x": ("F32", B.shape, B.tobytes())})
EOF
# Against the same import of one small shard, so the bound holds whatever the build adds (a sanitized
# husai's own footprint is larger): streaming adds at most its buffer (~16 MiB), never the 96 MB input.
/usr/bin/time -f "%M" -o "$tmp/rss0" "$HUSAI" import "$tmp/small.h5" "$tmp/x.npy" >/dev/null ||
    fail "small import exited non-zero"
/usr/bin/time -f "%M" -o "$tmp/rss" "$HUSAI" import "$tmp/big.h5" "$tmp"/big{0,1,2}.safetensors >/dev/null ||
    fail "big import exited non-zero"
rss0_kb=$(tail -1 "$tmp/rss0")
rss_kb=$(tail -1 "$tmp/rss")
step "  peak RSS $((rss_kb / 1024)) MB for 96 MB of input ($((rss0_kb / 1024)) MB for a small one)"
[ $((rss_kb - rss0_kb)) -lt $((40 * 1024)) ] || fail "peak RSS ${rss_kb} kB (${rss0_kb} kB for a small input): the input is not streamed"
"$PY" - "$tmp" <<'EOF' || fail "the big import differs from its shards"
import json, struct, sys, h5py, numpy as np
t = sys.argv[1]
with h5py.File(t + "/big.h5", "r") as f:
    d = f["activations"]
    assert d.shape == (6144, 4096), d.shape
    for i in range(3):
        raw = open(f"{t}/big{i}.safetensors", "rb").read()
        (n,) = struct.unpack("<Q", raw[:8])
        B = np.frombuffer(raw[8 + n:], dtype="<f4").reshape(2048, 4096)
        assert np.array_equal(d[2048 * i:2048 * (i + 1)], B), i
EOF
rm -f "$tmp"/big*

# expect_error PATTERN ARGS...: husai import ARGS exits 1 with one matching "husai: error: import:" line,
# nothing on stdout, no HDF5 stack, and leaves neither OUT (the first non-option argument, $tmp/e.h5 here)
# nor its staging file
expect_error() {
    local pattern=$1 rc=0
    shift
    rm -f "$tmp/e.h5"
    timeout 60 "$HUSAI" import "$@" >"$tmp/e.out" 2>"$tmp/e.err" || rc=$?
    [ "$rc" -eq 1 ] || fail "import $*: exit $rc, expected 1 (stderr: $(cat "$tmp/e.err"))"
    [ "$(wc -l <"$tmp/e.err")" -eq 1 ] || fail "import $*: expected one stderr line, got: $(cat "$tmp/e.err")"
    grep -q '^husai: error: import: ' "$tmp/e.err" || fail "import $*: stderr does not start with 'husai: error: import: '"
    grep -qE "$pattern" "$tmp/e.err" || fail "import $*: stderr '$(cat "$tmp/e.err")' does not match /$pattern/"
    ! grep -q "HDF5-DIAG" "$tmp/e.err" || fail "import $*: HDF5 error stack"
    [ ! -s "$tmp/e.out" ] || fail "import $*: a failed import wrote to stdout"
    [ ! -e "$tmp/e.h5" ] && [ ! -e "$tmp/e.h5.partial" ] || fail "import $*: left $(ls "$tmp"/e.h5*)"
    step "  refused: $(cat "$tmp/e.err")"
}

step "bad inputs: one line, exit 1, nothing written"
"$PY" - "$tmp" <<'EOF'
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import stw
t = sys.argv[1]
X = np.load(t + "/x.npy")
W = np.zeros((40, 13), dtype="<f4")
stw.write(t + "/wide.safetensors", {"acts": ("F32", W.shape, W.tobytes())})
raw = open(t + "/x.npy", "rb").read()
open(t + "/trunc.npy", "wb").write(raw[:-100])
raw = open(t + "/s1.safetensors", "rb").read()
open(t + "/trunc.safetensors", "wb").write(raw[:-4])
raw = open(t + "/x.npy", "rb").read()
open(t + "/badhdr.npy", "wb").write(raw.replace(b"'descr'", b"'dxxxx'", 1))
np.save(t + "/f64.npy", X.astype(np.float64))
np.save(t + "/i32.npy", X.astype(np.int32))
np.save(t + "/fortran.npy", np.asfortranarray(X))
N = X.copy(); N[7, 3] = np.nan
np.save(t + "/nan.npy", N)
I = X.astype("<i4")
stw.write(t + "/i32.safetensors", {"acts": ("I32", I.shape, I.tobytes())})
stw.write(t + "/nl.safetensors", {"a\nb": ("I8\n", (2, 2), bytes(4))})  # control characters in names
open(t + "/text.txt", "w").write("row,value\n1,2\n")
np.save(t + "/vec.npy", X[:, 0].copy())
EOF
E=$tmp/e.h5
expect_error "'$tmp/wide.safetensors' has width 13, but '$tmp/s0.safetensors' has 12" \
    "$E" "$tmp/s0.safetensors" "$tmp/wide.safetensors"
expect_error "'$tmp/trunc.npy' is truncated" "$E" "$tmp/x.npy" "$tmp/trunc.npy"
expect_error "'$tmp/trunc.safetensors' is truncated" "$E" "$tmp/s0.safetensors" "$tmp/trunc.safetensors"
expect_error "'$tmp/badhdr.npy': bad .npy header" "$E" "$tmp/badhdr.npy"
expect_error "'$tmp/f64.npy': dtype float64" "$E" "$tmp/f64.npy"
expect_error "'$tmp/i32.npy': unsupported dtype '<i4'" "$E" "$tmp/i32.npy"
expect_error "'$tmp/fortran.npy': Fortran-order" "$E" "$tmp/fortran.npy"
expect_error "'$tmp/nan.npy': row 7 \(0-based\) column 3 is NaN" "$E" "$tmp/x.npy" "$tmp/nan.npy"
expect_error "'$tmp/i32.safetensors': tensor 'acts' has dtype I32" "$E" "$tmp/i32.safetensors"
expect_error "'$tmp/nl.safetensors': tensor 'a\?b' has dtype I8\?" "$E" "$tmp/nl.safetensors"
expect_error "'$tmp/text.txt' is neither a .npy nor a safetensors file" "$E" "$tmp/text.txt"
expect_error "'$tmp/vec.npy': the array is 1-D" "$E" "$tmp/vec.npy"
expect_error "'$tmp/none.npy': No such file" "$E" "$tmp/none.npy"
expect_error "holds 2 tensors of rank >= 2 \('mlp', 'resid'\); name one with --tensor" "$E" "$tmp/two.safetensors"
expect_error "has no tensor 'nope'" --tensor nope "$E" "$tmp/s0.safetensors"
expect_error "is not a regular file" "$E" /dev/null
cp "$tmp/n32.h5" "$tmp/keep.h5"
rc=0
"$HUSAI" import "$tmp/keep.h5" "$tmp/x16.npy" >/dev/null 2>"$tmp/e.err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "exists; pass --force" "$tmp/e.err" || fail "an existing output was not refused: $(cat "$tmp/e.err")"
cmp -s "$tmp/keep.h5" "$tmp/n32.h5" || fail "a refused import changed the existing output"
rc=0
"$HUSAI" import --force "$tmp/keep.h5" "$tmp/x.npy" "$tmp/nan.npy" >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 1 ] && cmp -s "$tmp/keep.h5" "$tmp/n32.h5" && [ ! -e "$tmp/keep.h5.partial" ] ||
    fail "a failed --force import touched the existing output or left its staging file"
rc=0
"$HUSAI" import "$tmp/e.h5" >/dev/null 2>"$tmp/e.err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "expected OUT.h5 and at least one INPUT" "$tmp/e.err" || fail "usage error: rc $rc $(cat "$tmp/e.err")"
"$HUSAI" import --help | grep -q '^usage: husai import' || fail "--help"

step "a full disk (a 3000 KiB file-size limit standing in) for 5 MB of rows: one line, nothing left"
"$PY" -c "import numpy as np; np.save('$tmp/m.npy', np.ones((20000, 64), np.float32))"
rc=0
timeout 60 bash -c 'ulimit -f 3000; exec "$0" "$@"' "$HUSAI" import "$tmp/e.h5" "$tmp/m.npy" >"$tmp/e.out" 2>"$tmp/e.err" || rc=$?
[ "$rc" -eq 1 ] || fail "file-size limit: exit $rc (a crash in HDF5's exit handler?): $(cat "$tmp/e.err")"
[ "$(wc -l <"$tmp/e.err")" -eq 1 ] && grep -q "^husai: error: import: writing '$tmp/e.h5.partial' failed (disk full? File too large" "$tmp/e.err" ||
    fail "file-size limit: stderr $(cat "$tmp/e.err")"
[ ! -e "$tmp/e.h5" ] && [ ! -e "$tmp/e.h5.partial" ] || fail "file-size limit: left $(ls "$tmp"/e.h5*)"
step "  refused: $(cat "$tmp/e.err")"

step "2-rank sweeps: the h5py file, the imported shards and the imported .npy train the same decoders"
sweep() { # sweep DATA RUN_ID [VALUES]
    cat >"$tmp/$2.ini" <<EOF
[data]
path = $1

[sae]
d_sae = 24
relu = true

[train]
epochs = 6
batch_size = 100
lr = 0.003

[sweep]
param = k
values = ${3:-3, 6}
seeds = 1, 2

[metrics]
resamples = 100
EOF
    "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/$2.ini" --out "$tmp/runs" --run-id "$2" \
        >"$tmp/$2.log" 2>&1 || {
        cat "$tmp/$2.log" >&2
        fail "sweep $2 exited non-zero"
    }
}
# names as a user's own h5py code writes them: str (variable-length) attributes, here of the root group
"$PY" - "$tmp/n32.h5" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f.attrs["model_name"] = "gpt2"
    f.attrs["hook_name"] = "blocks.3.hook_resid_post"
EOF
sweep "$tmp/tiny.h5" ref
sweep "$tmp/s32.h5" shards
sweep "$tmp/n32.h5" npy
"$PY" - "$tmp/runs" <<'EOF' || fail "the imported data trained other decoders"
import json, sys, h5py, numpy as np
r = sys.argv[1]
def load(run):
    with h5py.File(f"{r}/{run}/results.h5", "r") as f:
        return {c: f["conditions"][c]["decoders"][()] for c in f["conditions"]}
ref = load("ref")
for run in ("shards", "npy"):
    got = load(run)
    assert sorted(got) == sorted(ref), (run, sorted(got))
    for c in ref:
        assert np.array_equal(got[c].view("<u4"), ref[c].view("<u4")), f"{run} {c}: decoders differ"
    d = json.load(open(f"{r}/{run}/results.json"))["data"]
    assert d["fingerprint"] == json.load(open(f"{r}/ref/results.json"))["data"]["fingerprint"], d
    assert d["model_name"] == "gpt2" and d["hook_name"] == "blocks.3.hook_resid_post", d
d = json.load(open(f"{r}/ref/results.json"))["data"]
assert "model_name" not in d and "hook_name" not in d, d
print("import:   decoders bitwise equal on", ", ".join(sorted(ref)), "for shards and .npy")
EOF

step "husai merge keeps the names: shards (k 3, 6) + a part with k = 5"
sweep "$tmp/s32.h5" part2 5
"$HUSAI" merge --out "$tmp/runs" --run-id merged "$tmp/runs/shards" "$tmp/runs/part2" >/dev/null 2>&1 ||
    fail "merge exited non-zero"
"$PY" - "$tmp/runs/merged/results.json" <<'EOF' || fail "merge lost model_name/hook_name"
import json, sys
d = json.load(open(sys.argv[1]))["data"]
assert d["model_name"] == "gpt2" and d["hook_name"] == "blocks.3.hook_resid_post", d
EOF

step "export carries model_name/hook_name into cfg.json (from the data, or --model-name/--hook-name)"
"$HUSAI" export "$tmp/runs/merged" --condition k=3 --seed 2 "$tmp/x1" >/dev/null || fail "export exited $?"
"$HUSAI" export "$tmp/runs/ref" --condition k=3 --seed 2 "$tmp/x2" >/dev/null || fail "export exited $?"
"$HUSAI" export "$tmp/runs/ref" --condition k=3 --seed 2 --model-name pythia-70m --hook-name blocks.0.hook_mlp_out \
    "$tmp/x3" >/dev/null || fail "export exited $?"
"$PY" - "$tmp" <<'EOF' || fail "cfg.json model_name/hook_name"
import json, sys
t = sys.argv[1]
c = json.load(open(t + "/x1/cfg.json"))
assert (c["model_name"], c["hook_name"], c["hook_layer"]) == ("gpt2", "blocks.3.hook_resid_post", 3), c
c = json.load(open(t + "/x2/cfg.json"))
assert c["model_name"] is None and c["hook_name"] is None and c["hook_layer"] is None, c
c = json.load(open(t + "/x3/cfg.json"))
assert (c["model_name"], c["hook_name"], c["hook_layer"]) == ("pythia-70m", "blocks.0.hook_mlp_out", 0), c
EOF

step "PASS"
