#!/usr/bin/python3
"""check_results.py: independent numpy recomputation of a husai sweep run directory.

usage: check_results.py RUN_DIR [--data FILE] [--dataset NAME]
       check_results.py RUN_DIR --exact-only     (any run, protocols included: only the bit-for-bit check)

From results.h5 and the dataset alone (never from husai's code) it recomputes and compares:
  - PWMCC of every seed pair from the decoders [S, d_model, d_sae] (columns normalised by max(norm, 1e-12),
    C = |A^T B|, (mean row max + mean col max) / 2) against the stored pwmcc matrix (1e-5), and the mean
    over the S(S-1)/2 pairs against results.json trained_pwmcc.mean (1e-6); likewise random_pwmcc;
  - explained variance, MSE, L0 and the dead-latent fraction of every seed from encoders, b_enc and decoders
    on the dataset (signed top-k of x W_enc^T + b_enc, ties to the lower index, x_hat = z W_dec^T;
    EV = 1 - var(X - X_hat) / var(X) over the flattened arrays, ddof=1) against per_seed (1e-4 for EV and MSE);
  - delta = trained mean - random mean, LCB = trained ci95_low - random ci95_high, ratio (1e-12);
  - every number in results.json with a results.h5 counterpart (each condition's per_seed values and seeds,
    its value/k/d_sae/d_model/lambda attributes, the reference seed) equals it bit for bit, NaN as null;
  - small samples: with S < 3 seeds every ci95_low/ci95_high, the pair statistics' std and the conservative
    LCB are null (withheld); with S >= 3 they are finite and the PWMCC and EV intervals have non-zero width;
  - CI means equal the per-seed means;
  - with bootstrap unit 'pairs' and generator 'numpy': the CIs of trained and random PWMCC equal HUSAI's method
    (numpy default_rng(seed).choice(pairs, (B, n)), percentiles 2.5/97.5) to 1e-12.
Prints each check; exits 1 on the first failure.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np

PROG = "check_results"


def fail(msg):
    print(f"{PROG}: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def step(msg):
    print(f"{PROG}: {msg}", flush=True)


def close(name, got, want, tol):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        fail(f"{name}: shape {got.shape} != expected {want.shape}")
    err = np.max(np.abs(got - want)) if got.size else 0.0
    if not np.all(np.isfinite(got)) or not err <= tol:
        fail(f"{name}: max |diff| {err:.3g} > {tol:g}\n  stored/reported: {got}\n  recomputed:      {want}")
    return err


MIN_SEEDS = 3  # bootstrap.h HUSAI_CI_MIN_SEEDS: fewer seeds, no interval


def bits(x):
    """The 64 bits of a double: equal bits, equal value (and -0.0 != 0.0, NaN == NaN of the same payload)."""
    return int(np.array(x, dtype=np.float64).view(np.uint64))


def same_double(name, js_value, h5_value):
    """results.json's number (None for NaN) against results.h5's, bit for bit; returns 1 (one number checked)."""
    want = float(h5_value)
    if js_value is None:
        if not np.isnan(want):
            fail(f"{name}: results.json has null, results.h5 {want!r}")
        return 1
    if isinstance(js_value, bool) or not isinstance(js_value, (int, float)):
        fail(f"{name}: results.json has {js_value!r}, not a number")
    if isinstance(js_value, int) and not isinstance(h5_value, (np.floating, float)):
        if js_value != int(h5_value):
            fail(f"{name}: results.json {js_value} != results.h5 {int(h5_value)}")
        return 1
    if bits(float(js_value)) != bits(want):
        fail(f"{name}: results.json {js_value!r} != results.h5 {want!r} (bits {bits(float(js_value)):#x} vs "
             f"{bits(want):#x})")
    return 1


# results.json per_seed key -> results.h5 dataset of the condition (same name, one value per seed)
PER_SEED = ("explained_variance", "mse", "l0", "dead_fraction", "steps", "seconds", "rank", "last_epoch_loss",
            "alignment_to_reference", "heldout_explained_variance", "heldout_mse", "heldout_l0",
            "heldout_dead_fraction", "gt_mean_max_cos", "gt_recovered")


def exact_json_vs_h5(js, h):
    """Every number of results.json with a results.h5 counterpart, compared bit for bit."""
    n = 0
    for c in js["conditions"]:
        name = c["name"]
        if name not in h["conditions"]:
            fail(f"condition {name} of results.json is not in results.h5")
        g = h["conditions"][name]
        seeds = g["seeds"][...]
        if len(c["per_seed"]) != len(seeds):
            fail(f"[{name}] {len(c['per_seed'])} per_seed entries, results.h5 has {len(seeds)} seeds")
        for s, e in enumerate(c["per_seed"]):
            if not isinstance(e["seed"], int) or e["seed"] != int(seeds[s]):
                fail(f"[{name}] per_seed[{s}].seed {e['seed']!r} != results.h5 {int(seeds[s])}")
            n += 1
            for key in PER_SEED:
                if key in e:
                    if key not in g:
                        fail(f"[{name}] per_seed has {key}, results.h5 has no such dataset")
                    n += same_double(f"[{name}] seed {seeds[s]} {key}", e[key], g[key][s])
        for key in PER_SEED:
            if key in g and any(key not in e for e in c["per_seed"]):
                fail(f"[{name}] results.h5 has {key}, results.json per_seed lacks it")
        for key in ("value", "k", "d_sae", "d_model", "lambda"):
            if key in g.attrs:
                if key not in c:
                    if key == "d_model":
                        continue  # results.json keeps d_model under data
                    fail(f"[{name}] results.h5 attribute {key} missing from results.json")
                n += same_double(f"[{name}] {key}", c[key], g.attrs[key][()] if hasattr(g.attrs[key], "shape")
                                 else g.attrs[key])
        if "d_model" in g.attrs:
            n += same_double(f"[{name}] d_model (data.d_model)", js["data"]["d_model"], g.attrs["d_model"])
    proto = js.get("protocol")
    if proto and "reference_seed" in proto:
        ref = int(h["reference"].attrs["seed"])
        if not isinstance(proto["reference_seed"], int) or proto["reference_seed"] != ref:
            fail(f"protocol.reference_seed {proto['reference_seed']!r} != results.h5 reference seed {ref}")
        n += 1
    return n


def check_small_samples(name, c, S):
    """Withheld below MIN_SEEDS seeds; reported, and not of zero width, from MIN_SEEDS on."""
    cis = [k for k in ("trained_pwmcc", "random_pwmcc", "explained_variance", "mse", "l0", "dead_fraction",
                       "matched_cosine", "matched_fraction_0_7", "gt_mean_max_cos", "gt_recovered",
                       "trained_pwmcc_with_reference", "alignment_to_reference") if k in c]
    cis += [("heldout", k) for k in c.get("heldout", {})]
    get = lambda k: c[k[0]][k[1]] if isinstance(k, tuple) else c[k]
    lcb = c["delta_pwmcc_ci_low_conservative"]
    if S < MIN_SEEDS:
        for k in cis:
            if get(k)["ci95_low"] is not None or get(k)["ci95_high"] is not None:
                fail(f"[{name}] S={S}: {k} has an interval {get(k)}, expected null (withheld)")
        for k in ("trained_pwmcc", "random_pwmcc"):
            if c[k]["std"] is not None:
                fail(f"[{name}] S={S}: {k}.std = {c[k]['std']!r} from one pair, expected null")
        if lcb is not None:
            fail(f"[{name}] S={S}: conservative LCB {lcb!r}, expected null")
        return
    for k in cis:
        v = get(k)
        if not all(isinstance(v[x], (int, float)) and np.isfinite(v[x]) for x in ("ci95_low", "ci95_high")):
            fail(f"[{name}] S={S}: {k} interval not reported: {v}")
    for k in ("trained_pwmcc", "random_pwmcc", "explained_variance"):
        if not c[k]["ci95_low"] < c[k]["ci95_high"]:
            fail(f"[{name}] S={S}: {k} interval has zero width: {c[k]}")
    if not isinstance(lcb, (int, float)):
        fail(f"[{name}] S={S}: conservative LCB {lcb!r} not reported")


def pwmcc(A, B):
    A = A.astype(np.float64)
    B = B.astype(np.float64)
    A = A / np.maximum(np.linalg.norm(A, axis=0, keepdims=True), 1e-12)
    B = B / np.maximum(np.linalg.norm(B, axis=0, keepdims=True), 1e-12)
    C = np.abs(A.T @ B)
    return (C.max(axis=1).mean() + C.max(axis=0).mean()) / 2.0


def pair_mean(M):
    S = M.shape[0]
    iu = np.triu_indices(S, 1)
    return M[iu].mean()


def recon(X, W_enc, b_enc, W_dec, k):
    """Signed top-k with ties to the lower index; float64 throughout."""
    pre = X @ W_enc.astype(np.float64).T + b_enc.astype(np.float64)
    # A stable sort of -pre keeps equal values in index order, so ties go to the lower index.
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    z = np.zeros_like(pre)
    rows = np.arange(pre.shape[0])[:, None]
    z[rows, idx] = pre[rows, idx]
    X_hat = z @ W_dec.astype(np.float64).T
    E = X - X_hat
    ev = 1.0 - np.var(E.ravel(), ddof=1) / np.var(X.ravel(), ddof=1)
    mse = np.mean(E.ravel() ** 2)
    l0 = np.count_nonzero(z) / X.shape[0]
    fired = np.zeros(pre.shape[1], dtype=bool)
    fired[np.unique(idx[z[rows, idx] != 0])] = True
    dead = 1.0 - fired.mean()
    return ev, mse, l0, dead


def husai_pairs_ci(values, B, seed):
    rng = np.random.default_rng(seed)
    means = rng.choice(values, (B, len(values)), replace=True).mean(axis=1)
    return np.percentile(means, 2.5), np.percentile(means, 97.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset file (default: results.json data.path)")
    p.add_argument("--dataset", help="dataset name (default: results.json data.dataset)")
    p.add_argument("--exact-only", action="store_true", help="only compare results.json with results.h5 bit for bit")
    a = p.parse_args()

    with open(os.path.join(a.run_dir, "results.json")) as f:
        js = json.load(f)
    with h5py.File(os.path.join(a.run_dir, "results.h5"), "r") as h:
        n = exact_json_vs_h5(js, h)
    step(f"{n} numbers of results.json equal their results.h5 counterparts bit for bit")
    if a.exact_only:
        step("all checks passed")
        return
    data_path = a.data or js["data"]["path"]
    dset = a.dataset or js["data"]["dataset"]
    with h5py.File(data_path, "r") as f:
        # husai converts any float dtype to float32 on read; do the same, then compute in float64.
        X = f[dset][...].astype(np.float32).astype(np.float64)
    step(f"data {data_path}:{dset} {X.shape[0]} x {X.shape[1]}")

    conds = {c["name"]: c for c in js["conditions"]}
    boot = js["bootstrap"]
    with h5py.File(os.path.join(a.run_dir, "results.h5"), "r") as h:
        names = sorted(h["conditions"].keys())
        if sorted(conds) != names:
            fail(f"conditions in results.h5 {names} != results.json {sorted(conds)}")
        for name in names:
            g = h["conditions"][name]
            c = conds[name]
            dec = g["decoders"][...]
            enc = g["encoders"][...]
            b_enc = g["b_enc"][...]
            seeds = g["seeds"][...]
            P = g["pwmcc"][...]
            R = g["random_pwmcc"][...]
            S, d_model, d_sae = dec.shape
            k = int(c["k"])
            step(f"[{name}] S={S} d_model={d_model} d_sae={d_sae} k={k}")
            if d_model != X.shape[1]:
                fail(f"[{name}] decoders have d_model {d_model}, the data {X.shape[1]}")
            if [e["seed"] for e in c["per_seed"]] != [int(s) for s in seeds]:
                fail(f"[{name}] per_seed seeds {[e['seed'] for e in c['per_seed']]} != h5 seeds {list(seeds)}")

            step(f"[{name}] PWMCC of all {S * (S - 1) // 2} seed pairs recomputed from the decoders (1e-5)")
            Pr = np.eye(S)
            for i in range(S):
                for j in range(i + 1, S):
                    Pr[i, j] = Pr[j, i] = pwmcc(dec[i], dec[j])
            e = close(f"[{name}] pwmcc matrix", P, Pr, 1e-5)
            step(f"  max |diff| {e:.2e}")
            close(f"[{name}] trained_pwmcc.mean vs recomputed pair mean", c["trained_pwmcc"]["mean"], pair_mean(Pr), 1e-6)
            if c["trained_pwmcc"]["n"] != S * (S - 1) // 2 and c["trained_pwmcc"]["n"] != S:
                fail(f"[{name}] trained_pwmcc.n = {c['trained_pwmcc']['n']}")

            step(f"[{name}] random baseline: stored matrix symmetric with unit diagonal; mean matches results.json")
            close(f"[{name}] random_pwmcc symmetry", R, R.T, 0.0)
            close(f"[{name}] random_pwmcc diagonal", np.diag(R), np.ones(S), 1e-6)
            close(f"[{name}] random_pwmcc.mean vs stored pair mean", c["random_pwmcc"]["mean"], pair_mean(R), 1e-12)

            step(f"[{name}] S={S}: intervals and LCB " + ("withheld (null)" if S < MIN_SEEDS else "reported, non-degenerate"))
            check_small_samples(name, c, S)

            step(f"[{name}] delta, conservative LCB and ratio from the reported CIs (1e-12)")
            t, r = c["trained_pwmcc"], c["random_pwmcc"]
            close(f"[{name}] delta_pwmcc", c["delta_pwmcc"], t["mean"] - r["mean"], 1e-12)
            if S >= MIN_SEEDS:
                close(f"[{name}] delta_pwmcc_ci_low_conservative", c["delta_pwmcc_ci_low_conservative"],
                      t["ci95_low"] - r["ci95_high"], 1e-12)
            close(f"[{name}] ratio_pwmcc", c["ratio_pwmcc"], t["mean"] / r["mean"], 1e-12)
            for key in ("trained_pwmcc", "random_pwmcc", "explained_variance", "mse", "l0", "dead_fraction"):
                ci = c[key]
                if S >= MIN_SEEDS and not ci["ci95_low"] - 1e-12 <= ci["mean"] <= ci["ci95_high"] + 1e-12 and ci["ci95_low"] != ci["ci95_high"]:
                    fail(f"[{name}] {key}: mean {ci['mean']} outside its CI [{ci['ci95_low']}, {ci['ci95_high']}]")

            step(f"[{name}] EV, MSE, L0 and dead fraction of every seed recomputed on the data (EV/MSE 1e-4)")
            for s in range(S):
                ev, mse, l0, dead = recon(X, enc[s], b_enc[s], dec[s], k)
                ps = c["per_seed"][s]
                close(f"[{name}] seed {seeds[s]} explained_variance", ps["explained_variance"], ev, 1e-4)
                close(f"[{name}] seed {seeds[s]} mse", ps["mse"], mse, 1e-4)
                close(f"[{name}] seed {seeds[s]} l0", ps["l0"], l0, 1e-9)
                close(f"[{name}] seed {seeds[s]} dead_fraction", ps["dead_fraction"], dead, 1.0 / d_sae + 1e-12)
                step(f"  seed {seeds[s]}: EV {ps['explained_variance']:.6f} (numpy {ev:.6f}), "
                     f"MSE {ps['mse']:.6g} (numpy {mse:.6g}), L0 {ps['l0']:g}, dead {ps['dead_fraction']:g}")

            step(f"[{name}] CI means equal per-seed means")
            for key in ("explained_variance", "mse", "l0", "dead_fraction"):
                col = np.array([e[key] for e in c["per_seed"]])
                close(f"[{name}] {key}.mean", c[key]["mean"], col.mean(), 1e-12)

            if boot["unit"] == "pairs" and boot["rng"] == "numpy" and S >= MIN_SEEDS:
                step(f"[{name}] HUSAI pair bootstrap with numpy default_rng({boot['seed']}), "
                     f"{boot['resamples']} resamples: CIs of trained and random PWMCC (1e-12)")
                iu = np.triu_indices(S, 1)
                for key, M in (("trained_pwmcc", P), ("random_pwmcc", R)):
                    lo, hi = husai_pairs_ci(M[iu], boot["resamples"], boot["seed"])
                    close(f"[{name}] {key} ci95 (numpy pairs)", [c[key]["ci95_low"], c[key]["ci95_high"]], [lo, hi], 1e-12)
    step("all checks passed")


if __name__ == "__main__":
    main()
