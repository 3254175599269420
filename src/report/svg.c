#define _POSIX_C_SOURCE 200809L
#include "report/svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/bootstrap.h"
#include "metrics/recon.h"
#include "sae/model.h"

#define W 780.0
#define H 460.0
#define ML 78.0
#define MR 190.0
#define MT 50.0
#define MB 66.0
#define FONT 12.0
#define SMALL 11.0
#define MAX_BOXES 1024
#define TRAINED "#1f5fbf"
#define RANDOM "#6b6b6b"

typedef struct {
    double x0, y0, x1, y1;
} box;

/* One SVG being drawn: its text, the plot area in pixels, the axes' data ranges and the boxes already
 * taken by text and markers (labels placed later avoid them). */
typedef struct {
    FILE *f;
    char *text;
    size_t len;
    double px0, px1, py0, py1; /* plot area: left, right, top, bottom */
    double xlo, xhi, ylo, yhi;
    box boxes[MAX_BOXES];
    int n_boxes;
} plot;

/* Axis ticks at multiples of a 1-2-5 step; the axis spans exactly [lo, hi]. */
typedef struct {
    double lo, hi, step;
    int n, decimals;
} ticks;

/* About `target` intervals of a 1, 2 or 5 x 10^e step covering [lo, hi] padded by 4%, at least min_span
 * wide (so noise in the 4th decimal is not blown up to the full height), within [0, 1] when clamp01. */
static ticks nice_ticks(double lo, double hi, int target, double min_span, int clamp01) {
    if (!isfinite(lo) || !isfinite(hi) || hi < lo) lo = 0.0, hi = 1.0;
    const double pad = 0.04 * (hi - lo);
    lo -= pad;
    hi += pad;
    if (hi - lo < min_span) {
        const double mid = 0.5 * (lo + hi);
        lo = mid - 0.5 * min_span;
        hi = mid + 0.5 * min_span;
    }
    const double raw = (hi - lo) / target, mag = pow(10.0, floor(log10(raw))), r = raw / mag;
    const double step = (r < 1.5 ? 1.0 : r < 3.5 ? 2.0 : r < 7.5 ? 5.0 : 10.0) * mag;
    double first = floor(lo / step + 1e-9), last = ceil(hi / step - 1e-9);
    if (clamp01) {
        first = fmax(first, 0.0);
        last = fmin(last, round(1.0 / step));
        if (last <= first) last = first + 1.0;
    }
    return (ticks){.lo = first * step,
                   .hi = last * step,
                   .step = step,
                   .n = (int)(last - first),
                   .decimals = step >= 1.0 ? 0 : (int)ceil(-log10(step) - 1e-9)};
}

/* Tick i's value, computed from the step count (no drift) and with no "-0". */
static double tick_value(const ticks *t, int i) {
    const double v = (round(t->lo / t->step) + i) * t->step;
    return fabs(v) < 1e-6 * t->step ? 0.0 : v;
}

static double px(const plot *p, double v) {
    return p->px0 + (v - p->xlo) / (p->xhi - p->xlo) * (p->px1 - p->px0);
}

static double py(const plot *p, double v) {
    return p->py1 - (v - p->ylo) / (p->yhi - p->ylo) * (p->py1 - p->py0);
}

/* A new plot of w x h pixels with its SVG header written, or NULL when memory runs out. */
static plot *begin(double w, double h) {
    plot *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->f = open_memstream(&p->text, &p->len);
    if (!p->f) {
        free(p);
        return NULL;
    }
    fprintf(
        p->f,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
        "font-family=\"DejaVu Sans, Verdana, sans-serif\" font-size=\"%.0f\">\n"
        "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
        w, h, w, h, FONT);
    return p;
}

/* Closes p's document and frees p: the SVG text (the caller's to free), or NULL if a write failed. */
static char *end(plot *p) {
    fprintf(p->f, "</svg>\n");
    const int bad = ferror(p->f) != 0;
    fclose(p->f);
    char *text = bad ? NULL : p->text;
    if (bad) free(p->text);
    free(p);
    return text;
}

static void add_box(plot *p, box b) {
    if (p->n_boxes < MAX_BOXES) p->boxes[p->n_boxes++] = b;
}

static int overlaps(box a, box b, double gap) {
    return a.x0 < b.x1 + gap && b.x0 < a.x1 + gap && a.y0 < b.y1 + gap && b.y0 < a.y1 + gap;
}

/* The box of text s drawn at (x, y) (y the baseline); anchor 0 start, 1 middle, 2 end. The same estimate
 * as tests/report_browser.py's. */
