#!/usr/bin/env bash
# cli_conventions.sh: the command line's conventions (README "Other commands").
#   - `husai --version` / `-V` / `husai version`: the version of CMakeLists.txt's project(), a commit that
#     exists in git (or "unknown" outside a clone), the build type of this build directory, and the MPI,
#     HDF5, OpenBLAS, cJSON and xxHash versions, each checked against what mpirun and pkg-config report;
#   - `husai help CMD` prints exactly `husai CMD --help`; `husai help` the command list;
#   - a mistyped command or long option: exit 2 (synth: 1), nothing on stdout, one stderr line
#     "husai: error: ... (did you mean '...'?)"; an ambiguous abbreviation lists its candidates; a
#     missing value and a value given to a flag are named as such;
#   - every short option of every command (read from its getopt_long call in src/cli/) is documented in
#     the command's --help ("-x, --long" or "-x/--long") and in README.md ("-x/--long").

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init cli_conventions
ROOT=$(cd "$HERE/.." && pwd)

step "husai --version"
"$HUSAI" --version >"$tmp/v.txt" 2>"$tmp/v.err" || fail "husai --version failed: $(cat "$tmp/v.err")"
[ ! -s "$tmp/v.err" ] || fail "husai --version wrote to stderr: $(cat "$tmp/v.err")"
"$HUSAI" -V | cmp -s - "$tmp/v.txt" || fail "husai -V differs from husai --version"
"$HUSAI" version | cmp -s - "$tmp/v.txt" || fail "husai version differs from husai --version"
field() { sed -n "s/^$1: //p" "$tmp/v.txt"; }
want=$(sed -n 's/^project(husai VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
[ "$(head -1 "$tmp/v.txt")" = "husai $want" ] || fail "first line '$(head -1 "$tmp/v.txt")', expected 'husai $want'"
commit=$(field commit)
if [ "$commit" != unknown ]; then
    [[ "$commit" =~ ^[0-9a-f]{12}$ ]] || fail "commit '$commit' is not 12 hex digits"
    if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$ROOT" cat-file -e "$commit^{commit}" 2>/dev/null || fail "commit $commit is not in the repository"
    fi
fi
if [ -n "${HUSAI_BUILD_DIR:-}" ] && [ -f "$HUSAI_BUILD_DIR/CMakeCache.txt" ]; then
    bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$HUSAI_BUILD_DIR/CMakeCache.txt")
    [[ "$(field 'build type')" == "$bt"* ]] || fail "build type '$(field 'build type')', CMakeCache says '$bt'"
fi
mpi=$("$MPIEXEC" --version 2>/dev/null | sed -n 's/.*(Open MPI) \([0-9.]*\).*/\1/p' | head -1)
if [ -n "$mpi" ]; then
    [[ "$(field MPI)" == *"Open MPI v$mpi"* ]] || fail "MPI line '$(field MPI)' does not name Open MPI v$mpi"
fi
check_pc() { # NAME PKG-CONFIG-MODULE PATTERN-PREFIX
    local v
    v=$(pkg-config --modversion "$2" 2>/dev/null) || return 0
    [[ "$(field "$1")" == "$3$v"* ]] || fail "$1 line '$(field "$1")', pkg-config $2 says $v"
}
check_pc HDF5 hdf5-openmpi ""
check_pc OpenBLAS openblas "OpenBLAS "
check_pc cJSON libcjson ""
check_pc xxHash libxxhash ""
[[ "$(field HDF5)" == *"(parallel)" ]] || fail "HDF5 line '$(field HDF5)' does not say parallel"

step "husai help CMD is husai CMD --help"
for cmd in sweep plan merge synth ci export import report version; do
    "$HUSAI" help "$cmd" >"$tmp/h1" 2>&1 || fail "husai help $cmd failed: $(cat "$tmp/h1")"
    "$HUSAI" "$cmd" --help >"$tmp/h2" 2>&1 || fail "husai $cmd --help failed"
    cmp -s "$tmp/h1" "$tmp/h2" || fail "husai help $cmd differs from husai $cmd --help"
    grep -q "^usage: husai" "$tmp/h1" || fail "husai help $cmd prints no usage line"
    "$HUSAI" --help | grep -q "^  $cmd" || fail "husai --help does not list $cmd"
done
"$HUSAI" help | cmp -s - <("$HUSAI" --help) || fail "husai help differs from husai --help"

# expect_usage RC NEEDLE ARGS...: exit RC, nothing on stdout, exactly one "husai: error" stderr line
# holding NEEDLE (a fixed string).
expect_usage() {
    local want=$1 needle=$2 rc=0
    shift 2
    timeout 60 "$HUSAI" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" -eq "$want" ] || fail "husai $*: exit $rc, expected $want: $(cat "$tmp/err")"
    [ ! -s "$tmp/out" ] || fail "husai $*: wrote to stdout: $(cat "$tmp/out")"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "husai $*: $(wc -l <"$tmp/err") stderr lines: $(cat "$tmp/err")"
    grep -q '^husai: error: ' "$tmp/err" || fail "husai $*: stderr does not start 'husai: error: '"
    grep -qF -- "$needle" "$tmp/err" || fail "husai $*: stderr lacks '$needle': $(cat "$tmp/err")"
}

step "did you mean: commands"
expect_usage 2 "unknown command 'swep' (did you mean 'sweep'?)" swep x.ini
expect_usage 2 "unknown command 'exprot' (did you mean 'export'?)" exprot
expect_usage 2 "unknown command 'plna' (did you mean 'plan'?)" help plna
expect_usage 2 "unknown command 'frobnicate' (see husai --help)" frobnicate
if grep -q "did you mean" "$tmp/err"; then fail "a suggestion for a word close to no command"; fi

step "did you mean: long options of every command"
cfg="$ROOT/jobs/demo.ini"
expect_usage 2 "sweep: unknown option '--sed' (did you mean '--set'?)" sweep "$cfg" --sed train.epochs=1
expect_usage 2 "sweep: unknown option '--froce' (did you mean '--force'?)" sweep "$cfg" --froce
expect_usage 2 "plan: unknown option '--jsno' (did you mean '--json'?)" plan "$cfg" --jsno
expect_usage 2 "merge: unknown option '--run_id' (did you mean '--run-id'?)" merge --run_id x --out y z
expect_usage 1 "synth: unknown option '--atomz' (did you mean '--atoms'?)" synth --atomz 3 x.h5
expect_usage 2 "ci: unknown option '--resampels' (did you mean '--resamples'?)" ci --resampels 100 x
expect_usage 2 "export: unknown option '--conditon' (did you mean '--condition'?)" export r --conditon k o
expect_usage 2 "ci: ambiguous option '--r' (could be --resamples, --rng)" ci --r 5 x
expect_usage 2 "sweep: option '--force' takes no value" sweep "$cfg" --force=yes
expect_usage 2 "sweep: option '--out' needs a value" sweep "$cfg" --out
expect_usage 2 "sweep: option '-o' needs a value" sweep "$cfg" -o
expect_usage 2 "sweep: unknown option '-x'" sweep "$cfg" -x

step "every short option is documented in --help and README.md"
"$PY" - "$ROOT" "$HUSAI" <<'EOF' || fail "an undocumented short option"
import re, subprocess, sys
root, husai = sys.argv[1], sys.argv[2]
readme = open(f"{root}/README.md").read()
for cmd in ["sweep", "plan", "merge", "synth", "ci", "export", "import", "report"]:
    src = open(f"{root}/src/cli/{cmd}_cmd.c").read()
    m = re.search(r'getopt_long\(argc, argv, "([^"]*)"', src)
    assert m, f"{cmd}: no getopt_long call found"
    shorts = [c for c in m.group(1) if c.isalnum()]
    longs = dict((v, n) for n, v in re.findall(r'\{"([a-z-]+)", \w+, NULL, \'(\w)\'\}', src))
    help_text = subprocess.run([husai, cmd, "--help"], capture_output=True, text=True).stdout
    for c in shorts:
        name = longs.get(c, "force" if c == "f" else None)
        assert name, f"{cmd}: -{c} has no long option"
        assert re.search(rf"-{c}(, |/)--{name}\b", help_text), f"{cmd} --help does not document -{c}, --{name}"
        if c == "h":
            assert "`-h/--help`" in readme, "README.md does not say every command takes -h/--help"
        else:
            assert re.search(rf"-{c}/--{name}\b", readme), f"README.md does not document {cmd}'s -{c}/--{name}"
    print(f"{cmd}: -{', -'.join(shorts)} documented")
EOF
step "ok"
