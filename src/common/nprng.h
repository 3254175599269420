/* nprng.h: a bit-exact reimplementation of numpy's default_rng(seed) (SeedSequence ->
 * PCG64 XSL-RR) and of the bounded-integer rule numpy's Generator.integers/choice use,
 * so HUSAI's published bootstrap CIs can be reproduced exactly (DESIGN.md appendix A).
 * defines: husai_nprng, husai_nprng_seed, husai_nprng_next64, husai_nprng_next32, husai_nprng_index */
#ifndef HUSAI_NPRNG_H
#define HUSAI_NPRNG_H

#include <stdint.h>

typedef struct {
    unsigned __int128 state, inc;
    int has_uint32;    /* a buffered high half is pending */
    uint32_t uinteger; /* the buffered high half */
} husai_nprng;

/* Seeds like numpy.random.default_rng(seed) for a non-negative integer seed. */
void husai_nprng_seed(husai_nprng *g, uint64_t seed);

/* Returns the next 64-bit output of PCG64 (numpy's bit_generator.random_raw()). */
uint64_t husai_nprng_next64(husai_nprng *g);

/* Returns the next 32-bit output, buffering the high half of a 64-bit draw as numpy does. */
uint32_t husai_nprng_next32(husai_nprng *g);

/* Returns an index uniform on [0, n) exactly as numpy's Generator.choice/integers draw it; 1 <= n < 2^32. */
uint32_t husai_nprng_index(husai_nprng *g, uint32_t n);

#endif
