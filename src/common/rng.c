#include "common/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* FNV-1a: a stable hash of the purpose name, so streams are named rather than numbered. */
static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

void husai_rng_init(husai_rng *r, uint64_t seed, const char *purpose, uint64_t index) {
    /* Chain the three key parts through splitmix so that nearby seeds or indices give unrelated states. */
    uint64_t x = seed;
    uint64_t k = splitmix64(&x);
    x = k ^ fnv1a(purpose);
    k = splitmix64(&x);
    x = k ^ index;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1; /* all-zero state is a fixed point */
}

static inline uint64_t rotl(uint64_t v, int k) {
    return (v << k) | (v >> (64 - k));
}

uint64_t husai_rng_u64(husai_rng *r) {
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double husai_rng_uniform(husai_rng *r) {
    return (double)(husai_rng_u64(r) >> 11) * 0x1.0p-53;
}

double husai_rng_normal(husai_rng *r) {
    double u1 = husai_rng_uniform(r);
    double u2 = husai_rng_uniform(r);
    /* 1 - u1 lies in (0, 1], so the log is finite. */
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

uint64_t husai_rng_below(husai_rng *r, uint64_t n) {
    unsigned __int128 m = (unsigned __int128)husai_rng_u64(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t t = (0 - n) % n;
        while (lo < t) {
            m = (unsigned __int128)husai_rng_u64(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

void husai_rng_permutation(husai_rng *r, uint32_t *idx, size_t n) {
    for (size_t i = 0; i < n; i++)
        idx[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)husai_rng_below(r, i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
