/* decode.c: the sparse decode x_hat = b_dec + sum_j z_j D_j (row by row over register tiles, or latent
 * by latent for decoders larger than the caches), with nested prefix reconstructions for architectures
 * that ask for them, and the forward's loss parts. */
#include <string.h>

#include "common/threads.h"
#include "sae/arch.h"
#include "sae/kernels.h"

static double sq_err(const float *a, const float *x, size_t n) {
    double sse = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - (double)x[i];
        sse += e * e;
    }
    return sse;
}

/* The forward's squared error, summed while decoding: a row's terms go into sse a few per code of the
 * next row's decode, so that the serial chain of double additions (a fixed order, as in sq_err) runs
 * beside the decode's arithmetic instead of after it. */
typedef struct {
    const float *a, *x; /* the next terms: (a - x)^2 */
    int left;           /* terms of the pending row not yet added */
    double sse;
} sq_err_feed;

HUSAI_INLINE void feed_terms(sq_err_feed *f, int count) {
    for (; count > 0 && f->left > 0; count--, f->left--) {
        const double e = (double)*f->a++ - (double)*f->x++;
        f->sse += e * e;
    }
}

/* feed_terms(f, 4), with the four squares computed as one vector; still added one by one, in order. */
HUSAI_INLINE void feed_terms4(sq_err_feed *f) {
    if (f->left < 4) {
        feed_terms(f, 4);
        return;
    }
    husai_v4 a, x;
    memcpy(&a, f->a, sizeof a);
    memcpy(&x, f->x, sizeof x);
    const husai_v4d e = __builtin_convertvector(a, husai_v4d) - __builtin_convertvector(x, husai_v4d);
    const husai_v4d sq = e * e;
    f->sse = (((f->sse + sq[0]) + sq[1]) + sq[2]) + sq[3];
    f->a += 4;
    f->x += 4;
    f->left -= 4;
}

/* Decodes one row's codes a0..a1 over the reconstruction's elements [i0, i0 + 64): eight vectors of
 * sums held in registers (named: GCC keeps an array of them in memory); with matryoshka, snap gets each
 * prefix's partial sum at its end. Feeds four loss terms per code. */
HUSAI_INLINE void decode_tile64(const husai_sae *m, const husai_sae_batch *b, int64_t a0, int64_t a1, int i0,
                                const int mat, float *xh, float *snap, sq_err_feed *feed) {
    const int d = m->d_model, P = mat ? m->spec.n_prefixes : 1;
    husai_v8 A0 = {0}, A1 = {0}, A2 = {0}, A3 = {0}, A4 = {0}, A5 = {0}, A6 = {0}, A7 = {0}, t;
#define STORE_SUMS(p)                                                                                        \
    (V8_STORE((p), A0), V8_STORE((p) + 8, A1), V8_STORE((p) + 16, A2), V8_STORE((p) + 24, A3),               \
     V8_STORE((p) + 32, A4), V8_STORE((p) + 40, A5), V8_STORE((p) + 48, A6), V8_STORE((p) + 56, A7))
    if (m->b_dec) {
        const float *bd = m->b_dec + i0;
        V8_LOAD(A0, bd);
        V8_LOAD(A1, bd + 8);
        V8_LOAD(A2, bd + 16);
        V8_LOAD(A3, bd + 24);
        V8_LOAD(A4, bd + 32);
        V8_LOAD(A5, bd + 40);
        V8_LOAD(A6, bd + 48);
        V8_LOAD(A7, bd + 56);
    }
    int level = 0;
    for (int64_t a = a0; a < a1; a++) {
        const int j = b->idx[a];
        /* Codes are in ascending latent order: a prefix's reconstruction is complete at its end. */
        for (; mat && j >= m->prefix[level]; level++)
            STORE_SUMS(snap + (size_t)level * d + i0);
        const float c = b->val[a], *w = m->W_dec + (size_t)j * d + i0;
        V8_LOAD(t, w);
        A0 += c * t;
        V8_LOAD(t, w + 8);
        A1 += c * t;
        V8_LOAD(t, w + 16);
        A2 += c * t;
        V8_LOAD(t, w + 24);
        A3 += c * t;
        V8_LOAD(t, w + 32);
        A4 += c * t;
        V8_LOAD(t, w + 40);
        A5 += c * t;
        V8_LOAD(t, w + 48);
        A6 += c * t;
        V8_LOAD(t, w + 56);
        A7 += c * t;
        feed_terms4(feed);
    }
    for (; mat && level < P; level++)
        STORE_SUMS(snap + (size_t)level * d + i0);
    STORE_SUMS(xh + i0);
#undef STORE_SUMS
}

