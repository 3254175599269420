#include "common/parse.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The pieces of a decimal number's text: sign, digits before and after the point, exponent. */
typedef struct {
    int neg;
    const char *whole, *frac;
    size_t n_whole, n_frac;
    long exp;    /* saturated at +-EXP_CAP: far past any range, still safe to add to */
    int nonzero; /* some digit is not 0 */
} number_text;

#define EXP_CAP 100000L
/* What a message quotes of the text: enough to recognise it, short enough for one line. */
#define SHOW "%.40s"

static int is_digit(char c) {
    return c >= '0' && c <= '9';
}

static const char *digits(const char *p, const char **start, size_t *n, int *nonzero) {
    *start = p;
    while (is_digit(*p)) {
        *nonzero |= *p != '0';
        p++;
    }
    *n = (size_t)(p - *start);
    return p;
}

/* Splits text into its pieces, or records why it is not a decimal number (what `kind` of number was
 * expected goes into the message). */
static husai_status scan(const char *what, const char *text, const char *kind, number_text *t) {
    memset(t, 0, sizeof *t);
    const char *p = text;
    if (!*p) return husai_error(HUSAI_ERR_ARG, "%s is empty; expected %s", what, kind);
    if (*p == '+' || *p == '-') t->neg = *p++ == '-';
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        return husai_error(HUSAI_ERR_ARG, "%s = '" SHOW "' is hexadecimal; numbers are read in decimal only",
                           what, text);
    if (!strncasecmp(p, "inf", 3) || !strncasecmp(p, "nan", 3))
        return husai_error(HUSAI_ERR_ARG, "%s = '" SHOW "' is not %s (inf and nan are refused)", what, text,
                           kind);
    p = digits(p, &t->whole, &t->n_whole, &t->nonzero);
    if (*p == '.') p = digits(p + 1, &t->frac, &t->n_frac, &t->nonzero);
    if (t->n_whole + t->n_frac == 0)
        return husai_error(HUSAI_ERR_ARG, "%s = '" SHOW "' is not %s", what, text, kind);
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        int eneg = 0;
        if (*q == '+' || *q == '-') eneg = *q++ == '-';
        if (is_digit(*q)) {
            for (; is_digit(*q); q++)
                if (t->exp < EXP_CAP) t->exp = t->exp * 10 + (*q - '0');
            if (eneg) t->exp = -t->exp;
            p = q;
        }
    }
    if (*p)
        return husai_error(HUSAI_ERR_ARG, "%s = '" SHOW "' is not %s: '" SHOW "' follows the number", what,
                           text, kind, p);
    return HUSAI_OK;
}

/* The digit at position i of whole followed by frac. */
static int digit_at(const number_text *t, size_t i) {
    return (i < t->n_whole ? t->whole[i] : t->frac[i - t->n_whole]) - '0';
}

/* The exact magnitude of t as an integer: 0 and *mag, 1 if it is not whole, 2 if it exceeds UINT64_MAX. */
static int magnitude(const number_text *t, uint64_t *mag) {
    const size_t n = t->n_whole + t->n_frac;
    const long shift = t->exp - (long)t->n_frac; /* value = digits x 10^shift */
    size_t keep = n;
    if (shift < 0) {
        const size_t drop = (size_t)-shift < n ? (size_t)-shift : n;
        keep = n - drop;
        for (size_t i = keep; i < n; i++)
            if (digit_at(t, i)) return 1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < keep; i++) {
        const unsigned d = (unsigned)digit_at(t, i);
        if (v > (UINT64_MAX - d) / 10) return 2;
        v = v * 10 + d;
    }
    for (long e = 0; v && e < shift; e++) {
        if (v > UINT64_MAX / 10) return 2;
        v *= 10;
    }
    *mag = v;
    return 0;
}

static husai_status too_big(const char *what, const char *text, const char *limit) {
    return husai_error(HUSAI_ERR_ARG, "%s = " SHOW " is out of range: it exceeds the limit %s", what, text,
                       limit);
}

static husai_status not_whole(const char *what, const char *text, const char *kind) {
    return husai_error(HUSAI_ERR_ARG, "%s = " SHOW " is not %s (not a whole number)", what, text, kind);
}

/* scan, then magnitude: a text that is not a whole number is an error calling for `kind`; *m is
 * magnitude's 0, or 2 when the magnitude exceeds UINT64_MAX. */
static husai_status scan_whole(const char *what, const char *text, const char *kind, number_text *t,
                               uint64_t *mag, int *m) {
    husai_status st = scan(what, text, kind, t);
    if (st) return st;
    *m = magnitude(t, mag);
    return *m == 1 ? not_whole(what, text, kind) : HUSAI_OK;
}

husai_status husai_parse_int(const char *what, const char *text, long long lo, long long hi, long long *out) {
    number_text t;
    char limit[32];
    uint64_t mag = 0;
    int m = 0;
    husai_status st = scan_whole(what, text, "an integer", &t, &mag, &m);
    if (st) return st;
    /* magnitudes are compared as unsigned so LLONG_MIN's needs no negation that overflows */
    const uint64_t below = lo < 0 ? (uint64_t)(-(lo + 1)) + 1 : 0;
    if (t.neg && mag != 0 && (m == 2 || lo >= 0 || mag > below))
        return husai_error(HUSAI_ERR_ARG, "%s = " SHOW " must be >= %lld", what, text, lo);
    if (!t.neg && (m == 2 || hi < 0 || mag > (uint64_t)hi)) {
        snprintf(limit, sizeof limit, "%lld", hi);
        return too_big(what, text, limit);
    }
    const long long v = t.neg && mag ? -(long long)(mag - 1) - 1 : (long long)mag;
    if (v < lo) return husai_error(HUSAI_ERR_ARG, "%s = " SHOW " must be >= %lld", what, text, lo);
    *out = v;
    return HUSAI_OK;
}

husai_status husai_parse_u64(const char *what, const char *text, uint64_t hi, uint64_t *out) {
    number_text t;
    char limit[32];
    uint64_t mag = 0;
    int m = 0;
    husai_status st = scan_whole(what, text, "a non-negative integer", &t, &mag, &m);
    if (st) return st;
    if (t.neg && (m == 2 || mag != 0))
        return husai_error(HUSAI_ERR_ARG, "%s = " SHOW " is negative; expected a non-negative integer", what,
                           text);
    if (m == 2 || mag > hi) {
        snprintf(limit, sizeof limit, "%llu", (unsigned long long)hi);
        return too_big(what, text, limit);
    }
    *out = mag;
    return HUSAI_OK;
}

husai_status husai_parse_real(const char *what, const char *text, double lo, double hi, double tiny,
                              double *out) {
    number_text t;
    char limit[32];
    husai_status st = scan(what, text, "a finite number", &t);
    if (st) return st;
    /* strtod reads exactly this grammar (and more, which scan has refused), correctly rounded */
    errno = 0;
    const double v = strtod(text, NULL);
    if (t.nonzero && fabs(v) < tiny)
        return husai_error(HUSAI_ERR_ARG,
                           "%s = " SHOW
                           " is out of range: a nonzero magnitude below %.8g (it would underflow)",
                           what, text, tiny);
    if (v > hi || (isinf(v) && v > 0)) {
        snprintf(limit, sizeof limit, "%.8g", hi);
        return too_big(what, text, limit);
    }
    if (v < lo || isinf(v))
        return husai_error(HUSAI_ERR_ARG, "%s = " SHOW " is out of range: it must be >= %.8g", what, text,
                           lo);
    *out = v;
    return HUSAI_OK;
}
