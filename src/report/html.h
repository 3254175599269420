/* html.h: report.html, one self-contained page a reviewer can open anywhere (inline SVG and CSS, no
 * network, no other file, no JavaScript): the summary (summary.md's text, its tables as HTML tables), the
 * run's metadata, every plot, per condition the S x S heatmap of trained PWMCC between seeds, and the
 * configuration. Rank 0 only.
 * defines: husai_html_plot, husai_html_report */
#ifndef HUSAI_REPORT_HTML_H
#define HUSAI_REPORT_HTML_H

#include "report/results.h"

/* A plot of the run directory: its file name, its SVG text (NULL: not drawn) and a caption. */
typedef struct {
    const char *file;
    char *svg;
    const char *caption;
} husai_html_plot;

/* The page's text (free it), or NULL when out of memory. summary_md is summary.md's text. */
char *husai_html_report(const husai_run_info *run, const husai_condition_result *c, int n,
                        const char *summary_md, const husai_html_plot *plots, int n_plots);

#endif
