/* The inference library inside an MPI program (tests/cli/test_infer.sh): infer_mpi CKPT IN.csv OUT
 * Every rank opens its own handle and predicts the rows of IN.csv that are its share, then rank 0
 * gathers them and writes OUT as infer_csv does; the library itself makes no MPI call. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dptrain/infer.h>

static int64_t read_csv(const char *path, int64_t d, float **x) {
  FILE *f = fopen(path, "r");
  char line[1 << 16];
  int64_t n = 0, cap = 0;
  while (f && fgets(line, sizeof line, f)) {
    char *p = line, *end;
    strtod(p, &end);
    if (end == p)
      continue;
    if (n == cap)
      *x = realloc(*x, sizeof(float) * (size_t)((cap = cap ? 2 * cap : 1024) * d));
    for (int64_t j = 0; j < d; j++) {
      (*x)[n * d + j] = strtof(p, &end);
      p = end + strspn(end, ",; \t");
    }
    n++;
  }
  if (f)
    fclose(f);
  return n;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  dp_infer *m;
  if (argc != 4 || dp_infer_open(argv[1], &m) < 0) {
    fprintf(stderr, "infer_mpi: %s\n", argc != 4 ? "usage: infer_mpi CKPT IN.csv OUT.csv" : dp_infer_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int64_t d, k;
  dp_infer_dims(m, &d, &k);
  float *x = NULL;
  int64_t n = read_csv(argv[2], d, &x), lo = n * rank / size, hi = n * (rank + 1) / size;
  float *y = malloc(sizeof(float) * (size_t)(n * k + 1));
  if (dp_infer_predict(m, x + lo * d, hi - lo, y + lo * k) < 0) {
    fprintf(stderr, "infer_mpi: %s\n", dp_infer_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int *counts = malloc(sizeof(int) * (size_t)size), *displs = malloc(sizeof(int) * (size_t)size);
  for (int r = 0; r < size; r++) {
    displs[r] = (int)(n * r / size * k);
    counts[r] = (int)(n * (r + 1) / size * k) - displs[r];
  }
  MPI_Gatherv(rank ? y + lo * k : MPI_IN_PLACE, (int)((hi - lo) * k), MPI_FLOAT, y, counts, displs, MPI_FLOAT, 0,
              MPI_COMM_WORLD);
  if (rank == 0) {
    FILE *out = fopen(argv[3], "w");
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < k; j++)
        fprintf(out, "%.9g%c", y[i * k + j], j + 1 < k ? ',' : '\n');
    fclose(out);
  }
  dp_infer_close(m);
  free(x);
  free(y);
  free(counts);
  free(displs);
  MPI_Finalize();
  return 0;
}
