#define _POSIX_C_SOURCE 200809L /* SIGXFSZ */
/* import_cmd.c: `husai import OUT.h5 INPUT...`, activations held as .npy arrays or safetensors files
 * converted into the chunked float32 HDF5 dataset `husai sweep` reads (report/import.h does the work).
 * This file parses the options only. One process, no MPI. */
#include <getopt.h>
#include <stdint.h>
#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/suggest.h"
#include "common/parse.h"
#include "common/status.h"
#include "report/import.h"

#define IMPORT_EXIT_ERROR 1
#define IMPORT_EXIT_USAGE 2

static void usage(FILE *f) {
    fprintf(f, "usage: husai import [options] OUT.h5 INPUT...\n"
               "Converts activations into one chunked float32 HDF5 dataset for `husai sweep` ([data] path):\n"
               "  INPUT  .npy (format 1.0-3.0, C order, little-endian float32 or float16) or safetensors\n"
               "         (F32, F16 or BF16; one file or many shards, rows concatenated in the order given).\n"
               "         Arrays of rank > 2 are read as rows of their last axis ([batch, seq, d] -> "
               "[batch*seq, d]).\n"
               "  --dataset NAME     dataset in OUT.h5 (default /activations)\n"
               "  --tensor NAME      safetensors: the tensor to take (default: the only one of rank >= 2)\n"
               "  --model-name NAME  recorded as an attribute; results.json and exported cfg.json carry it\n"
               "  --hook-name NAME   likewise (e.g. blocks.8.hook_resid_pre)\n"
               "  --chunk-rows C     rows per HDF5 storage chunk (default: about 1 MiB)\n"
               "  -f, --force        replace OUT.h5 if it exists (a regular file only)\n"
               "  -h, --help         this text\n"
               "Streams through a fixed buffer (about 16 MiB); refuses float64, big-endian, Fortran order,\n"
               "inputs of different widths, truncated files and NaN/Inf, leaving nothing under OUT.h5.\n");
}

enum { OPT_DATASET = 256, OPT_TENSOR, OPT_MODEL, OPT_HOOK, OPT_CHUNK };

int husai_cmd_import(int argc, char **argv) {
    static const struct option longopts[] = {{"dataset", required_argument, NULL, OPT_DATASET},
                                             {"tensor", required_argument, NULL, OPT_TENSOR},
                                             {"model-name", required_argument, NULL, OPT_MODEL},
                                             {"hook-name", required_argument, NULL, OPT_HOOK},
                                             {"chunk-rows", required_argument, NULL, OPT_CHUNK},
                                             {"force", no_argument, NULL, 'f'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    husai_import_opts o = {.dataset = "/activations"};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":fh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_DATASET:
            o.dataset = optarg;
            break;
        case OPT_TENSOR:
            o.tensor = optarg;
            break;
        case OPT_MODEL:
            o.model_name = optarg;
            break;
        case OPT_HOOK:
            o.hook_name = optarg;
            break;
        case OPT_CHUNK: {
            uint64_t v = 0;
            if (husai_parse_u64("--chunk-rows", optarg, (uint64_t)1 << 40, &v)) {
                fprintf(stderr, "husai: error: import: %s\n", husai_error_message());
                return IMPORT_EXIT_USAGE;
            }
            if (v < 1) {
                fprintf(stderr, "husai: error: import: --chunk-rows must be at least 1\n");
                return IMPORT_EXIT_USAGE;
            }
            o.chunk_rows = (size_t)v;
            break;
        }
        case 'f':
            o.force = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default: /* ':' (a value missing) or '?' */
            husai_cli_option_error("import", argv, ":fh", longopts);
            return IMPORT_EXIT_USAGE;
        }
    }
    if (argc - optind < 2) {
        fprintf(stderr,
                "husai: error: import: expected OUT.h5 and at least one INPUT (see husai import --help)\n");
        return IMPORT_EXIT_USAGE;
    }
    if (!o.dataset[0] || !strcmp(o.dataset, "/")) {
        fprintf(stderr, "husai: error: import: --dataset '%s' is not a dataset name\n", o.dataset);
        return IMPORT_EXIT_USAGE;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* failures are reported as one line, not HDF5's stack */
    signal(SIGXFSZ, SIG_IGN);              /* a file-size limit is then a failed write, like a full disk */
    husai_import_summary sum;
    const char *out = argv[optind];
    const husai_status st =
        husai_import(out, (const char *const *)(argv + optind + 1), argc - optind - 1, &o, &sum);
    if (st) {
        fprintf(stderr, "husai: error: import: %s\n", husai_error_message());
        return IMPORT_EXIT_ERROR;
    }
    printf("husai: import: %d file%s, %zu rows x %d -> %s:%s (float32, chunks of %zu rows)\n",
           argc - optind - 1, argc - optind - 1 == 1 ? "" : "s", sum.rows, sum.d_model, out, o.dataset,
           sum.chunk_rows);
    return 0;
}
