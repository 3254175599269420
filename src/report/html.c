#define _POSIX_C_SOURCE 200809L
#include "report/html.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/svg.h"

static const char CSS[] =
    "body{font-family:'DejaVu Sans',Verdana,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;"
    "color:#1d1d1d;line-height:1.45}\n"
    "h1{font-size:1.5em;border-bottom:2px solid "
    "#1f5fbf;padding-bottom:4px}h2{font-size:1.2em;margin-top:1.8em}\n"
    "table{border-collapse:collapse;margin:10px 0;font-size:0.86em}\n"
    "th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}\n"
    "th{background:#eef2f8}tr:nth-child(even) td{background:#fafafa}\n"
    "table.meta th{width:12em}code,pre{font-family:'DejaVu Sans Mono',monospace;font-size:0.92em}\n"
    "pre{background:#f6f6f6;padding:10px;overflow-x:auto;border:1px solid #ddd}\n"
    "figure{margin:18px 0}figcaption{color:#444;font-size:0.9em;max-width:780px}\n"
    "svg{max-width:100%;height:auto}\n"
    ".heatmaps{display:flex;flex-wrap:wrap;gap:12px}.heatmaps figure{margin:0}\n";

static void esc(FILE *f, const char *s, size_t n) {
    husai_xml_escape(f, s, n);
}

static void esc_all(FILE *f, const char *s) {
    esc(f, s, strlen(s));
}

/* summary.md's inline markup: `code` and **bold**; everything else escaped. */
static void md_inline(FILE *f, const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        const char *close = NULL;
        if (s[i] == '`' && (close = memchr(s + i + 1, '`', n - i - 1))) {
            fputs("<code>", f);
            esc(f, s + i + 1, (size_t)(close - s - i - 1));
            fputs("</code>", f);
            i = (size_t)(close - s) + 1;
        } else if (i + 1 < n && s[i] == '*' && s[i + 1] == '*' && (close = strstr(s + i + 2, "**")) &&
                   close < s + n) {
            fputs("<strong>", f);
            md_inline(f, s + i + 2, (size_t)(close - s - i - 2));
            fputs("</strong>", f);
            i = (size_t)(close - s) + 2;
        } else {
            esc(f, s + i, 1);
            i++;
        }
    }
}

/* One table row "| a | b |" as th or td cells. */
static void md_row(FILE *f, const char *s, size_t n, const char *cell) {
    fputs("<tr>", f);
    const char *p = s + 1, *e = s + n;
    while (e > p && (e[-1] == '|' || e[-1] == ' '))
        e--;
    while (p < e) {
        const char *bar = memchr(p, '|', (size_t)(e - p));
        const char *q = bar ? bar : e, *a = p, *b = q;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        fprintf(f, "<%s>", cell);
        md_inline(f, a, (size_t)(b - a));
        fprintf(f, "</%s>", cell);
        p = q + 1;
        if (!bar) break;
    }
    fputs("</tr>\n", f);
}

/* The subset of Markdown summary.md uses (results.c writes it): #/## headings, paragraphs and pipe tables
 * whose second row is the |---| separator. */
static void md_to_html(FILE *f, const char *md) {
    int in_table = 0, in_para = 0, row = 0;
    for (const char *s = md; *s;) {
        const char *nl = strchr(s, '\n');
        const size_t n = nl ? (size_t)(nl - s) : strlen(s);
        const int is_row = n > 0 && s[0] == '|';
        if (in_table && !is_row) {
            fputs("</table>\n", f);
            in_table = 0;
        }
        if (in_para && (n == 0 || is_row || s[0] == '#')) {
            fputs("</p>\n", f);
            in_para = 0;
        }
        if (n > 2 && !strncmp(s, "# ", 2)) {
            fputs("<h1>", f);
            md_inline(f, s + 2, n - 2);
            fputs("</h1>\n", f);
        } else if (n > 3 && !strncmp(s, "## ", 3)) {
            fputs("<h2>", f);
            md_inline(f, s + 3, n - 3);
            fputs("</h2>\n", f);
        } else if (is_row) {
            if (!in_table) {
                fputs("<table>\n", f);
                in_table = 1;
                row = 0;
            }
            if (!(row == 1 && !strncmp(s, "|---", 4))) md_row(f, s, n, row == 0 ? "th" : "td");
            row++;
        } else if (n > 0) {
            fputs(in_para ? "\n" : "<p>", f);
            in_para = 1;
            md_inline(f, s, n);
        }
        s += n + (nl ? 1 : 0);
    }
    if (in_table) fputs("</table>\n", f);
    if (in_para) fputs("</p>\n", f);
}

