#include "metrics/features.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/pwmcc.h"

int husai_features_default_min_seeds(int S) {
    return S - 1 > 2 ? S - 1 : 2;
}

void husai_features_release(husai_features *f) {
    free(f->best_cos);
    free(f->best_index);
    free(f->mean_best);
    free(f->cluster);
    free(f->consensus);
    free(f->members);
    free(f->n_members);
    free(f->coherence);
    free(f->density);
    free(f->stability);
    f->best_cos = f->mean_best = f->consensus = f->coherence = f->density = f->stability = NULL;
    f->best_index = f->cluster = f->members = f->n_members = NULL;
}

void husai_features_free(husai_features *f) {
    husai_features_release(f);
    memset(f, 0, sizeof *f);
}

husai_status husai_features_init(husai_features *f, int S, int d_model, int d_sae) {
    memset(f, 0, sizeof *f);
    if (S < 1 || d_model < 1 || d_sae < 1 || (size_t)S * d_sae > INT32_MAX)
        return husai_error(HUSAI_ERR_ARG,
                           "per-feature stability needs S >= 1 decoders of positive shape "
                           "(got %d of %d x %d)",
                           S, d_model, d_sae);
    const size_t n = (size_t)S * S * d_sae;
    f->best_cos = calloc(n, sizeof(float));
    f->best_index = calloc(n, sizeof(int32_t));
    if (!f->best_cos || !f->best_index) {
        husai_features_free(f);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate best matches for %d seeds x %d features", S,
                           d_sae);
    }
    f->S = S;
    f->d_model = d_model;
    f->d_sae = d_sae;
    for (int s = 0; s < S; s++)
        for (int i = 0; i < d_sae; i++) {
            f->best_cos[((size_t)s * S + s) * d_sae + i] = 1.0f;
            f->best_index[((size_t)s * S + s) * d_sae + i] = i;
        }
    return HUSAI_OK;
}

void husai_features_place_pairs(husai_features *f, const int *pq, long n, const float *pair_cos,
                                const int32_t *pair_index) {
    const int S = f->S;
    const size_t d = (size_t)f->d_sae;
    for (long k = 0; k < n; k++) {
        const int p = pq[2 * k], q = pq[2 * k + 1];
        const size_t at = (size_t)k * 2 * d, pq_at = ((size_t)p * S + q) * d, qp_at = ((size_t)q * S + p) * d;
        memcpy(f->best_cos + pq_at, pair_cos + at, d * sizeof(float));
        memcpy(f->best_cos + qp_at, pair_cos + at + d, d * sizeof(float));
        memcpy(f->best_index + pq_at, pair_index + at, d * sizeof(int32_t));
        memcpy(f->best_index + qp_at, pair_index + at + d, d * sizeof(int32_t));
    }
}

husai_status husai_features_place(husai_features *f, int part, int n_parts, const float *pair_cos,
                                  const int32_t *pair_index) {
    const long n = husai_pwmcc_part_pairs(f->S, part, n_parts);
    int *pq = malloc(((size_t)n + 1) * 2 * sizeof(int));
    if (!pq) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate the best-match pair list");
    husai_pwmcc_block_pairs(f->S, f->S, -1, part, n_parts, pq);
    husai_features_place_pairs(f, pq, n, pair_cos, pair_index);
    free(pq);
    return HUSAI_OK;
}

