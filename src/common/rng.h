/* rng.h: husai's native random streams.
 * Every stream is keyed by (seed, purpose, index) and derived by hashing, never from
 * the rank or the number of ranks, so a seed's init, data order and baseline are the
 * same wherever it runs. Generator: xoshiro256** seeded through splitmix64.
 * defines: husai_rng, husai_rng_init, husai_rng_u64, husai_rng_uniform, husai_rng_normal,
 *          husai_rng_below, husai_rng_permutation, HUSAI_RNG_* (stream names) */
#ifndef HUSAI_RNG_H
#define HUSAI_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} husai_rng;

/* Stream purposes; the names are part of the reproducibility contract: renaming one changes results. */
#define HUSAI_RNG_INIT "init"
#define HUSAI_RNG_SHUFFLE "shuffle"
#define HUSAI_RNG_RANDOM_BASELINE "random"
#define HUSAI_RNG_BOOTSTRAP "bootstrap"
#define HUSAI_RNG_CHUNK_ORDER "chunk-order"

/* Seeds r with the stream for (seed, purpose, index); equal keys give equal streams on any machine. */
void husai_rng_init(husai_rng *r, uint64_t seed, const char *purpose, uint64_t index);

/* Returns the next 64 uniformly distributed bits. */
uint64_t husai_rng_u64(husai_rng *r);

/* Returns a double uniform on [0, 1) with 53 random bits. */
double husai_rng_uniform(husai_rng *r);

/* Returns a standard normal deviate (Box-Muller, one value per call, no hidden cache). */
double husai_rng_normal(husai_rng *r);

/* Returns an integer uniform on [0, n) without modulo bias (Lemire's method); n must be > 0. */
uint64_t husai_rng_below(husai_rng *r, uint64_t n);

/* Fills idx[0..n) with a uniformly random permutation of 0..n-1 (Fisher-Yates). */
void husai_rng_permutation(husai_rng *r, uint32_t *idx, size_t n);

#endif
