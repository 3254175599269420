/* report_cmd.c: `husai report RUN_DIR`, the reports of a finished run made again from its results.json and
 * results.h5 (report/reader.h): summary.md, conditions.csv, the plots and report.html. One process, no MPI.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli/commands.h"
#include "cli/suggest.h"
#include "report/reader.h"

static void report_usage(FILE *f) {
    fprintf(f, "usage: husai report [--out DIR] RUN_DIR\n"
               "Writes summary.md, conditions.csv, the plots (*.svg) and report.html of the finished run\n"
               "RUN_DIR again from its results.json and results.h5, replacing those files in RUN_DIR (or\n"
               "writing them into the existing directory DIR). Nothing is trained or recomputed.\n"
               "  -o, --out DIR   write into DIR instead of RUN_DIR\n"
               "  -h, --help      this text\n");
}

int husai_cmd_report(int argc, char **argv) {
    static const struct option longopts[] = {
        {"out", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *out = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'h':
            report_usage(stdout);
            return 0;
        default: /* ':' (a value missing) or '?' */
            husai_cli_option_error("report", argv, ":o:h", longopts);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "husai: error: report: expected exactly one RUN_DIR (see husai report --help)\n");
        return 2;
    }
    const husai_status st = husai_report_regenerate(argv[optind], out);
    if (st) {
        fprintf(stderr, "husai: error: %s\n", husai_error_message());
        return 1;
    }
    printf("[husai] report of %s written to %s\n", argv[optind], out ? out : argv[optind]);
    return 0;
}
