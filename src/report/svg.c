#include "report/svg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metrics/recon.h"
#include "sae/model.h"

#define W 720.0
#define H 440.0
#define ML 80.0
#define MR 150.0
#define MT 50.0
#define MB 70.0

typedef struct {
    double lo, hi;
} range;

/* Pads a data range by 8% and never lets it collapse to a point. */
static range pad(double lo, double hi) {
    if (!(hi > lo)) {
        lo -= 0.01;
        hi += 0.01;
    }
    const double m = 0.08 * (hi - lo);
    return (range){lo - m, hi + m};
}

static double map(double v, range r, double a, double b) {
    return a + (v - r.lo) / (r.hi - r.lo) * (b - a);
}

static void axes(FILE *f, const char *title, const char *xlabel, const char *ylabel, range y, int y_ticks) {
    fprintf(
        f,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
        "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
        "fill=\"white\"/>\n",
        W, H, W, H);
    fprintf(f, "<text x=\"%.1f\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">%s</text>\n",
            (ML + W - MR) / 2, title);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", ML, H - MB,
            W - MR, H - MB);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", ML, MT, ML,
            H - MB);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", (ML + W - MR) / 2, H - 20,
            xlabel);
    fprintf(f,
            "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">%s</text>\n",
            (MT + H - MB) / 2, (MT + H - MB) / 2, ylabel);
    for (int i = 0; i <= y_ticks; i++) {
        const double v = y.lo + (y.hi - y.lo) * i / y_ticks, py = map(v, y, H - MB, MT);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", ML, py,
                W - MR, py);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.4f</text>\n", ML - 6, py + 4, v);
    }
}

/* A withheld interval (NaN ends: too few seeds) draws no bar. */
static void errbar_v(FILE *f, double x, double y0, double y1, const char *color) {
    if (!isfinite(y0) || !isfinite(y1)) return;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.5\"/>\n",
            x, y0, x, y1, color);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x - 5, y0, x + 5,
            y0, color);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x - 5, y1, x + 5,
            y1, color);
}

static husai_status finish(FILE *f, const char *path) {
    fprintf(f, "</svg>\n");
    int bad = ferror(f) != 0;
    bad |= fclose(f) != 0;
    if (bad) return husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full?)", path);
    return HUSAI_OK;
}

static void legend(FILE *f) {
    const double x = W - MR + 20, y = MT + 10;
    fprintf(f,
            "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#1f5fbf\"/><text x=\"%.1f\" "
            "y=\"%.1f\">trained</text>\n",
            x, y, x + 12, y + 4);
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"9\" height=\"9\" fill=\"#888\"/><text x=\"%.1f\" "
            "y=\"%.1f\">random "
            "baseline</text>\n",
            x - 4.5, y + 20 - 4.5, x + 12, y + 24);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">bars: 95%% CI</text>\n", x - 4, y + 48);
}

husai_status husai_svg_pwmcc_vs_param(const char *path, const husai_condition_result *c, int n,
                                      const char *title) {
    FILE *f = fopen(path, "w");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        /* fmin/fmax skip a withheld (NaN) end; the means keep the range defined */
        lo = fmin(fmin(lo, c[i].random.mean), fmin(c[i].trained.lo, c[i].random.lo));
        hi = fmax(fmax(hi, c[i].trained.mean), fmax(c[i].trained.hi, c[i].random.hi));
    }
    const range y = pad(lo, hi);
    char xlabel[64];
    snprintf(xlabel, sizeof xlabel, "%s", n > 0 ? c[0].param : "");
    axes(f, title, xlabel, "PWMCC", y, 5);
    const double slot = (W - MR - ML) / (n > 0 ? n : 1);
    for (int i = 0; i < n; i++) {
        const double x = ML + slot * (i + 0.5);
        if (!strcmp(c[i].param, "arch"))
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x, H - MB + 18,
                    husai_arch_name(c[i].arch));
        else
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x, H - MB + 18,
                    c[i].value);
        errbar_v(f, x - 6, map(c[i].random.lo, y, H - MB, MT), map(c[i].random.hi, y, H - MB, MT), "#888");
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"9\" height=\"9\" fill=\"#888\"/>\n", x - 6 - 4.5,
                map(c[i].random.mean, y, H - MB, MT) - 4.5);
        errbar_v(f, x + 6, map(c[i].trained.lo, y, H - MB, MT), map(c[i].trained.hi, y, H - MB, MT),
                 "#1f5fbf");
        char ci[64] = " (no interval: too few seeds)";
        if (isfinite(c[i].trained.lo) && isfinite(c[i].trained.hi))
            snprintf(ci, sizeof ci, " [%.5f, %.5f]", c[i].trained.lo, c[i].trained.hi);
        fprintf(
            f,
            "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#1f5fbf\"><title>%s: %.5f%s</title></circle>\n",
            x + 6, map(c[i].trained.mean, y, H - MB, MT), c[i].name, c[i].trained.mean, ci);
    }
    legend(f);
    return finish(f, path);
}

