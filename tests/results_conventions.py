#!/usr/bin/python3
"""results_conventions.py RUN_DIR [SWEEP_ORDER...]: checks that a run directory's results.h5 and
conditions.csv follow the conventions README ("Output") promises, reading them as a user would (h5py,
csv) and comparing with results.json:

  - every dataset's axes are labelled; on each axis named seed, d_model, d_sae or model exactly one HDF5
    dimension scale is attached, named like the axis, as long as the axis, holding the seeds (seed) or
    0..n-1 (the others); the parameter datasets have the expected axes; every dataset has a description;
  - list(f["conditions"]) (and each nested group's list) comes back in sweep order, equal to results.json's
    and to SWEEP_ORDER when given; /conditions has an `order` attribute with the names and every condition
    group an integer `index`, its position;
  - every string attribute husai writes reads as str (HDF5's own dimension-scale attributes CLASS and NAME
    are fixed-length ASCII by the HL library's definition and are left out);
  - counts are integers: steps, rank, seeds datasets; k, d_sae, d_model, epochs, batch_size, index
    attributes; steps and rank equal results.json's per_seed values;
  - conditions.csv has a column for every per-condition metric of results.json (means and 95% CI ends,
    matched agreement, held-out, ground truth, reference), one row per condition in sweep order, and every
    cell equals results.json's value exactly (empty for null/absent, the withheld marker for a withheld
    interval end); `arch` (and `value` when sweeping arch) holds the architecture's name.
"""
import csv
import json
import os
import sys

import h5py
import numpy as np

