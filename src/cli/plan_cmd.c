/* plan_cmd.c: `husai plan`, what `husai sweep` would run for a config, resolved by the same config code
 * (file, --set, --out, validation) but without MPI and without opening the data. Job scripts take every
 * setting from here (human text, one JSON document, or one field with --get), so no second INI parser
 * can disagree with husai about a list written over several lines. */
#define _GNU_SOURCE /* getopt_long under -std=c17 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/suggest.h"
#include "cli/commands.h"
#include "config/config.h"
#include "cli/version.h"
#include "sae/model.h"
#include "sweep/protocols.h"

#define PLAN_EXIT_ERROR 1
#define PLAN_EXIT_USAGE 2

static void plan_usage(FILE *f) {
    fprintf(
        f,
        "usage: husai plan CONFIG.ini [--set section.key=value ...] [--out DIR] [--json | --get NAME]\n"
        "Prints what `husai sweep` would run with the same config and flags: the resolved conditions\n"
        "(name, swept value, settings) and tasks (condition x seed). No MPI; the data file is not\n"
        "opened, so checks that need the data (d_model, rows per batch, dictionary) wait for the sweep.\n"
        "  -s, --set S.K=V  override one config key (repeatable), as husai sweep\n"
        "  -o, --out DIR    output directory, as husai sweep (overrides [output] dir)\n"
        "  --json        one JSON document with everything (conditions, tasks, phases, resolved config)\n"
        "  --get NAME    one field of that document: a top-level name (mode, param, out_dir, n_tasks,\n"
        "                values, value_args, seeds, ...) or a config key section.key (sweep.values,\n"
        "                output.dir, ...); dotted paths and array indexes walk deeper (conditions.0.name).\n"
        "                Strings print as they are, numbers exactly, arrays one item per line.\n"
        "  -h, --help       print this help\n"
        "husai sweep's -f/--force, --run-id ID, --task-order O and --stop-after-steps N are accepted\n"
        "and ignored, so a job script can pass a sweep's flags unchanged.\n");
}

typedef struct {
    const char *config_path, *out_dir, *get;
    int json, n_sets;
    char **sets;
} plan_args;

/* Returns 0 to go on, -1 after --help, or the usage exit status. */
static int parse_args(int argc, char **argv, plan_args *a) {
    static const struct option longopts[] = {{"set", required_argument, NULL, 's'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"get", required_argument, NULL, 'g'},
                                             {"force", no_argument, NULL, 'I'},
                                             {"run-id", required_argument, NULL, 'I'},
                                             {"task-order", required_argument, NULL, 'I'},
                                             {"stop-after-steps", required_argument, NULL, 'I'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    a->sets = calloc((size_t)argc, sizeof(char *));
    if (!a->sets) {
        fprintf(stderr, "husai: error: out of memory\n");
        return PLAN_EXIT_ERROR;
    }
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "s:o:fh", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            a->sets[a->n_sets++] = optarg;
            break;
        case 'o':
            a->out_dir = optarg;
            break;
        case 'j':
            a->json = 1;
            break;
        case 'g':
            a->get = optarg;
            break;
        case 'I':
        case 'f': /* sweep-only flags: nothing to plan differently */
            break;
        case 'h':
            plan_usage(stdout);
            return -1;
        default:
            husai_cli_option_error("plan", argv, "s:o:fh", longopts);
            return PLAN_EXIT_USAGE;
        }
    }
    if (a->json && a->get) {
        fprintf(stderr, "husai plan: --json and --get exclude each other\n");
        return PLAN_EXIT_USAGE;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "husai plan: expected exactly one CONFIG file\n");
        plan_usage(stderr);
        return PLAN_EXIT_USAGE;
    }
    a->config_path = argv[optind];
    return 0;
}

/* The shortest %g text that reads back as exactly v, so `--set sweep.values=TEXT` in an array task gives
 * the very condition of the whole grid (10 digits would change an lr in its last bits). */
static void exact_text(double v, char *buf, size_t n) {
    if (v == floor(v) && fabs(v) < 1e15) { /* integers as integers: %.1g would write 20 as 2e+01 */
        snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, n, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* The text a --set gives for a sweep value: the architecture's name, else the exact number. */
static void value_text(const husai_config *cfg, double v, char *buf, size_t n) {
    if (!strcmp(cfg->param, "arch"))
        snprintf(buf, n, "%s", husai_arch_name((int)v));
    else
        exact_text(v, buf, n);
}

/* A seed as a JSON integer literal: a double would round seeds above 2^53. */
static cJSON *seed_json(uint64_t seed) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seed);
    return cJSON_CreateRaw(buf);
}

static cJSON *seeds_json(const uint64_t *seeds, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, seed_json(seeds[i]));
    return a;
}

