/* Bad inputs and threads for the inference library, used by tests/cli/test_infer.sh:
 *   infer_checks CKPT_A CKPT_B X.csv N_ROWS TRUNCATED FOREIGN
 * X.csv holds N_ROWS rows of raw features for both checkpoints' models (the same n_in). Prints one
 * "ok - ..." or "FAIL - ..." line per check; exits 1 after a failure. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dptrain/error.h>
#include <dptrain/infer.h>

static int failed;

static void check(int cond, const char *what, const char *detail) {
  printf("%s - %s%s%s\n", cond ? "ok" : "FAIL", what, detail ? ": " : "", detail ? detail : "");
  failed |= !cond;
}

static float *read_rows(const char *path, int64_t n, int64_t d) {
  FILE *f = fopen(path, "r");
  float *x = malloc(sizeof(float) * (size_t)(n * d));
  char line[1 << 16];
  int64_t i = 0;
  while (f && i < n && fgets(line, sizeof line, f)) {
    char *p = line, *end;
    strtod(p, &end);
    if (end == p)
      continue;
    for (int64_t j = 0; j < d; j++) {
      x[i * d + j] = strtof(p, &end);
      p = end + strspn(end, ",; \t");
    }
    i++;
  }
  if (f)
    fclose(f);
  return x;
}

typedef struct {
  const char *ckpt;
  const float *x;
  int64_t n;
  float *y;
  int rc;
} job;

/* Opens its own handle (opens race with the other thread's) and predicts the rows 20 times. */
static void *run_job(void *arg) {
  job *j = arg;
  dp_infer *m;
  j->rc = dp_infer_open(j->ckpt, &m);
  for (int k = 0; k < 20 && j->rc == 0; k++)
    j->rc = dp_infer_predict(m, j->x, j->n, j->y);
  dp_infer_close(m);
  return NULL;
}

static void threads(const char *a, const char *b, const float *x, int64_t n, int64_t out_a, int64_t out_b) {
  job j[2] = {{a, x, n, malloc(sizeof(float) * (size_t)(n * out_a)), 0},
              {b, x, n, malloc(sizeof(float) * (size_t)(n * out_b)), 0}};
  float *seq[2] = {malloc(sizeof(float) * (size_t)(n * out_a)), malloc(sizeof(float) * (size_t)(n * out_b))};
  for (int t = 0; t < 2; t++) { /* sequential reference */
    job s = j[t];
    s.y = seq[t];
    run_job(&s);
  }
  pthread_t th[2];
  for (int t = 0; t < 2; t++)
    pthread_create(&th[t], NULL, run_job, &j[t]);
  for (int t = 0; t < 2; t++)
    pthread_join(th[t], NULL);
  check(j[0].rc == 0 && j[1].rc == 0, "two handles in two threads succeed", j[0].rc || j[1].rc ? dp_infer_last_error() : NULL);
  check(!memcmp(j[0].y, seq[0], sizeof(float) * (size_t)(n * out_a)) &&
            !memcmp(j[1].y, seq[1], sizeof(float) * (size_t)(n * out_b)),
        "two threads give the sequential outputs bit for bit", NULL);
  for (int t = 0; t < 2; t++)
    free(j[t].y), free(seq[t]);
}

static void bad_files(const char *truncated, const char *foreign) {
  dp_infer *m = (dp_infer *)&failed;
  int rc = dp_infer_open("/nonexistent/ckpt.h5", &m);
  check(rc < 0 && !m && strstr(dp_infer_last_error(), "/nonexistent/ckpt.h5"), "a missing checkpoint is an error naming it",
        dp_infer_last_error());
  rc = dp_infer_open(truncated, &m);
  check(rc == DP_ECKPT && !m && strstr(dp_infer_last_error(), truncated), "a truncated checkpoint is DP_ECKPT naming it",
        dp_infer_last_error());
  rc = dp_infer_open(foreign, &m);
  check(rc == DP_ECKPT && !m && strstr(dp_infer_last_error(), "not a dptrain checkpoint"),
        "a foreign HDF5 file is DP_ECKPT", dp_infer_last_error());
  check(dp_infer_open(NULL, &m) == DP_EINVAL && dp_infer_open(truncated, NULL) == DP_EINVAL, "NULL arguments to open",
        dp_infer_last_error());
}

static void bad_rows(dp_infer *m, const float *x, int64_t n, int64_t d, int64_t k) {
  float *y = malloc(sizeof(float) * (size_t)(n * k)), *bad = malloc(sizeof(float) * (size_t)(n * d));
  y[0] = 42.0f;
  check(dp_infer_predict(m, x, 0, y) == 0 && y[0] == 42.0f, "n = 0 succeeds and writes nothing", NULL);
  check(dp_infer_predict(m, NULL, 0, NULL) == 0, "n = 0 with NULL arrays", NULL);
  check(dp_infer_predict(m, x, -1, y) == DP_EINVAL, "n < 0 is DP_EINVAL", dp_infer_last_error());
  check(dp_infer_predict(NULL, x, 1, y) == DP_EINVAL, "a NULL handle is DP_EINVAL", dp_infer_last_error());
  memcpy(bad, x, sizeof(float) * (size_t)(n * d));
  bad[3 * d + 1] = NAN;
  int rc = dp_infer_predict(m, bad, n, y);
  check(rc == DP_EINVAL && strstr(dp_infer_last_error(), "row 3, feature 1 is NaN"), "a NaN row is an error naming it",
        dp_infer_last_error());
  bad[3 * d + 1] = INFINITY;
  rc = dp_infer_predict(m, bad, n, y);
  check(rc == DP_EINVAL && strstr(dp_infer_last_error(), "row 3, feature 1 is infinite"), "an Inf likewise",
        dp_infer_last_error());
  check(dp_infer_predict(m, x, n, y) == 0, "the handle works after a failure", dp_infer_last_error());
  free(y);
  free(bad);
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: infer_checks CKPT_A CKPT_B X.csv N_ROWS TRUNCATED FOREIGN\n");
    return 2;
  }
  int64_t n = atoll(argv[4]), d, k, d_b, k_b;
  dp_infer *a, *b;
  if (dp_infer_open(argv[1], &a) < 0 || dp_infer_open(argv[2], &b) < 0) {
    fprintf(stderr, "infer_checks: %s\n", dp_infer_last_error());
    return 1;
  }
  dp_infer_dims(a, &d, &k);
  dp_infer_dims(b, &d_b, &k_b);
  float *x = read_rows(argv[3], n, d);
  bad_files(argv[5], argv[6]);
  bad_rows(a, x, n, d, k);
  dp_infer_close(a);
  dp_infer_close(b);
  threads(argv[1], argv[2], x, n, k, k_b);
  dp_infer_close(NULL);
  free(x);
  return failed;
}
