/* Inference with a trained dptrain model, from C, C++ or Fortran (the module `dptrain`,
 * src/fortran/dptrain.f90). Link with `pkg-config --cflags --libs dptrain`.
 *
 * A handle holds the model of one checkpoint (ckpt-<step>.h5 or best.h5) in evaluation mode (batch
 * norm on its running statistics) and the input transform training applied (the data file's scale,
 * the standardisation), so x is raw features as the data file stores them. No MPI is needed: it works
 * in a plain program, and inside an MPI program (no communication). Separate handles may be used from
 * separate threads at once; one handle must not be used by two threads at once. The library never
 * prints and never exits: a failure returns a negative DP_E code (include/dptrain/error.h) and
 * dp_infer_last_error gives its message, per thread. BLAS runs with the caller's OpenBLAS thread
 * setting (OPENBLAS_NUM_THREADS or openblas_set_num_threads), which the library leaves alone. */
#ifndef DPTRAIN_INFER_H
#define DPTRAIN_INFER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_infer dp_infer;

/* Reads the model and its input transform from a checkpoint (every dataset's checksum and hash
 * verified). 0 with *model set, or a negative DP_E code with *model NULL. */
int dp_infer_open(const char *checkpoint_path, dp_infer **model);
/* Features per input row and outputs per row. */
void dp_infer_dims(const dp_infer *model, int64_t *n_in, int64_t *n_out);
/* y (n, n_out) for x (n, n_in), both row-major: class probabilities (softmax) for a classifier, the
 * outputs for `mse`. n = 0 does nothing. A row holding NaN or Inf is an error naming the row and the
 * feature (DP_EINVAL); y is then unspecified. */
int dp_infer_predict(dp_infer *model, const float *x, int64_t n, float *y);
/* Frees the handle (NULL is fine). */
void dp_infer_close(dp_infer *model);
/* The message of this thread's last failure ("" when none). */
const char *dp_infer_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
