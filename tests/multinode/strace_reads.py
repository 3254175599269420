#!/usr/bin/python3
"""strace_reads.py: bytes of an HDF5 dataset's data region that each traced process read.

usage: strace_reads.py STRACE_DIR DATA.h5 [DATASET]

STRACE_DIR holds `strace -ff -y -e trace=read,readv,pread64,preadv,preadv2 -o DIR/HOST.RANK` output
(one file per process: HOST.RANK.PID). Prints one JSON object: {"offset", "size", "per_node": {host: bytes},
"per_rank": {"host/rank": bytes}} counting, per positioned read of the file, the overlap with the dataset's
contiguous data region (offset and size from h5py); a sequential read or readv of the file counts in full
(its offset is unknown: an upper bound). Prints {"offset": null} when the dataset is not contiguous.
"""
import glob
import json
import os
import re
import sys

import h5py


def main():
    sdir, data = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else "activations"
    with h5py.File(data, "r") as f:
        d = f[name]
        off, size = d.id.get_offset(), d.id.get_storage_size()
    if off is None:
        print(json.dumps({"offset": None, "size": size}))
        return
    path = os.path.realpath(data)
    pos = re.compile(r"^(pread64|preadv|preadv2)\((\d+)<([^>]*)>, .*?((?:, \d+)+)\) += (\d+)$")
    seq = re.compile(r"^(read|readv)\((\d+)<([^>]*)>, .* += (\d+)$")
    per_node, per_rank = {}, {}
    for fn in glob.glob(f"{sdir}/*"):
        host, rank = os.path.basename(fn).split(".")[:2]
        n = 0
        for line in open(fn, errors="replace"):
            m = pos.match(line)
            if m and m.group(3) == path:
                tail = [int(x) for x in m.group(4).split(", ")[1:]]  # pread64: count, offset; preadv2: ..., offset, flags
                a = tail[-2] if m.group(1) == "preadv2" else tail[-1]
                b = a + int(m.group(5))
                n += max(0, min(b, off + size) - max(a, off))
                continue
            m = seq.match(line)
            if m and m.group(3) == path:
                n += int(m.group(4))
        per_node[host] = per_node.get(host, 0) + n
        per_rank[f"{host}/{rank}"] = per_rank.get(f"{host}/{rank}", 0) + n
    print(json.dumps({"offset": off, "size": size, "per_node": dict(sorted(per_node.items())),
                      "per_rank": dict(sorted(per_rank.items()))}))


if __name__ == "__main__":
    main()