static box text_box(double x, double y, const char *s, double size, int anchor) {
    const double w = HUSAI_SVG_CHAR_WIDTH * size * (double)strlen(s), x0 = x - w * anchor / 2.0;
    return (box){x0, y - 0.8 * size, x0 + w, y + 0.25 * size};
}

static int is_free(const plot *p, box b, double gap) {
    for (int i = 0; i < p->n_boxes; i++)
        if (overlaps(b, p->boxes[i], gap)) return 0;
    return 1;
}

void husai_xml_escape(FILE *f, const char *s, size_t n) {
    static const char *const entity[] = {['&'] = "&amp;", ['<'] = "&lt;", ['>'] = "&gt;", ['"'] = "&quot;"};
    for (size_t i = 0; i < n && s[i]; i++) {
        const unsigned char ch = (unsigned char)s[i];
        if (ch < sizeof entity / sizeof *entity && entity[ch])
            fputs(entity[ch], f);
        else
            fputc(ch, f);
    }
}

static void escaped(FILE *f, const char *s) {
    husai_xml_escape(f, s, strlen(s));
}

static const char *const anchors[] = {"start", "middle", "end"};

/* Draws text s and takes its box. */
static void text(plot *p, double x, double y, const char *s, double size, int anchor, const char *attrs) {
    fprintf(p->f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%.1f\"%s%s>", x, y,
            anchors[anchor], size, attrs ? " " : "", attrs ? attrs : "");
    escaped(p->f, s);
    fprintf(p->f, "</text>\n");
    add_box(p, text_box(x, y, s, size, anchor));
}

static void line(const plot *p, double x1, double y1, double x2, double y2, const char *style) {
    fprintf(p->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" %s/>\n", x1, y1, x2, y2, style);
}

/* Marker shapes, so series differ without colour too: 0 circle, 1 square, 2 triangle, 3 diamond,
 * 4 triangle down, 5 cross. filled: 0 open (white fill), 1 solid, 2 translucent (points that may lie on one
 * another stay visible). A title (or NULL) is the browser's tooltip. */
static void marker(plot *p, int shape, double x, double y, double r, const char *color, int filled,
                   const char *title) {
    const char *fill = filled ? color : "white", *tag = "path";
    switch (shape % 6) {
    case 0:
        fprintf(p->f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\"", x, y, r);
        tag = "circle";
        break;
    case 1:
        fprintf(p->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"", x - r, y - r, 2 * r,
                2 * r);
        tag = "rect";
        break;
    case 2:
        fprintf(p->f, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\"", x, y - 1.2 * r, x + 1.1 * r, y + 0.8 * r,
                x - 1.1 * r, y + 0.8 * r);
        break;
    case 3:
        fprintf(p->f, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fZ\"", x, y - 1.3 * r, x + 1.3 * r, y,
                x, y + 1.3 * r, x - 1.3 * r, y);
        break;
    case 4:
        fprintf(p->f, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\"", x, y + 1.2 * r, x + 1.1 * r, y - 0.8 * r,
                x - 1.1 * r, y - 0.8 * r);
        break;
    default:
        fprintf(p->f, "<path d=\"M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f\"", x - r, y - r, x + r, y + r,
                x - r, y + r, x + r, y - r);
        fill = "none";
    }
    fprintf(p->f, " fill=\"%s\"%s stroke=\"%s\" stroke-width=\"1.5\"", fill,
            filled == 2 ? " fill-opacity=\"0.6\"" : "", color);
    if (title) {
        fprintf(p->f, "><title>");
        escaped(p->f, title);
        fprintf(p->f, "</title></%s>\n", tag);
    } else {
        fprintf(p->f, "/>\n");
    }
    add_box(p, (box){x - r - 1, y - r - 1, x + r + 1, y + r + 1});
}

/* A vertical 95% CI bar from data y0 to y1 at pixel x; a withheld interval (NaN ends) draws nothing.
 * Returns whether a bar was drawn. */
static int vbar(plot *p, double x, double y0, double y1, const char *color) {
    if (!isfinite(y0) || !isfinite(y1)) return 0;
    const double a = py(p, y0), b = py(p, y1);
    char style[96];
    snprintf(style, sizeof style, "class=\"ci\" stroke=\"%s\" stroke-width=\"1.5\"", color);
    line(p, x, a, x, b, style);
    line(p, x - 4, a, x + 4, a, style);
    line(p, x - 4, b, x + 4, b, style);
    add_box(p, (box){x - 4, fmin(a, b), x + 4, fmax(a, b)});
    return 1;
}

