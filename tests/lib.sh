# shellcheck shell=bash
# lib.sh: the preamble the bash tests under tests/ share, sourced (never executed) so that strict mode,
# the environment checks and the temporary directory are set up once, the same way, in every test. ctest
# (tests/CMakeLists.txt, husai_script_test) sets HUSAI, MPIEXEC and HUSAI_BUILD_DIR; run by hand, a test
# stops at once if one it needs is missing instead of failing later on an empty path.
#
#   HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   . "$HERE/lib.sh"                  # "$HERE/../lib.sh" from a subdirectory
#   husai_test_init NAME [OPTIONS]
#
# husai_test_init NAME: `set -euo pipefail`; requires HUSAI and MPIEXEC; exports OMPI_ALLOW_RUN_AS_ROOT=1
# and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (mpirun refuses to start as root otherwise, and CI containers run
# as root); sets PY=/usr/bin/python3 (the system python with numpy and h5py, not whatever is first on
# PATH); makes tmp=$(mktemp -d), removed on exit; defines
#   step MSG...  prints "NAME: MSG" on stdout
#   fail MSG...  prints "NAME: FAIL: MSG" on stderr and exits 1
#   skip MSG...  prints "NAME: SKIP: MSG" on stdout and exits 77 (the SKIP_RETURN_CODE in registered.cmake)
#   sweep_ok NAME CONFIG [ARGS...]  a 2-rank `husai sweep CONFIG --out $tmp/out_NAME ARGS...` under a 600 s
#                timeout; on a non-zero exit prints its output and fails; else prints the run directory
# Options, for the tests that differ (each keeps what it did before this file existed):
#   --keep-env     the exported variables keep a value the caller already set (${VAR:-1}) instead of
#                  being forced to 1, so a run by hand can override them
#   --openblas     also export OPENBLAS_NUM_THREADS=1 (same --keep-env rule): ranks would otherwise each
#                  start one BLAS thread per core and oversubscribe the machine
#   --no-mpi       the test runs husai without mpirun: only HUSAI is required, nothing OMPI_* is exported
#   --no-errexit   `set -u` only: the test reads exit statuses itself (cmd; rc=$?) instead of relying on -e
# Cleanup hook: if the test defines a function husai_test_cleanup, the exit trap calls it before removing
# $tmp (e.g. to kill a background job that still writes there). Tests must not replace the EXIT trap.

husai_test_init() {
    [ $# -ge 1 ] || {
        echo "husai_test_init: usage: husai_test_init NAME [--keep-env] [--openblas] [--no-mpi] [--no-errexit]" >&2
        exit 2
    }
    HUSAI_TEST_NAME=$1
    shift
    local keep_env=0 openblas=0 mpi=1 errexit=1 v
    while [ $# -gt 0 ]; do
        case $1 in
        --keep-env) keep_env=1 ;;
        --openblas) openblas=1 ;;
        --no-mpi) mpi=0 ;;
        --no-errexit) errexit=0 ;;
        *)
            echo "husai_test_init: unknown option '$1'" >&2
            exit 2
            ;;
        esac
        shift
    done

    if [ "$errexit" -eq 1 ]; then set -euo pipefail; else set -u; fi
    : "${HUSAI:?set HUSAI to the path of the husai binary}"
    if [ "$mpi" -eq 1 ]; then
        : "${MPIEXEC:?set MPIEXEC to mpirun/mpiexec}"
        local vars=(OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM)
    else
        local vars=()
    fi
    [ "$openblas" -eq 0 ] || vars+=(OPENBLAS_NUM_THREADS)
    for v in "${vars[@]}"; do
        if [ "$keep_env" -eq 1 ]; then export "$v=${!v:-1}"; else export "$v=1"; fi
    done

    # shellcheck disable=SC2034 # used by the sourcing test
    PY=/usr/bin/python3
    tmp=$(mktemp -d)
    trap _husai_test_exit EXIT
}

_husai_test_exit() {
    # `|| true`: a failing hook must neither keep $tmp nor replace the test's own exit status.
    if declare -F husai_test_cleanup >/dev/null; then husai_test_cleanup || true; fi
    rm -rf "$tmp"
}

step() { echo "$HUSAI_TEST_NAME: $*"; }
fail() {
    echo "$HUSAI_TEST_NAME: FAIL: $*" >&2
    exit 1
}
skip() {
    echo "$HUSAI_TEST_NAME: SKIP: $*"
    exit 77
}

sweep_ok() {
    local name=$1 config=$2 rc=0
    shift 2
    timeout 600 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$config" --out "$tmp/out_$name" "$@" \
        >"$tmp/stdout_$name" 2>"$tmp/stderr_$name" || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$tmp/stdout_$name" "$tmp/stderr_$name" >&2
        fail "husai sweep ($name) exited $rc"
    fi
    find "$tmp/out_$name" -mindepth 1 -maxdepth 1 -type d ! -name '.*'
}
