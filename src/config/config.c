#define _POSIX_C_SOURCE 200809L
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/parse.h"
#include "sae/bf16.h"
#include "sae/model.h"

typedef enum {
    T_STR,
    T_INT,
    T_DOUBLE,
    T_NONNEG,
    T_U64,
    T_VALUES,
    T_SEEDS,
    T_UNIT,
    T_RNG,
    T_BOOL,
    T_ARCH,
    T_MODE,
    T_PREC
} opt_type;

typedef struct {
    const char *section, *key;
    opt_type type;
    size_t offset, size; /* field offset; buffer size for strings, count field offset for seed lists */
    long min;            /* smallest allowed integer (T_INT) */
    int required;
    const char *help;
} opt;

#define F(field) offsetof(husai_config, field)
#define S(field) sizeof(((husai_config *)0)->field)
static const opt OPTS[] = {
    {"data", "path", T_STR, F(data_path), S(data_path), 0, 1, "HDF5 file of activations"},
    {"data", "dataset", T_STR, F(dataset), S(dataset), 0, 0, "2-D dataset [rows, d_model] in the file"},
    {"data", "d_model", T_INT, F(d_model), 0, 0, 0, "expected d_model of the dataset (0: any)"},
    {"data", "holdout", T_NONNEG, F(holdout), 0, 0, 0,
     "fraction of rows held out for EV/MSE/L0 on unseen data"},
    {"data", "split_seed", T_U64, F(split_seed), 0, 0, 0, "seed of the held-out split"},
    {"data", "memory_budget_mb", T_NONNEG, F(memory_budget_mb), 0, 0, 0,
     "MB of activations held per node; a larger dataset is streamed in chunks (0: no limit)"},
    {"data", "chunk_rows", T_INT, F(chunk_rows), 0, 0, 0,
     "rows per streamed chunk (0: as many as memory_budget_mb holds; setting it streams)"},
    {"data", "dictionary", T_STR, F(dictionary), S(dictionary), 0, 0,
     "dataset [atoms, d_model] of true atoms in the data file (e.g. /dictionary from husai synth): report "
     "ground-truth recovery"},
    {"sae", "d_sae", T_INT, F(d_sae), 0, 1, 0, "latents per SAE"},
    {"sae", "k", T_INT, F(k), 0, 1, 0, "active latents per row (TopK; the target L0 of every architecture)"},
    {"sae", "arch", T_ARCH, F(arch), 0, 0, 0, "topk, batchtopk, jumprelu, relu_l1 or matryoshka"},
    {"sae", "relu", T_BOOL, F(relu), 0, 0, 0, "topk/matryoshka: ReLU after the top-k selection"},
    {"sae", "decoder_bias", T_BOOL, F(decoder_bias), 0, 0, 0,
     "learn b_dec (init: data mean), subtracted before the encoder"},
    {"sae", "prefixes", T_INT, F(prefixes), 0, 1, 0, "matryoshka: nested prefixes d_sae/2^(n-1) .. d_sae"},
    {"sae", "bandwidth", T_DOUBLE, F(bandwidth), 0, 0, 0, "jumprelu: straight-through kernel width"},
    {"sae", "sparsity_coeff", T_NONNEG, F(sparsity_coeff), 0, 0, 0,
     "relu_l1/jumprelu: sparsity weight (0: adapted so L0 tracks k)"},
    {"sae", "aux_k", T_INT, F(aux_k), 0, 0, 0, "AuxK: dead latents modelling the residual (0: off)"},
    {"sae", "aux_coeff", T_NONNEG, F(aux_coeff), 0, 0, 0, "AuxK loss weight"},
    {"sae", "dead_after", T_NONNEG, F(dead_after), 0, 0, 0,
     "AuxK: rows without firing after which a latent is dead (0: one epoch)"},
    {"sae", "grad_projection", T_BOOL, F(grad_projection), 0, 0, 0,
     "remove decoder gradients along their unit columns"},
    {"train", "epochs", T_INT, F(epochs), 0, 1, 0, "passes over the data"},
    {"train", "batch_size", T_INT, F(batch_size), 0, 1, 0, "rows per optimiser step"},
    {"train", "lr", T_DOUBLE, F(lr), 0, 0, 0, "Adam learning rate"},
    {"train", "lr_width_ref", T_INT, F(lr_width_ref), 0, 0, 0,
     "scale lr by sqrt(lr_width_ref / d_sae) (0: off)"},
    {"train", "precision", T_PREC, F(precision), 0, 0, 0,
     "encoder product: fp32, bf16 (exact top-k from bf16 candidates) or auto (bf16 where faster on every "
     "rank)"},
    {"sweep", "mode", T_MODE, F(mode), S(mode_text), 0, 0, "protocol: sweep"},
    {"sweep", "param", T_STR, F(param), S(param), 0, 0,
     "swept parameter: k, d_sae, lr, epochs, batch_size, arch (lambda in consistency mode)"},
    {"sweep", "values", T_VALUES, F(values), 0, 0, 1, "values of the swept parameter (comma separated)"},
    {"sweep", "seeds", T_SEEDS, F(seeds), F(n_seeds), 0, 1,
     "training seeds (comma separated, distinct; A-B is the range A..B)"},
    {"metrics", "bootstrap_unit", T_UNIT, F(bootstrap_unit), 0, 0, 0, "seeds (cluster) or pairs (HUSAI)"},
    {"metrics", "resamples", T_INT, F(resamples), 0, 100, 0, "bootstrap resamples"},
    {"metrics", "bootstrap_seed", T_U64, F(bootstrap_seed), 0, 0, 0, "bootstrap generator seed"},
    {"metrics", "bootstrap_rng", T_RNG, F(bootstrap_rng), 0, 0, 0, "native or numpy"},
    {"metrics", "matching_max_d_sae", T_INT, F(matching_max_d_sae), 0, 0, 0,
     "compute matched agreement (one-to-one Hungarian matching) when d_sae is at most this; 0 = never"},
    {"metrics", "window_mb", T_NONNEG, F(window_mb), 0, 0, 0,
     "MB of normalised decoders PWMCC holds per node; more seeds go by blocks (0: half the free memory)"},
    {"features", "tau", T_DOUBLE, F(features_tau), 0, 0, 0,
     "|cos| at which a feature counts as matched in another seed (stability, mutual matches, consensus)"},
    {"features", "min_seeds", T_INT, F(features_min_seeds), 0, 0, 0,
     "seeds a consensus feature must be learned in (0: all but one, at least 2)"},
    {"calibrate", "retrain_seeds", T_SEEDS, F(retrain_seeds), F(n_retrain_seeds), 0, 0,
     "seeds for retraining the selected k and the control"},
    {"calibrate", "retrain_epochs", T_INT, F(retrain_epochs), 0, 1, 0, "epochs of the retrain phase"},
    {"calibrate", "ev_floor", T_NONNEG, F(ev_floor), 0, 0, 0,
     "smallest mean EV a k must reach to be selectable"},
    {"calibrate", "control_k", T_INT, F(control_k), 0, 1, 0, "the matched control's k"},
    {"consistency", "reference_seed", T_U64, F(reference_seed), 0, 0, 0, "seed of the reference SAE"},
    {"consistency", "max_ev_drop", T_NONNEG, F(max_ev_drop), 0, 0, 0,
     "largest EV loss against lambda = 0 a selectable lambda may have"},
    {"checkpoint", "every_seconds", T_NONNEG, F(checkpoint_seconds), 0, 0, 0,
     "seconds between periodic checkpoints of a training task (0: only on stop and at task end)"},
    {"progress", "seconds", T_NONNEG, F(progress_seconds), 0, 0, 0,
     "seconds between progress lines while a task trains, also one at each epoch end (0: none)"},
    {"output", "dir", T_STR, F(out_dir), S(out_dir), 0, 0, "directory that receives run directories"},
};
#undef F
#undef S
#define N_OPTS ((int)(sizeof OPTS / sizeof OPTS[0]))