H5DS_RESERVED = {"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "DIMENSION_LABELS"}
SCALED_AXES = {"seed", "d_model", "d_sae", "model"}
PARAM_AXES = {
    "decoders": ("seed", "d_model", "d_sae"),
    "encoders": ("seed", "d_sae", "d_model"),
    "b_enc": ("seed", "d_sae"),
    "b_dec": ("seed", "d_model"),
    "thresholds": ("seed", "d_sae"),
    "density": ("seed", "d_sae"),
    "pwmcc": ("seed", "seed"),
    "pwmcc_with_reference": ("model", "model"),
}
NA = "n/a (needs >= 3 seeds)"
n_checks = 0


def fail(msg):
    print("results_conventions: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def need(ok, msg):
    global n_checks
    n_checks += 1
    if not ok:
        fail(msg)


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def datasets(f):
    out = []
    f.visititems(lambda name, obj: out.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
    return out


def check_axes(f, js):
    seeds_of = {c["name"]: [e["seed"] for e in c["per_seed"]] for c in js["conditions"]}
    seen_params = 0
    for path, d in datasets(f):
        leaf = path.rsplit("/", 1)[-1]
        labels = [dim.label for dim in d.dims]
        need(all(labels), f"{path}: unlabelled axis in {labels}")
        need(isinstance(d.attrs.get("description"), str) and d.attrs["description"],
             f"{path}: no str description attribute")
        if leaf in PARAM_AXES and "/features/" not in path:  # features/density is per consensus feature
            need(tuple(labels) == PARAM_AXES[leaf], f"{path}: axes {labels}, expected {PARAM_AXES[leaf]}")
            seen_params += 1
        if path == "reference/decoder":
            need(tuple(labels) == ("d_model", "d_sae"), f"{path}: axes {labels}")
        if text(d.attrs.get("CLASS", b"")) == "DIMENSION_SCALE":
            need(d.ndim == 1 and text(d.attrs["NAME"]) == labels[0], f"{path}: scale named "
                 f"{text(d.attrs['NAME'])!r} labels its axis {labels}")
            continue
        for i, dim in enumerate(d.dims):
            if labels[i] not in SCALED_AXES:
                need(len(dim) == 0, f"{path}: axis {labels[i]} has a scale attached")
                continue
            need(len(dim) == 1, f"{path}: axis {i} ({labels[i]}) has {len(dim)} scales, expected 1")
            scale = dim[0]
            need(text(scale.attrs["NAME"]) == labels[i], f"{path}: axis {labels[i]} carries scale "
                 f"{text(scale.attrs['NAME'])!r}")
            need(scale.shape == (d.shape[i],), f"{path}: scale of axis {labels[i]} has shape {scale.shape}, "
                 f"the axis {d.shape[i]}")
            values = scale[()]
            if labels[i] == "seed":
                cond = path.rsplit("/", 1)[0][len("conditions/"):]
                cond = cond[:-len("/features")] if cond.endswith("/features") else cond  # per-feature group
                need(values.tolist() == seeds_of[cond], f"{path}: seed scale {values.tolist()}, results.json "
                     f"{seeds_of[cond]}")
            else:
                need(np.array_equal(values, np.arange(d.shape[i])), f"{path}: {labels[i]} scale is not 0..n-1")
    need(seen_params >= 7 * len(js["conditions"]), f"only {seen_params} parameter datasets seen")


def check_order(f, js, want):
    names = [c["name"] for c in js["conditions"]]
    if want:
        need(names == want, f"results.json conditions {names}, sweep order {want}")
    tops = list(dict.fromkeys(n.split("/")[0] for n in names))
    need(list(f["conditions"]) == tops, f'list(f["conditions"]) = {list(f["conditions"])}, expected {tops}')
    for top in tops:
        inner = [n.split("/", 1)[1] for n in names if "/" in n and n.split("/")[0] == top]
        if inner:
            got = list(f["conditions"][top])
            need(got == inner, f'list(f["conditions/{top}"]) = {got}, expected {inner}')
    order = f["conditions"].attrs["order"]
    need([text(x) for x in order] == names and all(isinstance(x, str) for x in order),
         f"/conditions order attribute {order!r}, expected {names}")
    for i, n in enumerate(names):
        idx = f["conditions"][n].attrs["index"]
        need(isinstance(idx, np.integer) and int(idx) == i, f"{n}: index attribute {idx!r}, expected {i}")
    return names


def check_strings(f):
    objs = [("/", f)]
    f.visititems(lambda name, obj: objs.append((name, obj)))
    n = 0
    for path, obj in objs:
        for key in obj.attrs:
            if key in H5DS_RESERVED:
                continue
            v = obj.attrs[key]
            if isinstance(v, np.ndarray) and v.dtype.kind in "OSU":
                need(v.dtype.kind == "O" and all(isinstance(x, str) for x in v.flat),
                     f"{path} attribute {key} is an array of {v.dtype}, not str")
                n += 1
            elif not isinstance(v, (np.number, np.ndarray, int, float)):
                need(isinstance(v, str), f"{path} attribute {key} reads as {type(v).__name__}, not str")
                n += 1
    need(n > 0, "no string attribute seen")
    for key in ("run_id", "version", "git_commit", "config"):
        need(isinstance(f.attrs[key], str), f"root attribute {key} is not str")


def check_counts(f, js):
    for c in js["conditions"]:
        g = f["conditions"][c["name"]]
        for key, kind in (("steps", "i"), ("rank", "i"), ("seeds", "u")):
            need(g[key].dtype.kind == kind, f'{c["name"]}/{key} dtype {g[key].dtype}, expected an integer')
        for key in ("steps", "rank"):
            got = g[key][()].tolist()
            want = [e[key] for e in c["per_seed"]]
            need(got == want and all(isinstance(x, int) for x in got), f'{c["name"]}/{key} {got} != {want}')
        for key in ("k", "d_sae", "d_model", "epochs", "batch_size", "index"):
            need(isinstance(g.attrs[key], np.integer), f'{c["name"]} attribute {key} is {type(g.attrs[key])}')
        for key in ("k", "d_sae", "epochs", "batch_size"):
            need(int(g.attrs[key]) == c[key], f'{c["name"]} attribute {key} {g.attrs[key]} != {c[key]}')
        need(g.attrs["arch"] == c["arch"] and g.attrs["phase"] == c["phase"], f'{c["name"]}: arch/phase attributes')


def csv_columns(c):
    """{csv column: (results.json value or None, is an interval end)} for condition c, and the
    metric keys of c that the columns cover."""
    legacy = {"trained_pwmcc": "trained", "random_pwmcc": "random", "explained_variance": "ev"}
    cols, covered = {}, set()

    def ci(key, obj, col):
        pre = legacy.get(col, col)
        cols[col] = (obj["mean"], False)
        cols[pre + "_ci95_low"] = (obj["ci95_low"], True)
        cols[pre + "_ci95_high"] = (obj["ci95_high"], True)

    for key, v in c.items():
        if key in ("per_seed", "density_histogram"):
            continue
        covered.add(key)
        if isinstance(v, dict) and "mean" in v:
            ci(key, v, key)
        elif key == "heldout":
            for sub, obj in v.items():
                ci(sub, obj, "heldout_" + sub)
        elif key == "features":  # per-feature stability: its counts, the random baseline's, the settings
            for sub, obj in v.items():
                if isinstance(obj, dict) and "mean" in obj:
                    ci(sub, obj, sub)
                elif sub == "random":
                    for s2, o2 in obj.items():
                        ci(s2, o2, "random_" + s2)
                elif sub.startswith("gt_"):
                    cols[sub] = (obj, False)
                elif isinstance(obj, (int, float)):
                    cols["features_" + sub] = (obj, False)
        else:
            cols[key] = (v, key == "delta_pwmcc_ci_low_conservative")
    if c["param"] == "arch":
        cols["value"] = (c["arch"], False)
    return cols, covered


def check_csv(run, js, names):
    with open(os.path.join(run, "conditions.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
        header = rows[0].keys() if rows else []
    need([r["name"] for r in rows] == names, f"conditions.csv rows {[r['name'] for r in rows]} != {names}")
    for col in ("matched_cosine_ci95_low", "matched_fraction_0_7_ci95_high", "heldout_explained_variance",
                "heldout_explained_variance_ci95_low", "heldout_mse_ci95_high", "heldout_l0",
                "heldout_dead_fraction_ci95_low", "mse_ci95_low", "l0_ci95_high", "dead_fraction_ci95_low",
                "gt_mean_max_cos_ci95_low", "gt_recovered", "alignment_to_reference_ci95_high",
                "trained_pwmcc_with_reference", "arch", "phase", "lambda"):
        need(col in header, f"conditions.csv lacks column {col}")
    compared = 0
    for r, c in zip(rows, js["conditions"]):
        cols, covered = csv_columns(c)
        for col, (want, interval) in cols.items():
            need(col in r, f"[{c['name']}] results.json's {col} has no conditions.csv column")
            cell = r[col]
            if want is None:
                need(cell == (NA if interval else ""),
                     f"[{c['name']}] {col}: {cell!r} for results.json null")
            elif isinstance(want, str):
                need(cell == want, f"[{c['name']}] {col}: {cell!r} != results.json {want!r}")
            else:
                need(cell != "" and float(cell) == want, f"[{c['name']}] {col}: {cell!r} != results.json {want!r}")
            compared += 1
        for col in header:  # a column results.json has no value for stays empty
            if col not in cols:
                need(r[col] == "", f"[{c['name']}] {col} = {r[col]!r}, results.json has none")
        need(r["arch"] == c["arch"] and not r["arch"].isdigit(), f"[{c['name']}] arch cell {r['arch']!r}")
    return compared


def main():
    run, want = sys.argv[1], sys.argv[2:]
    js = json.load(open(os.path.join(run, "results.json")))
    with h5py.File(os.path.join(run, "results.h5"), "r") as f:
        check_axes(f, js)
        names = check_order(f, js, want)
        check_strings(f)
        check_counts(f, js)
    compared = check_csv(run, js, names)
    print(f"results_conventions: {os.path.basename(run.rstrip('/'))}: {len(names)} conditions in sweep order "
          f"{names}; {n_checks} checks, {compared} conditions.csv cells equal results.json's")


if __name__ == "__main__":
    main()
