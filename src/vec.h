#ifndef DP_VEC_H
#define DP_VEC_H

/* The elementwise loops around the GEMMs (optimizer updates, activation and bias passes, batch
 * norm's sums, the input conversion) built twice on x86-64: for the SSE2 baseline and for AVX2,
 * the loader picking what the CPU runs. -O2 vectorises for the baseline only, and the 4-wide SGD
 * update took twice as long as the 8-wide one.
 * Both builds give the same bits: the loops are elementwise (a sum over rows still adds each
 * column's terms in row order) or integer ORs, and neither target has FMA, so no a * b + c is
 * contracted (GCC's C11 mode would not anyway). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__)
#define DP_VECTOR_LOOP __attribute__((target_clones("avx2", "default")))
#else
#define DP_VECTOR_LOOP
#endif

#endif
