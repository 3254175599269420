#!/usr/bin/python3
"""check_results.py: independent numpy recomputation of a husai sweep run directory.

usage: check_results.py RUN_DIR [--data FILE] [--dataset NAME]

From results.h5 and the dataset alone (never from husai's code) it recomputes and compares:
  - PWMCC of every seed pair from the decoders [S, d_model, d_sae] (columns normalised by max(norm, 1e-12),
    C = |A^T B|, (mean row max + mean col max) / 2) against the stored pwmcc matrix (1e-5), and the mean
    over the S(S-1)/2 pairs against results.json trained_pwmcc.mean (1e-6); likewise random_pwmcc;
  - explained variance, MSE, L0 and the dead-latent fraction of every seed from encoders, b_enc and decoders
    on the dataset (signed top-k of x W_enc^T + b_enc, ties to the lower index, x_hat = z W_dec^T;
    EV = 1 - var(X - X_hat) / var(X) over the flattened arrays, ddof=1) against per_seed (1e-4 for EV and MSE);
  - delta = trained mean - random mean, LCB = trained ci95_low - random ci95_high, ratio (1e-12);
  - the per-seed metric datasets of results.h5 equal results.json per_seed; CI means equal the per-seed means;
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
    a = p.parse_args()

    with open(os.path.join(a.run_dir, "results.json")) as f:
        js = json.load(f)
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

            step(f"[{name}] delta, conservative LCB and ratio from the reported CIs (1e-12)")
            t, r = c["trained_pwmcc"], c["random_pwmcc"]
            close(f"[{name}] delta_pwmcc", c["delta_pwmcc"], t["mean"] - r["mean"], 1e-12)
            close(f"[{name}] delta_pwmcc_ci_low_conservative", c["delta_pwmcc_ci_low_conservative"],
                  t["ci95_low"] - r["ci95_high"], 1e-12)
            close(f"[{name}] ratio_pwmcc", c["ratio_pwmcc"], t["mean"] / r["mean"], 1e-12)
            for key in ("trained_pwmcc", "random_pwmcc", "explained_variance", "mse", "l0", "dead_fraction"):
                ci = c[key]
                if not ci["ci95_low"] - 1e-12 <= ci["mean"] <= ci["ci95_high"] + 1e-12 and ci["ci95_low"] != ci["ci95_high"]:
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

            step(f"[{name}] results.h5 per-seed datasets equal results.json per_seed; CI means equal per-seed means")
            for key in ("explained_variance", "mse", "l0", "dead_fraction"):
                col = np.array([e[key] for e in c["per_seed"]])
                close(f"[{name}] h5 {key}", g[key][...], col, 1e-15 * max(1.0, np.abs(col).max()))
                close(f"[{name}] {key}.mean", c[key]["mean"], col.mean(), 1e-12)

            if boot["unit"] == "pairs" and boot["rng"] == "numpy":
                step(f"[{name}] HUSAI pair bootstrap with numpy default_rng({boot['seed']}), "
                     f"{boot['resamples']} resamples: CIs of trained and random PWMCC (1e-12)")
                iu = np.triu_indices(S, 1)
                for key, M in (("trained_pwmcc", P), ("random_pwmcc", R)):
                    lo, hi = husai_pairs_ci(M[iu], boot["resamples"], boot["seed"])
                    close(f"[{name}] {key} ci95 (numpy pairs)", [c[key]["ci95_low"], c[key]["ci95_high"]], [lo, hi], 1e-12)
    step("all checks passed")


if __name__ == "__main__":
    main()
