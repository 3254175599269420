/* bench_husai: prints husai's single-process speed figures, each against the machine's
 * own sgemm rate measured in the same run, so ratios (not absolute times) carry over.
 *   1. sgemm GFLOP/s on the TopK encoder's shape (the roofline for training)
 *   2. training throughput (samples/s) and the encoder's share of sgemm peak, at HUSAI's size
 *      (d_model 128, d_sae 128, k 32, batch 2048) and an LLM-like size (768 x 16384, k 32)
 *   3. blocked PWMCC GFLOP/s and its share of sgemm peak
 *   4. the data fingerprint's hashing of one batch of rows against one training step on them, at both sizes
 * Usage: bench_husai [--quick]. One BLAS thread unless OPENBLAS_NUM_THREADS says otherwise.
 *
 * bench_husai --pwmcc SEEDS D_MODEL D_SAE [THREADS] [bf16]
 *   times all-pairs PWMCC of SEEDS random decoders of that shape (section 3 alone, any size), its
 *   blocks spread over THREADS (default 1) OpenMP threads; the % of peak is against one core's sgemm.
 *   bf16: on bf16 blocks with certified exact maxima (husai_pwmcc_set_bf16).
 *
 * bench_husai --features SEEDS D_MODEL D_SAE [THREADS]
 *   times PWMCC alone against the same pass that also keeps every feature's best match
 *   (metrics/features.h; the budget: within 10%), then the per-feature analysis (stability,
 *   clusters, consensus features, two seed bootstraps of 10000), on decoders that share half their
 *   columns, so the analysis has clusters to build.
 *
 * bench_husai --train DATA.h5 D_SAE K BATCH STEPS THREADS [SEED]
 *   trains one SAE on /activations of DATA.h5 (HUSAI's recipe: per-epoch shuffle, Adam 3e-4, renorm)
 *   for STEPS optimiser steps after one warm-up step, on THREADS threads, and prints one JSON
 *   line with samples/s (bench/bench.sh compares it with bench/torch_ref.py on the same file).
 *
 * bench_husai --bf16 [--quick]
 *   the bf16 encoder path (precision = bf16, sae/bf16.h) beside fp32 at both sizes: A/B runs alternated so
 *   that other load hits both alike, each pair's samples/s ratio and their median, the encoder's useful
 *   GFLOP/s against sgemm measured in the same run, oneDNN's implementation (the ISA), and the share of
 *   rows the first candidate set did not certify and that were rescored in full. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <hdf5.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fingerprint.h"
#include "common/rng.h"
#include "metrics/features.h"
#include "metrics/pwmcc.h"
#include "sae/bf16.h"
#include "sae/train.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t n, uint64_t seed) {
    float *x = malloc(n * sizeof(float));
    if (!x) {
        fprintf(stderr, "bench: out of memory for %zu floats\n", n);
        exit(1);
    }
    husai_rng r;
    husai_rng_init(&r, seed, "bench", 0);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)husai_rng_normal(&r);
    return x;
}

/* Best-of-reps GFLOP/s of C[m,n] = A[m,k] B[n,k]^T, the encoder's product. */
static double sgemm_gflops(int m, int n, int k, int reps) {
    float *A = random_floats((size_t)m * k, 1), *B = random_floats((size_t)n * k, 2);
    float *C = malloc((size_t)m * n * sizeof(float));
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, A, k, B, k, 0.0f, C, n);
        const double dt = now() - t0;
        if (dt < best) best = dt;
    }
    free(A);
    free(B);
    free(C);
    return 2.0 * m * n * k / best / 1e9;
}

/* The bf16 path's record of a train_rate run: oneDNN's implementation, rows, second-set rows, full rows,
 * and the run's samples per CPU second (any run). */
typedef struct {
    char isa[96];
    int64_t rows, second, full;
    double per_cpu;
} bf16_run;

/* Trains on random rows for `steps` steps after one warm-up step in the given precision; returns samples
 * per second (bf16: *rec gets the path's counts, if not NULL). */