_Static_assert(sizeof(OPTS) / sizeof(OPTS[0]) <= sizeof(((husai_config *)0)->given),
               "grow husai_config.given");

static const char *const MODE_NAMES[HUSAI_MODE_COUNT] = {[HUSAI_MODE_SWEEP] = "sweep",
                                                         [HUSAI_MODE_CALIBRATE] = "calibrate",
                                                         [HUSAI_MODE_CONSISTENCY] = "consistency"};

husai_mode husai_mode_parse(const char *name) {
    for (int m = 0; m < HUSAI_MODE_COUNT; m++)
        if (!strcmp(name, MODE_NAMES[m])) return (husai_mode)m;
    return HUSAI_MODE_UNKNOWN;
}

const char *husai_mode_name(husai_mode mode) {
    return mode >= 0 && mode < HUSAI_MODE_COUNT ? MODE_NAMES[mode] : "?";
}

void husai_config_defaults(husai_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->dataset, sizeof c->dataset, "/activations");
    c->d_sae = 128;
    c->k = 32;
    c->epochs = 25;
    c->batch_size = 2048;
    c->lr = 3e-4;
    c->arch = HUSAI_ARCH_TOPK;
    c->prefixes = 4;
    c->bandwidth = 1e-3;
    c->aux_coeff = 1.0 / 32.0;
    c->mode = HUSAI_MODE_SWEEP;
    snprintf(c->param, sizeof c->param, "k");
    c->bootstrap_unit = HUSAI_BOOT_SEEDS;
    c->resamples = 10000;
    c->bootstrap_seed = 13;
    c->bootstrap_rng = HUSAI_BOOT_NATIVE;
    c->matching_max_d_sae = 4096;
    c->features_tau = HUSAI_FEATURES_TAU;
    c->n_retrain_seeds = 0; /* unset: the search seeds */
    c->retrain_epochs = 40;
    c->ev_floor = 0.20;
    c->control_k = 32;
    c->reference_seed = 42;
    c->max_ev_drop = 0.05;
    c->checkpoint_seconds = 600;
    c->progress_seconds = 30;
    snprintf(c->out_dir, sizeof c->out_dir, "runs");
}