static int hbar(plot *p, double y, double x0, double x1, const char *color) {
    if (!isfinite(x0) || !isfinite(x1)) return 0;
    const double a = px(p, x0), b = px(p, x1);
    char style[96];
    snprintf(style, sizeof style, "class=\"ci\" stroke=\"%s\" stroke-width=\"1.5\"", color);
    line(p, a, y, b, y, style);
    line(p, a, y - 4, a, y + 4, style);
    line(p, b, y - 4, b, y + 4, style);
    add_box(p, (box){fmin(a, b), y - 4, fmax(a, b), y + 4});
    return 1;
}

/* The frame: title, plot area, the y axis with its ticks and gridlines, the axis titles. */
static void frame(plot *p, const char *title, const char *xlabel, const char *ylabel, const ticks *yt) {
    p->px0 = ML;
    p->px1 = W - MR;
    p->py0 = MT;
    p->py1 = H - MB;
    p->ylo = yt->lo;
    p->yhi = yt->hi;
    double size = 15.0;
    while (size > 10.0 && text_box(0, 0, title, size, 0).x1 > W - 20)
        size -= 0.5;
    text(p, W / 2, 28, title, size, 1, "font-weight=\"bold\"");
    char v[32];
    for (int i = 0; i <= yt->n; i++) {
        const double y = py(p, tick_value(yt, i));
        line(p, p->px0, y, p->px1, y, "stroke=\"#e4e4e4\"");
        line(p, p->px0 - 5, y, p->px0, y, "stroke=\"black\"");
        snprintf(v, sizeof v, "%.*f", yt->decimals, tick_value(yt, i));
        text(p, p->px0 - 8, y + 4, v, FONT, 2, "class=\"ytick\"");
    }
    line(p, p->px0, p->py1, p->px1, p->py1, "stroke=\"black\"");
    line(p, p->px0, p->py0, p->px0, p->py1, "stroke=\"black\"");
    text(p, (p->px0 + p->px1) / 2, H - 14, xlabel, FONT, 1, NULL);
    const double cy = (p->py0 + p->py1) / 2;
    fprintf(p->f, "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">", cy,
            cy);
    escaped(p->f, ylabel);
    fprintf(p->f, "</text>\n");
}

/* Numeric x ticks and labels. */
static void x_axis(plot *p, const ticks *xt) {
    p->xlo = xt->lo;
    p->xhi = xt->hi;
    char v[32];
    for (int i = 0; i <= xt->n; i++) {
        const double x = px(p, tick_value(xt, i));
        line(p, x, p->py1, x, p->py1 + 5, "stroke=\"black\"");
        line(p, x, p->py0, x, p->py1, "stroke=\"#f0f0f0\"");
        snprintf(v, sizeof v, "%.*f", xt->decimals, tick_value(xt, i));
        text(p, x, p->py1 + 19, v, FONT, 1, "class=\"xtick\"");
    }
}

/* Legend rows to the right of the plot area. */
typedef struct {
    plot *p;
    double x, y;
} legend;

static void legend_text(legend *l, const char *s) {
    text(l->p, l->x + 24, l->y + 4, s, SMALL, 0, NULL);
    l->y += 20;
}

/* Places label s for a point at (x, y): beside it where free, else farther off with a leader line; always
 * inside the plot area. */
static void place_label(plot *p, double x, double y, const char *s, double size) {
    static const double dirs[8][2] = {{1, -1}, {1, 1}, {-1, -1}, {-1, 1}, {0, -1}, {0, 1}, {1, 0}, {-1, 0}};
    for (double r = 9; r <= 160; r += r < 20 ? 11 : 14) {
        for (int d = 0; d < 8; d++) {
            const int anchor = dirs[d][0] > 0 ? 0 : dirs[d][0] < 0 ? 2 : 1;
            const double tx = x + dirs[d][0] * r, ty = y + dirs[d][1] * r +
                                                       (dirs[d][1] > 0 ? size * 0.8 : 0) +
                                                       (dirs[d][1] == 0 ? size * 0.3 : 0);
            const box b = text_box(tx, ty, s, size, anchor);
            if (b.x0 < p->px0 + 2 || b.x1 > p->px1 - 2 || b.y0 < p->py0 + 2 || b.y1 > p->py1 - 2) continue;
            if (!is_free(p, b, 2)) continue;
            if (r > 20) { /* far from its point: a leader line to the nearest point of the box */
                const double lx = fmin(fmax(x, b.x0), b.x1), ly = fmin(fmax(y, b.y0), b.y1);
                line(p, x, y, lx, ly, "stroke=\"#999\" stroke-width=\"0.8\"");
            }
            text(p, tx, ty, s, size, anchor, NULL);
            return;
        }
    }
    /* nowhere free: the label goes right of the point (better overlapped than missing) */
    text(p, x + 9, y - 9, s, size, 0, NULL);
}

