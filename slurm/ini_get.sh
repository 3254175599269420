#!/usr/bin/env bash
# slurm/ini_get.sh CONFIG SECTION.KEY [HUSAI SWEEP FLAGS...]
# Prints one key's value from a husai INI file as husai would see it: the last
# `--set SECTION.KEY=VALUE` among the flags wins over the file. Prints nothing (and exits 0) when
# the key is absent, so callers apply husai's default. Understands what husai's config files use:
# [section] headers, `key = value` or `key: value`, whole-line `;`/`#` comments and ` ;` inline
# comments; section and key names are compared as written.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG SECTION.KEY [husai sweep flags...]" >&2
    exit 2
fi
config=$1
want=$2
shift 2
[ -r "$config" ] || {
    echo "ini_get.sh: cannot read $config" >&2
    exit 1
}
override="" found=0
while [ $# -gt 0 ]; do
    case "$1" in
    --set)
        if [ $# -ge 2 ] && [ "${2%%=*}" = "$want" ]; then
            override=${2#*=}
            found=1
        fi
        shift
        ;;
    --set=*)
        v=${1#--set=}
        if [ "${v%%=*}" = "$want" ]; then
            override=${v#*=}
            found=1
        fi
        ;;
    esac
    shift
done
if [ "$found" -eq 1 ]; then
    printf '%s\n' "$override"
    exit 0
fi
awk -v want="$want" '
    function trim(s) { sub(/^[ \t\r]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
    { sub(/\r$/, "") }
    /^[ \t]*[;#]/ || /^[ \t]*$/ { next }
    /^[ \t]*\[/ {
        section = $0
        sub(/^[ \t]*\[/, "", section)
        sub(/\].*$/, "", section)
        section = trim(section)
        next
    }
    {
        line = $0
        i = index(line, "=")
        j = index(line, ":")
        if (i == 0 || (j > 0 && j < i)) i = j
        if (i == 0) next
        key = trim(substr(line, 1, i - 1))
        value = substr(line, i + 1)
        sub(/[ \t];.*$/, "", value)
        if (section "." key == want) { result = trim(value); have = 1 }
    }
    END { if (have) print result }
' "$config"