/* decode_tile64 over eight elements [i0, i0 + 8). */
HUSAI_INLINE void decode_tile8(const husai_sae *m, const husai_sae_batch *b, int64_t a0, int64_t a1, int i0,
                               const int mat, float *xh, float *snap) {
    const int d = m->d_model, P = mat ? m->spec.n_prefixes : 1;
    husai_v8 A = {0}, t;
    if (m->b_dec) V8_LOAD(A, m->b_dec + i0);
    int level = 0;
    for (int64_t a = a0; a < a1; a++) {
        const int j = b->idx[a];
        for (; mat && j >= m->prefix[level]; level++)
            V8_STORE(snap + (size_t)level * d + i0, A);
        V8_LOAD(t, m->W_dec + (size_t)j * d + i0);
        A += b->val[a] * t;
    }
    for (; mat && level < P; level++)
        V8_STORE(snap + (size_t)level * d + i0, A);
    V8_STORE(xh + i0, A);
}

/* Whether to decode latent by latent: for decoders of more than 16 MiB, which do not stay in cache
 * between codes (at 768 x 16384, 50 MB, this cut the decode from 49 to 16 ms per 4096 rows; at 12.5 MB
 * the two orders measured the same). */
static int decode_by_latent(const husai_sae *m, int n) {
    return n > 1 && (double)m->d_sae * m->d_model * sizeof(float) > 16.0 * 1048576.0 &&
           (size_t)n * m->d_sae <= INT32_MAX;
}

/* Columns [i0, i1) of every row's x_hat (and matryoshka snapshots), latent by latent after
 * group_by_latent over the whole batch: a decoder far larger than the caches would be streamed from DRAM
 * once per code; latent by latent it is read once per batch, and the reconstructions (in cache) take its
 * terms. Each element gets its terms in the row's code order, whatever the column range. */
HUSAI_MULTIVERSION
static void decode_latent_cols(const husai_sae *m, husai_sae_batch *b, int i0, int i1) {
    const int d = m->d_model, n = b->n, w = i1 - i0;
    const int mat = m->nested, P = mat ? m->spec.n_prefixes : 1;
    for (int r = 0; r < n; r++) {
        float *xh = b->x_hat + (size_t)r * d + i0;
        if (m->b_dec)
            memcpy(xh, m->b_dec + i0, (size_t)w * sizeof(float));
        else
            memset(xh, 0, (size_t)w * sizeof(float));
    }
    int level = 0;
    for (int j = 0, e0 = 0; j < m->d_sae; e0 = b->grp_end[j++]) {
        /* Latents come in ascending order: at a prefix's end every row's sum is its reconstruction. */
        for (; mat && j >= m->prefix[level]; level++)
            for (int r = 0; r < n; r++)
                memcpy(b->g_xhat + ((size_t)r * P + level) * d + i0, b->x_hat + (size_t)r * d + i0,
                       (size_t)w * sizeof(float));
        const float *wj = m->W_dec + (size_t)j * d + i0;
        for (int e = e0; e < b->grp_end[j]; e++)
            husai_axpy(b->x_hat + (size_t)b->grp_row[e] * d + i0, b->grp_val[2 * (size_t)e], wj, w);
    }
    for (; mat && level < P; level++)
        for (int r = 0; r < n; r++)
            memcpy(b->g_xhat + ((size_t)r * P + level) * d + i0, b->x_hat + (size_t)r * d + i0,
                   (size_t)w * sizeof(float));
}

/* x_hat = b_dec + the codes' decoder rows for rows [r0, r1), in code order, over tiles of 64 elements kept
 * in registers across the row's codes (as an axpy per code would compute them, without storing the sums
 * between). With x, also row_sse[r] = sq_err of each row. mat (nested prefixes) is a constant of each
 * inlined copy (decode_row_range), so the per-code prefix test is compiled out of the other. */