/* The y ticks of a PWMCC axis spanning [lo, hi] (PWMCC lies in [0, 1]). */
static ticks pwmcc_ticks(double lo, double hi) {
    return nice_ticks(lo, hi, 5, 0.05, 1);
}

/* The CI part of a legend: what the bars are, and that conditions with too few seeds have none. */
static void ci_legend(legend *l, int any_ci, int any_withheld, const char *color) {
    if (any_ci) {
        const double x = l->x + 8;
        char style[64];
        snprintf(style, sizeof style, "stroke=\"%s\" stroke-width=\"1.5\"", color);
        line(l->p, x, l->y - 7, x, l->y + 7, style);
        line(l->p, x - 4, l->y - 7, x + 4, l->y - 7, style);
        line(l->p, x - 4, l->y + 7, x + 4, l->y + 7, style);
        legend_text(l, "bars: 95% CI");
    }
    if (any_withheld) {
        char s[48];
        snprintf(s, sizeof s, "no CI: < %d seeds", HUSAI_CI_MIN_SEEDS);
        legend_text(l, s);
    }
}

char *husai_svg_pwmcc_vs_param(const husai_condition_result *c, int n, const char *title) {
    plot *p = begin(W, H);
    if (!p) return NULL;
    double lo = INFINITY, hi = -INFINITY;
    int any_ci = 0, any_withheld = 0;
    for (int i = 0; i < n; i++) {
        /* fmin/fmax skip a withheld (NaN) end; the means keep the range defined */
        lo = fmin(lo, fmin(fmin(c[i].trained.mean, c[i].random.mean), fmin(c[i].trained.lo, c[i].random.lo)));
        hi = fmax(hi, fmax(fmax(c[i].trained.mean, c[i].random.mean), fmax(c[i].trained.hi, c[i].random.hi)));
        const int has = isfinite(c[i].trained.lo) && isfinite(c[i].trained.hi);
        any_ci |= has;
        any_withheld |= !has;
    }
    const ticks yt = pwmcc_ticks(lo, hi);
    const int arch = n > 0 && !strcmp(c[0].param, "arch");
    frame(p, title, n > 0 ? c[0].param : "", "PWMCC (mean over seed pairs)", &yt);
    const double slot = (p->px1 - p->px0) / (n > 0 ? n : 1);
    char(*labels)[48] = calloc((size_t)(n > 0 ? n : 1), sizeof *labels);
    double widest = 0.0;
    for (int i = 0; labels && i < n; i++) {
        if (arch)
            snprintf(labels[i], sizeof labels[i], "%s", husai_arch_name(c[i].arch));
        else
            snprintf(labels[i], sizeof labels[i], "%g", c[i].value);
        const box b = text_box(0, 0, labels[i], FONT, 0);
        widest = fmax(widest, b.x1 - b.x0);
    }
    /* labels wider than their slot go on two staggered rows */
    const int stagger = widest > slot - 8;
    for (int i = 0; labels && i < n; i++) {
        const double x = p->px0 + slot * (i + 0.5);
        line(p, x, p->py1, x, p->py1 + 5, "stroke=\"black\"");
        text(p, x, p->py1 + 19 + (stagger && i % 2 ? 14 : 0), labels[i], FONT, 1, NULL);
    }
    free(labels);
    p->xlo = 0;
    p->xhi = 1;           /* the slots are positioned in pixels */
    if (!arch && n > 1) { /* an ordered grid: joined, trained solid and random dashed */
        for (int s = 0; s < 2; s++) {
            fprintf(p->f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.2\"%s points=\"",
                    s ? RANDOM : TRAINED, s ? " stroke-dasharray=\"5 3\"" : "");
            for (int i = 0; i < n; i++)
                fprintf(p->f, "%s%.1f,%.1f", i ? " " : "", p->px0 + slot * (i + 0.5) + (s ? -7 : 7),
                        py(p, s ? c[i].random.mean : c[i].trained.mean));
            fprintf(p->f, "\"/>\n");
        }
    }
    for (int i = 0; i < n; i++) {
        const double x = p->px0 + slot * (i + 0.5);
        vbar(p, x - 7, c[i].random.lo, c[i].random.hi, RANDOM);
        fprintf(p->f, "<g class=\"random\">");
        marker(p, 1, x - 7, py(p, c[i].random.mean), 4.5, RANDOM, 0, NULL);
        fprintf(p->f, "</g>\n");
        vbar(p, x + 7, c[i].trained.lo, c[i].trained.hi, TRAINED);
        char tip[192], ci[64] = " (no interval: too few seeds)";
        if (isfinite(c[i].trained.lo) && isfinite(c[i].trained.hi))
            snprintf(ci, sizeof ci, " [%.5f, %.5f]", c[i].trained.lo, c[i].trained.hi);
        snprintf(tip, sizeof tip, "%s: trained %.5f%s, random %.5f", c[i].name, c[i].trained.mean, ci,
                 c[i].random.mean);
        marker(p, 0, x + 7, py(p, c[i].trained.mean), 5, TRAINED, 1, tip);
    }
    legend l = {p, W - MR + 16, MT + 10};
    marker(p, 0, l.x + 8, l.y, 5, TRAINED, 1, NULL);
    legend_text(&l, "trained SAEs");
    marker(p, 1, l.x + 8, l.y, 4.5, RANDOM, 0, NULL);
    legend_text(&l, "random decoders");
    ci_legend(&l, any_ci, any_withheld, TRAINED);
    return end(p);
}

