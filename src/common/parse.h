/* parse.h: the one rule for numbers husai reads, in config values, command-line options, environment
 * variables and `husai ci` value files.
 * The whole text is the number (callers trim what their format allows): an optional sign, decimal digits
 * with an optional point, an optional exponent (12, -0.5, .25, 1e3, 2.5E-4). Hexadecimal (0x10), inf, nan,
 * blanks and any other character are refused, each with a message that says which. An integer may carry a
 * point or an exponent only when its value is exactly whole (1e3 and 2.5e3 are integers; 1.5 and 1e-1 are
 * not), computed exactly, never through a double. A real must be finite; a value past [lo, hi], or a
 * nonzero value whose magnitude is below `tiny` (it would become zero or a subnormal), is out of range.
 * Messages read "<what> = <text> <problem>", e.g. "sae.d_sae = 2147483647 is out of range: it exceeds the
 * limit 1000000000".
 * defines: husai_parse_int, husai_parse_u64, husai_parse_real */
#ifndef HUSAI_COMMON_PARSE_H
#define HUSAI_COMMON_PARSE_H

#include <stdint.h>

#include "common/status.h"

/* Parses text as an integer in [lo, hi] into *out; otherwise HUSAI_ERR_ARG naming `what` and why. */
husai_status husai_parse_int(const char *what, const char *text, long long lo, long long hi, long long *out);

/* Parses text as a non-negative integer in [0, hi] into *out; otherwise HUSAI_ERR_ARG naming `what` and why.
 */
husai_status husai_parse_u64(const char *what, const char *text, uint64_t hi, uint64_t *out);

/* Parses text as a finite real in [lo, hi] whose magnitude, unless zero, is at least tiny (DBL_MIN refuses
 * subnormals, FLT_MIN values float32 cannot hold in full precision); otherwise HUSAI_ERR_ARG naming `what`.
 */
husai_status husai_parse_real(const char *what, const char *text, double lo, double hi, double tiny,
                              double *out);

#endif