husai_status husai_features_best(husai_features *f, const float *F, int S, int d_model, int d_sae,
                                 double *M) {
    husai_status st = husai_features_init(f, S, d_model, d_sae);
    if (st != HUSAI_OK) return st;
    /* In S - 1 parts of about S / 2 pairs, so the pair buffers stay O(S d_sae) beside the tensors. */
    const int parts = S > 1 ? S - 1 : 1;
    const long most = husai_pwmcc_part_pairs(S, 0, parts);
    float *pc = malloc(((size_t)most * 2 * d_sae + 1) * sizeof(float));
    int32_t *pi = malloc(((size_t)most * 2 * d_sae + 1) * sizeof(int32_t));
    double *Mp = malloc((size_t)S * S * sizeof(double));
    if (!pc || !pi || !Mp) st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate best-match buffers");
    if (M && st == HUSAI_OK) memset(M, 0, (size_t)S * S * sizeof(double));
    for (int part = 0; part < parts && st == HUSAI_OK; part++) {
        st = husai_pwmcc_rows_part_best(F, S, d_model, d_sae, part, parts, Mp, pc, pi);
        if (st != HUSAI_OK) break;
        if ((st = husai_features_place(f, part, parts, pc, pi))) break;
        /* Each entry is set by one part and 0 in the others, so the sum is exact. */
        for (size_t e = 0; M && e < (size_t)S * S; e++)
            M[e] += Mp[e];
    }
    free(pc);
    free(pi);
    free(Mp);
    if (st != HUSAI_OK) husai_features_free(f);
    return st;
}

/* A mutual match at |cos| >= tau between the features with keys a < b (key = seed rank * d_sae + index). */
typedef struct {
    float cos;
    uint32_t a, b;
} feat_edge;

static int cmp_edge(const void *x, const void *y) {
    const feat_edge *e = x, *g = y;
    if (e->cos != g->cos) return e->cos > g->cos ? -1 : 1;
    if (e->a != g->a) return e->a < g->a ? -1 : 1;
    return (e->b > g->b) - (e->b < g->b);
}

