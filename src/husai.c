/* husai: train many sparse autoencoders over seeds under MPI and measure how reproducible
 * their features are. This file only dispatches to a subcommand. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cli/commands.h"

static void usage(FILE *f) {
    fprintf(f, "usage: husai <command> [options]\n"
               "commands:\n"
               "  sweep CONFIG.ini [--set section.key=value ...] [--out DIR]\n"
               "                    train conditions x seeds under MPI and report consistency\n"
               "  plan CONFIG.ini [--set section.key=value ...] [--json | --get NAME]\n"
               "                    what a sweep would run: resolved conditions and tasks (no MPI)\n"
               "  merge --out DIR PART_RUN_DIR...\n"
               "                    join run directories of a sweep split over its values (Slurm arrays)\n"
               "  report [--out DIR] RUN_DIR\n"
               "                    remake summary.md, conditions.csv, plots, report.html of a run\n"
               "  synth --rows N --d-model D --atoms A --active K [--noise S] [--seed SEED] OUT.h5\n"
               "                    synthetic activations from a known random dictionary (MPI-parallel)\n"
               "  ci [options] FILE bootstrap 95%% CI of the values in FILE (one per line, - = stdin)\n"
               "  export RUN_DIR --condition NAME --seed S --format safetensors OUT_DIR\n"
               "                    one trained SAE as SAELens safetensors + cfg.json\n"
               "  import OUT.h5 INPUT... [--model-name M] [--hook-name H]\n"
               "                    .npy / safetensors activations into one HDF5 dataset for sweep\n"
               "run `husai <command> --help` for a command's options\n");
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
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "ci")) return husai_cmd_ci(argc - 1, argv + 1);
    if (!strcmp(argv[1], "export")) return husai_cmd_export(argc - 1, argv + 1);
    if (!strcmp(argv[1], "import")) return husai_cmd_import(argc - 1, argv + 1);
    if (!strcmp(argv[1], "plan")) return husai_cmd_plan(argc - 1, argv + 1);
    if (!strcmp(argv[1], "report")) return husai_cmd_report(argc - 1, argv + 1);
    if (!strcmp(argv[1], "sweep") || !strcmp(argv[1], "merge") || !strcmp(argv[1], "synth")) {
        MPI_Init(&argc, &argv);
        const int rc = !strcmp(argv[1], "sweep")   ? husai_cmd_sweep(argc - 1, argv + 1)
                       : !strcmp(argv[1], "synth") ? husai_cmd_synth(argc - 1, argv + 1)
                                                   : husai_cmd_merge(argc - 1, argv + 1);
        MPI_Finalize();
        return rc;
    }
    fprintf(stderr, "husai: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
