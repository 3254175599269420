#!/usr/bin/python3
"""check_protocol.py: independent checks of a husai calibrate or consistency run directory.

usage:
  check_protocol.py calibrate RUN_DIR --ev-floor F --control-k K --retrain-seeds 1,2,.. --retrain-epochs E
                    --search-seeds 1,2,.. --search-epochs E
  check_protocol.py consistency RUN_DIR --sweep SWEEP_RUN_DIR --reference-seed 42 --seeds 1,2,.. --max-ev-drop D

Everything is recomputed from results.json / results.h5 with numpy, never with husai's code:
calibrate
  - protocol.mode; protocol.selected obeys the rule (largest delta_pwmcc_ci_low_conservative among search
    conditions with explained_variance.mean >= ev_floor; ties by delta, then EV, then the earlier condition);
  - retrain and control conditions: k, n_seeds, seeds, epochs; their phase label is 'retrain' (results.h:
    "" only in a plain sweep), so a reader of results.json can tell them from search conditions;
  - direct_effect.paired_seeds.diff = retrain trained mean - control trained mean (1e-12), and its CI from the
    two stored pwmcc matrices by a numpy cluster bootstrap over seeds drawn in husai's order (needs
    [metrics] bootstrap_rng = numpy): per resample draw S positions with default_rng(seed).integers(0, S, S),
    redraw all-identical draws, statistic = mean of M[s_p, s_q] over p < q with s_p != s_q, difference of the
    two matrices' statistics, 2.5/97.5 percentiles with linear interpolation -> must agree to 1e-9; every
    condition's trained and random PWMCC CI the same way (one generator per CI), and HUSAI's unpaired pair
    bootstrap (choice(x, (B, n)) then choice(y, (B, n)) from one stream);
  - summary.md sections (Search, Retrain, Direct effect, Reading); the two SVG plots parse as XML, with one
    data circle per search condition in pwmcc_vs_param.svg.
consistency
  - every condition's phase label is 'lambda' (results.h: "search", "retrain", "lambda" in protocols);
  - alignment_to_reference mean strictly increases with lambda (largest lambda clearly above lambda 0);
  - per-seed alignment recomputed from the decoders and /reference/decoder (mean over the seed's columns of
    the max over reference columns of |cos|) matches per_seed and the h5 dataset within 1e-5;
  - pwmcc_with_reference is (S+1)x(S+1), its top-left SxS block equals pwmcc, trained_pwmcc_with_reference.mean
    equals the mean of its upper triangle (1e-9);
  - protocol.selected obeys the rule with floor = EV(lambda=0) - max_ev_drop;
  - the lambda = 0 decoders (and encoders, b_enc) are bitwise those of a plain sweep with the same settings,
    and /reference/decoder is bitwise that sweep's decoder of the reference seed; lambda > 0 changes them.
Prints each check; reports every failing check (each section stops at its first failure); exits 1 if any.
"""
import argparse
import contextlib
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

import h5py
import numpy as np

PROG = "check_protocol"
FAILURES = []


class Fail(Exception):
    pass


def step(msg):
    print(f"{PROG}: {msg}", flush=True)


def need(cond, msg):
    if not cond:
        raise Fail(msg)


def close(name, got, want, tol):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    need(got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}")
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    need(np.all(np.isfinite(got)) and err <= tol,
         f"{name}: max |diff| {err:.3g} > {tol:g}\n    stored:     {got}\n    recomputed: {want}")
    return err


