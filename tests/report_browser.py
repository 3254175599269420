#!/usr/bin/python3
"""report_browser.py: the checks tests/report_browser.sh runs on a report.html and on Chromium's screenshots.

  report_browser.py html REPORT.html [--ci yes|no]
      The page is self-contained (no script, no external reference); every inline SVG parses as XML; tick
      labels (class ytick/xtick/ctick) are evenly spaced multiples of a 1, 2 or 5 x 10^e step printed with one
      number of decimals; no two text boxes overlap and none leaves its SVG (boxes estimated from font-size and
      character count with the factor src/report/svg.h's HUSAI_SVG_CHAR_WIDTH uses); CI bars (class ci) appear
      exactly when the legend says "bars: 95% CI" (--ci no: none at all, and the legend says there are none);
      both PWMCC plots draw the random baseline (class random); the density histogram is drawn as steps (polylines
      of horizontal and vertical segments only, left to right), each series with its own colour and dash pattern; there is one heatmap per condition.
  report_browser.py png SHOT.png MIN_INK [COLOR]
      The screenshot is not blank: at least MIN_INK of its pixels differ from white, more than 20 colours, and
      (with COLOR, "#rrggbb") some pixels of that colour (the plots' trained-SAE blue proves the SVG drew).
Exits 1 with one line per problem found. PNG decoding is done here with zlib (no PIL on the test machines).
"""
import math
import re
import struct
import sys
import xml.etree.ElementTree as ET
import zlib

import numpy as np

CHAR_WIDTH = 0.62  # src/report/svg.h HUSAI_SVG_CHAR_WIDTH
NS = "{http://www.w3.org/2000/svg}"
problems = []


def problem(msg):
    problems.append(msg)


# ---------- report.html ----------


def text_boxes(svg):
    """(box, text) of every <text>: x0, y0, x1, y1 from x, y (baseline), text-anchor, font-size."""
    root_size = float(svg.get("font-size", "16"))
    out = []
    for t in svg.iter(NS + "text"):
        s = "".join(t.itertext())
        size = float(t.get("font-size", root_size))
        x, y = float(t.get("x")), float(t.get("y"))
        w = CHAR_WIDTH * size * len(s)
        anchor = {"start": 0, "middle": 1, "end": 2}[t.get("text-anchor", "start")]
        x0 = x - w * anchor / 2
        box = (x0, y - 0.8 * size, x0 + w, y + 0.25 * size)
        m = re.match(r"rotate\(-90 ([\d.]+) ([\d.]+)\)", t.get("transform", ""))
        if m:  # turned a quarter anticlockwise about (cx, cy): the box's extents swap
            cx, cy = float(m.group(1)), float(m.group(2))
            box = (cx - 0.8 * size, cy - (box[2] - cx), cx + 0.25 * size, cy - (box[0] - cx))
        out.append((box, s, t))
    return out


def check_ticks(name, svg):
    groups = {}
    for t in svg.iter(NS + "text"):
        cls = t.get("class", "")
        if cls in ("ytick", "xtick", "ctick"):
            groups.setdefault(cls, []).append("".join(t.itertext()))
    for cls, labels in groups.items():
        if len(labels) < 2:
            problem(f"{name}: only {len(labels)} {cls} label(s)")
            continue
        decimals = {len(s.split(".")[1]) if "." in s else 0 for s in labels}
        if len(decimals) != 1:
            problem(f"{name}: {cls} labels printed with different decimals: {labels}")
        if any(re.fullmatch(r"-0(\.0*)?", s) for s in labels):
            problem(f"{name}: {cls} label '-0'")
        vals = sorted(float(s) for s in labels)
        steps = np.diff(vals)
        step = steps[0]
        if step <= 0 or np.any(np.abs(steps - step) > 1e-9 * max(1.0, abs(step))):
            problem(f"{name}: {cls} ticks not evenly spaced: {labels}")
            continue
        mant = step / 10 ** math.floor(math.log10(step) + 1e-12)
        if min(abs(mant - m) for m in (1, 2, 5, 10)) > 1e-6:
            problem(f"{name}: {cls} tick step {step:g} is not 1, 2 or 5 x 10^e: {labels}")
        for v in vals:
            if abs(v / step - round(v / step)) > 1e-6:
                problem(f"{name}: {cls} tick {v:g} is not a multiple of its step {step:g}")


def check_text(name, svg):
    w, h = float(svg.get("width")), float(svg.get("height"))
    boxes = text_boxes(svg)
    for (b, s, _) in boxes:
        if b[0] < -0.5 or b[1] < -0.5 or b[2] > w + 0.5 or b[3] > h + 0.5:
            problem(f"{name}: text '{s}' leaves the {w:.0f} x {h:.0f} drawing: box {tuple(round(v) for v in b)}")
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i][0], boxes[j][0]
            if a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5:
                problem(f"{name}: text '{boxes[i][1]}' overlaps '{boxes[j][1]}'")


def texts(svg):
    return ["".join(t.itertext()) for t in svg.iter(NS + "text")]


def classed(svg, cls):
    return [e for e in svg.iter() if e.get("class") == cls]