char *husai_svg_pwmcc_vs_ev(const husai_condition_result *c, int n, const char *title) {
    plot *p = begin(W, H);
    if (!p) return NULL;
    double ylo = INFINITY, yhi = -INFINITY, xlo = INFINITY, xhi = -INFINITY, rlo = INFINITY, rhi = -INFINITY;
    int any_ci = 0, any_withheld = 0;
    for (int i = 0; i < n; i++) {
        ylo = fmin(fmin(ylo, c[i].trained.mean), c[i].trained.lo);
        yhi = fmax(fmax(yhi, c[i].trained.mean), c[i].trained.hi);
        xlo = fmin(fmin(xlo, c[i].ev.mean), c[i].ev.lo);
        xhi = fmax(fmax(xhi, c[i].ev.mean), c[i].ev.hi);
        rlo = fmin(rlo, c[i].random.mean);
        rhi = fmax(rhi, c[i].random.mean);
        const int has = isfinite(c[i].trained.lo) && isfinite(c[i].trained.hi);
        any_ci |= has;
        any_withheld |= !has;
    }
    const ticks yt = pwmcc_ticks(fmin(ylo, rlo), fmax(yhi, rhi)), xt = nice_ticks(xlo, xhi, 5, 0.05, 0);
    frame(p, title, "explained variance (EV, mean over seeds)", "trained PWMCC (mean over seed pairs)", &yt);
    x_axis(p, &xt);
    /* the random baseline for scale: one dashed line, or the band its conditions span */
    const int band = rhi - rlo > 0.01 * (yt.hi - yt.lo);
    if (n > 0 && band)
        fprintf(p->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#ececec\"/>\n",
                p->px0, py(p, rhi), p->px1 - p->px0, py(p, rlo) - py(p, rhi));
    for (int e = 0; n > 0 && e < 1 + band; e++) {
        const double y = py(p, e ? rlo : band ? rhi : 0.5 * (rlo + rhi));
        line(p, p->px0, y, p->px1, y, "class=\"random\" stroke=\"" RANDOM "\" stroke-dasharray=\"6 4\"");
        add_box(p, (box){p->px0, y - 1, p->px1, y + 1});
    }
    /* markers and bars first, so no label lands on a point */
    for (int i = 0; i < n; i++) {
        const double x = px(p, c[i].ev.mean), y = py(p, c[i].trained.mean);
        vbar(p, x, c[i].trained.lo, c[i].trained.hi, TRAINED);
        hbar(p, y, c[i].ev.lo, c[i].ev.hi, TRAINED);
        char tip[160];
        snprintf(tip, sizeof tip, "%s: EV %.4f, trained PWMCC %.5f", c[i].name, c[i].ev.mean,
                 c[i].trained.mean);
        marker(p, 0, x, y, 5, TRAINED, 2, tip);
    }
    for (int i = 0; i < n; i++)
        place_label(p, px(p, c[i].ev.mean), py(p, c[i].trained.mean), c[i].name, SMALL);
    legend l = {p, W - MR + 16, MT + 10};
    marker(p, 0, l.x + 8, l.y, 5, TRAINED, 2, NULL);
    legend_text(&l, "trained SAEs");
    ci_legend(&l, any_ci, any_withheld, TRAINED);
    line(p, l.x, l.y, l.x + 16, l.y, "stroke=\"" RANDOM "\" stroke-dasharray=\"6 4\"");
    legend_text(&l, "random decoders");
    if (band) legend_text(&l, "(band: their range)");
    return end(p);
}

