/* The README's C example, used by tests/cli/test_infer.sh: infer_csv CKPT IN.csv OUT.csv
 * IN.csv holds one row of raw features per line (as `dptrain convert csv` reads them; columns after
 * the model's n_in, such as a label, are ignored); OUT.csv gets one row of outputs per input row.
 * Built against the installed library: cc infer_csv.c $(pkg-config --cflags --libs dptrain). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dptrain/infer.h>

/* The first n_in numbers of each line that starts with a number into x; returns the rows read. */
static int64_t read_csv(FILE *f, int64_t n_in, float **x) {
  char line[1 << 16];
  int64_t n = 0, cap = 0;
  while (fgets(line, sizeof line, f)) {
    char *p = line, *end;
    strtod(p, &end);
    if (end == p)
      continue; /* a header or a blank line */
    if (n == cap) {
      cap = cap ? 2 * cap : 1024;
      *x = realloc(*x, sizeof(float) * (size_t)(cap * n_in));
    }
    for (int64_t j = 0; j < n_in; j++) {
      (*x)[n * n_in + j] = strtof(p, &end);
      p = end + strspn(end, ",; \t");
    }
    n++;
  }
  return n;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: infer_csv CKPT IN.csv OUT.csv\n");
    return 2;
  }
  dp_infer *model;
  if (dp_infer_open(argv[1], &model) < 0) {
    fprintf(stderr, "infer_csv: %s\n", dp_infer_last_error());
    return 1;
  }
  int64_t n_in, n_out;
  dp_infer_dims(model, &n_in, &n_out);
  FILE *in = fopen(argv[2], "r"), *out = fopen(argv[3], "w");
  if (!in || !out) {
    fprintf(stderr, "infer_csv: cannot open %s or %s\n", argv[2], argv[3]);
    return 1;
  }
  float *x = NULL;
  int64_t n = read_csv(in, n_in, &x);
  float *y = malloc(sizeof(float) * (size_t)(n * n_out + 1));
  if (dp_infer_predict(model, x, n, y) < 0) {
    fprintf(stderr, "infer_csv: %s\n", dp_infer_last_error());
    return 1;
  }
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < n_out; k++)
      fprintf(out, "%.9g%c", y[i * n_out + k], k + 1 < n_out ? ',' : '\n');
  fclose(in);
  fclose(out);
  free(x);
  free(y);
  dp_infer_close(model);
  return 0;
}
