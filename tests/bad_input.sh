#!/usr/bin/env bash
# bad_input.sh: the bad inputs of issue 7 that tests/sweep_errors.sh does not already cover, each
# under mpirun with 2 ranks: one line "husai: error: ..." naming the problem, exit 1 from every rank
# within the time limit, no MPI_Abort banner, and nothing under the output directory.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init bad_input

"$PY" "$HERE/data/make_tiny.py" "$tmp/good.h5" 400 8 12 2
"$PY" - "$tmp" <<'PY'
import sys, h5py, numpy as np
t = sys.argv[1]
good = h5py.File(f"{t}/good.h5", "r")["activations"][()]
with h5py.File(f"{t}/str.h5", "w") as f:
    f.create_dataset("activations", data=np.array([["a"] * 8] * 400, dtype="S4"))
bad = good.copy(); bad[123, 5] = np.inf
with h5py.File(f"{t}/inf.h5", "w") as f:
    f["activations"] = bad
raw = open(f"{t}/good.h5", "rb").read()
open(f"{t}/trunc.h5", "wb").write(raw[: len(raw) // 2])
PY

cat >"$tmp/base.ini" <<INI
[data]
path = $tmp/good.h5
[sae]
d_sae = 16
k = 2
[train]
epochs = 2
batch_size = 100
[sweep]
values = 2
seeds = 1, 2
[metrics]
resamples = 100
INI

n=0
check() { # label pattern [husai sweep args...]
    local label=$1 pattern=$2 rc=0
    shift 2
    n=$((n + 1))
    local out="$tmp/out$n"
    timeout 60 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/base.ini" --out "$out" "$@" \
        >"$tmp/o" 2>"$tmp/e" || rc=$?
    [ "$rc" -eq 1 ] || {
        cat "$tmp/o" "$tmp/e"
        fail "$label: expected exit 1, got $rc"
    }
    [ "$(grep -c '^husai: error' "$tmp/e")" -eq 1 ] || {
        cat "$tmp/e"
        fail "$label: expected exactly one 'husai: error' line"
    }
    grep -q "$pattern" "$tmp/e" || {
        cat "$tmp/e"
        fail "$label: the error line does not mention '$pattern'"
    }
    ! grep -q "MPI_ABORT" "$tmp/e" || fail "$label: aborted instead of a clean agreed exit"
    [ -z "$(ls -A "$out" 2>/dev/null)" ] || fail "$label: left something in the output directory: $(ls -A "$out")"
    echo "bad_input:   ok [$label] $(grep '^husai: error' "$tmp/e")"
}

check "truncated HDF5 file" "trunc.h5" --set data.path="$tmp/trunc.h5"
check "string dtype" "string dtype" --set data.path="$tmp/str.h5"
check "Inf value names its row" "row 123" --set data.path="$tmp/inf.h5"
check "d_model mismatch with the config" "d_model 8 but data.d_model = 16" --set data.d_model=16
check "batch_size 0" "batch_size" --set train.batch_size=0
check "lr 0" "lr" --set train.lr=0
check "lr negative" "lr" --set train.lr=-0.001
check "epochs 0" "epochs" --set train.epochs=0
check "resamples below 100" "resamples" --set metrics.resamples=50
check "unknown mode" "not a known mode" --set sweep.mode=dance
check "unknown parameter" "not sweepable" --set sweep.param=momentum
check "holdout leaving too few rows" "holdout" --set data.holdout=0.95
check "checkpoint of a missing run (--resume)" "nothing to resume" --resume "$tmp/nowhere/run"
echo "bad_input: all $n cases give one clear line and a clean exit 1"
