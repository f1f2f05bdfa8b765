#include "dptrain/comm.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dptrain/error.h"

static int mpi_fail(int rc, const char *call, const char *file, int line) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return dp_fail(DP_EMPI, "%s failed at %s:%d: %s", call, file, line, msg);
}

#define MPI_TRY(call)                                  \
  do {                                                 \
    int mpi_rc_ = (call);                              \
    if (mpi_rc_ != MPI_SUCCESS)                        \
      return mpi_fail(mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

/* ---- the collective watchdog ---- */

/* What the main thread is waiting in, and since when; read by the watchdog thread. Plain volatile
 * fields suffice: the watchdog only needs a roughly current view, never an exact one. */
static struct {
  volatile double since;   /* 0: not in a collective */
  const char *volatile what;
  volatile long long step;
  double timeout;
  int rank;
  pthread_t thread;
  int running;
} watch;

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *watchdog(void *arg) {
  (void)arg;
  for (;;) {
    nanosleep(&(struct timespec){.tv_sec = 0, .tv_nsec = 100000000}, NULL);
    double since = watch.since;
    if (since > 0 && mono() - since > watch.timeout) {
      /* The job cannot go on: this rank exits, and the launcher ends the others (no hang). */
      fprintf(stderr,
              "dptrain: error: rank %d: step %lld: %s did not complete within %g s ([train] collective_timeout): "
              "another rank is stuck or dead; ending the job\n",
              watch.rank, watch.step, watch.what, watch.timeout);
      fflush(stderr);
      _exit(1);
    }
  }
  return NULL;
}

int dp_comm_set_timeout(dp_comm *c, double seconds) {
  watch.timeout = seconds;
  watch.rank = c->rank;
  if (seconds <= 0 || watch.running)
    return 0;
  if (pthread_create(&watch.thread, NULL, watchdog, NULL) != 0)
    return dp_fail(DP_EINVAL, "collective_timeout: cannot start the watchdog thread");
  pthread_detach(watch.thread);
  watch.running = 1;
  return 0;
}

void dp_comm_set_step(long long step) { watch.step = step; }

static void watch_begin(const char *what) {
  watch.what = what;
  watch.since = mono();
}

static void watch_end(void) { watch.since = 0; }

#define WATCHED(what, call)  \
  do {                       \
    watch_begin(what);       \
    int rc_ = (call);        \
    watch_end();             \
    if (rc_ < 0)             \
      return rc_;            \
  } while (0)

int dp_comm_init(dp_comm *c, MPI_Comm parent) {
  memset(c, 0, sizeof *c);
  c->comm = MPI_COMM_NULL;
  MPI_TRY(MPI_Comm_dup(parent, &c->comm));
  MPI_TRY(MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN));
  MPI_TRY(MPI_Comm_rank(c->comm, &c->rank));
  MPI_TRY(MPI_Comm_size(c->comm, &c->size));
  MPI_Comm node;
  MPI_TRY(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
  MPI_Comm_rank(node, &c->node_rank);
  MPI_Comm_size(node, &c->node_size);
  MPI_Comm_free(&node);
  int leader = c->node_rank == 0;
  MPI_TRY(MPI_Allreduce(&leader, &c->n_nodes, 1, MPI_INT, MPI_SUM, c->comm));
  return 0;
}

void dp_comm_free(dp_comm *c) {
  if (c->comm != MPI_COMM_NULL)
    MPI_Comm_free(&c->comm);
  c->comm = MPI_COMM_NULL;
}

/* MPI counts are int: long buffers go in pieces. */
static int allreduce_chunks(dp_comm *c, void *buf, size_t n, size_t elem, MPI_Datatype t) {
  char *p = buf;
  while (n > 0) {
    int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
    MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, p, k, t, MPI_SUM, c->comm));
    p += (size_t)k * elem;
    n -= (size_t)k;
  }
  return 0;
}

int dp_comm_allreduce_f32(dp_comm *c, float *buf, size_t n) {
  WATCHED("an allreduce", allreduce_chunks(c, buf, n, sizeof(float), MPI_FLOAT));
  return 0;
}

int dp_comm_allreduce_grads(dp_comm *c, float *buf, size_t n) {
  WATCHED("the gradient allreduce", allreduce_chunks(c, buf, n, sizeof(float), MPI_FLOAT));
  return 0;
}

int dp_comm_allreduce_f64(dp_comm *c, double *buf, size_t n) {
  WATCHED("an allreduce of statistics", allreduce_chunks(c, buf, n, sizeof(double), MPI_DOUBLE));
  return 0;
}

static int max_f64(dp_comm *c, double *buf, int n) {
  MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_MAX, c->comm));
  return 0;
}

int dp_comm_allreduce_max_f64(dp_comm *c, double *buf, int n) {
  WATCHED("an allreduce (max)", max_f64(c, buf, n));
  return 0;
}

static int bcast(dp_comm *c, void *buf, size_t bytes, int root);

int dp_comm_bcast(dp_comm *c, void *buf, size_t bytes, int root) {
  WATCHED("a broadcast", bcast(c, buf, bytes, root));
  return 0;
}

static int bcast(dp_comm *c, void *buf, size_t bytes, int root) {
  char *p = buf;
  while (bytes > 0) {
    int k = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
    MPI_TRY(MPI_Bcast(p, k, MPI_BYTE, root, c->comm));
    p += k;
    bytes -= (size_t)k;
  }
  return 0;
}

int dp_comm_iallreduce_f32(dp_comm *c, float *buf, size_t n, MPI_Request *req) {
  *req = MPI_REQUEST_NULL;
  if (n > (size_t)INT_MAX)
    return dp_fail(DP_EMPI, "gradient bucket of %zu floats: more than MPI's int count", n);
  MPI_TRY(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, c->comm, req));
  return 0;
}

int dp_comm_test_all(dp_comm *c, MPI_Request *req, int n) {
  int done;
  (void)c;
  MPI_TRY(MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE));
  return 0;
}

static int wait_all(MPI_Request *req, int n) {
  MPI_TRY(MPI_Waitall(n, req, MPI_STATUSES_IGNORE));
  return 0;
}

int dp_comm_wait_all(dp_comm *c, MPI_Request *req, int n) {
  (void)c;
  WATCHED("the gradient allreduce", wait_all(req, n));
  return 0;
}

int dp_comm_agree(dp_comm *c, int status, int *reporter) {
  /* MINLOC over (failing rank, its code): every rank learns the lowest failing rank and its code. */
  int mine[2] = {status < 0 ? c->rank : c->size, status}, first[2];
  watch_begin("the agreement on errors");
  int rc = MPI_Allreduce(mine, first, 1, MPI_2INT, MPI_MINLOC, c->comm);
  watch_end();
  if (rc != MPI_SUCCESS)
    return mpi_fail(rc, "MPI_Allreduce", __FILE__, __LINE__);
  if (reporter)
    *reporter = first[0] < c->size ? first[0] : -1;
  if (first[0] == c->size)
    return 0;
  dp_error_set_reporter(first[0]);
  /* All ranks return the reporter's code, so they all exit with the same status. */
  return first[1];
}

void dp_split_range(int64_t n, int r, int size, int64_t *lo, int64_t *hi) {
  int64_t q = n / size, rem = n % size;
  *lo = r * q + (r < rem ? r : rem);
  *hi = *lo + q + (r < rem ? 1 : 0);
}
