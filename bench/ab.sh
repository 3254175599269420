#!/usr/bin/env bash
# ab.sh: is this tree as fast as another revision? Builds REV's bench_husai beside this tree's and runs the
# two alternately (A B A B ...), so drift of the machine (5-30% within minutes here) falls on both alike,
# then prints each figure's median for A and B and the ratio B/A. Figures: training samples/s at HUSAI's
# size and at 768 x 16384 (bench_husai --quick), and blocked PWMCC GFLOP/s.
#   bench/ab.sh REV [ROUNDS]   (default 5 rounds; BUILD as for bench.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REV=${1:?usage: bench/ab.sh REV [ROUNDS]}
ROUNDS=${2:-5}
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$tmp/src" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$ROOT" worktree add -q --detach "$tmp/src" "$REV"
cmake -S "$tmp/src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/build" --target benchmarks -j 2 >/dev/null
cmake --build "$BUILD" --target benchmarks -j 2 >/dev/null
A=$tmp/build/bench/bench_husai
B=$BUILD/bench/bench_husai
echo "== A = $REV ($(git -C "$ROOT" rev-parse --short "$REV")), B = this tree; $ROUNDS rounds on" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1 /proc/loadavg)"
# One run's figures, one per line: "name value".
figures() {
    "$1" --quick | awk -F'|' '
        /^Training step/ {train = 1} /^Data fingerprint/ {train = 0}
        train && /^(husai|llm-like) / && NF >= 5 {split($1, w, " "); gsub(/ /, "", $2); print w[1] "_samples/s", $2}
        /^S=[0-9]+ .*GFLOP\/s/ {match($0, /[0-9.]+ GFLOP\/s/); print "pwmcc_GFLOP/s", substr($0, RSTART, RLENGTH - 8)}'
}
for ((r = 1; r <= ROUNDS; r++)); do
    figures "$A" | sed 's/^/A /' >>"$tmp/fig"
    figures "$B" | sed 's/^/B /' >>"$tmp/fig"
done
/usr/bin/python3 - "$tmp/fig" <<'PY'
import sys, statistics as st
vals = {}
for line in open(sys.argv[1]):
    who, name, v = line.split()
    vals.setdefault(name, {"A": [], "B": []})[who].append(float(v))
print(f"{'figure':24} {'A median':>12} {'B median':>12} {'B/A':>7}   (per-round B/A: min .. max)")
for name, d in vals.items():
    a, b = st.median(d["A"]), st.median(d["B"])
    rs = [y / x for x, y in zip(d["A"], d["B"])]
    print(f"{name:24} {a:12.1f} {b:12.1f} {b / a:7.3f}   ({min(rs):.3f} .. {max(rs):.3f})")
PY