/* Share of c's latents (pooled over seeds) in each density slot: never fires, then the log10 bins. */
static void density_shares(const husai_condition_result *c, double share[HUSAI_DENSITY_BINS + 1]) {
    long counts[HUSAI_DENSITY_BINS + 1] = {0};
    const size_t total = c->density ? (size_t)c->S * c->d_sae : 0;
    if (total) husai_density_histogram(c->density, total, counts);
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
        share[b] = total ? (double)counts[b] / (double)total : 0.0;
}

/* Series styles: colour, dash pattern and width differ together, widest first, so a curve drawn over an
 * identical one leaves it visible around the edges. */
static const char *const colors[] = {"#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c",
                                     "#c2255c", "#0b7285", "#e67700", "#495057"};
static const char *const dashes[] = {"", "7 3", "2 2", "9 3 2 3", "4 4", "1 3"};

/* The density plots' x axis: "never fires" in a column of its own left of the log10 axis, behind a break,
 * wide enough for m conditions' markers side by side. Leaves p->px0 at the log axis (the caller restores
 * it) and returns the never column's centre; *spacing is the gap between the conditions' markers there. */
static double density_axis(plot *p, int m, double *spacing) {
    const double never_w = fmax(56.0, 12.0 * m + 16.0), x_bins = p->px0 + never_w + 18.0;
    const double never_x = p->px0 + never_w / 2;
    line(p, x_bins - 9, p->py0, x_bins - 9, p->py1, "stroke=\"#999\" stroke-dasharray=\"3 3\"");
    text(p, never_x, p->py1 + 19, "never", FONT, 1, NULL);
    p->xlo = HUSAI_DENSITY_LOG_MIN;
    p->xhi = 0.0;
    p->px0 = x_bins;
    char v[16];
    for (int t = (int)HUSAI_DENSITY_LOG_MIN; t <= 0; t++) {
        const double x = px(p, t);
        line(p, x, p->py1, x, p->py1 + 5, "stroke=\"black\"");
        snprintf(v, sizeof v, "%d", t);
        text(p, x, p->py1 + 19, v, FONT, 1, "class=\"xtick\"");
    }
    *spacing = m > 1 ? fmin(12.0, (never_w - 16.0) / (m - 1)) : 0.0;
    return never_x;
}

/* Series k's stroke style (colour, width, dash) into style. */
static void series_style(int k, char *style, size_t n) {
    const int n_colors = (int)(sizeof colors / sizeof *colors),
              n_dashes = (int)(sizeof dashes / sizeof *dashes);
    const char *dash = dashes[k % n_dashes];
    snprintf(style, n, "stroke=\"%s\" stroke-width=\"%.1f\"%s%s%s", colors[k % n_colors],
             fmax(1.2, 3.4 - 0.5 * k), *dash ? " stroke-dasharray=\"" : "", dash, *dash ? "\"" : "");
}

/* Series k's legend entry (its line and marker, then the name) while there is room, then a "+N more". */
static void series_legend(plot *p, legend *l, int k, int m, const char *name) {
    if (l->y < H - MB - 20) {
        char style[128];
        series_style(k, style, sizeof style);
        line(p, l->x, l->y, l->x + 18, l->y, style);
        marker(p, k, l->x + 9, l->y, 3.5, colors[k % (int)(sizeof colors / sizeof *colors)], 1, NULL);
        legend_text(l, name);
    } else if (l->y < H - MB) {
        char more[32];
        snprintf(more, sizeof more, "+%d more (hover)", m - k);
        legend_text(l, more);
    }
}

