#!/usr/bin/python3
"""make_storage.py: HDF5 files whose storage is, or is not, the data they declare (tests/data_checks.sh).

usage: make_storage.py DIR BIG_BYTES

Reads DIR/good.h5 (/activations, contiguous, from make_tiny.py) and writes into DIR, each with
/activations holding the same rows unless said otherwise:
  chunked_gz.h5     chunked (64 rows, so the last chunk is partial), gzip: valid
  ext_rel.h5        external raw file ext_full.bin, named relatively (HDF5 looks in the working directory)
  ext_short.h5      external raw file ext_short.bin holding 300 of the 400 rows
  ext_missing.h5    external raw file that does not exist
  vds.h5            virtual: rows 0-199 from vds_a.h5, 200-399 from vds_b.h5 (relative names): valid
  vds_nofile.h5     virtual, second source file missing
  vds_fifo.h5       virtual, second source file vds_pipe.h5 (which the caller makes a FIFO)
  vds_nodset.h5     virtual, second source file lacks the dataset
  vds_gap.h5        virtual, rows 300-399 mapped to nothing
  vds_small.h5      virtual, second source holds 100 rows where the mapping reads 200
  unalloc.h5        chunked 100000 x 8, only the first 400 rows written
  unwritten.h5      contiguous 400 x 8, never written
  huge_chunked.h5   chunked 10^10 x 8, only the first 400 rows written
  huge_window.h5    external raw file (sparse) big enough that the float32 copy exceeds BIG_BYTES
  subnormal.h5      the rows times 1e-40 (float32 subnormals)
  scaled.h5         the rows times 1e37
  f64_1e300.h5      float64, row 5 column 3 is 1e300 (beyond float32's range)
  nan250.h5         the rows with a NaN in row 250
  constant.h5       every value 0.5
"""
import os
import sys

import h5py
import numpy as np


def main():
    d, big_bytes = sys.argv[1], int(sys.argv[2])
    os.chdir(d)  # relative external and source names resolve here
    X = h5py.File("good.h5", "r")["activations"][()]
    n, m = X.shape

    def put(name, **kw):
        with h5py.File(name, "w") as f:
            return f.create_dataset("activations", **kw)

    with h5py.File("chunked_gz.h5", "w") as f:
        f.create_dataset("activations", data=X, chunks=(64, m), compression="gzip")

    X.tofile("ext_full.bin")
    X[:300].tofile("ext_short.bin")
    put("ext_rel.h5", shape=X.shape, dtype="f4", external=[("ext_full.bin", 0, X.nbytes)])
    put("ext_short.h5", shape=X.shape, dtype="f4", external=[("ext_short.bin", 0, X.nbytes)])
    put("ext_missing.h5", shape=X.shape, dtype="f4", external=[("ext_gone.bin", 0, X.nbytes)])
    if os.path.exists("ext_gone.bin"):
        os.remove("ext_gone.bin")

    for name, rows in (("vds_a.h5", X[:200]), ("vds_b.h5", X[200:]), ("vds_short.h5", X[200:300])):
        with h5py.File(name, "w") as f:
            f["x"] = rows
    with h5py.File("vds_nodset_src.h5", "w") as f:
        f["y"] = X[200:]

    def vds(name, second, rows_mapped=n):
        lay = h5py.VirtualLayout(shape=X.shape, dtype="f4")
        lay[:200] = h5py.VirtualSource("vds_a.h5", "x", shape=(200, m))
        lay[200:rows_mapped] = h5py.VirtualSource(second, "x", shape=(rows_mapped - 200, m))
        with h5py.File(name, "w") as f:
            f.create_virtual_dataset("activations", lay, fillvalue=0)

    vds("vds.h5", "vds_b.h5")
    vds("vds_nofile.h5", "vds_nowhere.h5")
    vds("vds_fifo.h5", "vds_pipe.h5")  # the caller makes vds_pipe.h5 a FIFO
    vds("vds_nodset.h5", "vds_nodset_src.h5")
    vds("vds_gap.h5", "vds_b.h5", rows_mapped=300)
    vds("vds_small.h5", "vds_short.h5")

    with h5py.File("unalloc.h5", "w") as f:
        f.create_dataset("activations", shape=(100000, m), dtype="f4", chunks=(100, m))[:n] = X
    put("unwritten.h5", shape=X.shape, dtype="f4")
    with h5py.File("huge_chunked.h5", "w") as f:
        f.create_dataset("activations", shape=(10**10, m), dtype="f4", chunks=(1000, m))[:n] = X

    # Every byte of a sparse external file is "stored" (zeros), so only the window check can refuse it.
    width = 64
    while big_bytes // (4 * width) + 1 >= 2**30:  # husai takes at most 2^31 - 1 rows
        width *= 2
    rows = big_bytes // (4 * width) + 1
    with open("huge.bin", "wb") as f:
        f.truncate(rows * width * 4)
    put("huge_window.h5", shape=(rows, width), dtype="f4", external=[("huge.bin", 0, rows * width * 4)])

    put("subnormal.h5", data=(X * 1e-40).astype("f4"))
    put("scaled.h5", data=(X.astype("f8") * 1e37).astype("f4"))
    Y = X.astype("f8")
    Y[5, 3] = 1e300
    put("f64_1e300.h5", data=Y)
    Z = X.copy()
    Z[250, 1] = np.nan
    put("nan250.h5", data=Z)
    put("constant.h5", data=np.full_like(X, 0.5))


if __name__ == "__main__":
    main()
