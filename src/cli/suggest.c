#define _GNU_SOURCE /* getopt_long under -std=c17 */
#include "cli/suggest.h"

#include <stdio.h>
#include <string.h>

#define MAX_LEN 64

int husai_edit_distance(const char *a, const char *b) {
    const size_t n = strlen(a), m = strlen(b);
    if (n > MAX_LEN || m > MAX_LEN) return 99;
    /* optimal string alignment: Levenshtein plus the swap of two adjacent characters ("--sede") */
    int d[MAX_LEN + 1][MAX_LEN + 1];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            const int cost = a[i - 1] != b[j - 1];
            int best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m] > 99 ? 99 : d[n][m];
}

const char *husai_suggest(const char *word, const char *const *candidates, int n) {
    const int len = (int)strlen(word);
    int limit = len <= 4 ? 1 : 2;
    if (limit >= len) limit = len - 1;
    const char *best = NULL;
    int best_d = limit + 1, ties = 0;
    for (int i = 0; i < n; i++) {
        const int dist = husai_edit_distance(word, candidates[i]);
        if (dist < best_d) {
            best = candidates[i];
            best_d = dist;
            ties = 0;
        } else if (dist == best_d && best) {
            ties++;
        }
    }
    return best && !ties ? best : NULL;
}

/* The long option's name in arg ("--name" or "--name=value"), at most cap-1 characters. */
static void long_name(const char *arg, char *name, size_t cap) {
    const char *eq = strchr(arg + 2, '=');
    const size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    snprintf(name, cap, "%.*s", (int)(len < cap ? len : cap - 1), arg + 2);
}

void husai_cli_option_error(const char *cmd, char *const *argv, const char *shortopts,
                            const struct option *longopts) {
    const char *arg = argv[optind - 1];
    char msg[512];
    if (optopt && (!arg || strncmp(arg, "--", 2) != 0)) { /* a short option */
        const char *at = strchr(shortopts, optopt);
        if (at && optopt != ':')
            snprintf(msg, sizeof msg, "option '-%c' needs a value", optopt);
        else
            snprintf(msg, sizeof msg, "unknown option '-%c'", optopt);
    } else if (arg && !strncmp(arg, "--", 2)) {
        char name[MAX_LEN + 1];
        long_name(arg, name, sizeof name);
        const char *names[64];
        int n = 0, match = -1, prefixed = 0;
        char list[256] = "";
        for (int i = 0; longopts[i].name && n < 64; i++, n++) {
            names[n] = longopts[i].name;
            if (!*name || strncmp(longopts[i].name, name, strlen(name))) continue;
            const size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s--%s", prefixed ? ", " : "", longopts[i].name);
            if (match < 0 || !strcmp(longopts[i].name, name)) match = i;
            prefixed++;
        }
        if (match >= 0 && (prefixed == 1 || !strcmp(longopts[match].name, name)))
            snprintf(msg, sizeof msg, "option '--%s' %s", longopts[match].name,
                     longopts[match].has_arg == no_argument ? "takes no value" : "needs a value");
        else if (prefixed > 1)
            snprintf(msg, sizeof msg, "ambiguous option '%s' (could be %s)", arg, list);
        else {
            const char *s = husai_suggest(name, names, n);
            snprintf(msg, sizeof msg, "unknown option '%s'%s%s%s", arg, s ? " (did you mean '--" : "",
                     s ? s : "", s ? "'?)" : "");
        }
    } else {
        snprintf(msg, sizeof msg, "unknown option '%s'", arg ? arg : "?");
    }
    fprintf(stderr, "husai: error: %s: %s (see husai %s --help)\n", cmd, msg, cmd);
}