/* The plan as people read it: a phase that prefixes its result names shows them prefixed. */
static void display_names(husai_protocol_plan *p) {
    for (int q = 0; q < p->n_phases; q++) {
        husai_plan_phase *ph = &p->phases[q];
        for (int i = 0; ph->prefix_names && i < ph->n_conds; i++) {
            char name[sizeof ph->conds[i].name];
            snprintf(name, sizeof name, "%s/%s", ph->name, ph->conds[i].name);
            memcpy(ph->conds[i].name, name, sizeof name);
        }
    }
}

static cJSON *condition_json(const husai_config *cfg, const husai_condition *c, int index) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", index);
    cJSON_AddStringToObject(o, "name", c->name);
    cJSON_AddStringToObject(o, "param", c->param);
    if (isnan(c->value)) {
        cJSON_AddNullToObject(o, "value");
        cJSON_AddNullToObject(o, "value_arg");
    } else {
        char text[64];
        value_text(cfg, c->value, text, sizeof text);
        if (!strcmp(c->param, "arch"))
            cJSON_AddStringToObject(o, "value", text);
        else
            cJSON_AddNumberToObject(o, "value", c->value);
        cJSON_AddStringToObject(o, "value_arg", text);
    }
    if (isnan(c->value)) /* the pick of an earlier phase */
        cJSON_AddNullToObject(o, "k");
    else
        cJSON_AddNumberToObject(o, "k", c->k);
    cJSON_AddNumberToObject(o, "d_sae", c->d_sae);
    cJSON_AddNumberToObject(o, "epochs", c->epochs);
    cJSON_AddNumberToObject(o, "batch_size", c->batch_size);
    cJSON_AddNumberToObject(o, "lr", c->lr);
    cJSON_AddNumberToObject(o, "lambda", c->lambda);
    cJSON_AddStringToObject(o, "arch", husai_arch_name(c->arch));
    return o;
}

/* The list keys of config.c's option table: husai_config_print writes them as "a, b, c" with indented
 * continuation lines. */
static int is_list_key(const char *section, const char *key) {
    return (!strcmp(section, "sweep") && (!strcmp(key, "values") || !strcmp(key, "seeds"))) ||
           (!strcmp(section, "calibrate") && !strcmp(key, "retrain_seeds"));
}

static int config_json_cb(void *user, const char *section, const char *key, const char *value) {
    cJSON *root = user, *sec = cJSON_GetObjectItemCaseSensitive(root, section);
    if (!sec) sec = cJSON_AddObjectToObject(root, section);
    if (!is_list_key(section, key)) return cJSON_AddStringToObject(sec, key, value) != NULL;
    cJSON *list = cJSON_GetObjectItemCaseSensitive(sec, key);
    if (!list) list = cJSON_AddArrayToObject(sec, key);
    char *copy = strdup(value);
    if (!copy) return 0;
    for (char *save = NULL, *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save))
        cJSON_AddItemToArray(list, cJSON_CreateString(tok));
    free(copy);
    return 1;
}

/* Every key of the resolved configuration as husai prints it (the text stored in results.h5), read back
 * by the same INI reader husai uses; optional keys left unset are absent. */
static cJSON *config_json(const husai_config *cfg) {
    char *text = husai_config_text(cfg);
    if (!text) return NULL;
    cJSON *root = cJSON_CreateObject();
    if (ini_parse_string(text, config_json_cb, root) != 0) {
        cJSON_Delete(root);
        root = NULL;
    }
    free(text);
    return root;
}

