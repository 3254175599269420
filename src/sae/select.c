/* select.c: top-k selection, the kernel of the topk and matryoshka rules and of AuxK: per-row top-k over
 * order-preserving integer keys (branch-free counting, bounded search), its one-pass form for small k
 * (the bf16 path's candidate sets) and the candidates' ordering, packing to CSR, and the quickselect
 * husai_kth_largest. */
#include <math.h>
#include <string.h>

#include "sae/kernels.h"

/* Value of the k-th largest of a[0..n) (1 <= k <= n), reordering a (Hoare quickselect, median-of-3
 * pivot). Expected O(n); terminates on any input, NaN included. */
float husai_kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1;
    const int target = k - 1; /* position in descending order */
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        float x = a[lo], y = a[mid], z = a[hi];
        const float p = x > y ? (y > z ? y : (x > z ? z : x)) : (x > z ? x : (y > z ? z : y));
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > p)
                i++;
            while (a[j] < p)
                j--;
            if (i <= j) {
                const float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j)
            hi = j;
        else if (target >= i)
            lo = i;
        else
            return a[target];
    }
    return a[target];
}

/* Top-k selection works on integer keys that order like the floats: a > b iff key(a) > key(b) and
 * a == b iff key(a) == key(b). NaN gets -inf's key (selection treats it as -inf) and -0 gets +0's (the
 * two compare equal as floats), so the set, the ties and the NaN rule are those of float comparisons.
 * Counting keys against a threshold is branch-free and vectorises; the quickselect it replaced spent
 * most of its time on mispredicted branches. */
static inline int32_t order_key(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) u = 0xff800000u;
    if (u == 0x80000000u) u = 0;
    return (int32_t)(u & 0x80000000u ? u ^ 0x7fffffffu : u);
}