char *husai_svg_density(const husai_condition_result *c, int n, const char *title) {
    plot *p = begin(W, H);
    if (!p) return NULL;
    const int n_colors = (int)(sizeof colors / sizeof *colors);
    double share[HUSAI_DENSITY_BINS + 1], hi = 0.0;
    int m = 0; /* conditions with densities */
    for (int i = 0; i < n; i++) {
        if (!c[i].density) continue;
        m++;
        density_shares(&c[i], share);
        for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
            hi = fmax(hi, share[b]);
    }
    ticks yt = nice_ticks(0.0, hi, 5, 0.05, 1);
    yt.lo = 0.0; /* shares start at 0 */
    yt.n = (int)round(yt.hi / yt.step);
    frame(p, title, "log10(share of rows a latent fires on)", "share of latents", &yt);
    const double save_px0 = p->px0;
    double spacing;
    const double never_x = density_axis(p, m, &spacing);
    legend l = {p, W - MR + 16, MT + 10};
    for (int i = 0, k = 0; i < n; i++) {
        if (!c[i].density) continue;
        const char *col = colors[k % n_colors];
        density_shares(&c[i], share);
        char tip[160];
        snprintf(tip, sizeof tip, "%s: %.4f never fire", c[i].name, share[0]);
        marker(p, k, never_x + (k - (m - 1) / 2.0) * spacing, py(p, share[0]), 4, col, 1, tip);
        /* the bins as steps: flat across each bin, vertical between bins */
        char style[128];
        series_style(k, style, sizeof style);
        fprintf(p->f, "<polyline fill=\"none\" %s", style);
        double x0 = px(p, HUSAI_DENSITY_LOG_MIN);
        fprintf(p->f, " points=\"%.1f,%.1f", x0, py(p, 0.0));
        for (int b = 1; b <= HUSAI_DENSITY_BINS; b++) {
            const double x1 = px(p, HUSAI_DENSITY_LOG_MIN + b * HUSAI_DENSITY_STEP), y = py(p, share[b]);
            fprintf(p->f, " %.1f,%.1f %.1f,%.1f", x0, y, x1, y);
            x0 = x1;
        }
        fprintf(p->f, " %.1f,%.1f\"><title>", x0, py(p, 0.0));
        escaped(p->f, c[i].name);
        fprintf(p->f, "</title></polyline>\n");
        series_legend(p, &l, k, m, c[i].name);
        k++;
    }
    p->px0 = save_px0;
    return end(p);
}

char *husai_svg_stability_vs_density(const husai_condition_result *c, int n, const char *title) {
    plot *p = begin(W, H);
    if (!p) return NULL;
    const int n_colors = (int)(sizeof colors / sizeof *colors);
    int m = 0; /* conditions with per-feature stability */
    for (int i = 0; i < n; i++)
        m += c[i].features != NULL;
    ticks yt = nice_ticks(0.0, 1.0, 5, 1.0, 1);
    yt.lo = 0.0;
    yt.n = (int)round(yt.hi / yt.step);
    frame(p, title, "log10(share of rows a latent fires on)", "mean stability (share of other seeds matched)",
          &yt);
    const double save_px0 = p->px0;
    double spacing;
    const double never_x = density_axis(p, m, &spacing);
    legend l = {p, W - MR + 16, MT + 10};
    for (int i = 0, k = 0; i < n; i++) {
        const husai_features *f = c[i].features;
        if (!f) continue;
        const char *col = colors[k % n_colors];
        char tip[200], style[128];
        /* Each non-empty bin is a marker at its centre (its title gives the latents behind it); a line
         * joins the bins, never fires is a marker apart. */
        series_style(k, style, sizeof style);
        fprintf(p->f, "<polyline fill=\"none\" %s points=\"", style);
        for (int b = 1, first = 1; b <= HUSAI_DENSITY_BINS; b++)
            if (f->n_by_density[b]) {
                fprintf(p->f, "%s%.1f,%.1f", first ? "" : " ",
                        px(p, HUSAI_DENSITY_LOG_MIN + (b - 0.5) * HUSAI_DENSITY_STEP),
                        py(p, f->stability_by_density[b]));
                first = 0;
            }
        fprintf(p->f, "\"><title>");
        escaped(p->f, c[i].name);
        fprintf(p->f, "</title></polyline>\n");
        for (int b = 0; b <= HUSAI_DENSITY_BINS; b++) {
            if (!f->n_by_density[b]) continue;
            snprintf(tip, sizeof tip, "%s: %ld latents, mean stability %.3f", c[i].name, f->n_by_density[b],
                     f->stability_by_density[b]);
            const double x = b == 0 ? never_x + (k - (m - 1) / 2.0) * spacing
                                    : px(p, HUSAI_DENSITY_LOG_MIN + (b - 0.5) * HUSAI_DENSITY_STEP);
            marker(p, k, x, py(p, f->stability_by_density[b]), 3.5, col, 1, tip);
        }
        series_legend(p, &l, k, m, c[i].name);
        k++;
    }
    p->px0 = save_px0;
    return end(p);
}

