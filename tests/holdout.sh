#!/usr/bin/env bash
# holdout.sh: [data] holdout = 0.25 keeps a quarter of the rows out of training. The held-out rows
# are recorded in results.h5; numpy recomputes EV and MSE on them (and on the training rows) from
# the stored parameters and must match results.json; the split is the same for every seed and rank
# count; training EV stays computed on training rows only.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init holdout
echo "holdout: sweep with data.holdout = 0.25 on 2 and 3 ranks"
"$PY" "$HERE/data/make_tiny.py" "$tmp/d.h5" 1000 12 20 4
cat >"$tmp/h.ini" <<INI
[data]
path = $tmp/d.h5
holdout = 0.25
split_seed = 7
[sae]
d_sae = 24
[train]
epochs = 10
batch_size = 100
lr = 0.003
[sweep]
param = k
values = 3
seeds = 1, 2, 3
[metrics]
resamples = 200
INI
for np in 2 3; do
    "$MPIEXEC" -np "$np" --oversubscribe "$HUSAI" sweep "$tmp/h.ini" --out "$tmp/o$np" --run-id r >"$tmp/log$np" 2>&1 || {
        cat "$tmp/log$np"
        echo "holdout: FAIL: sweep on $np ranks" >&2
        exit 1
    }
done
"$PY" - "$tmp/d.h5" "$tmp/o2/r" "$tmp/o3/r" <<'PY'
import json, sys, h5py, numpy as np
X = h5py.File(sys.argv[1], "r")["activations"][()].astype(np.float64)
f = h5py.File(sys.argv[2] + "/results.h5", "r")
f3 = h5py.File(sys.argv[3] + "/results.h5", "r")
j = json.load(open(sys.argv[2] + "/results.json"))
hold = f["holdout_rows"][()]
assert len(hold) == 250 and len(set(hold)) == 250, len(hold)
assert (f3["holdout_rows"][()] == hold).all(), "split differs between rank counts"
train = np.setdiff1d(np.arange(len(X)), hold)
def ev_mse(W_enc, b_enc, D, rows, k):
    x = X[rows]
    pre = x @ W_enc.T.astype(np.float64) + b_enc
    z = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    np.put_along_axis(z, idx, np.take_along_axis(pre, idx, 1), 1)
    e = x - z @ D.T.astype(np.float64)
    return 1 - e.var(ddof=1) / x.var(ddof=1), (e ** 2).mean()
g = f["conditions"]["k=3"]
c = j["conditions"][0]
for s in range(3):
    ps = c["per_seed"][s]
    ev_h, mse_h = ev_mse(g["encoders"][s], g["b_enc"][s], g["decoders"][s], hold, 3)
    ev_t, mse_t = ev_mse(g["encoders"][s], g["b_enc"][s], g["decoders"][s], train, 3)
    assert abs(ev_h - ps["heldout_explained_variance"]) < 1e-4, (ev_h, ps["heldout_explained_variance"])
    assert abs(mse_h - ps["heldout_mse"]) < 1e-4 * max(1, mse_h), (mse_h, ps["heldout_mse"])
    assert abs(ev_t - ps["explained_variance"]) < 1e-4, (ev_t, ps["explained_variance"])
    assert g["decoders"][s].tobytes() == f3["conditions"]["k=3"]["decoders"][s].tobytes(), "decoders differ 2 vs 3 ranks"
assert abs(c["heldout"]["explained_variance"]["mean"] - np.mean([p["heldout_explained_variance"] for p in c["per_seed"]])) < 1e-12
M, F, P = g["matched_cosine"][()], g["matched_fraction"][()], g["pwmcc"][()]
iu = np.triu_indices(3, 1)
assert np.allclose(np.diag(M), 1) and np.allclose(M, M.T), "matched_cosine not symmetric with unit diagonal"
assert (M[iu] <= P[iu] + 1e-6).all(), "one-to-one matching cannot beat PWMCC's unconstrained maxima"
assert abs(M[iu].mean() - c["matched_cosine"]["mean"]) < 1e-12, "matched_cosine CI mean"
assert abs(F[iu].mean() - c["matched_fraction_0_7"]["mean"]) < 1e-12, "matched_fraction CI mean"
# independent lower bound for one pair: a greedy one-to-one matching in numpy can never beat the optimum
D = g["decoders"][()].astype(np.float64)
D /= np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-12)
C = np.abs(D[0].T @ D[1])
used_r, used_c, tot = set(), set(), 0.0
for flat in np.argsort(-C, axis=None, kind="stable"):
    r, q = divmod(int(flat), C.shape[1])
    if r in used_r or q in used_c:
        continue
    used_r.add(r); used_c.add(q); tot += C[r, q]
assert M[0, 1] >= tot / C.shape[0] - 1e-6, (M[0, 1], tot / C.shape[0])
print("holdout: held-out and training EV/MSE match numpy; split and decoders identical on 2 and 3 ranks;"
      " matched agreement consistent")
PY