/* The float of a key (key_value(order_key(x)) == x up to NaN and -0); NaN above +inf's key. */
static inline float key_value(int64_t key) {
    const uint32_t u = key < 0 ? (uint32_t)key ^ 0x7fffffffu : (uint32_t)key;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

HUSAI_INLINE int count_ge(const int32_t *key, int n, int32_t t) {
    int c = 0;
    for (int j = 0; j < n; j++)
        c += key[j] >= t;
    return c;
}

/* A row's top k: every key above thr, then the first `ties` keys equal to thr (in position order). */
typedef struct {
    int32_t thr;
    int ties;
} topk_cut;

/* Smallest and largest of key[0..n), n >= 1. */
HUSAI_INLINE void key_range(const int32_t *key, int n, int32_t *mn, int32_t *mx) {
    int32_t lo = key[0], hi = key[0];
    for (int j = 1; j < n; j++) {
        lo = key[j] < lo ? key[j] : lo;
        hi = key[j] > hi ? key[j] : hi;
    }
    *mn = lo;
    *mx = hi;
}

/* The search for the top k of key[0..n) (1 <= k <= n): a bracket [lo, hi) of thresholds keeping
 * count(key >= lo) = c_lo >= k > count(key >= hi) = c_hi, narrowed by counting at probes. The first
 * probes interpolate the count linearly between the bracket's floats, which typically ends the search
 * in about four counts; then the float midpoint, and after 24 probes the key midpoint, which bound the
 * total by 56 whatever the values. A count of exactly k ends the search (no ties to break), as does
 * k - 1 (the k-th is then the largest key below the probe: one more pass), as does a bracket of one
 * key. */
typedef struct {
    int64_t lo, hi;
    int c_lo, c_hi, it;
} cut_search;

/* A search over keys within [mn, mx]. */
HUSAI_INLINE cut_search cut_start(int n, int32_t mn, int32_t mx) {
    return (cut_search){mn, (int64_t)mx + 1, n, 0, 0};
}

/* The next probe, strictly inside the bracket (which holds more than one key). */
HUSAI_INLINE int32_t cut_probe(const cut_search *cs, int k) {
    int64_t mid = cs->lo + (cs->hi - cs->lo) / 2;
    const float lf = key_value(cs->lo), hf = key_value(cs->hi);
    if (cs->it < 24 && isfinite(lf) && isfinite(hf)) {
        const float f = cs->it < 6 ? ((float)(cs->c_lo - k) + 0.5f) / (float)(cs->c_lo - cs->c_hi) : 0.5f;
        const int32_t kt = order_key(lf * (1.0f - f) + hf * f);
        if (kt > cs->lo && kt < cs->hi) mid = kt;
    }
    return (int32_t)mid;
}

/* Takes count c = count(key >= t) at probe t; returns 1 with *out set when the search is over. */
HUSAI_INLINE int cut_update(cut_search *cs, const int32_t *key, int n, int k, int32_t t, int c,
                            topk_cut *out) {
    cs->it++;
    if (c == k) {
        *out = (topk_cut){t - 1, 0}; /* t > lo >= INT32_MIN */
        return 1;
    }
    if (c == k - 1) {
        int32_t below = INT32_MIN;
        for (int j = 0; j < n; j++) {
            const int32_t in = -(int32_t)(key[j] < t); /* masks, not ?:, so that it vectorises */
            const int32_t q = (key[j] & in) | (INT32_MIN & ~in);
            below = q > below ? q : below;
        }
        /* below > INT32_MIN: some key is below t, and every key is above INT32_MIN. A unique k-th needs
         * no tie-breaking. */
        *out = count_ge(key, n, below) == k ? (topk_cut){below - 1, 0} : (topk_cut){below, 1};
        return 1;
    }
    if (c > k) {
        cs->lo = t;
        cs->c_lo = c;
    } else {
        cs->hi = t;
        cs->c_hi = c;
    }
    if (cs->hi - cs->lo > 1) return 0;
    *out = (topk_cut){(int32_t)cs->lo, k - cs->c_hi};
    return 1;
}

/* The top k of key[0..n) (1 <= k <= n; keys within [mn, mx]). */
HUSAI_INLINE topk_cut kth_cut(const int32_t *key, int n, int k, int32_t mn, int32_t mx) {
    cut_search cs = cut_start(n, mn, mx);
    topk_cut out = {mn, k}; /* all keys equal */
    if (mn == mx) return out;
    for (;;) {
        const int32_t t = cut_probe(&cs, k);
        if (cut_update(&cs, key, n, k, t, count_ge(key, n, t), &out)) return out;
    }
}

/* kth_cut of two rows at once, key0 and key1 (n each): their searches are independent chains of
 * count-then-decide, which interleaved keep the core busy while each waits on its own. */
HUSAI_INLINE void kth_cut2(const int32_t *key0, const int32_t *key1, int n, int k, const int32_t mn[2],
                           const int32_t mx[2], topk_cut out[2]) {
    cut_search cs0 = cut_start(n, mn[0], mx[0]), cs1 = cut_start(n, mn[1], mx[1]);
    out[0] = (topk_cut){mn[0], k};
    out[1] = (topk_cut){mn[1], k};
    int done0 = mn[0] == mx[0], done1 = mn[1] == mx[1];
    while (!done0 && !done1) {
        const int32_t t0 = cut_probe(&cs0, k), t1 = cut_probe(&cs1, k);
        int c0 = 0, c1 = 0;
        for (int j = 0; j < n; j++) {
            c0 += key0[j] >= t0;
            c1 += key1[j] >= t1;
        }
        done0 = cut_update(&cs0, key0, n, k, t0, c0, &out[0]);
        done1 = cut_update(&cs1, key1, n, k, t1, c1, &out[1]);
    }
    for (; !done0;) {
        const int32_t t = cut_probe(&cs0, k);
        done0 = cut_update(&cs0, key0, n, k, t, count_ge(key0, n, t), &out[0]);
    }
    for (; !done1;) {
        const int32_t t = cut_probe(&cs1, k);
        done1 = cut_update(&cs1, key1, n, k, t, count_ge(key1, n, t), &out[1]);
    }
}

/* Writes the cut's k entries of key[0..n) in position order: their latents (pos[a], or a without pos)
 * into idx, their values pre[latent] into val. Each block of 32 keys becomes a bit mask (vectorised
 * compares) whose set bits are walked, so the work is per kept entry, not per key. */
HUSAI_INLINE void take_top(const int32_t *key, const int32_t *pos, int n, topk_cut cut, int k,
                           const float *pre, int32_t *idx, float *val) {
    int ties = cut.ties, m = 0;
    for (int a0 = 0; m < k; a0 += 32) {
        const int len = n - a0 < 32 ? n - a0 : 32;
        uint32_t gt = 0, eq = 0;
        if (len == 32) {
            for (int i = 0; i < 32; i++)
                gt |= (uint32_t)(key[a0 + i] > cut.thr) << i;
        } else {
            for (int i = 0; i < len; i++)
                gt |= (uint32_t)(key[a0 + i] > cut.thr) << i;
        }
        if (ties > 0)
            for (int i = 0; i < len; i++)
                eq |= (uint32_t)(key[a0 + i] == cut.thr) << i;
        for (uint32_t bits = gt | eq; bits; bits &= bits - 1) {
            const int i = __builtin_ctz(bits);
            if (eq >> i & 1) {
                if (ties == 0) continue; /* the lower-positioned ties are already in */
                ties--;
            }
            const int32_t j = pos ? pos[a0 + i] : a0 + i;
            idx[m] = j;
            val[m++] = pre[j];
        }
    }
}

/* Whether topk_row selects over the whole row (short rows) rather than bounding it first. */
static int topk_direct(int d_sae, int k) {
    return d_sae < 32 * (int64_t)k;
}

/* Selects the k top entries of one row (signed; ties to the lower index, NaN as -inf) into idx, in
 * ascending index order, and their values into val. scratch holds d_sae floats (used as int32 keys).
 * Long rows first bound the answer from below: the k-th largest of the maxima of G >= k strided
 * groups is at most the row's k-th largest (k distinct groups each hold an entry at least as large),
 * so one pass keeps just the entries at or above it, about k of them for G = 8k, and the exact
 * selection runs on those. Short rows, and long rows whose bound leaves too many entries, select
 * over the whole row. */
HUSAI_MULTIVERSION
void husai_topk_row(const float *pre, int d_sae, int k, int32_t *idx, float *val, float *scratch) {
    int32_t *key = (int32_t *)scratch;
    const int G = 8 * k;
    if (!topk_direct(d_sae, k)) {
        int32_t *gmax = key, *ck = key + G;
        const int cap = (d_sae - G) / 2;
        int32_t *ci = ck + cap;
        for (int g = 0; g < G; g++)
            gmax[g] = order_key(pre[g]);
        for (int j0 = G; j0 < d_sae; j0 += G) {
            const int len = d_sae - j0 < G ? d_sae - j0 : G;
            for (int g = 0; g < len; g++) {
                const int32_t kj = order_key(pre[j0 + g]);
                gmax[g] = kj > gmax[g] ? kj : gmax[g];
            }
        }
        int32_t mn, mx;
        key_range(gmax, G, &mn, &mx);
        const topk_cut gcut = kth_cut(gmax, G, k, mn, mx);
        const int32_t bound = gcut.ties ? gcut.thr : gcut.thr + 1; /* <= the k-th largest maximum */
        if (bound > order_key(-INFINITY)) {
            /* bound is a float above -inf, so comparing floats against it leaves NaN out as -inf would be. */
            const float t = key_value(bound);
            int c = 0;
            for (int j0 = 0; j0 < d_sae && c >= 0; j0 += 32) {
                const int end = d_sae - j0 < 32 ? d_sae : j0 + 32;
                int any = 0;
                for (int j = j0; j < end; j++)
                    any |= pre[j] >= t;
                if (!any) continue;
                for (int j = j0; j < end; j++)
                    if (pre[j] >= t) {
                        if (c == cap) {
                            c = -1;
                            break;
                        }
                        ck[c] = order_key(pre[j]);
                        ci[c++] = j;
                    }
            }
            if (c >= k) {
                key_range(ck, c, &mn, &mx);
                take_top(ck, ci, c, kth_cut(ck, c, k, mn, mx), k, pre, idx, val);
                return;
            }
        }
    }
    int32_t mn = INT32_MAX, mx = INT32_MIN;
    for (int j = 0; j < d_sae; j++) {
        key[j] = order_key(pre[j]);
        mn = key[j] < mn ? key[j] : mn;
        mx = key[j] > mx ? key[j] : mx;
    }
    take_top(key, NULL, d_sae, kth_cut(key, d_sae, k, mn, mx), k, pre, idx, val);
}

/* Entries of a scan's candidate list with key >= lo, kept in order (branch-free); returns their count. */
HUSAI_INLINE int keep_from(int32_t *ck, int32_t *ci, int c, int32_t lo) {
    int kept = 0;
    for (int a = 0; a < c; a++) {
        ck[kept] = ck[a];
        ci[kept] = ci[a];
        kept += ck[a] >= lo;
    }
    return kept;
}

/* Fetches the next `count` lines of f, from row *row, byte *off on, into L2 only (hint 2): they are used a
 * row later, and in L1 they would push out the scan's own stream. */
HUSAI_INLINE void fetch_lines(const husai_fetch *f, int *row, size_t *off, int count) {
    for (; count > 0 && *row < f->n; count--) {
        __builtin_prefetch(f->base + (size_t)f->rows[*row] * f->row_bytes + *off, 0, 2);
        *off += 64;
        if (*off >= f->row_bytes) {
            *off = 0;
            ++*row;
        }
    }
}

/* One pass of the scan from threshold t (a float, -inf or a key's value): the list (ck keys, ci positions,
 * ascending, room for cap) gets every entry above t, and when it fills, t rises to the k-th largest key in
 * it and the list keeps the keys at or above it. Returns the list's length, or -1 when it cannot narrow
 * (cap entries tied at the threshold). Blocks of 32 become bit masks of the entries above t (vectorised
 * compares) whose set bits are walked, so the work is per taken entry; `also` is fetched meanwhile. */
HUSAI_INLINE int scan_pass(const float *pre, int d_sae, int k, int cap, float t, int32_t *ck, int32_t *ci,
                           const husai_fetch *also) {
    int c = 0, f_row = 0, per = 0;
    size_t f_off = 0;
    if (also && also->n > 0) { /* spread evenly over the blocks, so both streams stay in flight */
        const int64_t lines = (int64_t)also->n * (int64_t)((also->row_bytes + 63) / 64),
                      blocks = (d_sae + 31) / 32;
        per = (int)((lines + blocks - 1) / blocks);
    }
    for (int j0 = 0; j0 < d_sae; j0 += 32) {
        if (per) fetch_lines(also, &f_row, &f_off, per);
        const int len = d_sae - j0 < 32 ? d_sae - j0 : 32;
        uint32_t above = 0;
        __builtin_prefetch(pre + j0 + 1024); /* 4 KB ahead: the walk's branches stall the hardware's */
        __builtin_prefetch(pre + j0 + 1040);
        if (len == 32) {
            for (int i = 0; i < 32; i++)
                above |= (uint32_t)(pre[j0 + i] > t) << i;
        } else {
            for (int i = 0; i < len; i++)
                above |= (uint32_t)(pre[j0 + i] > t) << i;
        }
        for (; above; above &= above - 1) {
            const int j = j0 + __builtin_ctz(above);
            if (c == cap) {
                int32_t mn, mx;
                key_range(ck, c, &mn, &mx);
                const topk_cut cut = kth_cut(ck, c, k, mn, mx);
                const int32_t lo = cut.ties ? cut.thr : cut.thr + 1; /* the k-th largest key */
                c = keep_from(ck, ci, c, lo);
                t = key_value(lo);
                if (c == cap) return -1; /* all tied at the threshold */
                if (!(pre[j] > t)) continue;
            }
            ck[c] = order_key(pre[j]);
            ci[c++] = j;
        }
    }
    return c;
}

/* The scan. After a pass from threshold t0, every entry left out of the list is <= the pass's final
 * threshold t, and if the list holds k entries, the row's k-th largest is above t0 and at or above t. If
 * t never rose, the list is every entry above t0: the top k is in it, ties included. If it rose, the list
 * has every entry above t, and the entries equal to t it lacks all come after k entries at or above t that
 * it has (t rose to the k-th largest key of the list, which kept those), so with ties to the lower position
 * they are never needed. Either way the top k of the list is the row's. Comparing floats against t =
 * key_value(key) orders like the keys (NaN is above nothing, -0 equals +0).
 * t0 comes from a sample, the row's first d_sae / 32 entries (contiguous, so it costs a few lines, and
 * latents' order is arbitrary): its r-th largest with r = 2 mu + 6, mu = the sample's expected count above
 * the row's k-th largest (k / d_sae of it), so that t0 lies below the k-th largest but for about one row in
 * 10^4 (Poisson tail; such a row passes again from -inf). About 32 r entries then enter the list, against
 * all of the first 4k and ~k ln(d_sae / 4k) more from -inf, and the list rarely fills. Rows with fewer than k
 * entries above -inf (NaN, -inf) or more than 8k ties at the threshold take the general path. */
HUSAI_MULTIVERSION
void husai_topk_row_scan(const float *pre, int d_sae, int k, int32_t *idx, float *val, float *scratch,
                         const husai_fetch *also) {
    const int cap = 8 * k, ns = d_sae / 32;
    if (d_sae < 4 * cap || ns > 2 * cap) {
        husai_topk_row(pre, d_sae, k, idx, val, scratch);
        return;
    }
    int32_t *ck = (int32_t *)scratch, *ci = ck + cap, mn, mx;
    for (int a = 0; a < ns; a++) /* the sample, in ck and ci until the pass */
        ck[a] = order_key(pre[a]);
    const int r = (int)(2 * (int64_t)ns * k / d_sae) + 6;
    float t0 = -INFINITY;
    if (r <= ns) {
        key_range(ck, ns, &mn, &mx);
        const topk_cut cut = kth_cut(ck, ns, r, mn, mx);
        t0 = key_value(cut.ties ? cut.thr : cut.thr + 1);
    }
    int c = scan_pass(pre, d_sae, k, cap, t0, ck, ci, also);
    if (c >= 0 && c < k && t0 > -INFINITY) c = scan_pass(pre, d_sae, k, cap, -INFINITY, ck, ci, NULL);
    if (c < k) { /* the list gave up, or fewer than k entries are above -inf (NaN, -inf) */
        husai_topk_row(pre, d_sae, k, idx, val, scratch);
        return;
    }
    key_range(ck, c, &mn, &mx);
    take_top(ck, ci, c, kth_cut(ck, c, k, mn, mx), k, pre, idx, val);
}

/* Each pair's place is counted (how many go before it: branch-free, vectorised compares, n^2 / 8 steps
 * for a few dozen pairs) and the pairs are moved along the permutation's cycles, so no copy is needed. */
HUSAI_MULTIVERSION
void husai_sort_pairs(int32_t *id, float *val, float *val2, int n, int by_value, int32_t *scratch) {
    int32_t *key = scratch, *place = scratch + n;
    for (int a = 0; a < n; a++)
        key[a] = by_value ? order_key(val[a]) : id[a];
    for (int a = 0; a < n; a++) {
        const int32_t ka = key[a];
        int before = 0;
        if (by_value)
            for (int b = 0; b < n; b++)
                before += (key[b] > ka) | ((key[b] == ka) & (b < a));
        else
            for (int b = 0; b < n; b++)
                before += (key[b] < ka) | ((key[b] == ka) & (b < a));
        place[a] = before;
    }
    for (int a = 0; a < n; a++)
        while (place[a] != a) {
            const int t = place[a];
            const int32_t ti = id[a];
            const float tv = val[a];
            id[a] = id[t];
            id[t] = ti;
            val[a] = val[t];
            val[t] = tv;
            if (val2) {
                const float tw = val2[a];
                val2[a] = val2[t];
                val2[t] = tw;
            }
            place[a] = place[t];
            place[t] = t;
        }
}

/* topk_row for two short rows (topk_direct) at once, their searches interleaved; scratch holds
 * 2 * d_sae floats. */
HUSAI_MULTIVERSION
static void topk_rows2(const float *pre0, const float *pre1, int d_sae, int k, int32_t *idx0, float *val0,
                       int32_t *idx1, float *val1, float *scratch) {
    int32_t *key0 = (int32_t *)scratch, *key1 = key0 + d_sae;
    int32_t mn[2] = {INT32_MAX, INT32_MAX}, mx[2] = {INT32_MIN, INT32_MIN};
    for (int j = 0; j < d_sae; j++) {
        key0[j] = order_key(pre0[j]);
        key1[j] = order_key(pre1[j]);
        mn[0] = key0[j] < mn[0] ? key0[j] : mn[0];
        mx[0] = key0[j] > mx[0] ? key0[j] : mx[0];
        mn[1] = key1[j] < mn[1] ? key1[j] : mn[1];
        mx[1] = key1[j] > mx[1] ? key1[j] : mx[1];
    }
    topk_cut cut[2];
    kth_cut2(key0, key1, d_sae, k, mn, mx, cut);
    take_top(key0, NULL, d_sae, cut[0], k, pre0, idx0, val0);
    take_top(key1, NULL, d_sae, cut[1], k, pre1, idx1, val1);
}

int husai_topk_keep(int32_t *id, float *v, int k, int relu) {
    if (!relu) return k;
    int kept = 0;
    for (int a = 0; a < k; a++)
        if (v[a] > 0.0f) {
            id[kept] = id[a];
            v[kept++] = v[a];
        }
    return kept;
}

void husai_select_topk_rows(const husai_sae *m, int r0, int r1, husai_sae_batch *b, float *scratch) {
    const int s = m->d_sae, k = m->k, relu = m->spec.relu;
    for (int r = r0; r < r1;) {
        const int rows = topk_direct(s, k) && r + 1 < r1 ? 2 : 1; /* short rows go two at a time */
        int32_t *id = b->idx + (size_t)r * k;
        float *v = b->val + (size_t)r * k;
        if (rows == 2)
            topk_rows2(b->pre + (size_t)r * s, b->pre + (size_t)(r + 1) * s, s, k, id, v, id + k, v + k,
                       scratch);
        else
            husai_topk_row(b->pre + (size_t)r * s, s, k, id, v, scratch);
        for (int q = 0; q < rows; q++, r++)
            b->row_ptr[r + 1] = husai_topk_keep(id + q * k, v + q * k, k, relu);
    }
}

/* Turns the per-row counts into CSR offsets, moving each row's codes down behind the previous row's (never
 * past unread ones: a row's codes start at or after its offset). */
husai_status husai_codes_topk(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b) {
    (void)mode;
    const int k = m->k;
    int64_t nnz = 0;
    for (int r = 0; r < n; r++) {
        const int64_t c = b->row_ptr[r + 1], from = (int64_t)r * k;
        b->row_ptr[r] = nnz;
        if (nnz != from) {
            memmove(b->idx + nnz, b->idx + from, (size_t)c * sizeof(int32_t));
            memmove(b->val + nnz, b->val + from, (size_t)c * sizeof(float));
        }
        nnz += c;
    }
    b->row_ptr[n] = nnz;
    return HUSAI_OK;
}