def check_html(path, ci):
    page = open(path, encoding="utf-8").read()
    for pat, what in [(r"<script", "a script"), (r"\ssrc\s*=", "a src= reference"), (r"<link", "a <link>"),
                      (r"@import|url\(", "a CSS import or url()"), (r"<iframe|<object|<embed", "an embedded object"),
                      (r"href\s*=", "a link")]:
        if re.search(pat, page, re.I):
            problem(f"{path}: not self-contained: {what}")
    for url in re.findall(r"https?://[^\s\"'<>]+", page):
        if url != "http://www.w3.org/2000/svg":
            problem(f"{path}: names a network resource {url}")
    head, _, tail = page.partition('<div class="heatmaps">')
    plots = {f: s for s, f in re.findall(r"(<svg(?:(?!</svg>).)*</svg>)\n<figcaption><code>([\w.]+)</code>", head, re.S)}
    heatmaps = re.findall(r"<svg.*?</svg>", tail, re.S)
    for f in ("pwmcc_vs_param.svg", "pwmcc_vs_ev.svg", "density.svg", "stability_vs_density.svg"):
        if f not in plots:
            problem(f"{path}: plot {f} missing from the page")
    svgs = {}
    for name, s in list(plots.items()) + [(f"heatmap {i}", s) for i, s in enumerate(heatmaps)]:
        try:
            svgs[name] = ET.fromstring(s)
        except ET.ParseError as e:
            problem(f"{path}: {name} is not well-formed XML: {e}")
    for name, svg in svgs.items():
        check_ticks(name, svg)
        check_text(name, svg)
    for name in ("pwmcc_vs_param.svg", "pwmcc_vs_ev.svg"):
        svg = svgs.get(name)
        if svg is None:
            continue
        bars, says = len(classed(svg, "ci")), "bars: 95% CI" in texts(svg)
        if bars and not says:
            problem(f"{name}: {bars} CI bar elements but the legend does not say what they are")
        if says and not bars:
            problem(f"{name}: the legend says 'bars: 95% CI' but no bar is drawn")
        if ci == "no" and (bars or not any(t.startswith("no CI") for t in texts(svg))):
            problem(f"{name}: with 2 seeds there must be no CI bar and a legend line saying so")
        if ci == "yes" and not bars:
            problem(f"{name}: with 3 or more seeds the CI bars are missing")
        if not classed(svg, "random"):
            problem(f"{name}: no random-decoder baseline drawn")
    dens = svgs.get("density.svg")
    if dens is not None:
        styles = []
        for p in dens.iter(NS + "polyline"):
            pts = [tuple(map(float, xy.split(","))) for xy in p.get("points").split()]
            # steps: every segment horizontal or vertical (none slanted, as joined points would be), left to right
            if any(a[0] != b[0] and a[1] != b[1] or b[0] < a[0] for a, b in zip(pts, pts[1:])) or len(pts) < 4:
                problem(f"density.svg: a series is not drawn as steps: {p.get('points')[:80]}")
            styles.append((p.get("stroke"), p.get("stroke-dasharray", ""), p.get("stroke-width")))
        if len(styles) < 2 or len(set(styles)) != len(styles):
            problem(f"density.svg: series styles not distinct: {styles}")
    conds = re.findall(r"<title>seeds \d+, \d+:", page)
    if not heatmaps or not conds:
        problem(f"{path}: no per-condition PWMCC heatmap")
    return len(heatmaps)


# ---------- screenshots ----------


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG")
    pos, idat = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                raise SystemExit(f"{path}: unsupported PNG (depth {depth}, colour type {ctype})")
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    raw = zlib.decompress(b"".join(idat))
    bpp = 3 if ctype == 2 else 4
    stride = w * bpp
    img = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if ft == 1:
            line = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif ft == 2:
            line = (line + prev) % 256
        elif ft in (3, 4):
            cur = line.tolist()
            up = prev.tolist()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = up[i]
                if ft == 3:
                    cur[i] = (cur[i] + (a + b) // 2) & 255
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            line = np.array(cur, np.int64)
        img[y] = line
        prev = line
    return img.reshape(h, w, bpp)[:, :, :3]


def check_png(path, min_ink, color=None):
    img = read_png(path)
    pix = img.reshape(-1, 3)
    ink = np.mean(np.any(pix < 250, axis=1))
    colours = len(np.unique(pix[:: max(1, len(pix) // 200000)], axis=0))
    print(f"{path}: {img.shape[1]} x {img.shape[0]}, {ink:.3f} of pixels not white, {colours} colours")
    if ink < min_ink:
        problem(f"{path}: blank: only {ink:.4f} of pixels are not white (need {min_ink})")
    if colours <= 20:
        problem(f"{path}: only {colours} distinct colours")
    if color:
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        n = int(np.sum(np.all(np.abs(pix.astype(int) - rgb) <= 8, axis=1)))
        if n < 50:
            problem(f"{path}: only {n} pixels of {color}: the plot did not draw")


def main():
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "html":
        ci = args[3] if len(args) >= 4 and args[2] == "--ci" else None
        n = check_html(args[1], ci)
        print(f"{args[1]}: {n} heatmap(s) checked with the plots")
    elif len(args) in (3, 4) and args[0] == "png":
        check_png(args[1], float(args[2]), args[3] if len(args) == 4 else None)
    else:
        raise SystemExit(__doc__)
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
