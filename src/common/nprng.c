#include "common/nprng.h"

/* SeedSequence constants (numpy/random/bit_generator.pyx); all arithmetic is mod 2^32. */
#define SS_INIT_A 0x43b0d7e5u
#define SS_MULT_A 0x931e8875u
#define SS_INIT_B 0x8b51f9ddu
#define SS_MULT_B 0x58f38dedu
#define SS_MIX_L 0xca01f9ddu
#define SS_MIX_R 0x4973f715u
#define SS_POOL 4

/* PCG64's 128-bit LCG multiplier, built from halves because C has no 128-bit literals. */
#define PCG_MULT (((unsigned __int128)0x2360ED051FC65DA4ULL << 64) | 0x4385DF649FCCF645ULL)

/* The running constant `h` is shared by every hashmix call while the pool is built; that
 * carried state is what makes numpy's pool differ from hashing each word independently. */
static uint32_t hashmix(uint32_t v, uint32_t *h) {
    v ^= *h;
    *h *= SS_MULT_A;
    v *= *h;
    v ^= v >> 16;
    return v;
}

static uint32_t mix(uint32_t x, uint32_t y) {
    uint32_t r = SS_MIX_L * x - SS_MIX_R * y;
    r ^= r >> 16;
    return r;
}

/* SeedSequence(seed).generate_state(4, uint64) for a non-negative integer seed. */
static void seed_sequence(uint64_t seed, uint64_t words[4]) {
    /* numpy splits the integer into 32-bit words, least significant first, keeping at least one. */
    uint32_t entropy[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const int n_entropy = (seed >> 32) ? 2 : 1;

    uint32_t pool[SS_POOL];
    uint32_t h = SS_INIT_A;
    for (int i = 0; i < SS_POOL; i++)
        pool[i] = hashmix(i < n_entropy ? entropy[i] : 0u, &h);
    for (int src = 0; src < SS_POOL; src++)
        for (int dst = 0; dst < SS_POOL; dst++)
            if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src], &h));
    /* Entropy beyond the pool size would be mixed in here; a 64-bit seed never has more than 2 words. */

    uint32_t out[8];
    uint32_t g = SS_INIT_B;
    for (int i = 0; i < 8; i++) {
        uint32_t v = pool[i % SS_POOL] ^ g;
        g *= SS_MULT_B;
        v *= g;
        v ^= v >> 16;
        out[i] = v;
    }
    /* numpy views the uint32 array as little-endian uint64. */
    for (int j = 0; j < 4; j++)
        words[j] = (uint64_t)out[2 * j] | ((uint64_t)out[2 * j + 1] << 32);
}

void husai_nprng_seed(husai_nprng *g, uint64_t seed) {
    uint64_t w[4];
    seed_sequence(seed, w);
    const unsigned __int128 initstate = ((unsigned __int128)w[0] << 64) | w[1];
    const unsigned __int128 initseq = ((unsigned __int128)w[2] << 64) | w[3];
    /* pcg_setseq_128_srandom_r: the increment must be odd, and the seed enters between two steps. */
    g->inc = (initseq << 1) | 1u;
    g->state = 0;
    g->state = g->state * PCG_MULT + g->inc;
    g->state += initstate;
    g->state = g->state * PCG_MULT + g->inc;
    g->has_uint32 = 0;
    g->uinteger = 0;
}

uint64_t husai_nprng_next64(husai_nprng *g) {
    /* numpy steps first and outputs the new state (XSL-RR: xor the halves, rotate by the top 6 bits). */
    g->state = g->state * PCG_MULT + g->inc;
    const uint64_t x = (uint64_t)(g->state >> 64) ^ (uint64_t)g->state;
    const unsigned rot = (unsigned)(g->state >> 122);
    return (x >> rot) | (x << ((64u - rot) & 63u));
}

uint32_t husai_nprng_next32(husai_nprng *g) {
    if (g->has_uint32) {
        g->has_uint32 = 0;
        return g->uinteger;
    }
    const uint64_t next = husai_nprng_next64(g);
    g->has_uint32 = 1;
    g->uinteger = (uint32_t)(next >> 32);
    return (uint32_t)next;
}

uint32_t husai_nprng_index(husai_nprng *g, uint32_t n) {
    /* numpy's range is n - 1; a zero range returns 0 without consuming the stream. */
    if (n <= 1) return 0;
    uint64_t m = (uint64_t)husai_nprng_next32(g) * n;
    uint32_t leftover = (uint32_t)m;
    if (leftover < n) {
        /* (2^32 - n) mod n, written as numpy does it: (UINT32_MAX - (n - 1)) % n. */
        const uint32_t threshold = (UINT32_MAX - (n - 1)) % n;
        while (leftover < threshold) {
            m = (uint64_t)husai_nprng_next32(g) * n;
            leftover = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}
