#!/usr/bin/env bash
# progress.sh: the lines a rank prints while its tasks train ([progress] seconds, README "Progress").
# A 2-rank sweep whose tasks take a few seconds each, with [progress] seconds = 0.5:
#   - stdout to a file (as under Slurm: under mpirun each rank's stdout is a pseudo-terminal even then):
#     plain lines only, no carriage return or escape sequence; every progress line parses (ISO 8601 UTC
#     time with milliseconds, rank, condition, seed, task, epoch, step/total, samples/s, loss, ETAs); each
#     rank's lines come at most 0.5 s apart (plus slack for a loaded machine) and closer only at an epoch
#     end; the step total equals epochs x ceil(rows / batch); steps and epochs grow; the ETA of the task
#     is within a factor of the time it really took; one "evaluating" line per task follows its last
#     progress line;
#   - stdout on a terminal (script(1)): one live line rewritten with \r and cleared with ESC [K, no plain
#     progress lines;
#   - [progress] seconds = 0: no progress line at all, the task-done lines stay.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init progress --openblas

command -v script >/dev/null || skip "script(1) (util-linux) is not installed"
rows=20000 batch=256 epochs=12
step "generating data: $rows x 64, 96 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/d.h5" "$rows" 64 96 1
cat >"$tmp/p.ini" <<EOF
[data]
path = $tmp/d.h5
[sae]
d_sae = 4096
[train]
epochs = $epochs
batch_size = $batch
lr = 0.003
[sweep]
param = k
values = 8
seeds = 11, 22
[metrics]
resamples = 200
[progress]
seconds = 0.5
EOF

sweep() { # OUT_NAME [husai args...]: a 2-rank sweep under timeout
    local out=$1
    shift
    timeout 300 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/p.ini" --out "$tmp/$out" "$@"
}

step "plain lines when stdout is a file"
sweep plain >"$tmp/plain.txt" 2>"$tmp/plain.err" || {
    cat "$tmp/plain.txt" "$tmp/plain.err" >&2
    fail "husai sweep failed"
}
if grep -q $'[\r\x1b]' "$tmp/plain.txt"; then fail "stdout (not a terminal) holds a carriage return or escape"; fi
"$PY" - "$tmp/plain.txt" "$rows" "$batch" "$epochs" <<'EOF' || fail "progress lines do not hold"
import datetime, math, re, sys
path, rows, batch, epochs = sys.argv[1], *map(int, sys.argv[2:])
total = epochs * math.ceil(rows / batch)
dur = r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
line_re = re.compile(
    r"\[husai\] rank=([01]) time=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z progress cond=k=8 seed=(11|22) "
    r"task=1/1 epoch=(\d+\.\d\d)/%d step=(\d+)/(\d+) samples_per_s=(\d+) loss=(\S+) eta_task=(\S+) "
    r"eta_run=(\S+)$" % epochs)
def secs(text):
    m = re.fullmatch(dur, text)
    assert m and text, f"bad duration {text!r}"
    h, mi, s = (int(g or 0) for g in m.groups())
    return 3600 * h + 60 * mi + s
eval_re = re.compile(r"\[husai\] rank=([01]) time=(\S+)Z evaluating cond=k=8 seed=(11|22) task=1/1 rows=%d$" % rows)
per_rank = {0: [], 1: []}
evaluating = {0: [], 1: []}
for line in open(path):
    if not line.startswith("[husai] rank="):
        continue
    e = eval_re.match(line.rstrip("\n"))
    if e:
        evaluating[int(e[1])].append(datetime.datetime.fromisoformat(e[2]).timestamp())
        continue
    m = line_re.match(line.rstrip("\n"))
    assert m, f"unparseable progress line: {line!r}"
    rank, t, seed, epoch, stp, tot, sps, loss, eta_t, eta_r = m.groups()
    assert int(tot) == total, f"step total {tot}, expected {epochs} x ceil({rows}/{batch}) = {total}"
    assert 1 <= int(stp) <= total and 0 <= float(epoch) <= epochs
    assert int(sps) > 0 and math.isfinite(float(loss)) and float(loss) > 0, line
    when = datetime.datetime.fromisoformat(t).timestamp()
    eta = secs(eta_t) if eta_t != "?" else None
    per_rank[int(rank)].append((when, int(stp), float(epoch), eta, secs(eta_r) if eta_r != "?" else None))