static cJSON *plan_json(const husai_config *cfg, const husai_protocol_plan *p) {
    cJSON *doc = cJSON_CreateObject();
    char hash[24];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)husai_config_hash(cfg));
    cJSON_AddStringToObject(doc, "husai_version", HUSAI_VERSION);
    cJSON_AddStringToObject(doc, "config_file", cfg->source);
    cJSON_AddStringToObject(doc, "config_hash", hash);
    cJSON_AddStringToObject(doc, "mode", husai_mode_name(cfg->mode));
    cJSON_AddStringToObject(doc, "param", cfg->param);
    /* Only a plain sweep's conditions are independent: the other protocols choose from earlier results. */
    cJSON_AddBoolToObject(doc, "splittable", cfg->mode == HUSAI_MODE_SWEEP);
    cJSON_AddStringToObject(doc, "out_dir", cfg->out_dir);
    cJSON *data = cJSON_AddObjectToObject(doc, "data");
    cJSON_AddStringToObject(data, "path", cfg->data_path);
    cJSON_AddStringToObject(data, "dataset", cfg->dataset);
    cJSON_AddBoolToObject(data, "opened", 0);
    cJSON *values = cJSON_AddArrayToObject(doc, "values"), *args = cJSON_AddArrayToObject(doc, "value_args");
    cJSON *conds = cJSON_AddArrayToObject(doc, "conditions");
    for (int i = 0; i < cfg->n_values; i++) {
        const husai_condition c = husai_config_condition(cfg, i);
        cJSON *o = condition_json(cfg, &c, i);
        cJSON_AddItemToArray(values, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(o, "value"), 1));
        cJSON_AddItemToArray(args, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(o, "value_arg"), 1));
        cJSON_AddNumberToObject(o, "n_tasks", cfg->n_seeds);
        cJSON_AddItemToArray(conds, o);
    }
    cJSON_AddItemToObject(doc, "seeds", seeds_json(cfg->seeds, cfg->n_seeds));
    cJSON_AddNumberToObject(doc, "n_conditions", cfg->n_values);
    cJSON_AddNumberToObject(doc, "n_seeds", cfg->n_seeds);
    cJSON_AddNumberToObject(doc, "n_tasks", p->n_tasks);
    cJSON *phases = cJSON_AddArrayToObject(doc, "phases"), *tasks = cJSON_AddArrayToObject(doc, "tasks");
    for (int q = 0; q < p->n_phases; q++) {
        const husai_plan_phase *ph = &p->phases[q];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", ph->name);
        if (ph->after)
            cJSON_AddStringToObject(o, "after", ph->after);
        else
            cJSON_AddNullToObject(o, "after");
        cJSON *pc = cJSON_AddArrayToObject(o, "conditions");
        for (int i = 0; i < ph->n_conds; i++)
            cJSON_AddItemToArray(pc, condition_json(cfg, &ph->conds[i], i));
        cJSON_AddItemToObject(o, "seeds", seeds_json(ph->seeds, ph->n_seeds));
        cJSON_AddNumberToObject(o, "n_tasks", ph->n_conds * ph->n_seeds);
        cJSON_AddItemToArray(phases, o);
        /* Condition-major, the order of plan.h's task ids. */
        for (int i = 0; i < ph->n_conds; i++)
            for (int s = 0; s < ph->n_seeds; s++) {
                cJSON *t = cJSON_CreateObject();
                cJSON_AddStringToObject(t, "phase", ph->name);
                cJSON_AddStringToObject(t, "condition", ph->conds[i].name);
                cJSON_AddItemToObject(t, "seed", seed_json(ph->seeds[s]));
                cJSON_AddItemToArray(tasks, t);
            }
    }
    cJSON *config = config_json(cfg);
    if (config)
        cJSON_AddItemToObject(doc, "config", config);
    else
        cJSON_AddNullToObject(doc, "config");
    return doc;
}

/* Seeds in config syntax with consecutive runs as ranges A-B, so 1024 seeds stay one short line. */
static void print_seeds(FILE *f, const uint64_t *seeds, int n) {
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && seeds[j + 1] == seeds[j] + 1)
            j++;
        fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)seeds[i]);
        if (j > i) fprintf(f, "%s%llu", j == i + 1 ? ", " : "-", (unsigned long long)seeds[j]);
        i = j + 1;
    }
}

static void print_conditions(FILE *f, const husai_config *cfg, const husai_plan_phase *ph) {
    fprintf(f, "  %3s  %-24s %-12s %7s %7s %7s %7s %11s %9s  %-10s %6s\n", "#", "condition", "value", "d_sae",
            "k", "epochs", "batch", "lr", "lambda", "arch", "tasks");
    for (int i = 0; i < ph->n_conds; i++) {
        const husai_condition *c = &ph->conds[i];
        char value[64] = "?", k[16] = "?";
        if (!isnan(c->value)) {
            value_text(cfg, c->value, value, sizeof value);
            snprintf(k, sizeof k, "%d", c->k);
        }
        fprintf(f, "  %3d  %-24s %-12s %7d %7s %7d %7d %11.5g %9.4g  %-10s %6d\n", i, c->name, value,
                c->d_sae, k, c->epochs, c->batch_size, c->lr, c->lambda, husai_arch_name(c->arch),
                ph->n_seeds);
    }
}