static const char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Real-valued keys reach float32 arithmetic (lr, coefficients) or could (budgets, intervals): one range
 * for all of them, float32's normal numbers, so a value is never silently rounded to infinity or zero. */
static husai_status parse_real_key(const char *what, const char *text, double *out) {
    return husai_parse_real(what, text, -FLT_MAX, FLT_MAX, FLT_MIN, out);
}

/* Largest integer key value: a width or count beyond this is a typo, not a plan. */
#define INT_KEY_MAX 1000000000L

/* Splits a comma/whitespace separated list in place; returns the count, -1 if over max, -2 if an
 * item between commas is empty ("4,,8" is a typo, not two values). */
static int split_list(char *s, char **items, int max) {
    int pending_comma = 1; /* a leading comma is an empty item too */
    for (const char *p = s; *p; p++) {
        if (*p == ',') {
            if (pending_comma) return -2;
            pending_comma = 1;
        } else if (!isspace((unsigned char)*p)) {
            pending_comma = 0;
        }
    }
    if (pending_comma && strchr(s, ',')) return -2; /* trailing comma */
    int n = 0;
    for (char *tok = strtok(s, ", \t"); tok; tok = strtok(NULL, ", \t")) {
        if (n == max) return -1;
        items[n++] = tok;
    }
    return n;
}

static const opt *find_opt(const char *section, const char *key, int *index) {
    for (int i = 0; i < N_OPTS; i++)
        if (!strcmp(OPTS[i].section, section) && !strcmp(OPTS[i].key, key)) {
            *index = i;
            return &OPTS[i];
        }
    return NULL;
}

static int known_section(const char *section) {
    for (int i = 0; i < N_OPTS; i++)
        if (!strcmp(OPTS[i].section, section)) return 1;
    return 0;
}

/* Assigns one value; `where` names the origin ("FILE:LINE" or "--set") for messages. */
static husai_status assign_list(husai_config *c, const char *section, const char *key, const char *raw,
                                const char *where, int append);

static husai_status assign(husai_config *c, const char *section, const char *key, const char *raw,
                           const char *where) {
    return assign_list(c, section, key, raw, where, 0);
}

/* Assigns a value; with append, a list key's items are added to the ones already given (an INI
 * continuation line, so long seed lists fit inih's 200-byte lines). */