husai_status husai_svg_pwmcc_vs_ev(const char *path, const husai_condition_result *c, int n,
                                   const char *title) {
    FILE *f = fopen(path, "w");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    double ylo = INFINITY, yhi = -INFINITY, xlo = INFINITY, xhi = -INFINITY;
    for (int i = 0; i < n; i++) {
        ylo = fmin(fmin(ylo, c[i].trained.mean), c[i].trained.lo);
        yhi = fmax(fmax(yhi, c[i].trained.mean), c[i].trained.hi);
        xlo = fmin(fmin(xlo, c[i].ev.mean), c[i].ev.lo);
        xhi = fmax(fmax(xhi, c[i].ev.mean), c[i].ev.hi);
    }
    const range y = pad(ylo, yhi), x = pad(xlo, xhi);
    axes(f, title, "explained variance (EV)", "trained PWMCC", y, 5);
    for (int i = 0; i <= 4; i++) {
        const double v = x.lo + (x.hi - x.lo) * i / 4, px = map(v, x, ML, W - MR);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.3f</text>\n", px, H - MB + 18, v);
    }
    for (int i = 0; i < n; i++) {
        const double px = map(c[i].ev.mean, x, ML, W - MR), py = map(c[i].trained.mean, y, H - MB, MT);
        errbar_v(f, px, map(c[i].trained.lo, y, H - MB, MT), map(c[i].trained.hi, y, H - MB, MT), "#1f5fbf");
        if (isfinite(c[i].ev.lo) && isfinite(c[i].ev.hi))
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f5fbf\"/>\n",
                    map(c[i].ev.lo, x, ML, W - MR), py, map(c[i].ev.hi, x, ML, W - MR), py);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#1f5fbf\"/>\n", px, py);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%s</text>\n", px + 8, py - 8, c[i].name);
    }
    return finish(f, path);
}

/* Share of c's latents (pooled over seeds) in each density slot: never fires, then the log10 bins. */
static void density_shares(const husai_condition_result *c, double share[HUSAI_DENSITY_BINS + 1]) {
    long counts[HUSAI_DENSITY_BINS + 1] = {0};
    const size_t total = c->density ? (size_t)c->S * c->d_sae : 0;
    if (total) husai_density_histogram(c->density, total, counts);
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
        share[b] = total ? (double)counts[b] / (double)total : 0.0;
}

static const char *const COLORS[] = {"#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c",
                                     "#c2255c", "#0b7285", "#e67700", "#495057"};
#define N_COLORS ((int)(sizeof COLORS / sizeof COLORS[0]))

/* The x axis of the density plots: a "never" slot, then the log10 bins labelled every other edge; returns
 * the width of a slot. */
static double density_axis(FILE *f) {
    const double slot = (W - MR - ML) / (HUSAI_DENSITY_BINS + 1);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">never</text>\n", ML + slot * 0.5,
            H - MB + 18);
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b += 2) {
        const double x = ML + slot * (1 + b);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", x, H - MB, x,
                H - MB + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x, H - MB + 18,
                HUSAI_DENSITY_LOG_MIN + b * HUSAI_DENSITY_STEP);
    }
    return slot;
}

/* Legend entry `shown` (a line in col and the name) beside the plot, as many as fit. */
static void legend_entry(FILE *f, int shown, const char *col, const char *name) {
    const double lx = W - MR + 16, ly = MT + 10 + 18 * shown;
    if (ly > H - MB) return;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
            lx, ly, lx + 16, ly, col);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%s</text>\n", lx + 22, ly + 4, name);
}

husai_status husai_svg_density(const char *path, const husai_condition_result *c, int n, const char *title) {
    const int slots = HUSAI_DENSITY_BINS + 1;
    FILE *f = fopen(path, "w");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    double share[HUSAI_DENSITY_BINS + 1], hi = 0.0;
    for (int i = 0; i < n; i++) {
        density_shares(&c[i], share);
        for (int b = 0; b < slots; b++)
            hi = fmax(hi, share[b]);
    }
    const range y = {0.0, hi > 0.0 ? hi * 1.08 : 1.0};
    axes(f, title, "log10(firing density); left: latents that never fire", "share of latents", y, 5);
    const double slot = density_axis(f);
    for (int i = 0, shown = 0; i < n; i++) {
        if (!c[i].density) continue;
        const char *col = COLORS[i % N_COLORS];
        density_shares(&c[i], share);
        /* "never fires" is a marker of its own; the line joins the density bins */
        fprintf(f,
                "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>%s: %.4f never "
                "fire</title></circle>\n",
                ML + slot * 0.5, map(share[0], y, H - MB, MT), col, c[i].name, share[0]);
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
        for (int b = 1; b < slots; b++)
            fprintf(f, "%s%.1f,%.1f", b > 1 ? " " : "", ML + slot * (b + 0.5), map(share[b], y, H - MB, MT));
        fprintf(f, "\"><title>%s</title></polyline>\n", c[i].name);
        legend_entry(f, shown++, col, c[i].name);
    }
    return finish(f, path);
}

husai_status husai_svg_stability_vs_density(const char *path, const husai_condition_result *c, int n,
                                            const char *title) {
    FILE *f = fopen(path, "w");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    const range y = {0.0, 1.0};
    axes(f, title, "log10(firing density); left: latents that never fire",
         "mean stability (share of other seeds matched)", y, 5);
    const double slot = density_axis(f);
    for (int i = 0, shown = 0; i < n; i++) {
        const husai_features *ft = c[i].features;
        if (!ft) continue;
        const char *col = COLORS[i % N_COLORS];
        /* One marker per non-empty slot (its title gives the latents behind it), joined by a line. */
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
        for (int b = 0, first = 1; b <= HUSAI_DENSITY_BINS; b++)
            if (ft->n_by_density[b]) {
                fprintf(f, "%s%.1f,%.1f", first ? "" : " ", ML + slot * (b + 0.5),
                        map(ft->stability_by_density[b], y, H - MB, MT));
                first = 0;
            }
        fprintf(f, "\"><title>%s</title></polyline>\n", c[i].name);
        for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
            if (ft->n_by_density[b])
                fprintf(f,
                        "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s: %ld latents, mean "
                        "stability %.3f</title></circle>\n",
                        ML + slot * (b + 0.5), map(ft->stability_by_density[b], y, H - MB, MT), col,
                        c[i].name, ft->n_by_density[b], ft->stability_by_density[b]);
        legend_entry(f, shown++, col, c[i].name);
    }
    return finish(f, path);
}
