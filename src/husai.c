/* husai: train many sparse autoencoders over seeds under MPI and measure how reproducible
 * their features are. This file only holds the command table and dispatches to a command. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cli/commands.h"
#include "cli/suggest.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    int mpi; /* runs between MPI_Init and MPI_Finalize */
    const char *synopsis, *summary;
} command;

static const command COMMANDS[] = {
    {"sweep", husai_cmd_sweep, 1, "sweep CONFIG.ini [-s section.key=value ...] [-o DIR] [-f]",
     "train conditions x seeds under MPI and report consistency"},
    {"plan", husai_cmd_plan, 0, "plan CONFIG.ini [-s section.key=value ...] [--json | --get NAME]",
     "what a sweep would run: resolved conditions and tasks (no MPI)"},
    {"merge", husai_cmd_merge, 1, "merge -o DIR [-i ID] [-f] PART_RUN_DIR...",
     "join run directories of a sweep split over its values (Slurm arrays)"},
    {"synth", husai_cmd_synth, 1, "synth --rows N --d-model D --atoms A --active K [...] OUT.h5",
     "synthetic activations from a known random dictionary (MPI-parallel)"},
    {"ci", husai_cmd_ci, 0, "ci [options] FILE [FILE_Y]",
     "bootstrap 95% CI of the values in FILE (one per line, - = stdin)"},
    {"export", husai_cmd_export, 0, "export RUN_DIR --condition NAME --seed S OUT_DIR",
     "one trained SAE as SAELens safetensors + cfg.json"},
    {"report", husai_cmd_report, 0, "report [-o DIR] RUN_DIR",
     "remake summary.md, conditions.csv, plots and report.html of a run"},
    {"import", husai_cmd_import, 0, "import OUT.h5 INPUT... [--model-name M] [--hook-name H] [-f]",
     ".npy / safetensors activations into one HDF5 dataset for sweep"},
    {"version", husai_cmd_version, 0, "version", "version, commit, build type and library versions"},
    {"help", NULL, 0, "help [COMMAND]", "this list, or a command's options (as COMMAND --help)"},
};
#define N_COMMANDS ((int)(sizeof COMMANDS / sizeof COMMANDS[0]))

static void usage(FILE *f) {
    fprintf(f, "usage: husai <command> [options]\n"
               "       husai --version | -V       version, commit, build type and library versions\n"
               "       husai --help | -h          this help\n"
               "commands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %s\n                    %s\n", COMMANDS[i].synopsis, COMMANDS[i].summary);
    fprintf(f, "run `husai help COMMAND` or `husai COMMAND --help` for a command's options\n");
}

static const command *find(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(name, COMMANDS[i].name)) return &COMMANDS[i];
    return NULL;
}

/* The one error line for a name that is no command, with the closest command as a suggestion. */
static int unknown_command(const char *name) {
    const char *names[N_COMMANDS];
    for (int i = 0; i < N_COMMANDS; i++)
        names[i] = COMMANDS[i].name;
    const char *s = husai_suggest(name, names, N_COMMANDS);
    fprintf(stderr, "husai: error: unknown command '%s'%s%s%s (see husai --help)\n", name,
            s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
    return 2;
}

/* Large buffers (a task's parameters, a condition's decoders) come and go all run long. glibc raises
 * its mmap threshold to the size of each large block freed, so later ones come from the heap and stay
 * resident after free: a 64-seed sweep at 768 x 2048 held 1.23 GB on rank 0 that way, 0.85 GB with the
 * threshold fixed at 1 MiB. A threshold the user set (MALLOC_MMAP_THRESHOLD_) is left alone. */
static void fix_mmap_threshold(void) {
#if defined(__GLIBC__)
    if (!getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
}

int main(int argc, char **argv) {
    fix_mmap_threshold();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) return husai_cmd_version(argc - 1, argv + 1);
    static char help_flag[] = "--help";
    if (!strcmp(argv[1], "help")) { /* husai help [COMMAND]: the command's --help */
        if (argc == 2) {
            usage(stdout);
            return 0;
        }
        if (argc > 3) {
            fprintf(stderr, "husai: error: help takes one command name, got %d (see husai --help)\n",
                    argc - 2);
            return 2;
        }
        const command *c = find(argv[2]);
        if (!c) return unknown_command(argv[2]);
        if (!c->run) {
            usage(stdout);
            return 0;
        }
        argv[1] = argv[2]; /* now husai COMMAND --help */
        argv[2] = help_flag;
    }
    const command *c = find(argv[1]);
    if (!c) return unknown_command(argv[1]);
    if (!c->mpi) return c->run(argc - 1, argv + 1);
    MPI_Init(&argc, &argv);
    const int rc = c->run(argc - 1, argv + 1);
    MPI_Finalize();
    return rc;
}