for rank, lines in per_rank.items():
    assert len(lines) >= 3, f"rank {rank}: only {len(lines)} progress lines"
    span = lines[-1][0] - lines[0][0]
    for (t0, s0, e0, _, _), (t1, s1, e1, _, _) in zip(lines, lines[1:]):
        gap = t1 - t0
        assert s1 > s0 and e1 >= e0, f"rank {rank}: step/epoch went back ({s0}->{s1}, {e0}->{e1})"
        # 0.5 s apart; one step (a few ms here) and a loaded machine's stalls allowed on top
        assert gap <= 2.0, f"rank {rank}: {gap:.2f} s between progress lines (interval 0.5 s)"
        if gap < 0.2:  # only an epoch end comes this early (a line due may come a step early), not before interval/10
            assert abs(e1 - round(e1)) < 1e-9, f"rank {rank}: early line at epoch {e1} after {gap:.2f} s"
            assert gap >= 0.045, f"rank {rank}: {gap:.3f} s between lines (floor 0.05 s)"
    # The task ETA against what the rest of the task really took (the last line is near the end).
    for when, s, e, eta, eta_run in lines:
        if eta is None or s < total // 4:
            continue
        left = lines[-1][0] - when
        assert eta <= 3 * left + 2 and eta >= left / 3 - 2, f"rank {rank}: eta {eta}s, took {left:.1f}s"
        assert eta_run == eta, f"rank {rank}: one task per rank, so eta_run {eta_run} == eta_task {eta}"
    assert len(evaluating[rank]) == 1, f"rank {rank}: {len(evaluating[rank])} 'evaluating' lines, expected 1"
    assert evaluating[rank][0] >= lines[-1][0], f"rank {rank}: 'evaluating' before the last progress line"
    print(f"rank {rank}: {len(lines)} lines over {span:.1f} s, steps up to {lines[-1][1]}/{total}")
EOF
for i in 1 2; do grep -q "task $i/2 done" "$tmp/plain.txt" || fail "no 'task $i/2 done' line"; done

step "one live line on a terminal"
# script(1) gives mpirun a terminal; its typescript keeps what the terminal received.
timeout 300 script -qfec "'$MPIEXEC' -np 2 --oversubscribe '$HUSAI' sweep '$tmp/p.ini' --out '$tmp/live' --set train.epochs=4" \
    "$tmp/live.txt" >/dev/null || {
    cat "$tmp/live.txt" >&2
    fail "husai sweep on a terminal failed"
}
grep -q $'\r'"\\[husai r[01]\\] k=8 seed=[0-9]* (1/1) epoch [0-9.]*/4 eta" "$tmp/live.txt" ||
    fail "no live status line (\\r[husai rN] ...) on the terminal"
grep -q $'\x1b\\[K' "$tmp/live.txt" || fail "the live line is never cleared to the end (ESC [K)"
if grep -q "progress cond=" "$tmp/live.txt"; then fail "plain progress lines on a terminal"; fi
grep -q "task 2/2 done" "$tmp/live.txt" || fail "no task-done line on the terminal"

step "[progress] seconds = 0: no progress lines"
sweep off --set progress.seconds=0 --set train.epochs=2 >"$tmp/off.txt" 2>&1 || {
    cat "$tmp/off.txt" >&2
    fail "husai sweep with progress off failed"
}
if grep -q "progress cond=\|evaluating cond=\|\[husai r[01]\]" "$tmp/off.txt"; then fail "progress lines with seconds = 0"; fi
grep -q "task 2/2 done" "$tmp/off.txt" || fail "no task-done line with progress off"
step "ok"
