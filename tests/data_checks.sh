#!/usr/bin/env bash
# data_checks.sh: issue 15's "only real data is data" and its data hangs. Storage that HDF5 would read as
# the fill value (unwritten chunks, never-written contiguous data, short or missing external raw files,
# virtual datasets with a missing source or an unmapped region), paths that are not regular files, a
# node-shared window larger than the node can hold, and data out of float32 training's range are each
# refused under `timeout 60 mpirun` (2 ranks, and 1 where the bug differed): exit 1, exactly one
# "husai: error" line naming the problem, no MPI_ABORT banner, no HDF5-DIAG stack, nothing under --out.
# Valid storage that is not contiguous (a virtual dataset, chunked+gzip with a partial edge chunk, an
# external raw file) must train to bitwise the same decoders as the same rows stored contiguously.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init data_checks --openblas

d="$tmp/d"
mkdir "$d"
step "generating data files"
"$PY" "$HERE/data/make_tiny.py" "$d/good.h5" 400 8 12 1
# Twice what the node could hold, so the window check must refuse it on any machine.
big=$("$PY" -c 'import os
s = os.statvfs(os.environ.get("OMPI_MCA_osc_sm_backing_directory") or "/dev/shm")
m = [int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemAvailable:")][0]
print(2 * max(s.f_bavail * s.f_frsize, m))')
"$PY" "$HERE/data/make_storage.py" "$d" "$big"
mkfifo "$d/fifo.h5" "$d/vds_pipe.h5"
"$PY" -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$d/sock.h5"
mkdir "$d/dir.h5"

cat >"$tmp/base.ini" <<INI
[data]
path = $d/good.h5
[sae]
d_sae = 16
[train]
epochs = 2
batch_size = 64
lr = 0.003
[sweep]
param = k
values = 2, 4
seeds = 1, 2
[metrics]
resamples = 100
INI

n=0
# run NP CWD DATA [sweep args...]: one sweep on DATA from directory CWD into $tmp/out<n>; sets rc and out.
run() {
    local np=$1 cwd=$2 data=$3
    shift 3
    n=$((n + 1))
    out="$tmp/out$n"
    rc=0
    (cd "$cwd" && timeout -k 10 60 "$MPIEXEC" -np "$np" --oversubscribe "$HUSAI" sweep "$tmp/base.ini" --out "$out" \
        --set data.path="$data" "$@") >"$tmp/o" 2>"$tmp/e" || rc=$?
}

# refuse NP LABEL PATTERN DATA [CWD [sweep args...]]: the run must fail cleanly with PATTERN (grep -E -i) in
# its one line.
refuse() {
    local np=$1 label="$2 (np $1)" pattern=$3 data=$4 cwd=${5:-$d}
    shift 4
    [ $# -eq 0 ] || shift
    run "$np" "$cwd" "$data" "$@"
    local why=""
    if [ "$rc" -eq 124 ]; then
        why="timed out after 60 s (hang)"
    elif [ "$rc" -ne 1 ]; then
        why="exit $rc, expected 1"
    elif [ "$(grep -c '^husai: error' "$tmp/e")" -ne 1 ]; then
        why="expected exactly one 'husai: error' line"
    elif ! grep '^husai: error' "$tmp/e" | grep -Eqi -- "$pattern"; then
        why="the error line lacks /$pattern/"
    elif grep -q 'MPI_ABORT' "$tmp/e"; then
        why="aborted (MPI_ABORT) instead of a clean agreed exit"
    elif grep -q 'HDF5-DIAG' "$tmp/e"; then
        why="an HDF5 error stack was printed"
    elif [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
        why="left something under --out: $(ls -A "$out")"
    fi
    [ -z "$why" ] || fail "[$label] $why
$(tail -3 "$tmp/o")
$(cat "$tmp/e")"
    echo "data_checks:   ok [$label] $(grep '^husai: error' "$tmp/e")"
}

# accept NP LABEL DATA [CWD [sweep args...]]: the run must succeed; sets res to its results.h5.
accept() {
    local np=$1 label="$2 (np $1)" data=$3 cwd=${4:-$d}
    shift 3
    [ $# -eq 0 ] || shift
    run "$np" "$cwd" "$data" "$@"
    [ "$rc" -eq 0 ] || fail "[$label] exit $rc
$(tail -3 "$tmp/o")
$(cat "$tmp/e")"
    res=$(ls "$out"/*/results.h5)
}

# same LABEL A B: every decoder and encoder in results.h5 A equals B's bit for bit.
same() {
    "$PY" - "$2" "$3" <<'PY' || fail "[$1] decoders differ from the contiguous run's"
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r")["conditions"] for p in sys.argv[1:3])
assert sorted(a) == sorted(b) and len(a) > 0, (sorted(a), sorted(b))
for c in a:
    for k in ("decoders", "encoders"):
        assert np.array_equal(a[c][k][()], b[c][k][()]), (c, k)
PY
    echo "data_checks:   ok [$1] decoders and encoders equal the contiguous run's bit for bit"
}

step "paths that are not regular files"
refuse 2 "FIFO as data.path" "FIFO.*not a regular file" "$d/fifo.h5"
refuse 1 "FIFO as data.path" "FIFO.*not a regular file" "$d/fifo.h5"
refuse 2 "character device as data.path" "character device" /dev/null
refuse 2 "socket as data.path" "socket" "$d/sock.h5"
refuse 2 "directory as data.path" "directory" "$d/dir.h5"

step "storage that would read as the fill value"
refuse 2 "chunks never written" "unallocated.*4 of its 1000 chunks" "$d/unalloc.h5"
refuse 2 "contiguous data never written" "unallocated.*never written" "$d/unwritten.h5"
refuse 2 "huge chunked shape, few chunks written" "unallocated" "$d/huge_chunked.h5"
refuse 1 "huge chunked shape, few chunks written" "unallocated" "$d/huge_chunked.h5"
refuse 2 "external raw file shorter than declared" "ext_short\.bin.*shorter than declared" "$d/ext_short.h5"
refuse 2 "external raw file missing" "ext_gone\.bin.*missing" "$d/ext_missing.h5"
# HDF5 looks for a relative external name in the working directory: from / it would not find it.
refuse 2 "external raw file not where HDF5 looks" "ext_full\.bin.*missing" "$d/ext_rel.h5" /
refuse 2 "VDS source file missing" "missing source.*vds_nowhere\.h5" "$d/vds_nofile.h5"
refuse 1 "VDS source file missing" "missing source.*vds_nowhere\.h5" "$d/vds_nofile.h5"
refuse 2 "VDS source file is a FIFO" "vds_pipe\.h5.*FIFO" "$d/vds_fifo.h5"
refuse 2 "VDS source dataset missing" "missing source.*'x' not found" "$d/vds_nodset.h5"
refuse 2 "VDS region mapped to nothing" "maps only 2400 of its 3200" "$d/vds_gap.h5"
refuse 2 "VDS source smaller than its mapping" "vds_short\.h5.*fill value" "$d/vds_small.h5"

step "a shared window larger than the node can hold ($((big / 2000000000)) GB free)"
refuse 2 "window over free shared memory" "shared memory.*memory_budget_mb" "$d/huge_window.h5"
refuse 1 "window over free shared memory" "shared memory.*memory_budget_mb" "$d/huge_window.h5"

step "values float32 training cannot handle"
refuse 2 "subnormal data" "near-zero variance" "$d/subnormal.h5"
refuse 2 "data scaled by 1e37" "too large for float32" "$d/scaled.h5"
refuse 2 "float64 1e300" "out of float32 range.*row 5.*column 3" "$d/f64_1e300.h5"
refuse 1 "float64 1e300" "out of float32 range.*row 5.*column 3" "$d/f64_1e300.h5"
# Streamed in chunks, the same values are judged in the start-up pass (the fingerprint's), before training.
S=(--set data.chunk_rows=100)
refuse 2 "subnormal data, streamed" "near-zero variance" "$d/subnormal.h5" "$d" "${S[@]}"
refuse 2 "data scaled by 1e37, streamed" "too large for float32" "$d/scaled.h5" "$d" "${S[@]}"
refuse 2 "float64 1e300, streamed" "out of float32 range.*row 5.*column 3" "$d/f64_1e300.h5" "$d" "${S[@]}"
refuse 2 "NaN in row 250, streamed" "NaN or Inf.*row 250" "$d/nan250.h5" "$d" "${S[@]}"
refuse 1 "NaN in row 250, streamed" "NaN or Inf.*row 250" "$d/nan250.h5" "$d" "${S[@]}"
refuse 2 "constant data, streamed" "constant" "$d/constant.h5" "$d" "${S[@]}"

step "valid storage that is not contiguous reads the same rows"
accept 2 "contiguous reference" "$d/good.h5"
ref=$res
accept 2 "virtual dataset" "$d/vds.h5"
same "virtual dataset, 2 ranks" "$ref" "$res"
accept 1 "virtual dataset" "$d/vds.h5"
same "virtual dataset, 1 rank" "$ref" "$res"
# Relative source names resolve against the virtual dataset's directory, from any working directory.
accept 2 "virtual dataset run from /" "$d/vds.h5" /
same "virtual dataset run from /" "$ref" "$res"
accept 2 "chunked gzip" "$d/chunked_gz.h5"
same "chunked, gzip, partial edge chunk" "$ref" "$res"
accept 2 "external raw file" "$d/ext_rel.h5"
same "external raw file" "$ref" "$res"
# shellcheck disable=SC2016 # ${ORIGIN} is HDF5's token, not a shell expansion
HDF5_EXTFILE_PREFIX='${ORIGIN}' accept 2 "external raw file via \${ORIGIN}" "$d/ext_rel.h5" /
same "external raw file, HDF5_EXTFILE_PREFIX=\${ORIGIN}, run from /" "$ref" "$res"
accept 2 "contiguous, streamed" "$d/good.h5" "$d" --set data.chunk_rows=100
ref=$res
accept 2 "virtual dataset, streamed" "$d/vds.h5" "$d" --set data.chunk_rows=100
same "virtual dataset, streamed in chunks of 100 rows" "$ref" "$res"

step "PASS ($n runs)"