static husai_status assign_list(husai_config *c, const char *section, const char *key, const char *raw,
                                const char *where, int append) {
    int index;
    if (!*section) return husai_error(HUSAI_ERR_ARG, "%s: key '%s' is outside any [section]", where, key);
    if (!known_section(section))
        return husai_error(HUSAI_ERR_ARG, "%s: unknown section [%s]", where, section);
    const opt *o = find_opt(section, key, &index);
    if (!o) return husai_error(HUSAI_ERR_ARG, "%s: unknown key '%s' in section [%s]", where, key, section);
    char buf[8192];
    if (strlen(raw) >= sizeof buf)
        return husai_error(HUSAI_ERR_ARG, "%s: value of %s.%s is too long", where, section, key);
    snprintf(buf, sizeof buf, "%s", raw);
    const char *v = trim(buf);
    void *field = (char *)c + o->offset;
    char what[HUSAI_PATH_MAX + 160]; /* "FILE:LINE: section.key", the subject of number messages */
    snprintf(what, sizeof what, "%s: %s.%s", where, section, key);
    switch (o->type) {
    case T_STR:
    case T_MODE: /* checked as a string: an unknown name is refused by husai_config_validate */
        if (!*v) return husai_error(HUSAI_ERR_ARG, "%s: %s.%s must not be empty", where, section, key);
        if (strlen(v) >= o->size)
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s is too long", where, section, key);
        if (o->type == T_MODE) {
            snprintf(c->mode_text, sizeof c->mode_text, "%s", v);
            *(husai_mode *)field = husai_mode_parse(v);
        } else
            snprintf((char *)field, o->size, "%s", v);
        break;
    case T_INT: {
        long long x;
        husai_status st = husai_parse_int(what, v, o->min, INT_KEY_MAX, &x);
        if (st) return st;
        *(int *)field = (int)x;
        break;
    }
    case T_DOUBLE: {
        double x;
        husai_status st = parse_real_key(what, v, &x);
        if (st) return st;
        if (!(x > 0.0))
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s = %g must be > 0", where, section, key, x);
        *(double *)field = x;
        break;
    }
    case T_NONNEG: {
        double x;
        husai_status st = parse_real_key(what, v, &x);
        if (st) return st;
        if (x < 0.0) return husai_error(HUSAI_ERR_ARG, "%s: %s.%s = %g must be >= 0", where, section, key, x);
        *(double *)field = x;
        break;
    }
    case T_U64: {
        husai_status st = husai_parse_u64(what, v, UINT64_MAX, (uint64_t *)field);
        if (st) return st;
        break;
    }
    case T_VALUES: {
        char *items[HUSAI_MAX_VALUES + 1];
        const int base = append ? c->n_values : 0;
        int n = split_list(buf, items, HUSAI_MAX_VALUES - base);
        if (n == -2)
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s has an empty item between commas", where, section,
                               key);
        if (n < 0)
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s has more than %d values", where, section, key,
                               HUSAI_MAX_VALUES);
        if (n == 0) return husai_error(HUSAI_ERR_ARG, "%s: %s.%s is empty", where, section, key);
        if (!append) c->values_named = 0;
        for (int i = base; i < base + n; i++) {
            const int arch = husai_arch_parse(items[i - base]);
            if (arch >= 0) {
                c->values[i] = arch; /* an architecture name stands for its index */
                c->values_named = 1;
            } else if (!strchr("0123456789+-.", items[i - base][0])) {
                return husai_error(HUSAI_ERR_ARG, "%s: %s.%s: '%s' is neither a number nor an architecture",
                                   where, section, key, items[i - base]);
            } else {
                husai_status st = parse_real_key(what, items[i - base], &c->values[i]);
                if (st) return st;
            }
            for (int j = 0; j < i; j++)
                if (c->values[j] == c->values[i])
                    return husai_error(HUSAI_ERR_ARG, "%s: %s.%s: value %s is listed twice", where, section,
                                       key, items[i - base]);
        }
        c->n_values = base + n;
        break;
    }
    case T_SEEDS: {
        /* Items are seeds or inclusive ranges A-B (seeds = 1-64). */
        static char *items[HUSAI_MAX_SEEDS + 1];
        int *count = (int *)((char *)c + o->size);
        const int base = append ? *count : 0;
        int n = split_list(buf, items, HUSAI_MAX_SEEDS - base);
        if (n == -2)
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s has an empty item between commas", where, section,
                               key);
        if (n < 0)
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s has more than %d seeds", where, section, key,
                               HUSAI_MAX_SEEDS);
        if (n == 0) return husai_error(HUSAI_ERR_ARG, "%s: %s.%s is empty", where, section, key);
        uint64_t *seeds = field;
        int at = base;
        for (int q = 0; q < n; q++) {
            char *item = items[q], *dash = strchr(item + 1, '-');
            uint64_t lo, hi;
            if (dash) *dash = '\0';
            if (!dash) {
                husai_status st = husai_parse_u64(what, item, UINT64_MAX, &lo);
                if (st) return st;
            } else if (husai_parse_u64(what, item, UINT64_MAX, &lo) ||
                       husai_parse_u64(what, dash + 1, UINT64_MAX, &hi))
                return husai_error(HUSAI_ERR_ARG,
                                   "%s: %s.%s: '%s%s%s' is neither a non-negative integer nor a range A-B",
                                   where, section, key, item, dash ? "-" : "", dash ? dash + 1 : "");
            if (!dash) hi = lo;
            if (hi < lo)
                return husai_error(HUSAI_ERR_ARG, "%s: %s.%s: range %s-%s runs backwards", where, section,
                                   key, item, dash + 1);
            if (hi - lo >= (uint64_t)(HUSAI_MAX_SEEDS - at))
                return husai_error(HUSAI_ERR_ARG, "%s: %s.%s has more than %d seeds", where, section, key,
                                   HUSAI_MAX_SEEDS);
            for (uint64_t seed = lo;; seed++) {
                for (int j = 0; j < at; j++)
                    if (seeds[j] == seed)
                        return husai_error(HUSAI_ERR_ARG, "%s: %s.%s: seed %llu is listed twice", where,
                                           section, key, (unsigned long long)seed);
                seeds[at++] = seed;
                if (seed == hi) break;
            }
        }
        *count = at;
        break;
    }
    case T_UNIT: {
        const int u = husai_boot_unit_parse(v);
        if (u < 0)
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s = '%s' must be 'seeds' or 'pairs'", where, section,
                               key, v);
        *(husai_boot_unit *)field = (husai_boot_unit)u;
        break;
    }
    case T_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
            *(int *)field = 1;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
            *(int *)field = 0;
        else
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s = '%s' must be true or false", where, section, key,
                               v);
        break;
    case T_ARCH: {
        const int a = husai_arch_parse(v);
        if (a < 0)
            return husai_error(HUSAI_ERR_ARG,
                               "%s: %s.%s = '%s' is not an architecture (topk, batchtopk, jumprelu, relu_l1, "
                               "matryoshka)",
                               where, section, key, v);
        *(int *)field = a;
        break;
    }
    case T_PREC: {
        const int p = husai_precision_parse(v);
        if (p < 0)
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s = '%s' must be fp32, bf16 or auto", where, section,
                               key, v);
        *(int *)field = p;
        break;
    }
    case T_RNG: {
        const int r = husai_boot_rng_parse(v);
        if (r < 0)
            return husai_error(HUSAI_ERR_ARG, "%s: %s.%s = '%s' must be 'native' or 'numpy'", where, section,
                               key, v);
        *(husai_boot_rng *)field = (husai_boot_rng)r;
        break;
    }
    }
    c->given[index] = 1;
    return HUSAI_OK;
}

/* Hands inih one line at a time from text in memory, remembering which line it is and whether it is
 * indented, so the handler can tell a list's continuation line from a key given again. */
typedef struct {
    const char *next, *end;
    int line;         /* number of the line last handed to inih */
    int indented;     /* it starts with a blank: inih's continuation of the key before it */
    int after_header; /* a [section] line came since the handler last ran */
} line_reader;

