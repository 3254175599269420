/* encode.c: the encoder product (pre = W_enc (x - b_dec) + b_enc, by fixed blocks of rows or latents so
 * that every sgemm call, and every pre-activation's bits, is the same for any thread count) and the encode
 * driver that hands the pre-activations to the architecture's selection hooks; the threshold rules'
 * shared code builder. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "common/threads.h"
#include "sae/arch.h"
#include "sae/bf16.h"
#include "sae/kernels.h"

/* Makes room for nnz codes (contents not kept: callers reserve before filling). */
static husai_status reserve_codes(husai_sae_batch *b, size_t nnz) {
    if (nnz <= b->nnz_cap) return HUSAI_OK;
    void **arr[] = {(void **)&b->idx,      (void **)&b->val,     (void **)&b->g_val,
                    (void **)&b->grp_code, (void **)&b->grp_row, (void **)&b->grp_val};
    const size_t per_code[] = {4, 4, 4, 4, 4, 8}; /* bytes per code of each */
    int ok = 1;
    for (int a = 0; a < 6; a++) {
        free(*arr[a]);
        ok &= (*arr[a] = malloc(nnz * per_code[a])) != NULL;
    }
    if (!ok) {
        for (int a = 0; a < 6; a++) {
            free(*arr[a]);
            *arr[a] = NULL;
        }
        b->nnz_cap = 0;
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %zu sparse codes", nnz);
    }
    b->nnz_cap = nnz;
    return HUSAI_OK;
}

/* Rows per encoder product. The forward works in blocks of this many rows whatever the thread count, so
 * every sgemm call, and with it every pre-activation's bits, is the same for any count: OpenBLAS can give a
 * row different bits in calls of different shapes (measured for small ones). At 128 x 128, blocks of 512
 * rows cost 1.4% over one call per 2048-row batch. */
#define ENCODE_ROWS 512

/* Latents per encoder product when the encoder is too large to repack per row block: above 2M floats
 * (8 MB), each 512-row call would copy all of W_enc again, so the product goes by blocks of latents instead,
 * each over all rows, and packs the (smaller) batch once per block. The block is fixed, so the calls and
 * their bits do not depend on the thread count either. Measured at 4096 x 16384 x 768 against one call:
 * rows of 512 +6.0%, latents of 2048 +3.4%, of 4096 +1.9%. */
#define ENCODE_COLS 4096
#define ENCODE_WIDE_FLOATS ((size_t)2 << 20)

const float *husai_encoder_input(const husai_sae *m, const float *x, int r0, int r1, int fill_pre,
                                 husai_sae_batch *b) {
    const int d = m->d_model, s = m->d_sae;
    for (int r = r0; fill_pre && r < r1; r++)
        memcpy(b->pre + (size_t)r * s, m->b_enc, (size_t)s * sizeof(float));
    if (!m->b_dec) return x;
    for (int r = r0; r < r1; r++)
        for (int i = 0; i < d; i++)
            b->xc[(size_t)r * d + i] = x[(size_t)r * d + i] - m->b_dec[i];
    return b->xc;
}

/* pre[r0..r1, j0..j1) += in[r0..r1) W_enc[j0..j1)^T. */
static void encoder_product(const husai_sae *m, const float *in, int r0, int r1, int j0, int j1,
                            husai_sae_batch *b) {
    const int d = m->d_model, s = m->d_sae;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, j1 - j0, d, 1.0f, in + (size_t)r0 * d, d,
                m->W_enc + (size_t)j0 * d, d, 1.0f, b->pre + (size_t)r0 * s + j0, s);
}

/* Counts first, so the codes fit. */
husai_status husai_codes_threshold(const husai_sae *m, int n, const float *t, husai_sae_batch *b) {
    const int s = m->d_sae;
#pragma omp parallel for schedule(static) num_threads(b->threads) if (n >= 64)
    for (int r = 0; r < n; r++) {
        const float *p = b->pre + (size_t)r * s;
        int64_t c = 0;
        for (int j = 0; j < s; j++)
            c += p[j] > t[j];
        b->row_ptr[r + 1] = c;
    }
    b->row_ptr[0] = 0;
    for (int r = 0; r < n; r++)
        b->row_ptr[r + 1] += b->row_ptr[r];
    husai_status st = reserve_codes(b, (size_t)b->row_ptr[n]);
    if (st) return st;
#pragma omp parallel for schedule(static) num_threads(b->threads) if (n >= 64)
    for (int r = 0; r < n; r++) {
        int64_t a = b->row_ptr[r];
        const float *p = b->pre + (size_t)r * s;
        for (int j = 0; j < s; j++)
            if (p[j] > t[j]) {
                b->idx[a] = j;
                b->val[a++] = p[j];
            }
    }
    return HUSAI_OK;
}

husai_status husai_sae_encode(const husai_sae *m, const float *x, int n, husai_sae_mode mode,
                              husai_sae_batch *b) {
    if (b->bf16) return husai_bf16_encode(m, x, n, mode, b);
    b->n = n;
    const int s = m->d_sae;
    void (*const select_rows)(const husai_sae *, int, int, husai_sae_batch *, float *) = m->ops->select_rows;
    const int blocks = (n + ENCODE_ROWS - 1) / ENCODE_ROWS;
    if ((size_t)s * m->d_model > ENCODE_WIDE_FLOATS) {
        const int col_blocks = (s + ENCODE_COLS - 1) / ENCODE_COLS;
        const float *in = m->b_dec ? b->xc : x;
#pragma omp parallel num_threads(b->threads) if (blocks > 1 || col_blocks > 1)
        {
#pragma omp for schedule(static)
            for (int q = 0; q < blocks; q++) {
                const int r0 = q * ENCODE_ROWS, r1 = n - r0 < ENCODE_ROWS ? n : r0 + ENCODE_ROWS;
                husai_encoder_input(m, x, r0, r1, 1, b);
            }
#pragma omp for schedule(static)
            for (int q = 0; q < col_blocks; q++)
                encoder_product(m, in, 0, n, q * ENCODE_COLS,
                                s - q * ENCODE_COLS < ENCODE_COLS ? s : (q + 1) * ENCODE_COLS, b);
#pragma omp for schedule(static)
            for (int q = 0; q < blocks; q++) {
                const int r0 = q * ENCODE_ROWS, r1 = n - r0 < ENCODE_ROWS ? n : r0 + ENCODE_ROWS;
                if (select_rows) select_rows(m, r0, r1, b, b->select + (size_t)husai_thread_num() * 2 * s);
            }
        }
    } else {
        /* A block's selection right after its product, while its pre-activations are in cache. */
#pragma omp parallel for schedule(static) num_threads(b->threads) if (blocks > 1)
        for (int q = 0; q < blocks; q++) {
            const int r0 = q * ENCODE_ROWS, r1 = n - r0 < ENCODE_ROWS ? n : r0 + ENCODE_ROWS;
            encoder_product(m, husai_encoder_input(m, x, r0, r1, 1, b), r0, r1, 0, s, b);
            if (select_rows) select_rows(m, r0, r1, b, b->select + (size_t)husai_thread_num() * 2 * s);
        }
    }
    return m->ops->codes(m, n, mode, b);
}