static void heat_color(double t, char out[8]) {
    static const double stops[3][3] = {{247, 251, 255}, {107, 174, 214}, {8, 48, 107}};
    t = fmin(fmax(t, 0.0), 1.0);
    const int s = t < 0.5 ? 0 : 1;
    const double u = t < 0.5 ? t / 0.5 : (t - 0.5) / 0.5;
    int rgb[3];
    for (int k = 0; k < 3; k++)
        rgb[k] = (int)lround(stops[s][k] + u * (stops[s + 1][k] - stops[s][k]));
    snprintf(out, 8, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

char *husai_svg_heatmap(const husai_condition_result *c, double lo, double hi) {
    const int S = c->S;
    const double cell = fmin(40.0, fmax(4.0, 360.0 / S)), gx = 86.0, gy = 58.0, side = cell * S;
    const double bar_h = fmax(side, 140.0), w = gx + side + 150.0, h = gy + bar_h + 64.0;
    plot *p = begin(w, h);
    if (!p) return NULL;
    const ticks t = nice_ticks(lo, hi, 4, 0.02, 1);
    char title[160];
    snprintf(title, sizeof title, "%s: trained PWMCC between seeds", c->name);
    double size = 14.0;
    while (size > 9.0 && text_box(0, 0, title, size, 0).x1 > w - 16)
        size -= 0.5;
    text(p, w / 2, 26, title, size, 1, "font-weight=\"bold\"");
    const double fs = fmin(11.0, cell - 2.0);
    char color[8], v[32];
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
            const double x = gx + j * cell, y = gy + i * cell;
            if (i == j) {
                fprintf(p->f,
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#f2f2f2\"/>\n", x,
                        y, cell, cell);
                continue;
            }
            const double val = i < j ? c->pwmcc[i * S + j] : c->pwmcc[j * S + i];
            const double u = (val - t.lo) / (t.hi - t.lo);
            heat_color(u, color);
            fprintf(
                p->f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>seeds %llu, "
                "%llu: %.5f</title></rect>\n",
                x, y, cell, cell, color, (unsigned long long)c->seeds[i], (unsigned long long)c->seeds[j],
                val);
            if (cell >= 34) {
                snprintf(v, sizeof v, "%.3f", val);
                text(p, x + cell / 2, y + cell / 2 + 3, v, 9.0, 1, u > 0.55 ? "fill=\"white\"" : NULL);
            }
        }
    /* seed labels where they fit: every one, else as many as do without overlapping */
    double last_left = -INFINITY, last_top = -INFINITY;
    for (int i = 0; fs >= 6.0 && i < S; i++) {
        snprintf(v, sizeof v, "%llu", (unsigned long long)c->seeds[i]);
        const double cx = gx + (i + 0.5) * cell;
        const box b = text_box(cx, gy + side + 4 + fs, v, fs, 1);
        if (b.x0 > last_left + 3) {
            text(p, cx, gy + side + 4 + fs, v, fs, 1, NULL);
            last_left = b.x1;
        }
        if (gy + (i + 0.5) * cell - fs > last_top + 2) {
            text(p, gx - 5, gy + (i + 0.5) * cell + fs * 0.35, v, fs, 2, NULL);
            last_top = gy + (i + 0.5) * cell + fs * 0.35;
        }
    }
    text(p, gx + side / 2, gy + side + 38, "seed", FONT, 1, NULL);
    /* the colour bar, with the random decoders' mean marked */
    const double bx = gx + side + 26;
    for (int k = 0; k < 40; k++) {
        heat_color((k + 0.5) / 40.0, color);
        fprintf(p->f, "<rect x=\"%.1f\" y=\"%.2f\" width=\"14\" height=\"%.2f\" fill=\"%s\"/>\n", bx,
                gy + bar_h * (1 - (k + 1) / 40.0), bar_h / 40.0 + 0.3, color);
    }
    fprintf(p->f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"%.1f\" fill=\"none\" stroke=\"#555\"/>\n", bx,
            gy, bar_h);
    for (int i = 0; i <= t.n; i++) {
        const double y = gy + bar_h * (1 - (tick_value(&t, i) - t.lo) / (t.hi - t.lo));
        line(p, bx + 14, y, bx + 18, y, "stroke=\"black\"");
        snprintf(v, sizeof v, "%.*f", t.decimals, tick_value(&t, i));
        text(p, bx + 21, y + 4, v, SMALL, 0, "class=\"ctick\"");
    }
    const double ry = gy + bar_h * (1 - (c->random.mean - t.lo) / (t.hi - t.lo));
    fprintf(p->f, "<path d=\"M%.1f %.1fl-7 -5v10z\" fill=\"" RANDOM "\"/>\n", bx - 1, ry);
    snprintf(v, sizeof v, "%.4f", c->random.mean);
    char note[96];
    snprintf(note, sizeof note, "triangle: random decoders' mean (%s); diagonal: a seed with itself", v);
    size = SMALL;
    while (size > 7.0 && text_box(0, 0, note, size, 0).x1 > w - 12)
        size -= 0.5;
    text(p, 8, h - 8, note, size, 0, "fill=\"#444\"");
    return end(p);
}