static char *read_line(char *str, int num, void *stream) {
    line_reader *r = stream;
    if (r->next >= r->end || num < 1) return NULL;
    const char *nl = memchr(r->next, '\n', (size_t)(r->end - r->next));
    const size_t whole = nl ? (size_t)(nl - r->next) + 1 : (size_t)(r->end - r->next);
    /* check_line_lengths has refused any line longer than inih's buffer, so nothing is cut here */
    const size_t n = whole < (size_t)num - 1 ? whole : (size_t)num - 1;
    memcpy(str, r->next, n);
    str[n] = '\0';
    r->next += whole;
    r->line++;
    r->indented = n > 0 && isspace((unsigned char)str[0]) && str[0] != '\n';
    const char *p = str;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '[') r->after_header = 1;
    return str;
}

typedef struct {
    husai_config *c;
    const char *path;
    husai_status st;
    line_reader rd;
    int last;               /* option index of the handler's previous call (-1: none) */
    int first_line[N_OPTS]; /* line where each key was given, 0 if not yet */
} load_ctx;

/* Printable ASCII or UTF-8 bytes only, so messages that quote the file stay one clean line. */
static int is_text(const char *s) {
    for (; *s; s++) {
        const unsigned char c = (unsigned char)*s;
        if (c < 0x20 && c != '\t') return 0;
        if (c == 0x7f) return 0;
    }
    return 1;
}

static int ini_handler_cb(void *user, const char *section, const char *name, const char *value) {
    load_ctx *ctx = user;
    if (ctx->st != HUSAI_OK) return 0; /* keep the first error; inih goes on parsing */
    const int line = ctx->rd.line;
    if (!is_text(section) || !is_text(name) || !is_text(value)) {
        ctx->st =
            husai_error(HUSAI_ERR_ARG, "%s:%d: contains non-text bytes; not an INI file", ctx->path, line);
        return 0;
    }
    char where[HUSAI_PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:%d", ctx->path, line);
    int index = -1, append = 0;
    if (known_section(section) && find_opt(section, name, &index)) {
        const int is_list = OPTS[index].type == T_VALUES || OPTS[index].type == T_SEEDS;
        /* inih reports an indented line after a key as that key again (a continuation); any other
         * repetition is the key given twice, list or not. */
        const int continuation = ctx->rd.indented && !ctx->rd.after_header && ctx->last == index;
        if (continuation && !is_list) {
            ctx->st = husai_error(HUSAI_ERR_ARG,
                                  "%s: %s.%s continues on an indented line, but only lists (values, seeds) "
                                  "may continue",
                                  where, section, name);
            return 0;
        }
        if (ctx->first_line[index] && !continuation) {
            ctx->st = husai_error(HUSAI_ERR_ARG,
                                  "%s: key %s.%s is given twice (first on line %d); a list continues on "
                                  "indented lines",
                                  where, section, name, ctx->first_line[index]);
            return 0;
        }
        append = continuation;
        if (!ctx->first_line[index]) ctx->first_line[index] = line;
    }
    ctx->last = index;
    ctx->rd.after_header = 0;
    ctx->st = assign_list(ctx->c, section, name, value, where, append);
    return ctx->st == HUSAI_OK;
}

/* Longest line, without its newline, that Debian's inih (INI_MAX_LINE 200, NUL included) reads whole
 * (measured: 199 reads whole, 200 is cut); a longer one would be cut and its tail read as a line of its own.
 */
#define INI_LINE_MAX 199
/* A configuration is a page of text; anything this large is the wrong file (or /dev/zero). */
#define CONFIG_BYTES_MAX (1u << 20)

/* An error naming the first line of text longer than inih reads whole, HUSAI_OK if none is. */
static husai_status check_line_lengths(const char *text, size_t len, const char *origin) {
    size_t line = 1, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != '\n') continue;
        size_t n = i - start;
        if (n > 0 && text[i - 1] == '\r') n--;
        if (n > INI_LINE_MAX)
            return husai_error(
                HUSAI_ERR_ARG,
                "%s:%zu: line is %zu characters, more than the %d the INI reader takes; split a long "
                "list over indented continuation lines, or give seeds as a range (seeds = 1-64)",
                origin, line, n, INI_LINE_MAX);
        line++;
        start = i + 1;
    }
    return HUSAI_OK;
}

/* Parses len bytes of INI text over c; origin names it in errors. The file and string loaders share it,
 * so both reach the same verdict with the same message. */
static husai_status parse_text(husai_config *c, const char *text, size_t len, const char *origin) {
    snprintf(c->source, sizeof c->source, "%s", origin);
    husai_status st = check_line_lengths(text, len, origin);
    if (st) return st;
    load_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return husai_error(HUSAI_ERR_NOMEM, "cannot parse '%s': out of memory", origin);
    ctx->c = c;
    ctx->path = origin;
    ctx->last = -1;
    ctx->rd = (line_reader){.next = text, .end = text + len};
    const int rc = ini_parse_stream(read_line, &ctx->rd, ini_handler_cb, ctx);
    st = ctx->st;
    free(ctx);
    if (st) return st;
    if (rc != 0)
        return husai_error(HUSAI_ERR_ARG,
                           "%s:%d: not a valid INI line (expected 'key = value' or '[section]')", origin, rc);
    return HUSAI_OK;
}

