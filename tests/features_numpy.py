"""features_numpy.py: husai's per-feature stability and consensus features (metrics/features.c, through
test_features --dump) against an independent numpy computation in float64: best |cos| and its index,
stability, mutual matches, clusters by the documented rule (mutual matches >= tau taken by decreasing |cos|,
ties by (seed id, index) keys, joined only when the two clusters share no seed), consensus directions and
coherence. Cases: planted shared columns (found exactly), random decoders (no consensus at tau 0.7), a
permutation of the seeds (same clusters), and 1 vs 3 OpenMP threads (bitwise the same files).
Usage: features_numpy.py TEST_FEATURES_BINARY TMPDIR"""
import os
import subprocess
import sys

import numpy as np

BIN, TMP = sys.argv[1], sys.argv[2]
BEST_TOL = 1e-5  # float32 sgemm vs float64: |cos| of unit rows of <= 64 dims


def fail(msg):
    print("features_numpy: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def run(D, ids, tau, min_seeds, name, threads=1):
    S, dm, n = D.shape
    inp = os.path.join(TMP, name + ".in")
    out = os.path.join(TMP, name)
    os.makedirs(out, exist_ok=True)
    with open(inp, "wb") as fp:
        fp.write(np.array([S, dm, n, min_seeds], "<i4").tobytes())
        fp.write(np.array([tau], "<f8").tobytes())
        fp.write(np.asarray(ids, "<u8").tobytes())
        fp.write(np.ascontiguousarray(D, "<f4").tobytes())
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([BIN, "--dump", inp, out], env=env, capture_output=True, text=True, timeout=120)
    if r.returncode:
        fail(f"{name}: dump exited {r.returncode}: {r.stderr}")
    summ = dict(l.split(" ", 1) for l in open(os.path.join(out, "summary.txt")).read().splitlines())
    nc = int(summ["n_consensus"])
    ld = lambda f, dt, shape: np.fromfile(os.path.join(out, f + ".bin"), dt).reshape(shape)
    res = dict(
        best_cos=ld("best_cos", "<f4", (S, S, n)), best_index=ld("best_index", "<i4", (S, S, n)),
        stability=ld("stability", "<f4", (S, n)), mean_best=ld("mean_best", "<f4", (S, n)),
        cluster=ld("cluster", "<i4", (S, n)), consensus=ld("consensus", "<f4", (nc, dm)),
        members=ld("members", "<i4", (nc, S)), coherence=ld("coherence", "<f4", (nc,)),
        n_mutual=int(summ["n_mutual"]), n_consensus=nc, dir=out)
    return res


def reference(D, ids, tau, min_seeds):
    """Everything from the definitions, in float64."""
    S, dm, n = D.shape
    U = [d / np.maximum(np.linalg.norm(d.astype(np.float64), axis=0), 1e-12) for d in D.astype(np.float64)]
    best = np.zeros((S, S, n))
    arg = np.zeros((S, S, n), int)
    gap = np.full((S, S, n), np.inf)
    for s in range(S):
        for t in range(S):
            if s == t:
                continue
            C = np.abs(U[s].T @ U[t])
            arg[s, t] = C.argmax(1)
            srt = np.sort(C, 1)
            best[s, t], gap[s, t] = srt[:, -1], srt[:, -1] - srt[:, -2]
    off = ~np.eye(S, dtype=bool)
    stab = np.array([[(best[s, [t for t in range(S) if t != s], i] >= tau).mean() for i in range(n)] for s in range(S)])
    rank = {s: r for r, s in enumerate(np.argsort(ids, kind="stable"))}
    key = lambda s, i: rank[s] * n + i
    edges = []
    for p in range(S):
        for q in range(p + 1, S):
            for i in range(n):
                j = arg[p, q, i]
                if arg[q, p, j] == i and best[p, q, i] >= tau:
                    a, b = sorted((key(p, i), key(q, j)))
                    edges.append((-best[p, q, i], a, b))
    edges.sort()
    parent = list(range(S * n))
    seeds = [{k // n} for k in range(S * n)]

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    clashes = 0
    for _, a, b in edges:
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        if seeds[ra] & seeds[rb]:
            clashes += 1
            continue
        ra, rb = min(ra, rb), max(ra, rb)
        parent[rb] = ra
        seeds[ra] |= seeds[rb]
    order = np.argsort(ids, kind="stable")
    comps = {}
    for k in range(S * n):
        comps.setdefault(find(k), []).append((int(order[k // n]), k % n))
    cons = [frozenset(m) for m in comps.values() if len(m) >= min_seeds]
    return dict(U=U, best=best, arg=arg, gap=gap, stab=stab, n_mutual=len(edges), cons=set(cons), off=off,
                clashes=clashes)


def check(D, ids, tau, min_seeds, name):
    S, dm, n = D.shape
    got = run(D, ids, tau, min_seeds, name)
    ref = reference(D, ids, tau, min_seeds)
    off = ref["off"]
    err = np.abs(got["best_cos"][off] - ref["best"][off]).max()
    if err > BEST_TOL:
        fail(f"{name}: best |cos| differs from numpy by {err}")
    clear = off[:, :, None] & (ref["gap"] > 1e-4)
    if (got["best_index"][clear] != ref["arg"][clear]).any():
        fail(f"{name}: best index differs from numpy argmax")
    # Near the threshold float32 and float64 may disagree; nothing in these cases sits within 1e-5 of tau.
    if np.abs(ref["best"][off] - tau).min() < BEST_TOL:
        fail(f"{name}: a best |cos| lies within {BEST_TOL} of tau; choose another case")
    if np.abs(got["stability"] - ref["stab"]).max() > 1e-6:
        fail(f"{name}: stability differs")
    if got["n_mutual"] != ref["n_mutual"]:
        fail(f"{name}: {got['n_mutual']} mutual matches, numpy {ref['n_mutual']}")
    mine = {frozenset((s, int(got["members"][c, s])) for s in range(S) if got["members"][c, s] >= 0)
            for c in range(got["n_consensus"])}
    if mine != ref["cons"]:
        fail(f"{name}: consensus clusters differ from numpy's ({len(mine)} vs {len(ref['cons'])})")
    for c in range(got["n_consensus"]):
        mem = [(s, int(got["members"][c, s])) for s in np.argsort(ids, kind="stable") if got["members"][c, s] >= 0]
        cols = np.array([ref["U"][s][:, i] for s, i in mem])
        signs = np.sign(cols @ cols[0])
        signs[signs == 0] = 1
        v = (cols * signs[:, None]).sum(0)
        v /= np.linalg.norm(v)
        if np.abs(got["consensus"][c] - v).max() > 1e-5:
            fail(f"{name}: consensus direction {c} differs")
        G = np.abs(cols @ cols.T)
        coh = G[np.triu_indices(len(mem), 1)].mean()
        if abs(got["coherence"][c] - coh) > 1e-5:
            fail(f"{name}: coherence {c} {got['coherence'][c]} vs {coh}")
        for s, i in mem:
            if got["cluster"][s, i] != c:
                fail(f"{name}: cluster[{s}][{i}] does not point at consensus feature {c}")
    if (got["cluster"] >= 0).sum() != sum(len(m) for m in ref["cons"]):
        fail(f"{name}: cluster[] marks features outside the consensus features")
    return got, ref


def planted(S, dm, n, shared, noise, rng):
    atoms = rng.standard_normal((dm, shared))
    D = rng.standard_normal((S, dm, n))
    where = []
    for s in range(S):
        perm = rng.permutation(n)[:shared]
        scale = rng.choice([-1, 1], shared) * rng.uniform(0.5, 2, shared)
        D[s][:, perm] = (atoms + noise * rng.standard_normal((dm, shared))) * scale
        where.append(perm)
    return D.astype(np.float32), atoms, where


rng = np.random.default_rng(2026)
# Planted: 20 shared columns among 50 in 5 seeds; found exactly, nothing else reaches consensus.
S, dm, n, shared = 5, 24, 50, 20
D, atoms, where = planted(S, dm, n, shared, 0.05, rng)
ids = [900, 17, 300, 42, 5]
got, ref = check(D, ids, 0.7, 4, "planted")
truth = {frozenset((s, int(where[s][a])) for s in range(S)) for a in range(shared)}
if ref["cons"] != truth:
    fail(f"planted: numpy's clusters are not the planted columns ({len(ref['cons'])} vs {shared})")
print(f"features_numpy: planted: {got['n_consensus']} consensus features = the {shared} planted columns")

# Planted with a seed missing some atoms and heavier noise, min_seeds 3 of 6: chains and clashes get exercised.
D2, _, _ = planted(6, 16, 40, 16, 0.35, rng)
got2, ref2 = check(D2, [6, 5, 4, 3, 2, 1], 0.6, 3, "noisy")
if ref2["clashes"] == 0:
    fail("noisy: no mutual match was refused for joining two features of one seed; the case tests nothing")
print(f"features_numpy: noisy: {got2['n_consensus']} consensus features, {got2['n_mutual']} mutual matches, "
      f"{ref2['clashes']} refused joins agree")

# Random decoders: no consensus at tau 0.7.
R = rng.standard_normal((5, 64, 96)).astype(np.float32)
got3, _ = check(R, [1, 2, 3, 4, 5], 0.7, 4, "random")
if got3["n_consensus"] != 0:
    fail(f"random: {got3['n_consensus']} consensus features at tau 0.7")
print("features_numpy: random decoders: 0 consensus features at tau 0.7")

# Seed order: the same seeds (ids travel with them) in another order give the same clusters.
perm = np.array([3, 0, 4, 1, 2])
got4 = run(D[perm], [ids[p] for p in perm], 0.7, 4, "permuted")
a = {frozenset((int(perm[s]), int(got4["members"][c, s])) for s in range(S) if got4["members"][c, s] >= 0)
     for c in range(got4["n_consensus"])}
mine = {frozenset((s, int(got["members"][c, s])) for s in range(S) if got["members"][c, s] >= 0)
        for c in range(got["n_consensus"])}
if a != mine or not np.array_equal(got4["cluster"], got["cluster"][perm]):
    fail("permuted seeds give other clusters")
if not np.allclose(got4["consensus"], got["consensus"], atol=1e-6, rtol=0):
    fail("permuted seeds give other consensus directions or order")
print("features_numpy: seed order: same clusters, numbering and directions")

# Threads: two row blocks per pair, 1 vs 3 threads, bitwise the same.
W = rng.standard_normal((3, 64, 600)).astype(np.float32)
W[1][:, :300] = W[0][:, 300:] * 1.5
t1 = run(W, [1, 2, 3], 0.7, 2, "threads1", threads=1)
t3 = run(W, [1, 2, 3], 0.7, 2, "threads3", threads=3)
for f in sorted(os.listdir(t1["dir"])):
    if open(os.path.join(t1["dir"], f), "rb").read() != open(os.path.join(t3["dir"], f), "rb").read():
        fail(f"threads: {f} differs between 1 and 3 threads")
if t1["n_consensus"] != 300:
    fail(f"threads: {t1['n_consensus']} consensus features, planted 300")
print("features_numpy: 1 and 3 threads: bitwise the same")
print("features_numpy: OK")