static void meta_row(FILE *f, const char *key, const char *value) {
    fprintf(f, "<tr><th>%s</th><td>", key);
    esc_all(f, value);
    fputs("</td></tr>\n", f);
}

static void run_table(FILE *f, const husai_run_info *run, const husai_condition_result *c, int n) {
    const husai_config *cfg = run->cfg;
    char v[8600];
    fputs("<h2>Run</h2>\n<table class=\"meta\">\n", f);
    meta_row(f, "run id", run->id);
    snprintf(v, sizeof v, "%s (commit %s)", run->version, run->commit);
    meta_row(f, "husai", v);
    meta_row(f, "command", run->command);
    snprintf(v, sizeof v, "%d rank(s) on %d host(s): %s", run->ranks, run->n_hosts, run->hosts);
    if (run->threads > 0)
        snprintf(v + strlen(v), sizeof v - strlen(v), "; %d thread(s) per rank", run->threads);
    meta_row(f, "where", v);
    snprintf(v, sizeof v, "%.1f s", run->seconds);
    if (run->peak_rss_mb > 0)
        snprintf(v + strlen(v), sizeof v - strlen(v), "; peak RSS %.0f MB", run->peak_rss_mb);
    meta_row(f, "wall time", v);
    snprintf(v, sizeof v, "%s:%s, %zu rows x %d, %s", cfg->data_path, cfg->dataset, run->n_rows, run->d_model,
             run->dtype);
    meta_row(f, "data", v);
    if (run->fingerprint) meta_row(f, "data fingerprint", run->fingerprint);
    if (run->chunk_rows > 0) {
        snprintf(v, sizeof v, "%zu chunks of %zu rows, %.1f MB read in %.1f s", run->n_chunks,
                 run->chunk_rows, run->bytes_read / 1e6, run->read_seconds);
        meta_row(f, "streamed", v);
    }
    snprintf(v, sizeof v, "%d condition(s); d_sae %d, batch %d, lr %g", n, cfg->d_sae, cfg->batch_size,
             cfg->lr);
    meta_row(f, "sweep", v);
    if (n > 0) {
        snprintf(v, sizeof v, "%d", c[0].S);
        for (int i = 1; i < n; i++)
            if (c[i].S != c[0].S) snprintf(v, sizeof v, "%d to %d (see the tables)", c[0].S, c[i].S);
        meta_row(f, "seeds per condition", v);
    }
    fputs("</table>\n", f);
}

char *husai_html_report(const husai_run_info *run, const husai_condition_result *c, int n,
                        const char *summary_md, const husai_html_plot *plots, int n_plots) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>husai report ", f);
    esc_all(f, run->id);
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n", CSS);
    md_to_html(f, summary_md ? summary_md : "");
    run_table(f, run, c, n);
    fputs("<h2>Plots</h2>\n", f);
    int bad = 0;
    for (int i = 0; i < n_plots; i++) {
        if (!plots[i].svg) continue;
        fprintf(f, "<figure>\n%s<figcaption><code>%s</code>: ", plots[i].svg, plots[i].file);
        esc_all(f, plots[i].caption);
        fputs("</figcaption>\n</figure>\n", f);
    }
    fputs(
        "<h2>PWMCC between seeds, per condition</h2>\n<p>Each cell is the PWMCC of two seeds' decoders (the "
        "upper triangle mirrored); the conditions' summary values above are the means of these cells. All "
        "heatmaps share one colour scale.</p>\n"
        "<div class=\"heatmaps\">\n",
        f);
    double lo = INFINITY, hi = -INFINITY; /* one colour scale for all: the pairs and the random means */
    for (int i = 0; i < n; i++)
        for (int a = 0; c[i].pwmcc && a < c[i].S; a++)
            for (int b = a + 1; b < c[i].S; b++) {
                lo = fmin(lo, fmin(c[i].pwmcc[a * c[i].S + b], c[i].random.mean));
                hi = fmax(hi, fmax(c[i].pwmcc[a * c[i].S + b], c[i].random.mean));
            }
    for (int i = 0; i < n; i++) {
        if (!c[i].pwmcc || c[i].S < 2) continue;
        char *svg = husai_svg_heatmap(&c[i], lo, hi);
        if (!svg) {
            bad = 1;
            break;
        }
        fprintf(f, "<figure>\n%s</figure>\n", svg);
        free(svg);
    }
    fputs("</div>\n<h2>Configuration</h2>\n<pre>", f);
    char *cfg = husai_config_text(run->cfg);
    esc_all(f, cfg ? cfg : "");
    free(cfg);
    fputs("</pre>\n</body>\n</html>\n", f);
    bad |= ferror(f) != 0;
    fclose(f);
    if (bad) {
        free(text);
        return NULL;
    }
    return text;
}