husai_status husai_config_load(husai_config *c, const char *path) {
    snprintf(c->source, sizeof c->source, "%s", path);
    FILE *f = fopen(path, "r");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot open config file '%s': %s", path, strerror(errno));
    char *text = malloc(CONFIG_BYTES_MAX + 1);
    if (!text) {
        fclose(f);
        return husai_error(HUSAI_ERR_NOMEM, "cannot read config file '%s': out of memory", path);
    }
    const size_t len = fread(text, 1, CONFIG_BYTES_MAX + 1, f);
    husai_status st = HUSAI_OK;
    if (ferror(f))
        st = husai_error(HUSAI_ERR_IO, "cannot read config file '%s': %s", path, strerror(errno));
    else if (len > CONFIG_BYTES_MAX)
        st = husai_error(HUSAI_ERR_ARG, "config file '%s' is larger than %u bytes; not a configuration", path,
                         CONFIG_BYTES_MAX);
    fclose(f);
    if (!st) st = parse_text(c, text, len, path);
    free(text);
    return st;
}

husai_status husai_config_load_string(husai_config *c, const char *text, const char *origin) {
    return parse_text(c, text, strlen(text), origin);
}

husai_status husai_config_set(husai_config *c, const char *assignment) {
    const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
    if (!dot || !eq || dot > eq)
        return husai_error(HUSAI_ERR_ARG, "--set '%s': expected section.key=value", assignment);
    char section[64], key[64];
    if ((size_t)(dot - assignment) >= sizeof section || (size_t)(eq - dot - 1) >= sizeof key)
        return husai_error(HUSAI_ERR_ARG, "--set '%s': section or key too long", assignment);
    snprintf(section, sizeof section, "%.*s", (int)(dot - assignment), assignment);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    return assign(c, trim(section), trim(key), eq + 1, "--set");
}

static int param_is_integer(const char *p) {
    return !strcmp(p, "k") || !strcmp(p, "d_sae") || !strcmp(p, "epochs") || !strcmp(p, "batch_size");
}