static double train_rate_in(int d_model, int d_sae, int k, int batch, int steps, int precision,
                            bf16_run *rec) {
    const size_t rows = (size_t)batch * 2;
    float *X = random_floats(rows * d_model, 3);
    husai_train_opts o = husai_train_defaults();
    o.d_sae = d_sae;
    o.k = k;
    o.batch_size = batch;
    o.epochs = 1000000;
    o.precision = precision;
    husai_trainer t;
    if (husai_trainer_init(&t, X, rows, d_model, &o)) {
        fprintf(stderr, "bench: %s\n", husai_error_message());
        exit(1);
    }
    husai_trainer_step(&t);
    const double t0 = now(), c0 = cpu_now();
    for (int s = 0; s < steps; s++)
        if (husai_trainer_step(&t)) {
            fprintf(stderr, "bench: %s\n", husai_error_message());
            exit(1);
        }
    const double dt = now() - t0;
    if (rec) rec->per_cpu = (double)steps * batch / (cpu_now() - c0);
    if (rec && t.batch.bf16) {
        snprintf(rec->isa, sizeof rec->isa, "%s", husai_bf16_isa(t.batch.bf16));
        husai_bf16_stats(t.batch.bf16, &rec->rows, &rec->second, &rec->full);
    }
    husai_trainer_free(&t);
    free(X);
    return (double)steps * batch / dt;
}

static double train_rate(int d_model, int d_sae, int k, int batch, int steps) {
    return train_rate_in(d_model, d_sae, k, batch, steps, HUSAI_PRECISION_FP32, NULL);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of n sorted values. */
static double median_sorted(const double *v, int n) {
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* fp32 and bf16 training alternated `pairs` times (A B A B ...): the median ratio, both paths' best
 * samples/s and encoder GFLOP/s against sgemm on the shape, oneDNN's ISA and the certificate's shares. */
static void bench_bf16(const char *label, int d_model, int d_sae, int k, int batch, int steps, int pairs) {
    const double peak = sgemm_gflops(batch, d_sae, d_model, 3);
    double best[2] = {0, 0}, ratio[16], cpu_ratio[16];
    bf16_run rec = {"", 0, 0, 0, 0}, sum = {"", 0, 0, 0, 0}, rec32 = {"", 0, 0, 0, 0};
    for (int p = 0; p < pairs; p++) {
        const double a = train_rate_in(d_model, d_sae, k, batch, steps, HUSAI_PRECISION_FP32, &rec32);
        const double b = train_rate_in(d_model, d_sae, k, batch, steps, HUSAI_PRECISION_BF16, &rec);
        best[0] = a > best[0] ? a : best[0];
        best[1] = b > best[1] ? b : best[1];
        ratio[p] = b / a;
        cpu_ratio[p] = rec.per_cpu / rec32.per_cpu;
        sum.rows += rec.rows;
        sum.second += rec.second;
        sum.full += rec.full;
    }
    qsort(ratio, (size_t)pairs, sizeof(double), cmp_double);
    qsort(cpu_ratio, (size_t)pairs, sizeof(double), cmp_double);
    const double f = 2.0 * d_model * d_sae / 1e9;
    printf(
        "%-10s %6d %6d %4d %6d | %9.0f %9.0f | %5.2fx (%.2f-%.2f) | %5.2fx (%.2f-%.2f) | %6.1f %6.1f %6.1f | "
        "%-26s | %6.3f%% %6.3f%%\n",
        label, d_model, d_sae, k, batch, best[0], best[1], median_sorted(ratio, pairs), ratio[0],
        ratio[pairs - 1], median_sorted(cpu_ratio, pairs), cpu_ratio[0], cpu_ratio[pairs - 1], peak,
        best[0] * f, best[1] * f, rec.isa, 100.0 * (double)sum.second / (double)sum.rows,
        100.0 * (double)sum.full / (double)sum.rows);
}

static int bf16_section(int quick) {
    printf(
        "bf16 encoder path (precision = bf16) beside fp32, one thread; oneDNN bf16: %s (%s).\n"
        "fp32 and bf16 runs alternate; ratio = bf16/fp32 samples/s, median (range) over the pairs; cpu "
        "ratio\n"
        "the same per CPU second of the process (time the scheduler gave other work does not count). The\n"
        "machine may be shared: absolute figures are noisy, ratios from alternated runs less so. Encoder\n"
        "GF = useful 2*d_model*d_sae flops per sample at each path's best samples/s; sgemm GF is the fp32\n"
        "roofline on the same shape. second/full: rows the first candidate set (%dk) did not certify /\n"
        "rows rescored in full (uncertified by %dk candidates too).\n\n",
        husai_bf16_dnnl_available() ? "available" : "not available (emulated: no speed-up expected)",
        husai_bf16_isa(NULL), HUSAI_BF16_CAND_FIRST, HUSAI_BF16_CAND_SECOND);
    printf("%-10s %6s %6s %4s %6s | %9s %9s | %18s | %18s | %6s %6s %6s | %-26s | %7s %7s\n", "size", "d_mod",
           "d_sae", "k", "batch", "fp32 sm/s", "bf16 sm/s", "ratio", "cpu ratio", "sgemm", "enc32", "enc16",
           "ISA", "second", "full");
    bench_bf16("husai", 128, 128, 32, 2048, quick ? 10 : 100, quick ? 2 : 5);
    bench_bf16("llm-like", 768, 16384, 32, 4096, quick ? 1 : 3, quick ? 2 : 5);
    return 0;
}

/* Reads a 2-D float dataset into a new float buffer (HDF5 converts float16/float64); exits on error. */
static float *read_h5(const char *path, const char *name, size_t *rows, int *cols) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f < 0 ? -1 : H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "bench: cannot open %s in %s\n", name, path);
        exit(1);
    }
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    if (H5Sget_simple_extent_ndims(sp) != 2) {
        fprintf(stderr, "bench: %s in %s is not 2-D\n", name, path);
        exit(1);
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    float *X = malloc((size_t)dims[0] * (size_t)dims[1] * sizeof(float));
    if (!X || H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, X) < 0) {
        fprintf(stderr, "bench: cannot read %s from %s\n", name, path);
        exit(1);
    }
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    *rows = (size_t)dims[0];
    *cols = (int)dims[1];
    return X;
}

