#!/usr/bin/env bash
# slurm/submit_array.sh [SBATCH OPTIONS...] CONFIG.ini [HUSAI SWEEP FLAGS...]
# Submits a sweep as a job array, one value of [sweep] values per task (slurm/array.sbatch), and a
# merge job (slurm/merge.sbatch) that runs when every task has succeeded; prints both job ids.
#
#   slurm/submit_array.sh jobs/k_sweep.ini
#   slurm/submit_array.sh --ntasks=5 --time=02:00:00 jobs/k_sweep.ini --set train.epochs=50
#
# SBATCH OPTIONS (before the config, in --name=value form) apply to every array task. At most
# $HUSAI_ARRAY_MAX_RUNNING tasks (default 4) run at once. Site settings come from slurm/site.sh.
# The result is OUT/array-<array job id>; the parts stay in OUT/parts.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() {
    echo "usage: $0 [sbatch --options=value...] CONFIG.ini [husai sweep flags...]" >&2
    exit 2
}
sbatch_opts=()
while [ $# -gt 0 ] && [[ "$1" == -* ]]; do
    sbatch_opts+=("$1")
    shift
done
[ $# -ge 1 ] || usage
config=$1
shift
[ -f "$config" ] || {
    echo "submit_array.sh: config '$config' not found" >&2
    exit 1
}

# The jobs find these scripts and the binary from here, wherever this is run from.
export HUSAI_SLURM_DIR="$here"
export HUSAI="${HUSAI:-$(dirname "$here")/build/husai}"
# shellcheck source=slurm/site.sh
. "$here/site.sh"
# shellcheck source=slurm/launch.sh
. "$here/launch.sh"

# The config as husai resolves it (husai plan): a bad config fails here, before anything is queued.
mode=$(husai_plan_get "$config" mode "$@")
if [ "$mode" != sweep ]; then
    echo "submit_array.sh: $config has mode = $mode; only plain sweeps can be split (use slurm/sweep.sbatch)" >&2
    exit 1
fi
n=$(husai_plan_get "$config" n_conditions "$@")
[[ "$n" =~ ^[1-9][0-9]*$ ]] || {
    echo "submit_array.sh: husai plan gave '$n' conditions for $config" >&2
    exit 1
}
out=$(husai_resolve_out "$config" "$@")
max=${HUSAI_ARRAY_MAX_RUNNING:-4}

array_id=$(sbatch --parsable --array="0-$((n - 1))%$max" "${sbatch_opts[@]}" "$here/array.sbatch" "$config" "$@")
array_id=${array_id%%;*}
merge_id=$(sbatch --parsable --dependency="afterok:$array_id" --kill-on-invalid-dep=yes \
    "$here/merge.sbatch" "$array_id" "$out" "$n")
merge_id=${merge_id%%;*}
echo "array job $array_id: $n value(s), at most $max at once -> $out/parts/part-$array_id-<i>"
echo "merge job $merge_id: after the array succeeds -> $out/array-$array_id"