@contextlib.contextmanager
def section(title):
    step(title)
    try:
        yield
    except Fail as e:
        FAILURES.append(f"{title}: {e}")
        print(f"{PROG}: FAIL: {title}: {e}", file=sys.stderr, flush=True)
    except (KeyError, IndexError, TypeError, ValueError, OSError) as e:
        FAILURES.append(f"{title}: {type(e).__name__}: {e}")
        print(f"{PROG}: FAIL: {title}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def seeds_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def run_dir(path):
    """The one run directory under an --out directory (or the directory itself)."""
    if os.path.exists(os.path.join(path, "results.json")):
        return path
    found = glob.glob(os.path.join(path, "*", "results.json"))
    if len(found) != 1:
        print(f"{PROG}: FAIL: expected one run directory under {path}, found {found}", file=sys.stderr)
        sys.exit(1)
    return os.path.dirname(found[0])


def select(conds, floor):
    """The selection rule, written from its statement: index into conds or None."""
    best, key = None, None
    for i, c in enumerate(conds):
        ev = c["explained_variance"]["mean"]
        if ev is None or not ev >= floor:  # NaN never passes
            continue
        k = (c["delta_pwmcc_ci_low_conservative"], c["delta_pwmcc"], ev, -i)
        if key is None or k > key:
            best, key = i, k
    return best


# ---------- numpy bootstrap in husai's draw order ----------

def text(v):
    """A string attribute as str: husai writes UTF-8 str; results of older versions stored bytes."""
    return v.decode() if isinstance(v, bytes) else str(v)


def upper(M):
    S = M.shape[0]
    a, b = np.triu_indices(S, 1)
    return M[a, b]


def seed_draws(S, B, seed):
    """B cluster draws of S seed positions, as husai draws them with the numpy generator: S bounded integers per
    resample from one default_rng(seed) stream, a draw of one repeated seed redrawn from the same stream."""
    rng = np.random.default_rng(seed)
    out = np.empty((B, S), dtype=np.int64)
    for b in range(B):
        while True:
            idx = rng.integers(0, S, size=S)
            if np.unique(idx).size >= 2:
                break
        out[b] = idx
    return out


def seeds_stat(M, idx):
    """Mean of M[s_p, s_q] over position pairs p < q whose drawn seeds differ (upper triangle of M)."""
    S = idx.size
    p, q = np.triu_indices(S, 1)
    sp, sq = idx[p], idx[q]
    keep = sp != sq
    lo, hi = np.minimum(sp[keep], sq[keep]), np.maximum(sp[keep], sq[keep])
    return M[lo, hi].mean()


def pct(stats):
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return lo, hi


def pair_matrix_ci(M, B, seed):
    draws = seed_draws(M.shape[0], B, seed)
    return pct(np.array([seeds_stat(M, d) for d in draws]))


def paired_diff_ci(Mx, My, B, seed):
    draws = seed_draws(Mx.shape[0], B, seed)
    return pct(np.array([seeds_stat(Mx, d) - seeds_stat(My, d) for d in draws]))


def unpaired_diff_ci(x, y, B, seed):
    rng = np.random.default_rng(seed)
    sx = rng.choice(x, (B, x.size), replace=True).mean(axis=1)
    sy = rng.choice(y, (B, y.size), replace=True).mean(axis=1)
    return pct(sx - sy)


def svg_circles(path):
    root = ET.parse(path).getroot()  # raises on malformed XML
    tag = lambda e: e.tag.rsplit("}", 1)[-1]
    need(tag(root) == "svg", f"{path}: root element is <{tag(root)}>, not <svg>")
    circles = [e for e in root.iter() if tag(e) == "circle"]
    titled = []
    for c in circles:
        t = [x for x in c if tag(x) == "title"]
        if t:
            titled.append(t[0].text or "")
    return circles, titled


# ---------- calibrate ----------

def check_calibrate(a):
    run = run_dir(a.run)
    js = json.load(open(os.path.join(run, "results.json")))
    h5 = h5py.File(os.path.join(run, "results.h5"), "r")
    conds = js.get("conditions", [])
    byname = {c["name"]: c for c in conds}
    proto = js.get("protocol", {})
    B, bseed = js["bootstrap"]["resamples"], js["bootstrap"]["seed"]
    search = [c for c in conds if c["name"].startswith("search/")]

    with section("protocol.mode == calibrate, ev_floor as configured; the bootstrap used the numpy generator"):
        need(proto.get("mode") == "calibrate", f"protocol.mode = {proto.get('mode')!r}")
        close("protocol.ev_floor", proto["ev_floor"], a.ev_floor, 0)
        need(js["bootstrap"]["rng"] == "numpy" and js["bootstrap"]["unit"] == "seeds",
             f"bootstrap = {js['bootstrap']} (this check needs rng numpy, unit seeds)")
        need(text(h5.attrs["protocol"]) == "calibrate", f"results.h5 attribute protocol = {h5.attrs['protocol']!r}")

    with section("search conditions: phase 'search', search seeds and epochs"):
        need(len(search) == a.n_search, f"{len(search)} search conditions, expected {a.n_search}")
        for c in search:
            need(c["phase"] == "search", f"{c['name']}: phase {c['phase']!r}")
            need(c["n_seeds"] == len(a.search_seeds), f"{c['name']}: n_seeds {c['n_seeds']}")
            need([e["seed"] for e in c["per_seed"]] == a.search_seeds, f"{c['name']}: seeds")
            need(c["epochs"] == a.search_epochs, f"{c['name']}: epochs {c['epochs']}")
            need(c["k"] == c["value"], f"{c['name']}: k {c['k']} != value {c['value']}")

    with section("protocol.selected obeys the rule recomputed from the search conditions"):
        for c in search:
            flag = "passes" if c["explained_variance"]["mean"] >= a.ev_floor else "below floor"
            step(f"  {c['name']:12s} LCB {c['delta_pwmcc_ci_low_conservative']:+.5f} delta {c['delta_pwmcc']:+.5f} "
                 f"EV {c['explained_variance']['mean']:.4f} ({flag})")
        i = select(search, a.ev_floor)
        need(i is not None, "no search condition passes the floor, yet the run succeeded")
        want = search[i]["name"]
        need(proto.get("selected") == want, f"protocol.selected = {proto.get('selected')!r}, rule gives {want!r}")
        need(proto.get("selected_k") == search[i]["k"], f"protocol.selected_k = {proto.get('selected_k')}")
        need(text(h5.attrs["selected"]) == want, f"results.h5 attribute selected = {h5.attrs['selected']!r}")
        top = max(range(len(search)), key=lambda j: search[j]["delta_pwmcc_ci_low_conservative"])
        if top != i:
            step(f"  (the floor mattered: {search[top]['name']} has the largest LCB but is below it)")
        step(f"  selected {want} as the rule says")

    with section("retrain and control conditions: k, seeds, epochs"):
        rname, cname = proto["retrain"], proto["control"]
        need(rname in byname and cname in byname, f"retrain {rname!r} / control {cname!r} not among {list(byname)}")
        r, c = byname[rname], byname[cname]
        need(r["k"] == proto["selected_k"], f"retrain k {r['k']} != selected k {proto['selected_k']}")
        need(c["k"] == a.control_k and proto["control_k"] == a.control_k,
             f"control k {c['k']} / protocol.control_k {proto['control_k']}, expected {a.control_k}")
        for x in (r, c):
            need(x["n_seeds"] == len(a.retrain_seeds), f"{x['name']}: n_seeds {x['n_seeds']} != {len(a.retrain_seeds)}")
            need([e["seed"] for e in x["per_seed"]] == a.retrain_seeds, f"{x['name']}: per_seed seeds")
            need(list(h5["conditions"][x["name"]]["seeds"][...]) == a.retrain_seeds, f"{x['name']}: h5 seeds")
            need(x["epochs"] == a.retrain_epochs, f"{x['name']}: epochs {x['epochs']} != {a.retrain_epochs}")
            need(all(e["l0"] == x["k"] for e in x["per_seed"]), f"{x['name']}: per-seed L0 != k")
        need(len(conds) == len(search) + 2, f"{len(conds)} conditions, expected {len(search)} search + 2")

    with section("retrain/control carry a phase label that tells them from search (and plain-sweep) conditions"):
        r, c = byname[proto["retrain"]], byname[proto["control"]]
        need(r["phase"] == "retrain", f"{r['name']}: phase {r['phase']!r}, expected 'retrain' "
             "(results.h: phase is \"search\", \"retrain\", \"lambda\" in protocols; \"\" only in a plain sweep)")
        need(c["phase"] in ("retrain", "control"), f"{c['name']}: phase {c['phase']!r}, expected 'retrain' or 'control'")

    with section("every condition's trained and random PWMCC CI = numpy cluster bootstrap in husai's draw order (1e-9)"):
        for x in conds:
            g = h5["conditions"][x["name"]]
            for key, ds in (("trained_pwmcc", "pwmcc"), ("random_pwmcc", "random_pwmcc")):
                M = g[ds][...]
                need(np.array_equal(M, M.T), f"{x['name']}/{ds} not symmetric")
                close(f"{x['name']} {key}.mean", x[key]["mean"], upper(M).mean(), 1e-12)
                lo, hi = pair_matrix_ci(M, B, bseed)
                close(f"{x['name']} {key} CI", [x[key]["ci95_low"], x[key]["ci95_high"]], [lo, hi], 1e-9)
        step(f"  {2 * len(conds)} CIs agree")

    with section("direct_effect.paired_seeds: diff = retrain - control trained mean; CI recomputed with numpy (1e-9)"):
        r, c = byname[proto["retrain"]], byname[proto["control"]]
        pe = proto["direct_effect"]["paired_seeds"]
        close("paired diff vs JSON means", pe["diff"], r["trained_pwmcc"]["mean"] - c["trained_pwmcc"]["mean"], 1e-12)
        Mr, Mc = h5["conditions"][r["name"]]["pwmcc"][...], h5["conditions"][c["name"]]["pwmcc"][...]
        close("paired diff vs h5 matrices", pe["diff"], upper(Mr).mean() - upper(Mc).mean(), 1e-12)
        lo, hi = paired_diff_ci(Mr, Mc, B, bseed)
        step(f"  stored [{pe['ci95_low']:+.12f}, {pe['ci95_high']:+.12f}], numpy [{lo:+.12f}, {hi:+.12f}]")
        close("paired CI", [pe["ci95_low"], pe["ci95_high"]], [lo, hi], 1e-9)

    with section("direct_effect.husai_unpaired_pairs: HUSAI's pair bootstrap recomputed with numpy (1e-9)"):
        r, c = byname[proto["retrain"]], byname[proto["control"]]
        ue = proto["direct_effect"]["husai_unpaired_pairs"]
        x = upper(h5["conditions"][r["name"]]["pwmcc"][...])
        y = upper(h5["conditions"][c["name"]]["pwmcc"][...])
        close("unpaired diff", ue["diff"], x.mean() - y.mean(), 1e-12)
        lo, hi = unpaired_diff_ci(x, y, B, bseed)
        close("unpaired CI", [ue["ci95_low"], ue["ci95_high"]], [lo, hi], 1e-9)

    with section("summary.md: Search, Retrain, Direct effect sections and a Reading paragraph"):
        md = open(os.path.join(run, "summary.md")).read()
        heads = [l for l in md.splitlines() if l.startswith("## ")]
        for word in ("Search", "Retrain", "Direct effect"):
            need(any(h[3:].startswith(word) for h in heads), f"no '## {word}' section; sections: {heads}")
        order = [next(i for i, h in enumerate(heads) if h[3:].startswith(w)) for w in ("Search", "Retrain", "Direct effect")]
        need(order == sorted(order), f"sections out of order: {heads}")
        need("**Reading.**" in md, "no **Reading.** paragraph")
        need(md.index("**Reading.**") > md.index("## Direct effect"), "the Reading paragraph is not after Direct effect")
        need(proto["selected"] in md, f"summary.md does not name the selected condition {proto['selected']}")

    with section("SVG plots parse as XML; pwmcc_vs_param.svg has one data circle per search condition"):
        circles, titled = svg_circles(os.path.join(run, "pwmcc_vs_param.svg"))
        need(len(titled) == len(search), f"pwmcc_vs_param.svg: {len(titled)} data circles (with <title>), "
             f"expected {len(search)} (one per search condition); {len(circles)} circles in all")
        for t, c in zip(titled, search):
            need(t.startswith(c["name"]), f"pwmcc_vs_param.svg: circle title {t!r} does not name {c['name']}")
        circles, _ = svg_circles(os.path.join(run, "pwmcc_vs_ev.svg"))
        need(len(circles) >= len(search), f"pwmcc_vs_ev.svg: {len(circles)} circles < {len(search)} conditions")


# ---------- consistency ----------

def unit_cols(M):
    M = M.astype(np.float64)
    return M / np.maximum(np.linalg.norm(M, axis=0, keepdims=True), 1e-12)


def check_consistency(a):
    run = run_dir(a.run)
    js = json.load(open(os.path.join(run, "results.json")))
    h5 = h5py.File(os.path.join(run, "results.h5"), "r")
    conds = js.get("conditions", [])
    proto = js.get("protocol", {})
    S = len(a.seeds)
    ref = None

    with section("protocol.mode == consistency, reference seed, baseline lambda=0, conditions and seeds"):
        need(proto.get("mode") == "consistency", f"protocol.mode = {proto.get('mode')!r}")
        need(proto["reference_seed"] == a.reference_seed, f"protocol.reference_seed = {proto['reference_seed']}")
        need(text(h5.attrs["protocol"]) == "consistency", "results.h5 attribute protocol")
        lams = [c["lambda"] for c in conds]
        need(lams == sorted(lams) and len(set(lams)) == len(lams) and lams[0] == 0,
             f"lambdas {lams}: expected increasing from 0")
        need(proto["baseline"] == conds[0]["name"], f"protocol.baseline = {proto['baseline']!r}")
        for c in conds:
            need(c["param"] == "lambda" and c["value"] == c["lambda"], f"{c['name']}: param/value/lambda")
            need([e["seed"] for e in c["per_seed"]] == a.seeds, f"{c['name']}: per_seed seeds")
        ref = h5["reference"]["decoder"][...]
        need(int(h5["reference"].attrs["seed"]) == a.reference_seed, "results.h5 /reference seed attribute")
        need(ref.shape == h5["conditions"][conds[0]["name"]]["decoders"].shape[1:], f"/reference/decoder shape {ref.shape}")

    with section("every lambda condition carries the phase label 'lambda' (results.h's contract for the phase field)"):
        for c in conds:
            need(c["phase"] == "lambda", f"{c['name']}: phase {c['phase']!r}, expected 'lambda' "
                 "(results.h: phase is \"search\", \"retrain\", \"lambda\" in protocols; \"\" only in a plain sweep)")

    with section("alignment_to_reference increases monotonically with lambda; the largest clearly above lambda 0"):
        al = [c["alignment_to_reference"]["mean"] for c in conds]
        step("  " + ", ".join(f"{c['name']}: {v:.4f}" for c, v in zip(conds, al)))
        need(all(x < y for x, y in zip(al, al[1:])), f"alignment means {al} are not strictly increasing")
        a0, a1 = conds[0]["alignment_to_reference"], conds[-1]["alignment_to_reference"]
        need(a1["mean"] - a0["mean"] > 0.05 and a1["ci95_low"] > a0["ci95_high"],
             f"{conds[-1]['name']} alignment {a1} not clearly above {conds[0]['name']} {a0}")

    with section("per-seed alignment recomputed from the decoders and /reference/decoder (1e-5)"):
        R = unit_cols(ref)
        for c in conds:
            g = h5["conditions"][c["name"]]
            dec = g["decoders"][...]
            want = [np.abs(unit_cols(dec[s]).T @ R).max(axis=1).mean() for s in range(S)]
            close(f"{c['name']} per_seed alignment_to_reference (json)",
                  [e["alignment_to_reference"] for e in c["per_seed"]], want, 1e-5)
            close(f"{c['name']} alignment_to_reference (h5)", g["alignment_to_reference"][...], want, 1e-5)
            close(f"{c['name']} alignment_to_reference.mean", c["alignment_to_reference"]["mean"],
                  np.mean([e["alignment_to_reference"] for e in c["per_seed"]]), 1e-12)

    with section("pwmcc_with_reference: (S+1)x(S+1), top-left SxS = pwmcc, trained_pwmcc_with_reference.mean"):
        for c in conds:
            g = h5["conditions"][c["name"]]
            W, P = g["pwmcc_with_reference"][...], g["pwmcc"][...]
            need(W.shape == (S + 1, S + 1), f"{c['name']}: pwmcc_with_reference shape {W.shape}")
            need(np.array_equal(W[:S, :S], P), f"{c['name']}: top-left block differs from pwmcc by "
                 f"{np.max(np.abs(W[:S, :S] - P)):.3g}")
            close(f"{c['name']} trained_pwmcc_with_reference.mean", c["trained_pwmcc_with_reference"]["mean"],
                  upper(W).mean(), 1e-9)
            need(c["trained_pwmcc_with_reference"]["n"] == S + 1, f"{c['name']}: with-reference n")

    with section("protocol.selected obeys the rule with floor = EV(lambda=0) - max_ev_drop"):
        floor = conds[0]["explained_variance"]["mean"] - a.max_ev_drop
        close("protocol.ev_floor", proto["ev_floor"], floor, 1e-12)
        for c in conds:
            flag = "passes" if c["explained_variance"]["mean"] >= floor else "below floor"
            step(f"  {c['name']:12s} LCB {c['delta_pwmcc_ci_low_conservative']:+.5f} "
                 f"EV {c['explained_variance']['mean']:.4f} ({flag})")
        i = select(conds, floor)
        want = None if i is None else conds[i]["name"]
        need(proto.get("selected") == want, f"protocol.selected = {proto.get('selected')!r}, rule gives {want!r}")

    with section("lambda = 0 is bitwise a plain sweep; /reference/decoder is bitwise the sweep's reference seed"):
        sw = run_dir(a.sweep)
        sjs = json.load(open(os.path.join(sw, "results.json")))
        need(len(sjs["conditions"]) == 1, "the plain sweep should have one condition")
        sc = sjs["conditions"][0]
        sg = h5py.File(os.path.join(sw, "results.h5"), "r")["conditions"][sc["name"]]
        sseeds = list(sg["seeds"][...])
        g0 = h5["conditions"][conds[0]["name"]]
        for key in ("decoders", "encoders", "b_enc"):
            sv = sg[key][...]
            for s, seed in enumerate(a.seeds):
                need(seed in sseeds, f"the plain sweep lacks seed {seed}")
                x, y = g0[key][s], sv[sseeds.index(seed)]
                need(x.dtype == y.dtype and np.array_equal(x.view(np.uint32), y.view(np.uint32)),
                     f"{conds[0]['name']} seed {seed} {key} differ from the plain sweep's "
                     f"(max |diff| {np.max(np.abs(x.astype(np.float64) - y)):.3g}): the penalty is not exactly off")
        need(a.reference_seed in sseeds, f"the plain sweep lacks the reference seed {a.reference_seed}")
        y = sg["decoders"][sseeds.index(a.reference_seed)]
        need(np.array_equal(ref.view(np.uint32), y.view(np.uint32)),
             f"/reference/decoder differs from the plain sweep's seed {a.reference_seed} decoder "
             f"(max |diff| {np.max(np.abs(ref.astype(np.float64) - y)):.3g})")
        spe = sc["per_seed"][sseeds.index(a.reference_seed)]
        close("protocol.reference.explained_variance", proto["reference"]["explained_variance"],
              spe["explained_variance"], 1e-12)
        for c in conds[1:]:
            need(not np.array_equal(h5["conditions"][c["name"]]["decoders"][...], g0["decoders"][...]),
                 f"{c['name']} decoders equal lambda=0's: the penalty had no effect")
        step(f"  {len(a.seeds)} seeds x (decoders, encoders, b_enc) and the reference decoder are bitwise equal")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("calibrate")
    c.add_argument("run")
    c.add_argument("--ev-floor", type=float, required=True)
    c.add_argument("--control-k", type=int, required=True)
    c.add_argument("--retrain-seeds", type=seeds_list, required=True)
    c.add_argument("--retrain-epochs", type=int, required=True)
    c.add_argument("--search-seeds", type=seeds_list, required=True)
    c.add_argument("--search-epochs", type=int, required=True)
    c.add_argument("--n-search", type=int, required=True)
    s = sub.add_parser("consistency")
    s.add_argument("run")
    s.add_argument("--sweep", required=True)
    s.add_argument("--reference-seed", type=int, required=True)
    s.add_argument("--seeds", type=seeds_list, required=True)
    s.add_argument("--max-ev-drop", type=float, required=True)
    a = p.parse_args()
    (check_calibrate if a.mode == "calibrate" else check_consistency)(a)
    if FAILURES:
        print(f"{PROG}: {len(FAILURES)} check(s) failed:", file=sys.stderr)
        for f in FAILURES:
            print(f"{PROG}:   - {f.splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    step("all checks passed")


if __name__ == "__main__":
    main()
