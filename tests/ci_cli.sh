#!/usr/bin/env bash
# ci_cli.sh: end-to-end checks of `husai ci`: HUSAI's published CI reproduced from the command line,
# stdin input, --diff against an independent numpy computation, and one clear stderr line with a
# non-zero exit for each kind of bad input. Needs HUSAI (the binary) and /usr/bin/python3 with numpy.
# No mpirun here, and expect_error reads exit statuses itself, so no errexit.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init ci_cli --no-mpi --no-errexit

# DESIGN.md section 5: HUSAI's committed pair values, seed 13, CI [0.2923336489498615, 0.29615735478699207].
cat >"$tmp/design.txt" <<'EOF'
0.2992132753133774
0.2938457131385803
0.2950201630592346
0.2964489907026291
0.2908322513103485
0.2901238203048706
0.29808808863162994
0.2958742827177048
0.2929214835166931
0.2899872809648514
EOF

# check_json JSON PYTHON_CONDITION: the condition is evaluated with the parsed object as d.
check_json() {
    printf '%s' "$1" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
ok = eval("(" + sys.argv[1] + ")")  # parenthesised so a condition may span lines
if not ok:
    print("condition failed:", sys.argv[1], "on", d, file=sys.stderr)
sys.exit(0 if ok else 1)
' "$2"
}

step "design vector with --rng numpy --seed 13 reproduces HUSAI's CI to 1e-12"
out=$("$HUSAI" ci --rng numpy --seed 13 "$tmp/design.txt") || fail "husai ci exited $?"
check_json "$out" 'd["n"] == 10 and abs(d["mean"] - 0.294235534965992) < 1e-12
    and abs(d["ci95_low"] - 0.2923336489498615) < 1e-12 and abs(d["ci95_high"] - 0.29615735478699207) < 1e-12
    and abs(d["std"] - 0.0032699894983028556) < 1e-15
    and set(d) == {"n", "mean", "std", "ci95_low", "ci95_high"}' ||
    fail "design vector CI: $out"
echo "  $out"

step "stdin ('-') with blank lines and surrounding spaces gives the same result as the file"
padded() { echo; sed 's/^/  /; s/$/ \r/' "$tmp/design.txt"; echo; }
out_stdin=$(padded | "$HUSAI" ci --rng numpy --seed 13 -) ||
    fail "husai ci - exited $?"
[ "$out_stdin" = "$out" ] || fail "stdin result differs: $out_stdin"

step "native generator (the default): valid JSON, CI contains the mean, same bits on a second run"
n1=$("$HUSAI" ci "$tmp/design.txt") || fail "native run exited $?"
n2=$("$HUSAI" ci "$tmp/design.txt") || fail "second native run exited $?"
check_json "$n1" 'd["ci95_low"] < d["mean"] < d["ci95_high"]' || fail "native CI: $n1"
[ "$n1" = "$n2" ] || fail "native runs differ: $n1 vs $n2"

step "--diff agrees with numpy: rng = default_rng(7); x's choice first, then y's"
"$PY" -c '
import numpy as np
r = np.random.default_rng(5)
np.savetxt("'"$tmp"'/x.txt", 0.30 + 0.01 * r.standard_normal(12), fmt="%.17g")
np.savetxt("'"$tmp"'/y.txt", 0.28 + 0.01 * r.standard_normal(9), fmt="%.17g")
' || fail "cannot write the --diff inputs"
out=$("$HUSAI" ci --diff --rng numpy --seed 7 --resamples 5000 "$tmp/x.txt" "$tmp/y.txt") ||
    fail "husai ci --diff exited $?"
printf '%s' "$out" | "$PY" -c '
import json, sys
import numpy as np
d = json.load(sys.stdin)
x = np.loadtxt(sys.argv[1]); y = np.loadtxt(sys.argv[2]); B = 5000
rng = np.random.default_rng(7)
mx = x[rng.choice(len(x), (B, len(x)), replace=True)].mean(axis=1)
my = y[rng.choice(len(y), (B, len(y)), replace=True)].mean(axis=1)
lo, hi = np.percentile(mx - my, [2.5, 97.5])
err = max(abs(d["diff"] - (x.mean() - y.mean())), abs(d["ci95_low"] - lo), abs(d["ci95_high"] - hi))
print("  max |husai - numpy| =", err)
sys.exit(0 if err < 1e-12 and set(d) == {"diff", "ci95_low", "ci95_high"} else 1)
' "$tmp/x.txt" "$tmp/y.txt" || fail "--diff disagrees with numpy: $out"

step "--resamples 1e3 is the integer 1000: same result as --resamples 1000"
a=$("$HUSAI" ci --resamples 1e3 "$tmp/design.txt") || fail "--resamples 1e3 exited $?"
b=$("$HUSAI" ci --resamples 1000 "$tmp/design.txt") || fail "--resamples 1000 exited $?"
[ "$a" = "$b" ] || fail "--resamples 1e3 gave $a, 1000 gave $b"

step "--help prints the usage on stdout and exits 0"
"$HUSAI" ci --help >"$tmp/help.out" || fail "--help exited $?"
grep -q '^usage: husai ci' "$tmp/help.out" || fail "--help output has no usage line"