static void print_human(FILE *f, const husai_config *cfg, const husai_protocol_plan *p) {
    fprintf(f, "husai plan of %s (config hash %016llx)\n", cfg->source,
            (unsigned long long)husai_config_hash(cfg));
    fprintf(f, "mode %s over %s: %d value(s) x %d seed(s); %d task(s) in all\n", husai_mode_name(cfg->mode),
            cfg->param, cfg->n_values, cfg->n_seeds, p->n_tasks);
    fprintf(f, "data: %s:%s (not opened by plan)\n", cfg->data_path, cfg->dataset);
    fprintf(f, "output dir: %s\n", cfg->out_dir);
    for (int q = 0; q < p->n_phases; q++) {
        const husai_plan_phase *ph = &p->phases[q];
        fprintf(f, "%s%s: %d condition(s) x %d seed(s) = %d task(s)%s%s%s\n", *ph->name ? "phase " : "",
                *ph->name ? ph->name : husai_mode_name(cfg->mode), ph->n_conds, ph->n_seeds,
                ph->n_conds * ph->n_seeds, ph->after ? ", chosen by the " : "", ph->after ? ph->after : "",
                ph->after ? " results" : "");
        fprintf(f, "  seeds: ");
        print_seeds(f, ph->seeds, ph->n_seeds);
        fprintf(f, "\n");
        print_conditions(f, cfg, ph);
    }
    if (cfg->mode == HUSAI_MODE_SWEEP)
        fprintf(f, "job array: one task per value, --array=0-%d (slurm/submit_array.sh)\n",
                cfg->n_values - 1);
    else
        fprintf(f, "job array: not splittable (mode %s needs the whole grid in one job)\n",
                husai_mode_name(cfg->mode));
}

/* The item at a dotted path ("conditions.0.name"); NULL if there is none. */
static const cJSON *walk(const cJSON *node, const char *path) {
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return NULL;
    for (char *save = NULL, *part = strtok_r(buf, ".", &save); node && part;
         part = strtok_r(NULL, ".", &save)) {
        if (cJSON_IsArray(node)) {
            char *end;
            const long i = strtol(part, &end, 10);
            node = *end || end == part || i < 0 || i > 1000000 ? NULL : cJSON_GetArrayItem(node, (int)i);
        } else {
            node = cJSON_GetObjectItemCaseSensitive(node, part);
        }
    }
    return node;
}

/* One item as a script reads it: strings as they are, numbers exactly, anything else as compact JSON. */
static int print_scalar(FILE *f, const cJSON *item) {
    if (cJSON_IsString(item)) return fprintf(f, "%s\n", item->valuestring) < 0;
    if (cJSON_IsRaw(item)) return fprintf(f, "%s\n", item->valuestring) < 0;
    if (cJSON_IsNumber(item)) {
        char text[64];
        exact_text(item->valuedouble, text, sizeof text);
        return fprintf(f, "%s\n", text) < 0;
    }
    char *s = cJSON_PrintUnformatted(item);
    const int bad = !s || fprintf(f, "%s\n", s) < 0;
    free(s);
    return bad;
}

/* --get NAME: a top-level field, else a key of the resolved config ("sweep.values"); arrays one item per
 * line. */
static husai_status print_field(FILE *f, const cJSON *doc, const char *name) {
    const cJSON *item = walk(doc, name);
    if (!item) item = walk(cJSON_GetObjectItemCaseSensitive(doc, "config"), name);
    if (!item)
        return husai_error(HUSAI_ERR_ARG,
                           "plan --get '%s': no such field (a top-level name of `husai plan --json`, or "
                           "a config key section.key that is set)",
                           name);
    int bad = 0;
    if (cJSON_IsArray(item)) {
        const cJSON *x;
        cJSON_ArrayForEach(x, item) bad |= print_scalar(f, x);
    } else {
        bad = print_scalar(f, item);
    }
    return bad ? husai_error(HUSAI_ERR_IO, "plan: cannot write to stdout") : HUSAI_OK;
}

int husai_cmd_plan(int argc, char **argv) {
    plan_args args;
    int rc = parse_args(argc, argv, &args);
    if (rc) {
        free(args.sets);
        return rc < 0 ? 0 : rc;
    }
    static husai_config cfg; /* about 30 KB: off the stack */
    husai_status st = husai_config_resolve(&cfg, args.config_path, (const char *const *)args.sets,
                                           args.n_sets, args.out_dir);
    free(args.sets);
    static husai_protocol_plan p;
    cJSON *doc = NULL;
    if (!st) {
        husai_protocol_plan_build(&cfg, &p);
        display_names(&p);
        if (args.json || args.get) {
            doc = plan_json(&cfg, &p);
            if (!doc || cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(doc, "config")))
                st = husai_error(HUSAI_ERR_NOMEM, "plan: cannot build the plan document");
        }
    }
    if (!st && args.get) {
        st = print_field(stdout, doc, args.get);
    } else if (!st && args.json) {
        char *s = cJSON_Print(doc);
        if (!s || printf("%s\n", s) < 0) st = husai_error(HUSAI_ERR_IO, "plan: cannot write to stdout");
        free(s);
    } else if (!st) {
        print_human(stdout, &cfg, &p);
    }
    cJSON_Delete(doc);
    if (!st && (fflush(stdout) || ferror(stdout)))
        st = husai_error(HUSAI_ERR_IO, "plan: cannot write to stdout");
    if (st) {
        fprintf(stderr, "husai: error: %s\n", husai_error_message());
        return PLAN_EXIT_ERROR;
    }
    return 0;
}