static int cmp_u64(const void *x, const void *y) {
    const uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

static uint32_t uf_find(uint32_t *parent, uint32_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* Masks of seed positions (W 64-bit words each) with how many features or clusters share each, so a
 * bootstrap draw costs one popcount per distinct mask, not per feature. */
typedef struct {
    int W, S, d_sae, min_seeds;
    double stable;
    uint64_t *hit;     /* per seed position: its features' masks of the other seeds matching at tau */
    int64_t *hit_mult; /* multiplicities; hit_n[s] distinct masks of seed s start at hit_off[s] */
    size_t *hit_off, *hit_n;
    uint64_t *clu; /* masks of the clusters with two or more members, clu_n distinct, with multiplicities */
    int64_t *clu_mult;
    size_t clu_n;
    uint64_t *level; /* scratch: level k (k = 0 ..) holds the seeds drawn more than k times */
} boot_masks;

/* Sorts n one-word masks and folds equal ones into (mask, multiplicity); returns the distinct count. Masks
 * of more words are kept one by one. */
static size_t fold_masks(uint64_t *m, int64_t *mult, size_t n, int W) {
    if (W != 1) {
        for (size_t i = 0; i < n; i++)
            mult[i] = 1;
        return n;
    }
    qsort(m, n, sizeof *m, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && m[u - 1] == m[i]) {
            mult[u - 1]++;
            continue;
        }
        m[u] = m[i];
        mult[u++] = 1;
    }
    return u;
}

/* Fills bm->level from count and returns the number of levels (the largest count). */
static int draw_levels(boot_masks *bm, const int *count) {
    int top = 0;
    for (int s = 0; s < bm->S; s++)
        if (count[s] > top) top = count[s];
    memset(bm->level, 0, (size_t)top * bm->W * sizeof(uint64_t));
    for (int s = 0; s < bm->S; s++)
        for (int k = 0; k < count[s]; k++)
            bm->level[(size_t)k * bm->W + s / 64] |= 1ull << (s % 64);
    return top;
}

/* Drawn positions whose seed is in mask m: the sum over levels of the seeds of m drawn more than k times. */
static int drawn_in(const boot_masks *bm, const uint64_t *m, int top, int *distinct) {
    int n = 0;
    for (int k = 0; k < top; k++)
        for (int w = 0; w < bm->W; w++) {
            const int c = __builtin_popcountll(m[w] & bm->level[(size_t)k * bm->W + w]);
            n += c;
            if (k == 0) *distinct += c;
        }
    return n;
}

/* Share of the drawn features that are stable: a feature of drawn seed a counts count[a] times, and its
 * stability is over the drawn positions of the other seeds (copies of a agree with a trivially). */
static double stat_stable(const int *count, void *ctx) {
    boot_masks *bm = ctx;
    const int top = draw_levels(bm, count);
    double stable = 0.0;
    for (int a = 0; a < bm->S; a++) {
        if (!count[a]) continue;
        const int others = bm->S - count[a];
        int64_t n = 0;
        for (size_t u = 0; u < bm->hit_n[a]; u++) {
            int distinct = 0;
            const uint64_t *m = bm->hit + (bm->hit_off[a] + u) * bm->W;
            if ((double)drawn_in(bm, m, top, &distinct) >= bm->stable * others)
                n += bm->hit_mult[bm->hit_off[a] + u];
        }
        stable += (double)count[a] * (double)n;
    }
    return stable / ((double)bm->S * bm->d_sae);
}

/* Consensus features of a draw: clusters whose members' seeds fill at least min_seeds drawn positions, from
 * two or more distinct seeds (a repeated seed alone agrees with itself). Clusters are those of the whole
 * sample; the draw changes which seeds are present. */
static double stat_consensus(const int *count, void *ctx) {
    boot_masks *bm = ctx;
    const int top = draw_levels(bm, count);
    int64_t n = 0;
    for (size_t u = 0; u < bm->clu_n; u++) {
        int distinct = 0;
        const int drawn = drawn_in(bm, bm->clu + u * bm->W, top, &distinct);
        if (distinct >= 2 && drawn >= bm->min_seeds) n += bm->clu_mult[u];
    }
    return (double)n;
}

static void boot_masks_free(boot_masks *bm) {
    free(bm->hit);
    free(bm->hit_mult);
    free(bm->hit_off);
    free(bm->hit_n);
    free(bm->clu);
    free(bm->clu_mult);
    free(bm->level);
}

/* The statistics' intervals: masks from f's tensors and clusters (roots[] gives each feature key's cluster
 * root, size its member count), then one seed bootstrap per statistic. */
static husai_status feature_stats(husai_features *f, const int *order, const uint32_t *roots,
                                  const uint32_t *size, const husai_boot_opts *bo) {
    const int S = f->S, d = f->d_sae, W = (S + 63) / 64;
    const size_t N = (size_t)S * d;
    boot_masks bm = {.W = W, .S = S, .d_sae = d, .min_seeds = f->min_seeds, .stable = HUSAI_FEATURES_STABLE};
    bm.hit = calloc(N * W, sizeof(uint64_t));
    bm.hit_mult = malloc(N * sizeof(int64_t));
    bm.hit_off = malloc((size_t)S * sizeof(size_t));
    bm.hit_n = malloc((size_t)S * sizeof(size_t));
    bm.clu = calloc(N * W, sizeof(uint64_t));
    bm.clu_mult = malloc(N * sizeof(int64_t));
    bm.level = malloc((size_t)S * W * sizeof(uint64_t));
    if (!bm.hit || !bm.hit_mult || !bm.hit_off || !bm.hit_n || !bm.clu || !bm.clu_mult || !bm.level) {
        boot_masks_free(&bm);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate feature bootstrap masks");
    }
    for (int s = 0; s < S; s++) {
        uint64_t *m = bm.hit + (size_t)s * d * W;
        for (int t = 0; t < S; t++) {
            if (t == s) continue;
            const float *bc = f->best_cos + ((size_t)s * S + t) * d;
            for (int i = 0; i < d; i++)
                if (bc[i] >= f->tau) m[(size_t)i * W + t / 64] |= 1ull << (t % 64);
        }
        /* Folded in place: seed s's distinct masks stay at the start of its own span. */
        bm.hit_off[s] = (size_t)s * d;
        bm.hit_n[s] = fold_masks(m, bm.hit_mult + (size_t)s * d, (size_t)d, W);
    }
    /* Cluster masks over seed positions, one per root with two or more members. */
    uint32_t *slot = malloc(N * sizeof(uint32_t));
    if (!slot) {
        boot_masks_free(&bm);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate feature bootstrap masks");
    }
    size_t nc = 0;
    for (size_t k = 0; k < N; k++)
        slot[k] = roots[k] == k && size[k] >= 2 ? (uint32_t)nc++ : UINT32_MAX;
    for (size_t k = 0; k < N; k++) {
        const uint32_t c = slot[roots[k]];
        if (c == UINT32_MAX) continue;
        const int s = order[k / (size_t)d];
        bm.clu[(size_t)c * W + s / 64] |= 1ull << (s % 64);
    }
    free(slot);
    bm.clu_n = fold_masks(bm.clu, bm.clu_mult, nc, W);

    husai_feature_stats *out = &f->stats;
    husai_status st = husai_ci_seed_stat(S, stat_consensus, &bm, bo, &out->count);
    if (st == HUSAI_OK) st = husai_ci_seed_stat(S, stat_stable, &bm, bo, &out->stable_share);
    boot_masks_free(&bm);
    if (st != HUSAI_OK) return st;
    out->share = out->count;
    out->share.mean /= d;
    out->share.std /= d;
    out->share.lo /= d;
    out->share.hi /= d;
    return HUSAI_OK;
}

/* Positions sorted by seed id (positions themselves without ids); an error if two seeds share an id. */
static husai_status seed_order(const uint64_t *ids, int S, int *order) {
    for (int s = 0; s < S; s++)
        order[s] = s;
    if (!ids) return HUSAI_OK;
    for (int i = 1; i < S; i++)
        for (int j = i; j > 0 && ids[order[j - 1]] > ids[order[j]]; j--) {
            const int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    for (int i = 1; i < S; i++)
        if (ids[order[i - 1]] == ids[order[i]])
            return husai_error(HUSAI_ERR_ARG, "per-feature stability: seed %llu appears twice",
                               (unsigned long long)ids[order[i]]);
    return HUSAI_OK;
}

static double dot_rows(const float *a, const float *b, int d) {
    double s = 0.0;
    for (int k = 0; k < d; k++)
        s += (double)a[k] * b[k];
    return s;
}

husai_status husai_decoder_get(const husai_decoder_source *src, int s, size_t dd, float *scratch,
                               const float **out) {
    *out = src->all ? src->all + (size_t)s * dd : scratch;
    return src->all ? HUSAI_OK : src->load(src->ctx, s, scratch);
}

/* Direction, coherence and density of consensus feature c from its members' unit decoder columns (unit[s]:
 * seed s's member as husai_normalized_feature_rows makes it, the same bits as PWMCC's rows), visited in
 * seed-id order so the sums do not depend on seed positions; signs are aligned to the member with the
 * smallest key. acc holds d_model doubles, row S pointers. */
static void describe_consensus(husai_features *f, int c, const float *unit, const int *order,
                               const float *density, double *acc, const float **row) {
    const int S = f->S, dm = f->d_model, ds = f->d_sae;
    const int32_t *mem = f->members + (size_t)c * S;
    memset(acc, 0, (size_t)dm * sizeof(double));
    double coh = 0.0, dens = 0.0;
    int n = 0, pairs = 0;
    for (int r = 0; r < S; r++) {
        const int s = order[r];
        if (mem[s] < 0) continue;
        row[n] = unit + (size_t)s * dm;
        const double sign = dot_rows(row[0], row[n], dm) < 0.0 ? -1.0 : 1.0;
        for (int k = 0; k < dm; k++)
            acc[k] += sign * row[n][k];
        for (int m = 0; m < n; m++, pairs++)
            coh += fabs(dot_rows(row[m], row[n], dm));
        if (density) dens += density[(size_t)s * ds + mem[s]];
        n++;
    }
    double norm = 0.0;
    for (int k = 0; k < dm; k++)
        norm += acc[k] * acc[k];
    norm = fmax(sqrt(norm), 1e-12);
    for (int k = 0; k < dm; k++)
        f->consensus[(size_t)c * dm + k] = (float)(acc[k] / norm);
    f->coherence[c] = pairs ? (float)(coh / pairs) : NAN;
    f->density[c] = density ? (float)(dens / n) : NAN;
}

/* Every consensus feature's direction, coherence and density, C features at a time (C = d_sae / S, at
 * least 1): for each chunk every seed's decoder is fetched once and its members' columns made unit rows,
 * so at most one loaded decoder and S C d_model floats of rows are held, about two decoders whatever S.
 * A loaded decoder is fetched once per chunk, S ceil(n C^-1) loads in all. */
static husai_status describe_all(husai_features *f, const husai_decoder_source *src, const int *order,
                                 const float *density) {
    const int S = f->S, dm = f->d_model, ds = f->d_sae, n = f->n_consensus;
    const size_t dd = (size_t)dm * ds;
    const int C = ds / S > 1 ? ds / S : 1;
    const int chunk = n < C ? n : C;
    float *unit = malloc(((size_t)chunk * S * dm + 1) * sizeof(float));
    float *scratch = src->all ? NULL : malloc(dd * sizeof(float));
    double *acc = malloc((size_t)dm * sizeof(double));
    const float **row = malloc((size_t)S * sizeof *row);
    husai_status st = HUSAI_OK;
    if (!unit || (!src->all && !scratch) || !acc || !row)
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate the consensus features' member columns");
    for (int c0 = 0; c0 < n && !st; c0 += chunk) {
        const int c1 = c0 + chunk < n ? c0 + chunk : n;
        for (int s = 0; s < S && !st; s++) {
            const float *D;
            if ((st = husai_decoder_get(src, s, dd, scratch, &D))) break;
            for (int c = c0; c < c1; c++) {
                const int32_t j = f->members[(size_t)c * S + s];
                if (j >= 0)
                    husai_unit_rows(D + j, 1, dm, 0, (size_t)ds, unit + ((size_t)(c - c0) * S + s) * dm);
            }
        }
        for (int c = c0; c < c1 && !st; c++)
            describe_consensus(f, c, unit + (size_t)(c - c0) * S * dm, order, density, acc, row);
    }
    free(unit);
    free(scratch);
    free(acc);
    free(row);
    return st;
}

husai_status husai_features_analyse(husai_features *f, const float *D, const uint64_t *seed_ids,
                                    const float *density, double tau, int min_seeds,
                                    const husai_boot_opts *bo) {
    const husai_decoder_source src = {.all = D};
    return husai_features_analyse_src(f, D ? &src : NULL, seed_ids, density, tau, min_seeds, bo);
}

husai_status husai_features_analyse_src(husai_features *f, const husai_decoder_source *src,
                                        const uint64_t *seed_ids, const float *density, double tau,
                                        int min_seeds, const husai_boot_opts *bo) {
    const int S = f->S, d = f->d_sae;
    if (!min_seeds) min_seeds = husai_features_default_min_seeds(S);
    if (S < 2 || !f->best_cos)
        return husai_error(HUSAI_ERR_ARG, "per-feature stability needs 2 or more seeds");
    if (!(tau > 0.0 && tau <= 1.0))
        return husai_error(HUSAI_ERR_ARG, "features.tau=%g must be in (0, 1]", tau);
    if (min_seeds < 2 || min_seeds > S)
        return husai_error(HUSAI_ERR_ARG, "features.min_seeds=%d must be between 2 and the %d seeds",
                           min_seeds, S);
    f->tau = tau;
    f->min_seeds = min_seeds;
    const size_t N = (size_t)S * d;
    int *order = malloc((size_t)S * sizeof(int)), *rank_of = malloc((size_t)S * sizeof(int));
    f->stability = malloc(N * sizeof(float));
    f->mean_best = malloc(N * sizeof(float));
    f->cluster = malloc(N * sizeof(int32_t));
    uint32_t *parent = malloc(N * sizeof(uint32_t)), *size = malloc(N * sizeof(uint32_t));
    const int W = (S + 63) / 64;
    uint64_t *seeds = calloc(N * W, sizeof(uint64_t));
    feat_edge *edges = NULL;
    int32_t *index = NULL;
    husai_status st = HUSAI_OK;
    if (!order || !rank_of || !f->stability || !f->mean_best || !f->cluster || !parent || !size || !seeds) {
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate per-feature stability for %d seeds", S);
        goto out;
    }
    if ((st = seed_order(seed_ids, S, order))) goto out;
    for (int r = 0; r < S; r++)
        rank_of[order[r]] = r;

    for (int s = 0; s < S; s++)
        for (int i = 0; i < d; i++) {
            double sum = 0.0;
            int hits = 0;
            for (int r = 0; r < S; r++) {
                const int t = order[r];
                if (t == s) continue;
                const float v = f->best_cos[((size_t)s * S + t) * d + i];
                sum += v;
                hits += v >= tau;
            }
            f->stability[(size_t)s * d + i] = (float)hits / (float)(S - 1);
            f->mean_best[(size_t)s * d + i] = (float)(sum / (S - 1));
        }

    /* Mutual matches: at most one per feature and other seed. */
    size_t n_edges = 0;
    for (int pass = 0; pass < 2; pass++) {
        n_edges = 0;
        for (int p = 0; p < S; p++)
            for (int q = p + 1; q < S; q++) {
                const float *bc = f->best_cos + ((size_t)p * S + q) * d;
                const int32_t *bi = f->best_index + ((size_t)p * S + q) * d,
                              *back = f->best_index + ((size_t)q * S + p) * d;
                for (int i = 0; i < d; i++) {
                    const int32_t j = bi[i];
                    if (bc[i] < tau || back[j] != i) continue;
                    if (pass == 1) {
                        const uint32_t ka = (uint32_t)rank_of[p] * (uint32_t)d + (uint32_t)i,
                                       kb = (uint32_t)rank_of[q] * (uint32_t)d + (uint32_t)j;
                        edges[n_edges] = (feat_edge){bc[i], ka < kb ? ka : kb, ka < kb ? kb : ka};
                    }
                    n_edges++;
                }
            }
        if (pass == 0 && !(edges = malloc((n_edges + 1) * sizeof *edges))) {
            st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate %zu mutual matches", n_edges);
            goto out;
        }
    }
    f->n_mutual = (int)n_edges;
    qsort(edges, n_edges, sizeof *edges, cmp_edge);

    /* Union-find over feature keys; a root is its cluster's smallest key, and holds its seeds' bits. */
    for (size_t k = 0; k < N; k++) {
        parent[k] = (uint32_t)k;
        seeds[k * W + (k / d) / 64] = 1ull << ((k / d) % 64);
    }
    for (size_t e = 0; e < n_edges; e++) {
        uint32_t ra = uf_find(parent, edges[e].a), rb = uf_find(parent, edges[e].b);
        if (ra == rb) continue;
        int clash = 0;
        for (int w = 0; w < W; w++)
            clash |= (seeds[(size_t)ra * W + w] & seeds[(size_t)rb * W + w]) != 0;
        if (clash) continue;
        if (rb < ra) {
            const uint32_t x = ra;
            ra = rb;
            rb = x;
        }
        parent[rb] = ra;
        for (int w = 0; w < W; w++)
            seeds[(size_t)ra * W + w] |= seeds[(size_t)rb * W + w];
    }
    memset(size, 0, N * sizeof(uint32_t));
    for (size_t k = 0; k < N; k++)
        size[parent[k] = uf_find(parent, (uint32_t)k)]++;

    /* Consensus roots in their documented order: by decreasing member count, then by root key (the
     * smallest member key), as one sortable word each. */
    uint64_t *roots = malloc((N + 1) * sizeof(uint64_t));
    index = malloc(N * sizeof(int32_t));
    if (!roots || !index) {
        free(roots);
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate consensus features");
        goto out;
    }
    size_t n_roots = 0;
    for (size_t k = 0; k < N; k++)
        if (parent[k] == k && size[k] >= (uint32_t)min_seeds)
            roots[n_roots++] = (uint64_t)(UINT32_MAX - size[k]) << 32 | k;
    qsort(roots, n_roots, sizeof *roots, cmp_u64);
    const int n = f->n_consensus = (int)n_roots;
    f->consensus = malloc(((size_t)n * f->d_model + 1) * sizeof(float));
    f->members = malloc(((size_t)n * S + 1) * sizeof(int32_t));
    f->n_members = malloc(((size_t)n + 1) * sizeof(int32_t));
    f->coherence = malloc(((size_t)n + 1) * sizeof(float));
    f->density = malloc(((size_t)n + 1) * sizeof(float));
    if (!f->consensus || !f->members || !f->n_members || !f->coherence || !f->density) {
        free(roots);
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate %d consensus features", n);
        goto out;
    }
    for (size_t k = 0; k < N; k++)
        index[k] = -1;
    for (int c = 0; c < n; c++) {
        const uint32_t root = (uint32_t)(roots[c] & UINT32_MAX);
        index[root] = c;
        f->n_members[c] = (int32_t)size[root];
    }
    free(roots);
    for (size_t e = 0; e < (size_t)n * S; e++)
        f->members[e] = -1;
    for (size_t k = 0; k < N; k++) {
        const int s = order[k / (size_t)d], i = (int)(k % (size_t)d), c = index[parent[k]];
        f->cluster[(size_t)s * d + i] = c;
        if (c >= 0) f->members[(size_t)c * S + s] = i;
    }
    if (src && (st = describe_all(f, src, order, density))) goto out;
    for (int c = 0; c < n && !src; c++) {
        for (int k = 0; k < f->d_model; k++)
            f->consensus[(size_t)c * f->d_model + k] = NAN;
        f->coherence[c] = f->density[c] = NAN;
    }
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++) {
        f->stability_by_density[b] = 0.0;
        f->n_by_density[b] = 0;
    }
    for (size_t k = 0; density && k < N; k++) {
        const int b = husai_density_slot(density[k]);
        f->stability_by_density[b] += f->stability[k];
        f->n_by_density[b]++;
    }
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
        f->stability_by_density[b] =
            f->n_by_density[b] ? f->stability_by_density[b] / (double)f->n_by_density[b] : NAN;
    st = feature_stats(f, order, parent, size, bo);
out:
    free(order);
    free(rank_of);
    free(parent);
    free(size);
    free(seeds);
    free(edges);
    free(index);
    if (st != HUSAI_OK) {
        /* Nothing half-made: the caller keeps only the best-match tensors it passed in. */
        float *bc = f->best_cos;
        int32_t *bi = f->best_index;
        f->best_cos = NULL;
        f->best_index = NULL;
        const int S0 = f->S, dm0 = f->d_model, d0 = f->d_sae;
        husai_features_free(f);
        f->best_cos = bc;
        f->best_index = bi;
        f->S = S0;
        f->d_model = dm0;
        f->d_sae = d0;
    }
    return st;
}

husai_status husai_features_random_stats(const uint64_t *seeds, int S, int d_model, int d_sae, double tau,
                                         int min_seeds, const husai_boot_opts *bo, husai_feature_stats *out) {
    const size_t dd = (size_t)d_model * d_sae;
    float *F = malloc((size_t)S * dd * sizeof(float)), *raw = malloc(dd * sizeof(float));
    if (!F || !raw) {
        free(F);
        free(raw);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %d random decoders", S);
    }
    for (int s = 0; s < S; s++) {
        husai_pwmcc_random_decoder(seeds[s], d_model, d_sae, raw);
        husai_normalized_feature_rows(raw, d_model, d_sae, F + (size_t)s * dd);
    }
    free(raw);
    husai_features f;
    husai_status st = husai_features_best(&f, F, S, d_model, d_sae, NULL);
    if (st == HUSAI_OK) st = husai_features_analyse(&f, NULL, seeds, NULL, tau, min_seeds, bo);
    if (st == HUSAI_OK) *out = f.stats;
    husai_features_free(&f);
    free(F);
    return st;
}