husai_status husai_config_validate(const husai_config *c) {
    for (int i = 0; i < N_OPTS; i++)
        if (OPTS[i].required && !c->given[i])
            return husai_error(HUSAI_ERR_ARG, "%s: missing required key %s.%s (%s)", c->source,
                               OPTS[i].section, OPTS[i].key, OPTS[i].help);
    if (c->mode == HUSAI_MODE_UNKNOWN)
        return husai_error(HUSAI_ERR_ARG,
                           "sweep.mode = '%s' is not a known mode (known: sweep, calibrate, consistency)",
                           c->mode_text);
    const int sweep = c->mode == HUSAI_MODE_SWEEP, calibrate = c->mode == HUSAI_MODE_CALIBRATE,
              consistency = c->mode == HUSAI_MODE_CONSISTENCY;
    const int is_lambda = !strcmp(c->param, "lambda"), is_arch = !strcmp(c->param, "arch");
    if (!param_is_integer(c->param) && strcmp(c->param, "lr") && !is_lambda && !is_arch)
        return husai_error(
            HUSAI_ERR_ARG,
            "sweep.param = '%s' is not sweepable (known: k, d_sae, lr, epochs, batch_size, arch, lambda)",
            c->param);
    if (c->values_named && !is_arch)
        return husai_error(HUSAI_ERR_ARG,
                           "sweep.values names architectures, which needs sweep.param = arch (got %s)",
                           c->param);
    if (is_arch && !sweep)
        return husai_error(HUSAI_ERR_ARG, "sweep.param = arch goes with sweep.mode = sweep (got %s)",
                           husai_mode_name(c->mode));
    if (consistency != is_lambda)
        return husai_error(HUSAI_ERR_ARG,
                           "sweep.param = lambda goes with sweep.mode = consistency (got mode %s, param %s)",
                           husai_mode_name(c->mode), c->param);
    if (calibrate && strcmp(c->param, "k"))
        return husai_error(HUSAI_ERR_ARG,
                           "sweep.mode = calibrate searches over k; set sweep.param = k (got %s)", c->param);
    if (c->n_seeds < 2)
        return husai_error(HUSAI_ERR_ARG, "sweep.seeds: need at least 2 seeds to compare (got %d)",
                           c->n_seeds);
    if ((c->memory_budget_mb > 0.0 || c->chunk_rows > 0) && consistency)
        return husai_error(HUSAI_ERR_ARG,
                           "data.memory_budget_mb / data.chunk_rows: the consistency protocol trains "
                           "its reference on one rank and needs the dataset in memory");
    if (!(c->holdout < 0.9))
        return husai_error(HUSAI_ERR_ARG, "data.holdout = %g must be below 0.9", c->holdout);
    if (c->n_retrain_seeds == 1)
        return husai_error(HUSAI_ERR_ARG,
                           "calibrate.retrain_seeds: need at least 2 seeds to compare (got 1)");
    if (!(c->features_tau > 0.0 && c->features_tau <= 1.0))
        return husai_error(HUSAI_ERR_ARG, "features.tau = %g must be in (0, 1] (a bound on |cos|)",
                           c->features_tau);
    const int fewest = calibrate && c->n_retrain_seeds > 0 && c->n_retrain_seeds < c->n_seeds
                           ? c->n_retrain_seeds
                           : c->n_seeds;
    if (c->features_min_seeds == 1 || c->features_min_seeds > fewest)
        return husai_error(HUSAI_ERR_ARG,
                           "features.min_seeds = %d must be 0 (all seeds but one) or between 2 and the %d "
                           "seeds of a phase",
                           c->features_min_seeds, fewest);
    if (consistency)
        for (int i = 0; i < c->n_seeds; i++)
            if (c->seeds[i] == c->reference_seed)
                return husai_error(HUSAI_ERR_ARG,
                                   "sweep.seeds: seed %llu is the reference seed; list only the other seeds",
                                   (unsigned long long)c->reference_seed);
    if (calibrate && c->control_k > c->d_sae)
        return husai_error(HUSAI_ERR_ARG, "calibrate.control_k = %d exceeds d_sae = %d", c->control_k,
                           c->d_sae);
    for (int i = 0; i < c->n_values; i++) {
        const double v = c->values[i];
        if (param_is_integer(c->param) && v > (double)INT_KEY_MAX)
            return husai_error(HUSAI_ERR_ARG,
                               "sweep.values: %s = %.17g is out of range: it exceeds the limit %ld", c->param,
                               v, INT_KEY_MAX);
        if (param_is_integer(c->param) && (v != floor(v) || v < 1))
            return husai_error(HUSAI_ERR_ARG, "sweep.values: %s = %g must be a positive integer", c->param,
                               v);
        if (is_arch && (v != floor(v) || v < 0 || v >= HUSAI_ARCH_COUNT))
            return husai_error(HUSAI_ERR_ARG,
                               "sweep.values: %g is not an architecture (topk, batchtopk, jumprelu, relu_l1, "
                               "matryoshka)",
                               v);
        if (!is_arch && (is_lambda ? v < 0 : !(v > 0)))
            return husai_error(HUSAI_ERR_ARG, "sweep.values: %s = %g must be %s", c->param, v,
                               is_lambda ? ">= 0" : "> 0");
        const husai_condition cond = husai_config_condition(c, i);
        for (int j = 0; j < i; j++)
            if (!strcmp(husai_config_condition(c, j).name, cond.name))
                return husai_error(
                    HUSAI_ERR_ARG,
                    "sweep.values: %.17g and %.17g both name condition '%s'; use values that differ "
                    "in their first 10 significant digits",
                    c->values[j], v, cond.name);
        if (!(cond.lr <= FLT_MAX && cond.lr >= FLT_MIN))
            return husai_error(
                HUSAI_ERR_ARG,
                "condition %s: lr = %g after width scaling (train.lr_width_ref = %d) is out of "
                "range for float32 training",
                cond.name, cond.lr, c->lr_width_ref);
        if (cond.k > cond.d_sae)
            return husai_error(HUSAI_ERR_ARG, "k = %d exceeds d_sae = %d (condition %s)", cond.k, cond.d_sae,
                               cond.name);
        const husai_sae_spec spec = {.arch = cond.arch,
                                     .d_model = 1,
                                     .d_sae = cond.d_sae,
                                     .k = cond.k,
                                     .n_prefixes = c->prefixes,
                                     .bandwidth = c->bandwidth};
        if (husai_sae_spec_check(&spec) != HUSAI_OK) {
            /* a copy: the message buffer cannot be an argument of the husai_error that writes it */
            char why[512];
            snprintf(why, sizeof why, "%s", husai_error_message());
            return husai_error(HUSAI_ERR_ARG, "condition %s: %s", cond.name, why);
        }
        if (c->aux_k > cond.d_sae)
            return husai_error(HUSAI_ERR_ARG, "sae.aux_k = %d exceeds d_sae = %d (condition %s)", c->aux_k,
                               cond.d_sae, cond.name);
    }
    return HUSAI_OK;
}

husai_condition husai_config_make_condition(const husai_config *c, const char *param, double value) {
    husai_condition h = {.value = value,
                         .d_sae = c->d_sae,
                         .k = c->k,
                         .epochs = c->epochs,
                         .batch_size = c->batch_size,
                         .lr = c->lr,
                         .lambda = 0.0,
                         .arch = c->arch};
    snprintf(h.param, sizeof h.param, "%s", param);
    snprintf(h.name, sizeof h.name, "%s=%.10g", param, value);
    if (!strcmp(param, "k"))
        h.k = (int)value;
    else if (!strcmp(param, "d_sae"))
        h.d_sae = (int)value;
    else if (!strcmp(param, "epochs"))
        h.epochs = (int)value;
    else if (!strcmp(param, "batch_size"))
        h.batch_size = (int)value;
    else if (!strcmp(param, "lr"))
        h.lr = value;
    else if (!strcmp(param, "lambda"))
        h.lambda = value;
    else if (!strcmp(param, "arch")) {
        h.arch = (int)value;
        snprintf(h.name, sizeof h.name, "arch=%s", husai_arch_name(h.arch));
    }
    if (c->lr_width_ref > 0) h.lr *= sqrt((double)c->lr_width_ref / h.d_sae); /* Gao et al.'s 1/sqrt(width) */
    return h;
}

