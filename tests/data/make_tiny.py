#!/usr/bin/python3
"""make_tiny.py: writes a tiny synthetic HDF5 activation dataset for the sweep tests.

Rows are sparse codes over a random unit-norm dictionary plus Gaussian noise:
    X = Z @ D^T + noise,  D [d_model, atoms] with unit columns, Z with ~3 active atoms per row.

usage: make_tiny.py OUT ROWS D_MODEL ATOMS SEED [--dtype float16|float32|float64] [--dataset NAME]
                    [--nan-row R] [--shape 1d|2d|3d] [--int] [--constant V]

--nan-row R  plants a NaN in row R (0-based), column 0
--shape      1d writes the rows flattened; 3d writes [ROWS, D_MODEL, 1]; 2d (default) is correct
--int        stores the data as int32 (deliberately wrong dtype)
--constant V every value is V (zero variance: explained variance is undefined)
"""
import argparse

import h5py
import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("rows", type=int)
    p.add_argument("d_model", type=int)
    p.add_argument("atoms", type=int)
    p.add_argument("seed", type=int)
    p.add_argument("--dtype", choices=["float16", "float32", "float64"], default="float32")
    p.add_argument("--dataset", default="/activations")
    p.add_argument("--nan-row", type=int, default=None)
    p.add_argument("--shape", choices=["1d", "2d", "3d"], default="2d")
    p.add_argument("--int", action="store_true", dest="as_int")
    p.add_argument("--constant", type=float, default=None)
    a = p.parse_args()

    rng = np.random.default_rng(a.seed)
    D = rng.standard_normal((a.d_model, a.atoms))
    D /= np.linalg.norm(D, axis=0, keepdims=True)
    active = min(3, a.atoms)
    Z = np.zeros((a.rows, a.atoms))
    for r in range(a.rows):
        idx = rng.choice(a.atoms, size=active, replace=False)
        Z[r, idx] = rng.uniform(0.5, 2.0, size=active) * rng.choice([-1.0, 1.0], size=active)
    X = Z @ D.T + 0.05 * rng.standard_normal((a.rows, a.d_model))

    if a.constant is not None:
        X[:] = a.constant

    if a.nan_row is not None:
        if not 0 <= a.nan_row < a.rows:
            p.error("--nan-row out of range")
        X[a.nan_row, 0] = np.nan

    if a.as_int:
        X = np.round(X * 100).astype(np.int32)
    else:
        X = X.astype(a.dtype)

    if a.shape == "1d":
        X = X.reshape(-1)
    elif a.shape == "3d":
        X = X.reshape(a.rows, a.d_model, 1)

    with h5py.File(a.out, "w") as f:
        ds = f.create_dataset(a.dataset, data=X)
        ds.attrs["generator"] = "tests/data/make_tiny.py"
        ds.attrs["seed"] = a.seed
        ds.attrs["atoms"] = a.atoms
        if a.as_int or a.shape != "2d" or a.nan_row is not None or a.constant is not None:
            ds.attrs["deliberately_invalid"] = 1
        f.create_dataset("/dictionary", data=D.astype(np.float32))


if __name__ == "__main__":
    main()