HUSAI_INLINE void decode_rows_of(const husai_sae *m, husai_sae_batch *b, const float *x, int r0, int r1,
                                 const int mat) {
    const int d = m->d_model, P = mat ? m->spec.n_prefixes : 1;
    sq_err_feed feed = {NULL, NULL, 0, 0.0}; /* terms of the previous row, once it is done */
    for (int r = r0; r < r1; r++) {
        float *xh = b->x_hat + (size_t)r * d, *snap = b->g_xhat + (size_t)r * P * d;
        const int64_t a0 = b->row_ptr[r], a1 = b->row_ptr[r + 1];
        int i0 = 0;
        for (; i0 + 64 <= d; i0 += 64)
            decode_tile64(m, b, a0, a1, i0, mat, xh, snap, &feed);
        for (; i0 + 8 <= d; i0 += 8)
            decode_tile8(m, b, a0, a1, i0, mat, xh, snap);
        for (; i0 < d; i0++) {
            float acc = m->b_dec ? m->b_dec[i0] : 0.0f;
            int level = 0;
            for (int64_t a = a0; a < a1; a++) {
                const int j = b->idx[a];
                for (; mat && j >= m->prefix[level]; level++)
                    snap[(size_t)level * d + i0] = acc;
                acc += b->val[a] * m->W_dec[(size_t)j * d + i0];
            }
            for (; mat && level < P; level++)
                snap[(size_t)level * d + i0] = acc;
            xh[i0] = acc;
        }
        if (x) {
            /* the previous row's remaining terms; this row's are pending */
            feed_terms(&feed, feed.left);
            if (r > r0) b->row_sse[r - 1] = feed.sse;
            feed = (sq_err_feed){xh, x + (size_t)r * d, d, 0.0};
        }
    }
    if (x && r1 > r0) {
        feed_terms(&feed, feed.left);
        b->row_sse[r1 - 1] = feed.sse;
    }
}

/* decode_rows_of, for nested and for plain models. */
HUSAI_MULTIVERSION
static void decode_row_range(const husai_sae *m, husai_sae_batch *b, const float *x, int r0, int r1) {
    if (m->nested)
        decode_rows_of(m, b, x, r0, r1, 1);
    else
        decode_rows_of(m, b, x, r0, r1, 0);
}

/* x_hat (and matryoshka's prefix reconstructions) for the encoded rows, split over the batch's threads;
 * with x, also *sse = the squared error, per row in element order, then over rows in row order. */
static void decode_rows(const husai_sae *m, husai_sae_batch *b, const float *x, double *sse) {
    const int d = m->d_model, n = b->n, T = b->threads;
    if (decode_by_latent(m, n)) {
        husai_group_by_latent(b, 0, m->d_sae, 0, n, 0);
#pragma omp parallel num_threads(T) if (d >= 16 * T)
        {
            /* column ranges on 8-float boundaries, so each keeps decode's vector tiles */
            const int t = husai_thread_num(), nt = husai_threads_here();
            const int i0 = t == 0 ? 0 : (int)((int64_t)d * t / nt) & ~7,
                      i1 = t + 1 == nt ? d : (int)((int64_t)d * (t + 1) / nt) & ~7;
            if (i1 > i0) decode_latent_cols(m, b, i0, i1);
        }
        if (x) {
#pragma omp parallel for schedule(static) num_threads(T) if (n >= 64)
            for (int r = 0; r < n; r++)
                b->row_sse[r] = sq_err(b->x_hat + (size_t)r * d, x + (size_t)r * d, (size_t)d);
        }
    } else {
#pragma omp parallel num_threads(T) if (n >= 4 * T)
        {
            const int t = husai_thread_num(), nt = husai_threads_here();
            decode_row_range(m, b, x, (int)((int64_t)n * t / nt), (int)((int64_t)n * (t + 1) / nt));
        }
    }
    if (x) {
        double total = 0.0;
        for (int r = 0; r < n; r++)
            total += b->row_sse[r];
        *sse = total;
    }
}

void husai_sae_decode(const husai_sae *m, husai_sae_batch *b) {
    decode_rows(m, b, NULL, NULL);
}

husai_status husai_sae_forward(const husai_sae *m, const float *x, int n, husai_sae_mode mode, double coeff,
                               husai_sae_batch *b, husai_sae_loss *loss) {
    husai_status st = husai_sae_encode(m, x, n, mode, b);
    if (st) return st;
    double sse = 0.0;
    decode_rows(m, b, x, &sse);
    const int d = m->d_model;
    const size_t total = (size_t)n * (size_t)d;
    memset(loss, 0, sizeof *loss);
    loss->mse = sse / (double)total;
    loss->recon = loss->mse;
    if (m->nested) {
        const int P = m->spec.n_prefixes;
        double sum = 0.0;
        for (int r = 0; r < n; r++)
            for (int l = 0; l < P; l++)
                sum += sq_err(b->g_xhat + ((size_t)r * P + l) * d, x + (size_t)r * d, (size_t)d);
        loss->recon = sum / ((double)total * P);
    }
    const int64_t nnz = b->row_ptr[n];
    loss->l0 = (double)nnz / n;
    loss->sparsity = m->ops->sparsity ? m->ops->sparsity(m, b, loss->l0) : 0.0;
    loss->total = loss->recon + coeff * loss->sparsity;
    return HUSAI_OK;
}
