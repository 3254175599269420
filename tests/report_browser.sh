#!/usr/bin/env bash
# report_browser.sh: report.html as a reader sees it, rendered by headless Chromium (Debian's `chromium`).
# Two 2-rank runs on tiny synthetic data: a k sweep over 5 values on 2 seeds (no interval exists: no CI bar
# may be drawn and the legend must say so) and an arch sweep over the five architectures on 3 seeds (CI bars,
# category labels). For each report.html: Chromium renders it with console logging on stderr and must log no
# console message (a script error, a blocked or failed load); the screenshot must not be blank; a screenshot
# of pwmcc_vs_ev.svg alone must show the plot's blue; tests/report_browser.py parses the page's SVGs (round
# 1-2-5 ticks, no overlapping text boxes, CI bars exactly where the legend says, the random baseline drawn,
# the density as steps with distinct series, one heatmap per condition) and checks the page names no
# external resource. Skips (77) when chromium is not installed. Label `browser` (left out of the sanitized
# pass: Chromium is not husai).
# Needs HUSAI, MPIEXEC, chromium and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init report_browser --keep-env --openblas

command -v chromium >/dev/null || skip "chromium is not installed"

step "generating tiny data: 2000 x 16, 24 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2000 16 24 1
common() {
    printf '[data]\npath = %s\n\n[sae]\nd_sae = 32\nk = 4\n\n' "$tmp/tiny.h5"
    printf '[train]\nepochs = 4\nbatch_size = 256\nlr = 0.003\n\n[metrics]\nresamples = 200\n'
}
{
    common
    printf '\n[sweep]\nparam = k\nvalues = 2, 4, 8, 16, 32\nseeds = 11, 22\n'
} >"$tmp/k2.ini"
{
    common
    printf '\n[sweep]\nparam = arch\nvalues = topk, batchtopk, jumprelu, relu_l1, matryoshka\nseeds = 1, 2, 3\n'
} >"$tmp/arch3.ini"

# shot URL PNG WIDTHxHEIGHT: a Chromium screenshot, console messages logged to $tmp/console.log.
shot() {
    rm -rf "$tmp/profile"
    timeout 60 chromium --headless=new --no-sandbox --disable-gpu --no-first-run --user-data-dir="$tmp/profile" \
        --enable-logging=stderr --v=0 --hide-scrollbars --window-size="$3" --screenshot="$2" "$1" \
        >"$tmp/chromium.out" 2>"$tmp/console.log" || {
        cat "$tmp/chromium.out" "$tmp/console.log" >&2
        fail "chromium could not render $1"
    }
    [ -s "$2" ] || fail "chromium wrote no screenshot of $1"
    if grep -E ':CONSOLE|Uncaught|Failed to load|net::ERR' "$tmp/console.log"; then
        fail "the browser console reported the messages above for $1"
    fi
}

for name in k2 arch3; do
    step "$name: 2-rank run"
    run=$(sweep_ok "$name" "$tmp/$name.ini")
    [ -s "$run/report.html" ] || fail "$name: no report.html in the run directory"

    step "$name: the page's SVGs (ticks, text boxes, CI legend, baseline, steps, heatmaps)"
    ci=yes
    [ "$name" != k2 ] || ci=no
    "$PY" "$HERE/report_browser.py" html "$run/report.html" --ci "$ci" || fail "$name: report.html checks failed"
    n_heat=$(grep -c '<svg' "$run/report.html")
    [ "$n_heat" -eq $((4 + 5)) ] || fail "$name: expected 4 plots + 5 heatmaps, found $n_heat SVGs"

    step "$name: rendered in headless Chromium: no console message, not blank"
    # the page is copied alone into an empty directory: anything it needed beside it would fail to load
    mkdir "$tmp/alone_$name"
    cp "$run/report.html" "$run/pwmcc_vs_ev.svg" "$tmp/alone_$name/"
    shot "file://$tmp/alone_$name/report.html" "$tmp/$name.png" 1200,2400
    "$PY" "$HERE/report_browser.py" png "$tmp/$name.png" 0.03 '#1f5fbf' || fail "$name: report.html renders blank"
    shot "file://$tmp/alone_$name/pwmcc_vs_ev.svg" "$tmp/${name}_ev.png" 780,460
    "$PY" "$HERE/report_browser.py" png "$tmp/${name}_ev.png" 0.02 '#1f5fbf' || fail "$name: pwmcc_vs_ev.svg renders blank"
done

step "PASS"
