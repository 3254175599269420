#!/usr/bin/env bash
# slurm/values.sh CONFIG [HUSAI SWEEP FLAGS...]
# Prints the config's [sweep] values one per line, exactly as written (husai accepts them comma or
# space separated; a `--set sweep.values=...` among the flags wins). Array task i of
# slurm/array.sbatch runs line i+1, so `sbatch --array=0-$(( $(slurm/values.sh X.ini | wc -l) - 1 ))`.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 CONFIG [husai sweep flags...]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
values=$("$here/ini_get.sh" "$1" sweep.values "${@:2}")
if [ -z "$values" ]; then
    echo "values.sh: $1 has no [sweep] values" >&2
    exit 1
fi
printf '%s\n' "$values" | tr ', \t' '\n' | sed '/^$/d'
