#!/usr/bin/env bash
# slurm/values.sh CONFIG [HUSAI SWEEP FLAGS...]
# Prints the config's [sweep] values one per line as husai resolves them (`husai plan CONFIG --get
# value_args`: lists over indented continuation lines included, `--set sweep.values=...` among the
# flags applied), each exactly as `--set sweep.values=LINE` must give it to reproduce that condition.
# Array task i of slurm/array.sbatch runs line i+1, so
#   sbatch --array=0-$(( $(slurm/values.sh X.ini | wc -l) - 1 )) slurm/array.sbatch X.ini
# The husai binary is $HUSAI, else build/husai next to this directory.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 CONFIG [husai sweep flags...]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HUSAI=${HUSAI:-$(dirname "$here")/build/husai}
# shellcheck source=slurm/launch.sh
. "$here/launch.sh"
husai_plan_get "$1" value_args "${@:2}"
