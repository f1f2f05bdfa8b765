/* Latency of the inference library (not a test: nothing here asserts a time). latency CKPT [REPS]
 * prints the median time of dp_infer_predict for 1 row and for 1000 rows, after a
 * warm-up. Build: cc tests/infer/latency.c $(pkg-config --cflags --libs dptrain) -o latency */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <dptrain/infer.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median_seconds(dp_infer *m, const float *x, int64_t n, float *y, int reps) {
  double *t = malloc(sizeof(double) * (size_t)reps);
  for (int r = -reps / 10 - 1; r < reps; r++) { /* the first tenth warms up */
    double t0 = now();
    dp_infer_predict(m, x, n, y);
    if (r >= 0)
      t[r] = now() - t0;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp);
  double med = t[reps / 2];
  free(t);
  return med;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: latency CKPT [REPS]\n");
    return 2;
  }
  int reps = argc > 2 ? atoi(argv[2]) : 1000;
  dp_infer *m;
  double t0 = now();
  if (dp_infer_open(argv[1], &m) < 0) {
    fprintf(stderr, "latency: %s\n", dp_infer_last_error());
    return 1;
  }
  double open_s = now() - t0;
  int64_t d, k;
  dp_infer_dims(m, &d, &k);
  float *x = malloc(sizeof(float) * (size_t)(1000 * d)), *y = malloc(sizeof(float) * (size_t)(1000 * k));
  for (int64_t i = 0; i < 1000 * d; i++)
    x[i] = (float)(i % 251);
  double one = median_seconds(m, x, 1, y, reps), many = median_seconds(m, x, 1000, y, reps / 10 + 1);
  printf("%s: %lld inputs, %lld outputs; open %.3f ms; 1 row %.1f us; 1000 rows %.3f ms (%.0f rows/s)\n", argv[1],
         (long long)d, (long long)k, 1e3 * open_s, 1e6 * one, 1e3 * many, 1000 / many);
  dp_infer_close(m);
  free(x);
  free(y);
  return 0;
}
