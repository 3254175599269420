/* synth_cmd.c: `husai synth`: its options, then data/synth.c writes the file (model and layout there). */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <getopt.h>
#include <limits.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/suggest.h"
#include "cli/commands.h"
#include "common/parse.h"
#include "common/status.h"
#include "data/synth.h"

static void synth_usage(FILE *f) {
    fprintf(f,
            "usage: husai synth --rows N --d-model D --atoms A --active K [--noise S] [--seed SEED]\n"
            "                   [--dtype float32|float16|float64] [--chunk-rows C] [--force] OUT.h5\n"
            "Writes synthetic activations: row r = sum of K distinct atoms of a random unit-norm dictionary\n"
            "(A atoms in R^D) with coefficients uniform on [0.5, 2), plus Gaussian noise of std S.\n"
            "  /activations [N, D] (dtype as asked, chunked), /dictionary [A, D] float32 (row a = atom a),\n"
            "  attributes rows, d_model, atoms, active, noise, seed, generator.\n"
            "  --noise S        noise std per element (default 0.05)\n"
            "  --seed SEED      row r depends only on (SEED, r), never on the number of ranks (default 1)\n"
            "  --chunk-rows C   rows generated and written per step and rank (memory ~ C x D x 8 bytes)\n"
            "  --force          replace OUT.h5 if it exists\n"
            "  -h, --help       print this help\n"
            "Run under MPI to generate in parallel: mpirun -np P husai synth ... OUT.h5\n");
}

/* Largest --noise: far beyond any useful level, and small enough that rows stay finite in float32. */
#define NOISE_MAX 1e30

/* Prints one error line (rank 0 only) and returns the exit status 1. */
static int arg_error(int rank, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int arg_error(int rank, const char *fmt, ...) {
    if (rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "husai: error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (see husai synth --help)\n");
        va_end(ap);
    }
    return 1;
}

/* Parses an option's value by the shared number rule into *v (in [lo, hi]); 0 on success, else the
 * exit status 1 after rank 0 printed why. */
static int opt_int(int rank, const char *opt, const char *text, long long lo, long long hi, long long *v) {
    return husai_parse_int(opt, text, lo, hi, v) ? arg_error(rank, "%s", husai_error_message()) : 0;
}

/* Returns 0 to go on, -1 after --help, or the exit status 1. Every rank parses the same argv. */
static int parse_args(int argc, char **argv, husai_synth_spec *a, int rank) {
    static const struct option longopts[] = {{"rows", required_argument, NULL, 'n'},
                                             {"d-model", required_argument, NULL, 'd'},
                                             {"atoms", required_argument, NULL, 'a'},
                                             {"active", required_argument, NULL, 'k'},
                                             {"noise", required_argument, NULL, 's'},
                                             {"seed", required_argument, NULL, 'S'},
                                             {"dtype", required_argument, NULL, 't'},
                                             {"chunk-rows", required_argument, NULL, 'c'},
                                             {"force", no_argument, NULL, 'f'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    a->noise = 0.05;
    a->seed = 1;
    a->elem = 4;
    int have_rows = 0, have_d = 0, have_atoms = 0, have_active = 0;
    long long x;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (opt_int(rank, "--rows", optarg, 1, LLONG_MAX, &x)) return 1;
            a->rows = (uint64_t)x;
            have_rows = 1;
            break;
        case 'd':
            if (opt_int(rank, "--d-model", optarg, 1, 1 << 24, &x)) return 1;
            a->d_model = (int)x;
            have_d = 1;
            break;
        case 'a':
            if (opt_int(rank, "--atoms", optarg, 1, INT_MAX, &x)) return 1;
            a->atoms = (int)x;
            have_atoms = 1;
            break;
        case 'k':
            if (opt_int(rank, "--active", optarg, 1, INT_MAX, &x)) return 1;
            a->active = (int)x;
            have_active = 1;
            break;
        case 's':
            if (husai_parse_real("--noise", optarg, 0.0, NOISE_MAX, DBL_MIN, &a->noise))
                return arg_error(rank, "%s", husai_error_message());
            break;
        case 'S':
            if (husai_parse_u64("--seed", optarg, UINT64_MAX, &a->seed))
                return arg_error(rank, "%s", husai_error_message());
            break;
        case 't':
            if (!strcmp(optarg, "float32"))
                a->elem = 4;
            else if (!strcmp(optarg, "float16"))
                a->elem = 2;
            else if (!strcmp(optarg, "float64"))
                a->elem = 8;
            else
                return arg_error(rank, "--dtype must be float32, float16 or float64, got '%s'", optarg);
            break;
        case 'c':
            if (opt_int(rank, "--chunk-rows", optarg, 1, LLONG_MAX, &x)) return 1;
            a->chunk_rows = (uint64_t)x;
            break;
        case 'f':
            a->force = 1;
            break;
        case 'h':
            if (rank == 0) synth_usage(stdout);
            return -1;
        default:
            if (rank == 0) husai_cli_option_error("synth", argv, "h", longopts);
            return 1;
        }
    }
    if (!have_rows) return arg_error(rank, "missing --rows");
    if (!have_d) return arg_error(rank, "missing --d-model");
    if (!have_atoms) return arg_error(rank, "missing --atoms");
    if (!have_active) return arg_error(rank, "missing --active");
    if (a->active > a->atoms) {
        return arg_error(rank, "--active %d exceeds --atoms %d (the atoms of a row are distinct)", a->active,
                         a->atoms);
    }
    if (a->rows > UINT64_MAX / 8 / (uint64_t)a->d_model) {
        return arg_error(rank, "--rows %llu x --d-model %d is too large", (unsigned long long)a->rows,
                         a->d_model);
    }
    if (optind != argc - 1) return arg_error(rank, "expected exactly one output file after the options");
    a->out = argv[optind];
    if (!*a->out) return arg_error(rank, "the output file name is empty");
    return 0;
}

int husai_cmd_synth(int argc, char **argv) {
    int rank, size;
    MPI_Comm comm = MPI_COMM_WORLD;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    husai_synth_spec a;
    const int prc = parse_args(argc, argv, &a, rank);
    if (prc) return prc < 0 ? 0 : prc;
    const double t0 = MPI_Wtime();
    if (husai_synth_write(&a, comm)) {
        if (rank == 0) fprintf(stderr, "husai: error: %s\n", husai_error_message());
        return 1;
    }
    if (rank == 0) {
        const double dt = MPI_Wtime() - t0;
        const double bytes = (double)a.rows * (double)a.d_model * a.elem;
        printf(
            "husai synth: wrote %s: %llu x %d %s (%d atoms, %d active, noise %g, seed %llu) on %d rank(s) in "
            "%.2f s (%.1f MB/s)\n",
            a.out, (unsigned long long)a.rows, a.d_model,
            a.elem == 2   ? "float16"
            : a.elem == 8 ? "float64"
                          : "float32",
            a.atoms, a.active, a.noise, (unsigned long long)a.seed, size, dt,
            bytes / (dt > 0 ? dt : 1e-9) / 1e6);
    }
    return 0;
}