# expect_error NAME NEEDLE INPUT_FILE ARGS...: non-zero exit, nothing on stdout, exactly one stderr
# line, starting with "husai: error: ci: " and containing NEEDLE.
expect_error() {
    local name=$1 needle=$2 input=$3
    shift 3
    step "bad input ($name) fails with one stderr line mentioning '$needle'"
    timeout 30 "$HUSAI" ci "$@" <"$input" >"$tmp/err.out" 2>"$tmp/err.txt"
    local rc=$?
    [ "$rc" -ne 124 ] || fail "$name: still running after 30 s"
    [ "$rc" -ne 0 ] || fail "$name: exit status 0"
    [ ! -s "$tmp/err.out" ] || fail "$name: wrote to stdout: $(cat "$tmp/err.out")"
    local lines
    lines=$(wc -l <"$tmp/err.txt")
    [ "$lines" -eq 1 ] || fail "$name: $lines stderr lines: $(cat "$tmp/err.txt")"
    grep -q '^husai: error: ci: ' "$tmp/err.txt" || fail "$name: stderr does not start with 'husai: error: ci: '"
    grep -qF -- "$needle" "$tmp/err.txt" || fail "$name: stderr lacks '$needle': $(cat "$tmp/err.txt")"
    echo "  exit $rc: $(cat "$tmp/err.txt")"
}

printf '0.1\n0.2\nabc\n0.3\n' >"$tmp/text.txt"
printf '0.1\n\n0.2\nnan\n' >"$tmp/nan.txt"
: >"$tmp/empty.txt"
printf '\n  \n' >"$tmp/blank.txt"

expect_error "missing file" "$tmp/nope.txt" /dev/null "$tmp/nope.txt"
expect_error "non-numeric line" "text.txt:3" /dev/null "$tmp/text.txt"
expect_error "NaN line" "nan.txt:4" /dev/null "$tmp/nan.txt"
expect_error "NaN on stdin" "stdin:4" "$tmp/nan.txt" -
expect_error "empty file" "needs at least 2 values for an interval, got 0" /dev/null "$tmp/empty.txt"
expect_error "blank-only file" "needs at least 2 values for an interval, got 0" /dev/null "$tmp/blank.txt"
printf '0.25\n' >"$tmp/one.txt"
expect_error "one value" "needs at least 2 values for an interval, got 1" /dev/null "$tmp/one.txt"
expect_error "one value for --diff" "one.txt: needs at least 2 values" /dev/null --diff "$tmp/design.txt" "$tmp/one.txt"
# An over-long line in the middle (2 MB of digits) is refused by its number, not skipped or read in part.
{
    printf '0.1\n0.2\n'
    head -c 2000000 /dev/zero | tr '\0' '5'
    printf '\n0.3\n'
} >"$tmp/long.txt"
expect_error "over-long line" "long.txt:3: line is longer than 1048576 bytes" /dev/null "$tmp/long.txt"
# the cap's boundary: a value line of exactly 1048576 bytes is read whole (0.5 and zeros), one byte more is refused
{ printf '0.1\n0.5'; head -c 1048573 /dev/zero | tr '\0' '0'; printf '\n'; } >"$tmp/at_cap.txt"
out=$("$HUSAI" ci "$tmp/at_cap.txt") || fail "a 1048576-byte value line was refused"
check_json "$out" 'd["n"] == 2 and abs(d["mean"] - 0.3) < 1e-15' || fail "1048576-byte value line read as $out"
{ printf '0.1\n0.5'; head -c 1048574 /dev/zero | tr '\0' '0'; printf '\n'; } >"$tmp/over_cap.txt"
expect_error "line one byte over the cap" "over_cap.txt:2: line is longer than 1048576 bytes" /dev/null "$tmp/over_cap.txt"
expect_error "/dev/zero" "/dev/zero:1: line contains a NUL byte" /dev/null /dev/zero
# an endless stream of digits with no newline and no NUL ends at the line cap, within seconds
expect_error "endless line on stdin" "stdin:1: line is longer than" <(yes 1 | tr -d '\n') -
expect_error "a directory" "read error" /dev/null "$tmp"
printf '0.1\n0x1p-3\n' >"$tmp/hex.txt"
expect_error "hexadecimal value" "hex.txt:2: value = '0x1p-3' is hexadecimal" /dev/null "$tmp/hex.txt"
printf '0.1\n1e999\n' >"$tmp/huge.txt"
expect_error "overflowing value" "huge.txt:2: value = 1e999 is out of range" /dev/null "$tmp/huge.txt"
printf '0.1\n1e-320\n' >"$tmp/sub.txt"
expect_error "subnormal value" "sub.txt:2: value = 1e-320 is out of range" /dev/null "$tmp/sub.txt"
printf '0.1\n0.2 0.3\n' >"$tmp/two.txt"
expect_error "two numbers on a line" "two.txt:2: value = '0.2 0.3' is not a finite number" /dev/null "$tmp/two.txt"
expect_error "hexadecimal --seed" "--seed = '0x5' is hexadecimal" /dev/null --seed 0x5 "$tmp/design.txt"
expect_error "negative --seed" "--seed = -1 is negative" /dev/null --seed -1 "$tmp/design.txt"
expect_error "--resamples over INT_MAX" "--resamples = 1e10 is out of range" /dev/null --resamples 1e10 "$tmp/design.txt"
expect_error "bad --rng value" "--rng" /dev/null --rng mt19937 "$tmp/design.txt"
expect_error "bad --resamples value" "--resamples = 10 must be >= 100" /dev/null --resamples 10 "$tmp/design.txt"
expect_error "--unit seeds on a flat list" "seed" /dev/null --unit seeds "$tmp/design.txt"
expect_error "unknown option" "--bogus" /dev/null --bogus "$tmp/design.txt"
expect_error "--diff with one file" "two files" /dev/null --diff "$tmp/design.txt"

echo "ci_cli: all checks passed"