/* --train mode: see the header comment. */
static int train_on_file(int argc, char **argv) {
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: bench_husai --train DATA.h5 D_SAE K BATCH STEPS THREADS [SEED]\n");
        return 2;
    }
    const int d_sae = atoi(argv[3]), k = atoi(argv[4]), batch = atoi(argv[5]), steps = atoi(argv[6]),
              threads = atoi(argv[7]);
    const uint64_t seed = argc == 9 ? strtoull(argv[8], NULL, 10) : 42;
    if (d_sae < 1 || k < 1 || batch < 1 || steps < 1 || threads < 1) {
        fprintf(stderr, "bench: D_SAE, K, BATCH, STEPS and THREADS must be positive\n");
        return 2;
    }
    /* husai's threads split the step itself, the encoder's sgemm included, so OpenBLAS runs one thread
     * inside each (as in husai sweep with HUSAI_THREADS). */
    openblas_set_num_threads(1);
    omp_set_num_threads(threads);
    size_t rows = 0;
    int d_model = 0;
    float *X = read_h5(argv[2], "/activations", &rows, &d_model);
    husai_train_opts o = husai_train_defaults();
    o.d_sae = d_sae;
    o.k = k;
    o.batch_size = batch;
    o.epochs = 1000000;
    o.seed = seed;
    husai_trainer t;
    if (husai_trainer_init(&t, X, rows, d_model, &o) || husai_trainer_step(&t)) {
        fprintf(stderr, "bench: %s\n", husai_error_message());
        return 1;
    }
    const double t0 = now(), c0 = cpu_now();
    for (int s = 0; s < steps; s++)
        if (husai_trainer_step(&t)) {
            fprintf(stderr, "bench: %s\n", husai_error_message());
            return 1;
        }
    const double dt = now() - t0, cpu = cpu_now() - c0;
    /* Mean batch loss of the epoch in progress (or of the last complete one): a sanity check against torch.
     */
    const double loss = t.epoch_batches ? t.epoch_loss_sum / (double)t.epoch_batches : t.last_epoch_loss;
    printf(
        "{\"impl\": \"husai\", \"d_model\": %d, \"d_sae\": %d, \"k\": %d, \"batch\": %d, \"steps\": %d, "
        "\"threads\": %d, \"rows\": %zu, \"seconds\": %.4f, \"cpu_seconds\": %.4f, \"samples_per_s\": %.1f, "
        "\"loss\": %.6g}\n",
        d_model, d_sae, k, batch, steps, t.batch.threads, rows, dt, cpu, (double)steps * batch / dt, loss);
    husai_trainer_free(&t);
    free(X);
    return 0;
}

/* Prints one training row; returns the samples/s measured. */
static double bench_train(const char *label, int d_model, int d_sae, int k, int batch, int steps) {
    const double peak = sgemm_gflops(batch, d_sae, d_model, 3);
    const double rate = train_rate(d_model, d_sae, k, batch, steps);
    const double enc_gflops = rate * 2.0 * d_model * d_sae / 1e9;
    printf("%-10s %6d %6d %4d %6d | %12.0f | %8.1f | %8.1f | %6.1f%%\n", label, d_model, d_sae, k, batch,
           rate, peak, enc_gflops, 100.0 * enc_gflops / peak);
    return rate;
}

/* The fingerprint hashes every row once per read (and a streamed run once per chunk load, i.e. once
 * per epoch), while training spends one step per batch of rows: so hashing a batch's rows against one
 * step on them (samples_per_s measured above) bounds its share of training time. Best of 20. */
