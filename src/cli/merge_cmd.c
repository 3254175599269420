/* merge_cmd.c: `husai merge`: its options; report/merge.c joins the parts. */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <time.h>

#include "cli/suggest.h"
#include "cli/commands.h"
#include "cli/version.h"
#include "cli/threads.h"
#include "report/merge.h"
#include "report/rundir.h"

static void merge_usage(FILE *f) {
    fprintf(f,
            "usage: husai merge --out DIR [--run-id ID] [--force] PART_RUN_DIR...\n"
            "Joins complete run directories of one sweep split over sweep.values (e.g. Slurm array tasks)\n"
            "into DIR/ID, recomputing every metric exactly as a single job would.\n"
            "  -o, --out DIR      directory that receives the merged run directory (required)\n"
            "  -i, --run-id ID    name it ID (default: <UTC time>-<config hash>, as husai sweep)\n"
            "  -f, --force        replace an existing run directory of that name\n"
            "  -h, --help         print this help\n");
}

int husai_cmd_merge(int argc, char **argv) {
    static const struct option longopts[] = {{"out", required_argument, NULL, 'o'},
                                             {"run-id", required_argument, NULL, 'i'},
                                             {"force", no_argument, NULL, 'f'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *out = NULL, *run_id_arg = NULL;
    int force = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:i:fh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'i':
            run_id_arg = optarg;
            break;
        case 'f':
            force = 1;
            break;
        case 'h':
            merge_usage(stdout);
            return 0;
        default:
            husai_cli_option_error("merge", argv, "o:i:fh", longopts);
            return 2;
        }
    }
    if (!out || optind >= argc) {
        fprintf(stderr, "husai: error: merge: need --out DIR and at least one PART_RUN_DIR (see husai merge "
                        "--help)\n");
        return 2;
    }
    const double t0 = (double)clock() / CLOCKS_PER_SEC;
    int threads = 1; /* the metrics' pairs (PWMCC, matched agreement) run on HUSAI_THREADS threads */
    husai_status st = husai_threads_setup(MPI_COMM_WORLD, &threads);
    char command[4096], final_path[4096];
    husai_rundir_command_line(argc, argv, command, sizeof command);
    const husai_merge_opts o = {.out = out,
                                .run_id = run_id_arg,
                                .force = force,
                                .command = command,
                                .version = HUSAI_VERSION,
                                .commit = HUSAI_GIT_COMMIT};
    int n_conditions = 0;
    if (!st)
        st = husai_merge((const char *const *)argv + optind, argc - optind, &o, &n_conditions, final_path,
                         sizeof final_path);
    if (st) {
        fprintf(stderr, "husai: error: %s\n", husai_error_message());
        return 1;
    }
    printf("[husai] merged %d part(s), %d condition(s) into %s (%.1f s)\n", argc - optind, n_conditions,
           final_path, (double)clock() / CLOCKS_PER_SEC - t0);
    return 0;
}
