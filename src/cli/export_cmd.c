/* export_cmd.c: `husai export`: its options; report/export.c writes the files (the format is described in report/export.h). */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/suggest.h"
#include "cli/commands.h"
#include "cli/version.h"
#include "common/parse.h"
#include "common/status.h"
#include "report/export.h"

#define EXPORT_EXIT_ERROR 1
#define EXPORT_EXIT_USAGE 2

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: husai export RUN_DIR --condition NAME --seed S [--format safetensors] [--allow-signed-topk]\n"
        "                    [--model-name M] [--hook-name H] OUT_DIR\n"
        "       husai export RUN_DIR --condition NAME --consensus OUT\n"
        "Writes one trained SAE of a run directory for the Python SAE ecosystem (SAELens):\n"
        "  OUT_DIR/sae.safetensors  W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],\n"
        "                           (jumprelu: threshold [d_sae]) float32 (W_dec rows are the unit-norm\n"
        "                           features; b_dec as trained)\n"
        "  OUT_DIR/sae_weights.safetensors  symbolic link to sae.safetensors (SAELens' file name)\n"
        "  OUT_DIR/cfg.json         d_in, d_sae, architecture, dtype, ... and husai provenance\n"
        "Every architecture is written as the SAELens architecture with the same inference:\n"
        "  topk, matryoshka -> \"topk\" (k)   jumprelu -> \"jumprelu\" (threshold = theta)\n"
        "  batchtopk -> \"jumprelu\" (threshold = its inference threshold, every latent)\n"
        "  relu_l1 -> \"standard\" (ReLU)\n"
        "  --condition NAME  a condition of RUN_DIR/results.h5 (e.g. k=4, or search/k=4 in calibrate runs)\n"
        "  --seed S          the training seed (not its index)\n"
        "  --format F        only safetensors (the default)\n"
        "  --allow-signed-topk  export a TopK/Matryoshka SAE trained without sae.relu (husai's default "
        "keeps\n"
        "                    the k largest signed values; SAELens' TopK applies ReLU to them, so L0 and EV\n"
        "                    there differ). Refused without this flag; with it cfg.json says "
        "husai.signed_topk\n"
        "  --model-name M, --hook-name H  cfg.json's model_name / hook_name (default: the run's data\n"
        "                    attributes, as `husai import` records them; null when unknown)\n"
        "  With per-feature stability in the run, sae.safetensors also holds feature_stability [d_sae]\n"
        "  (share of the other seeds matching each feature at |cos| >= features.tau).\n"
        "  --consensus OUT   writes the consensus dictionary instead: OUT/consensus.safetensors with W_dec\n"
        "                    [n, d_in], stability [n], coherence [n] (float32), members [n, S] (int32),\n"
        "                    and OUT/cfg.json saying what it is\n"
        "  -h, --help        print this help\n"
        "OUT_DIR is created if missing; existing files of these names are replaced atomically.\n");
}

static int fail(int code) {
    fprintf(stderr, "husai: error: export: %s\n", husai_error_message());
    return code;
}

enum { OPT_CONDITION = 256, OPT_SEED, OPT_FORMAT, OPT_ALLOW_SIGNED, OPT_MODEL, OPT_HOOK, OPT_CONSENSUS };

int husai_cmd_export(int argc, char **argv) {
    static const struct option longopts[] = {{"condition", required_argument, NULL, OPT_CONDITION},
                                             {"seed", required_argument, NULL, OPT_SEED},
                                             {"format", required_argument, NULL, OPT_FORMAT},
                                             {"allow-signed-topk", no_argument, NULL, OPT_ALLOW_SIGNED},
                                             {"model-name", required_argument, NULL, OPT_MODEL},
                                             {"hook-name", required_argument, NULL, OPT_HOOK},
                                             {"consensus", required_argument, NULL, OPT_CONSENSUS},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *cond = NULL, *format = "safetensors", *seed_arg = NULL, *model_name = NULL, *hook_name = NULL,
               *consensus_out = NULL;
    int c, allow_signed = 0;
    const char *exported_by = "husai " HUSAI_VERSION " (" HUSAI_GIT_COMMIT ")";
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CONDITION:
            cond = optarg;
            break;
        case OPT_SEED:
            seed_arg = optarg;
            break;
        case OPT_FORMAT:
            format = optarg;
            break;
        case OPT_CONSENSUS:
            consensus_out = optarg;
            break;
        case OPT_ALLOW_SIGNED:
            allow_signed = 1;
            break;
        case OPT_MODEL:
            model_name = optarg;
            break;
        case OPT_HOOK:
            hook_name = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default: /* ':' (a value missing) or '?' */
            husai_cli_option_error("export", argv, ":h", longopts);
            return EXPORT_EXIT_USAGE;
        }
    }
    if (consensus_out) {
        if (seed_arg || argc - optind != 1 || !cond) {
            fprintf(stderr,
                    "husai: error: export: --consensus OUT takes RUN_DIR and --condition NAME, without "
                    "--seed or OUT_DIR (see husai export --help)\n");
            return EXPORT_EXIT_USAGE;
        }
        const husai_export_opts o = {.run_dir = argv[optind], .condition = cond, .exported_by = exported_by};
        husai_export_info info;
        if (husai_export_consensus(&o, consensus_out, &info)) return fail(EXPORT_EXIT_ERROR);
        printf("husai export: %s: %d consensus features of %d seeds (d_in %d) -> %s/consensus.safetensors, "
               "%s/cfg.json\n",
               cond, info.n_consensus, info.n_seeds, info.d_model, consensus_out, consensus_out);
        return 0;
    }
    if (argc - optind != 2) {
        fprintf(stderr,
                "husai: error: export: expected RUN_DIR and OUT_DIR, got %d argument%s (see husai export "
                "--help)\n",
                argc - optind, argc - optind == 1 ? "" : "s");
        return EXPORT_EXIT_USAGE;
    }
    if (!cond || !seed_arg) {
        fprintf(
            stderr,
            "husai: error: export: --condition NAME and --seed S are required (see husai export --help)\n");
        return EXPORT_EXIT_USAGE;
    }
    uint64_t seed = 0;
    if (husai_parse_u64("--seed", seed_arg, UINT64_MAX, &seed)) {
        fprintf(stderr, "husai: error: export: %s\n", husai_error_message());
        return EXPORT_EXIT_USAGE;
    }
    if (strcmp(format, "safetensors") != 0) {
        husai_error(HUSAI_ERR_ARG, "unknown format '%s' (supported: safetensors)", format);
        return fail(EXPORT_EXIT_ERROR);
    }
    const char *run_dir = argv[optind], *out_dir = argv[optind + 1];

    const husai_export_opts o = {.run_dir = run_dir,
                                 .condition = cond,
                                 .seed = seed,
                                 .allow_signed_topk = allow_signed,
                                 .model_name = model_name,
                                 .hook_name = hook_name,
                                 .exported_by = exported_by};
    husai_export_info info;
    if (husai_export_sae(&o, out_dir, &info)) return fail(EXPORT_EXIT_ERROR);
    printf("husai: export: %s seed %llu (%s as SAELens %s, d_in %d, d_sae %d) -> %s/sae.safetensors, "
           "%s/cfg.json\n",
           cond, (unsigned long long)seed, info.arch, info.saelens_arch, info.d_model, info.d_sae, out_dir,
           out_dir);
    return 0;
}