static void bench_fingerprint(const char *label, int d_model, int d_sae, int batch, double samples_per_s) {
    float *X = random_floats((size_t)batch * d_model, 4);
    double best = 1e30;
    volatile uint64_t sink = 0;
    for (int r = 0; r < 20; r++) {
        const double t0 = now();
        sink += husai_fp_rows(X, (size_t)d_model * sizeof(float), 0, (size_t)batch);
        const double dt = now() - t0;
        if (dt < best) best = dt;
    }
    free(X);
    const double step = batch / samples_per_s;
    printf("%-10s %6d %6d %6d | %9.3f ms | %6.2f GB/s | %10.1f ms | %8.4f%%\n", label, d_model, d_sae, batch,
           best * 1e3, (double)batch * d_model * sizeof(float) / best / 1e9, step * 1e3, 100.0 * best / step);
}

/* Times husai_pwmcc_matrix on S random decoders [d, n] (on omp_get_max_threads() threads) and prints its
 * GFLOP/s against that many cores' worth of one-core sgemm on the block shape, measured just after. */
static void bench_pwmcc(int S, int d, int n) {
    float *D = malloc((size_t)S * d * n * sizeof(float));
    double *M = malloc((size_t)S * S * sizeof(double));
    if (!D || !M) {
        fprintf(stderr, "bench: out of memory for %d decoders of %d x %d\n", S, d, n);
        exit(1);
    }
    for (int s = 0; s < S; s++)
        husai_pwmcc_random_decoder(100 + s, d, n, D + (size_t)s * d * n);
    const double t0 = now();
    if (husai_pwmcc_matrix(D, S, d, n, M)) {
        fprintf(stderr, "bench: %s\n", husai_error_message());
        exit(1);
    }
    const double dt = now() - t0;
    const double flops = (double)S * (S - 1) / 2 * 2.0 * d * (double)n * n;
    const int threads = omp_get_max_threads();
    const double peak = sgemm_gflops(HUSAI_PWMCC_BLOCK, n, d, 3);
    printf(
        "S=%d d_model=%d d_sae=%d, %d thread(s): %d pairs, %.2f s, %.1f GFLOP/s, %.1f%% of %d x one core's "
        "sgemm peak on the block shape (%.1f GF)\n",
        S, d, n, threads, S * (S - 1) / 2, dt, flops / dt / 1e9, 100.0 * flops / dt / 1e9 / (threads * peak),
        threads, peak);
    free(D);
    free(M);
}

/* PWMCC alone vs with best matches, and the analysis, on S decoders [d, n] sharing n/2 noisy columns. */
static void bench_features(int S, int d, int n) {
    const size_t dd = (size_t)d * n;
    float *D = malloc((size_t)S * dd * sizeof(float)), *F = malloc((size_t)S * dd * sizeof(float));
    float *shared = malloc(dd * sizeof(float));
    double *M = malloc((size_t)S * S * sizeof(double)), *M2 = malloc((size_t)S * S * sizeof(double));
    if (!D || !F || !shared || !M || !M2) {
        fprintf(stderr, "bench: out of memory for %d decoders of %d x %d\n", S, d, n);
        exit(1);
    }
    husai_pwmcc_random_decoder(99, d, n, shared);
    for (int s = 0; s < S; s++) {
        float *Ds = D + (size_t)s * dd;
        husai_pwmcc_random_decoder(100 + s, d, n, Ds);
        for (int i = 0; i < d; i++) /* the first n/2 columns: the shared ones plus 10% noise */
            for (int j = 0; j < n / 2; j++)
                Ds[(size_t)i * n + j] = shared[(size_t)i * n + j] + 0.1f * Ds[(size_t)i * n + j];
        husai_normalized_feature_rows(Ds, d, n, F + (size_t)s * dd);
    }
    /* Process CPU time beside wall time: on a shared machine other load stretches the wall clock of one
     * pass and not the other, while the CPU time this process spends is what the pass costs. */
    double t0 = now();
    clock_t c0 = clock();
    if (husai_pwmcc_rows_part(F, S, d, n, 0, 1, M)) goto fail;
    const double t_pw = now() - t0, c_pw = (double)(clock() - c0) / CLOCKS_PER_SEC;
    husai_features f;
    t0 = now();
    c0 = clock();
    if (husai_features_best(&f, F, S, d, n, M2)) goto fail;
    const double t_best = now() - t0, c_best = (double)(clock() - c0) / CLOCKS_PER_SEC;
    const husai_boot_opts bo = husai_boot_defaults();
    t0 = now();
    if (husai_features_analyse(&f, D, NULL, NULL, HUSAI_FEATURES_TAU, 0, &bo)) goto fail;
    const double t_an = now() - t0;
    printf(
        "S=%d d_model=%d d_sae=%d, %d thread(s): PWMCC alone %.2f s (CPU %.2f s); with best matches %.2f s "
        "(CPU %.2f s: %+.1f%%; PWMCC bits %s); analysis %.2f s (%d consensus features, %d mutual matches); "
        "tensors %.1f MB\n",
        S, d, n, omp_get_max_threads(), t_pw, c_pw, t_best, c_best, 100.0 * (c_best - c_pw) / c_pw,
        memcmp(M, M2, (size_t)S * S * sizeof(double)) ? "DIFFER" : "identical", t_an, f.n_consensus,
        f.n_mutual, 8.0 * S * S * n / 1e6);
    husai_features_free(&f);
    free(D);
    free(F);
    free(shared);
    free(M);
    free(M2);
    return;
fail:
    fprintf(stderr, "bench: %s\n", husai_error_message());
    exit(1);
}

