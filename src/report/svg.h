/* svg.h: the run's plots as plain SVG text (no plotting dependency: Debian's C plotting libraries either
 * draw text as glyph outlines, which neither a reader's browser search nor our browser test can read, or
 * bring a toolkit). Readable at 100% zoom: ticks at round 1-2-5 steps, the random-decoder baseline always
 * on the plot for scale, 95% CI bars only where an interval exists (none below 3 seeds, said in the
 * legend), labels placed so no two text boxes overlap (moved, with a leader line when far from their point).
 * pwmcc_vs_param: trained and random PWMCC against the swept value (one evenly spaced slot per condition,
 * labelled with its value, so lambda = 0 and log grids both read well). pwmcc_vs_ev: trained PWMCC against
 * EV, the consistency-quality trade-off. density: per condition, the share of latents in each log10
 * firing-density bin (recon.h's histogram, pooled over seeds) as a step line, "never fires" as a marker
 * apart. stability_vs_density: per condition, the mean per-feature stability (metrics/features.h) of the
 * latents in each of those bins. heatmap: a condition's S x S trained PWMCC between seeds. Each returns a
 * new string (free it), or NULL when out of memory. Rank 0 only.
 * defines: husai_svg_pwmcc_vs_param, husai_svg_pwmcc_vs_ev, husai_svg_density, husai_svg_heatmap,
 *          husai_svg_stability_vs_density, husai_xml_escape, HUSAI_SVG_CHAR_WIDTH */
#ifndef HUSAI_REPORT_SVG_H
#define HUSAI_REPORT_SVG_H

#include <stdio.h>

#include "report/results.h"

/* Estimated advance of one character in font-size units, for label placement (DejaVu Sans, Chromium's
 * sans-serif on Debian, averages ~0.6 for digits and lower case); tests/report_browser.py uses the same. */
#define HUSAI_SVG_CHAR_WIDTH 0.62

/* Writes the first n bytes of s (fewer at a NUL) to f with &, <, > and " as XML/HTML entities. */
void husai_xml_escape(FILE *f, const char *s, size_t n);

/* The PWMCC-vs-parameter plot of conditions c[0..n). */
char *husai_svg_pwmcc_vs_param(const husai_condition_result *c, int n, const char *title);

/* The PWMCC-vs-EV plot of conditions c[0..n). */
char *husai_svg_pwmcc_vs_ev(const husai_condition_result *c, int n, const char *title);

/* The feature-density plot of conditions c[0..n) (those with densities). */
char *husai_svg_density(const husai_condition_result *c, int n, const char *title);

/* The stability-vs-density plot of conditions c[0..n) (those with per-feature stability). */
char *husai_svg_stability_vs_density(const husai_condition_result *c, int n, const char *title);

/* The S x S heatmap of condition c's trained PWMCC between seeds (the upper triangle; the diagonal is a
 * seed with itself and left blank), with a colour bar marking the random-decoder mean. [lo, hi] is the
 * data range the colours span (widened to round ticks): one range for all of a run's heatmaps, so a colour
 * means the same PWMCC in each. */
char *husai_svg_heatmap(const husai_condition_result *c, double lo, double hi);

#endif
