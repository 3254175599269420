/* svg.h: the run directory's plots, written as plain SVG (no plotting dependency).
 * pwmcc_vs_param.svg: trained and random PWMCC with 95% CI bars against the swept value
 * (one evenly spaced slot per condition, labelled with its value, so lambda = 0 and log
 * grids both read well). pwmcc_vs_ev.svg: trained PWMCC against EV, each with its CI, the
 * consistency-quality trade-off. density.svg: per condition, the share of latents in each log10
 * firing-density bin (recon.h's histogram, pooled over seeds), one line per condition.
 * stability_vs_density.svg: per condition, the mean per-feature stability (metrics/features.h) of the
 * latents in each of those bins. Rank 0 only.
 * defines: husai_svg_pwmcc_vs_param, husai_svg_pwmcc_vs_ev, husai_svg_density,
 *          husai_svg_stability_vs_density */
#ifndef HUSAI_REPORT_SVG_H
#define HUSAI_REPORT_SVG_H

#include "common/status.h"
#include "report/results.h"

/* Writes the PWMCC-vs-parameter plot of conditions c[0..n) to path. */
husai_status husai_svg_pwmcc_vs_param(const char *path, const husai_condition_result *c, int n,
                                      const char *title);

/* Writes the PWMCC-vs-EV plot of conditions c[0..n) to path. */
husai_status husai_svg_pwmcc_vs_ev(const char *path, const husai_condition_result *c, int n,
                                   const char *title);

/* Writes the feature-density plot of conditions c[0..n) (those with densities) to path. */
husai_status husai_svg_density(const char *path, const husai_condition_result *c, int n, const char *title);

/* Writes the stability-vs-density plot of conditions c[0..n) (those with per-feature stability) to path. */
husai_status husai_svg_stability_vs_density(const char *path, const husai_condition_result *c, int n,
                                            const char *title);

#endif
