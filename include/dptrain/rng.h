/* A small, fast, reproducible random number generator (xoshiro256**, seeded by splitmix64).
 * Everything random in dptrain (initial weights, epoch permutations) draws from one of these,
 * seeded from the config's seed, so a run is reproducible bit for bit. */
#ifndef DPTRAIN_RNG_H
#define DPTRAIN_RNG_H

#include <stdint.h>

typedef struct {
  uint64_t s[4];
} dp_rng;

/* Seeds from a seed and a stream number (e.g. the epoch), so streams are independent. */
void dp_rng_seed(dp_rng *r, uint64_t seed, uint64_t stream);
uint64_t dp_rng_next(dp_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double dp_rng_uniform(dp_rng *r);
/* Standard normal (Box-Muller; the second value is discarded to keep the state simple). */
double dp_rng_normal(dp_rng *r);
/* Uniform integer in [0, n), without modulo bias. */
uint64_t dp_rng_below(dp_rng *r, uint64_t n);

#endif