int main(int argc, char **argv) {
    omp_set_num_threads(1); /* the single-process figures are per core; --train sets its own count */
    if (argc > 1 && !strcmp(argv[1], "--train")) return train_on_file(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--pwmcc")) {
        const int bf16 = argc > 5 && !strcmp(argv[argc - 1], "bf16");
        const int nargs = argc - bf16;
        if ((nargs != 5 && nargs != 6) || atoi(argv[2]) < 2 || atoi(argv[3]) < 1 || atoi(argv[4]) < 1 ||
            (nargs == 6 && atoi(argv[5]) < 1)) {
            fprintf(stderr, "usage: bench_husai --pwmcc SEEDS D_MODEL D_SAE [THREADS] [bf16] (SEEDS >= 2)\n");
            return 2;
        }
        openblas_set_num_threads(1);
        omp_set_num_threads(nargs == 6 ? atoi(argv[5]) : 1);
        husai_pwmcc_set_bf16(bf16);
        if (bf16) printf("bf16 |cos| blocks, certified maxima (%s):\n", husai_bf16_isa(NULL));
        bench_pwmcc(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--features")) {
        if ((argc != 5 && argc != 6) || atoi(argv[2]) < 2 || atoi(argv[3]) < 1 || atoi(argv[4]) < 1 ||
            (argc == 6 && atoi(argv[5]) < 1)) {
            fprintf(stderr, "usage: bench_husai --features SEEDS D_MODEL D_SAE [THREADS] (SEEDS >= 2)\n");
            return 2;
        }
        openblas_set_num_threads(1);
        omp_set_num_threads(argc == 6 ? atoi(argv[5]) : 1);
        bench_features(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--bf16")) {
        openblas_set_num_threads(1);
        return bf16_section(argc > 2 && !strcmp(argv[2], "--quick"));
    }
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    if (!getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
    printf("husai benchmarks (%s), BLAS threads: %d\n\n", quick ? "quick" : "full",
           openblas_get_num_threads());
    printf("Training step: samples/s, and the encoder's useful GFLOP/s (2*d_model*d_sae per sample) against\n"
           "sgemm on the same shape measured just before (the roofline).\n\n");
    printf("%-10s %6s %6s %4s %6s | %12s | %8s | %8s | %7s\n", "size", "d_mod", "d_sae", "k", "batch",
           "samples/s", "sgemm GF", "enc GF", "of peak");
    const double small = bench_train("husai", 128, 128, 32, 2048, quick ? 20 : 200);
    const double large = bench_train("llm-like", 768, 16384, 32, 4096, quick ? 2 : 6);

    printf("\nData fingerprint (XXH3-64 per row, libxxhash): hashing one batch of rows against one training "
           "step\n"
           "on them, both measured in this run (budget: 1%% of a step at 768 x 16384):\n\n");
    printf("%-10s %6s %6s %6s | %12s | %11s | %13s | %9s\n", "size", "d_mod", "d_sae", "batch", "hash batch",
           "hash rate", "training step", "hash/step");
    bench_fingerprint("husai", 128, 128, 2048, small);
    bench_fingerprint("llm-like", 768, 16384, 4096, large);

    printf("\nBlocked PWMCC (all pairs of S seeds; 2*d_model*d_sae^2 flops per pair):\n\n");
    bench_pwmcc(4, 768, quick ? 2048 : 4096);
    printf("\nPer-feature stability (best matches kept in PWMCC's pass, then the analysis):\n\n");
    bench_features(4, 768, quick ? 2048 : 4096);
    return 0;
}