husai_condition husai_config_condition(const husai_config *c, int i) {
    return husai_config_make_condition(c, c->param, c->values[i]);
}

void husai_config_print(const husai_config *c, FILE *f) {
    const char *section = "";
    for (int i = 0; i < N_OPTS; i++) {
        const opt *o = &OPTS[i];
        if (strcmp(section, o->section)) {
            fprintf(f, "%s[%s]\n", *section ? "\n" : "", o->section);
            section = o->section;
        }
        const void *field = (const char *)c + o->offset;
        if ((o->type == T_SEEDS && *(const int *)((const char *)c + o->size) == 0) ||
            (o->type == T_STR && !*(const char *)field)) {
            /* an unset optional list or string stays a comment, so the printed config parses back */
            fprintf(f, "; %s = (unset)\n", o->key);
            continue;
        }
        fprintf(f, "%s = ", o->key);
        switch (o->type) {
        case T_STR:
            fprintf(f, "%s", (const char *)field);
            break;
        case T_INT:
            fprintf(f, "%d", *(const int *)field);
            break;
        case T_DOUBLE:
        case T_NONNEG:
            fprintf(f, "%.10g", *(const double *)field);
            break;
        case T_U64:
            fprintf(f, "%llu", (unsigned long long)*(const uint64_t *)field);
            break;
        /* Lists go 8 items to a line, the rest on indented continuation lines, so every line stays
         * within inih's 200 bytes and the printed config (stored in results.h5) parses back. */
        case T_VALUES:
            for (int j = 0; j < c->n_values; j++) {
                fprintf(f, "%s", j == 0 ? "" : j % 8 == 0 ? "\n    " : ", ");
                if (!strcmp(c->param, "arch"))
                    fprintf(f, "%s", husai_arch_name((int)c->values[j]));
                else
                    fprintf(f, "%.10g", c->values[j]);
            }
            break;
        case T_SEEDS: {
            const uint64_t *seeds = field;
            const int n = *(const int *)((const char *)c + o->size);
            for (int j = 0; j < n; j++)
                fprintf(f, "%s%llu",
                        j == 0       ? ""
                        : j % 8 == 0 ? "\n    "
                                     : ", ",
                        (unsigned long long)seeds[j]);
            break;
        }
        case T_UNIT:
            fprintf(f, "%s", husai_boot_unit_name(c->bootstrap_unit));
            break;
        case T_RNG:
            fprintf(f, "%s", husai_boot_rng_name(c->bootstrap_rng));
            break;
        case T_BOOL:
            fprintf(f, "%s", *(const int *)field ? "true" : "false");
            break;
        case T_ARCH:
            fprintf(f, "%s", husai_arch_name(*(const int *)field));
            break;
        case T_MODE:
            fprintf(f, "%s", husai_mode_name(c->mode));
            break;
        case T_PREC:
            fprintf(f, "%s", husai_precision_name(*(const int *)field));
            break;
        }
        fprintf(f, "\n");
    }
}

char *husai_config_text(const husai_config *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    husai_config_print(c, f);
    fclose(f);
    return text;
}

uint64_t husai_config_hash(const husai_config *c) {
    /* Where results go, how often to checkpoint and how PWMCC's window is split do not change what is
     * computed: a run moved to another directory, or resumed with another interval, keeps its identity. */
    static husai_config copy;
    copy = *c;
    snprintf(copy.out_dir, sizeof copy.out_dir, "-");
    copy.checkpoint_seconds = 0;
    copy.progress_seconds = 0;
    copy.window_mb = 0;
    char *text = husai_config_text(&copy);
    if (!text) return 0;
    const size_t len = strlen(text);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)text[i];
        h *= 0x100000001b3ULL;
    }
    free(text);
    return h;
}

husai_condition_opts husai_config_condition_opts(const husai_config *c) {
    return (husai_condition_opts){.boot = {.resamples = c->resamples,
                                           .seed = c->bootstrap_seed,
                                           .rng = c->bootstrap_rng,
                                           .unit = c->bootstrap_unit},
                                  .matching_max_d_sae = c->matching_max_d_sae,
                                  .features_tau = c->features_tau,
                                  .features_min_seeds = c->features_min_seeds};
}

husai_status husai_config_resolve(husai_config *c, const char *path, const char *const *sets, int n_sets,
                                  const char *out_dir) {
    husai_config_defaults(c);
    husai_status st = husai_config_load(c, path);
    for (int i = 0; !st && i < n_sets; i++)
        st = husai_config_set(c, sets[i]);
    if (!st && out_dir) {
        char kv[HUSAI_PATH_MAX + 16];
        snprintf(kv, sizeof kv, "output.dir=%s", out_dir);
        st = husai_config_set(c, kv);
    }
    return st ? st : husai_config_validate(c);
}
