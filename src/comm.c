#include "dptrain/comm.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
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

/* One per communicator with a timeout (a sweep's group and the world each have their own), on the
 * heap so that copies of a dp_comm share it and the thread never touches the dp_comm itself. The
 * main thread writes what it waits in under the mutex; the thread checks it every 100 ms. */
struct dp_watch {
  pthread_mutex_t mu;
  pthread_cond_t wake; /* signalled to stop the thread at once instead of after its next check */
  double since;        /* 0: not in a collective */
  const char *what;
  long long step;
  double timeout;
  /* A known slow phase (dp_comm_slow_phase): its deadline (0: none) replaces timeout until the
   * first collective that completes after the phase ended, where every rank is past it. */
  const char *phase;
  double phase_timeout;
  int phase_ending;
  int rank;
  int stop;
  pthread_t thread;
};

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *watchdog(void *arg) {
  struct dp_watch *w = arg;
  pthread_mutex_lock(&w->mu);
  while (!w->stop) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += 100000000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&w->wake, &w->mu, &until);
    double limit = w->phase ? w->phase_timeout : w->timeout;
    if (!w->stop && w->since > 0 && limit > 0 && mono() - w->since > limit) {
      /* The job cannot go on: this rank exits, and the launcher ends the others (no hang). */
      fprintf(stderr,
              "dptrain: error: rank %d: step %lld: %s did not complete within %g s (%s%s): "
              "another rank is stuck or dead; ending the job\n",
              w->rank, w->step, w->what, limit, w->phase ? "the deadline for " : "[train] collective_timeout",
              w->phase ? w->phase : "");
      fflush(stderr);
      _exit(1);
    }
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

static void watch_stop(dp_comm *c) {
  struct dp_watch *w = c->watch;
  if (!w)
    return;
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_signal(&w->wake);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->wake);
  pthread_mutex_destroy(&w->mu);
  free(w);
  c->watch = NULL;
}

int dp_comm_set_timeout(dp_comm *c, double seconds) {
  struct dp_watch *w = c->watch;
  if (seconds <= 0) {
    watch_stop(c);
    return 0;
  }
  if (w) {
    pthread_mutex_lock(&w->mu);
    w->timeout = seconds;
    pthread_mutex_unlock(&w->mu);
    return 0;
  }
  w = calloc(1, sizeof *w);
  if (!w)
    return dp_fail(DP_ENOMEM, "collective_timeout: out of memory");
  w->timeout = seconds;
  w->rank = c->rank;
  pthread_condattr_t ca;
  int ok = pthread_condattr_init(&ca) == 0;
  ok = ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&w->wake, &ca) == 0;
  pthread_condattr_destroy(&ca);
  if (ok && pthread_mutex_init(&w->mu, NULL) != 0) {
    pthread_cond_destroy(&w->wake);
    ok = 0;
  }
  if (ok && pthread_create(&w->thread, NULL, watchdog, w) != 0) {
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->wake);
    ok = 0;
  }
  if (!ok) {
    free(w);
    return dp_fail(DP_EINVAL, "collective_timeout: cannot start the watchdog thread");
  }
  c->watch = w;
  return 0;
}

void dp_comm_set_step(dp_comm *c, long long step) {
  struct dp_watch *w = c->watch;
  if (!w)
    return;
  pthread_mutex_lock(&w->mu);
  w->step = step;
  pthread_mutex_unlock(&w->mu);
}

static void watch_set(dp_comm *c, const char *what, double since) {
  struct dp_watch *w = c->watch;
  if (!w)
    return;
  pthread_mutex_lock(&w->mu);
  if (what)
    w->what = what;
  if (since == 0 && w->phase_ending)
    w->phase = NULL, w->phase_ending = 0;
  w->since = since;
  pthread_mutex_unlock(&w->mu);
}

void dp_comm_slow_phase(dp_comm *c, const char *what, double seconds) {
  struct dp_watch *w = c->watch;
  if (!w)
    return;
  pthread_mutex_lock(&w->mu);
  w->phase = what;
  w->phase_timeout = seconds;
  w->phase_ending = 0;
  pthread_mutex_unlock(&w->mu);
}

void dp_comm_slow_phase_end(dp_comm *c) {
  struct dp_watch *w = c->watch;
  if (!w)
    return;
  pthread_mutex_lock(&w->mu);
  w->phase_ending = w->phase != NULL;
  pthread_mutex_unlock(&w->mu);
}

static void watch_begin(dp_comm *c, const char *what) { watch_set(c, what, mono()); }

static void watch_end(dp_comm *c) { watch_set(c, NULL, 0); }

#define WATCHED(what, call)  \
  do {                       \
    watch_begin(c, what);    \
    int rc_ = (call);        \
    watch_end(c);            \
    if (rc_ < 0)             \
      return rc_;            \
  } while (0)

int dp_comm_init(dp_comm *c, MPI_Comm parent) {
  memset(c, 0, sizeof *c);
  c->comm = c->node = c->cross = MPI_COMM_NULL; /* what dp_comm_free leaves alone if a call below fails */
  MPI_TRY(MPI_Comm_dup(parent, &c->comm));
  MPI_TRY(MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN));
  MPI_TRY(MPI_Comm_rank(c->comm, &c->rank));
  MPI_TRY(MPI_Comm_size(c->comm, &c->size));
  MPI_TRY(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &c->node));
  MPI_TRY(MPI_Comm_set_errhandler(c->node, MPI_ERRORS_RETURN));
  MPI_Comm_rank(c->node, &c->node_rank);
  MPI_Comm_size(c->node, &c->node_size);
  MPI_TRY(MPI_Comm_split(c->comm, c->node_rank, c->rank, &c->cross));
  MPI_TRY(MPI_Comm_set_errhandler(c->cross, MPI_ERRORS_RETURN));
  int leader = c->node_rank == 0, v[2] = {c->node_size, -c->node_size}, m[2];
  MPI_TRY(MPI_Allreduce(&leader, &c->n_nodes, 1, MPI_INT, MPI_SUM, c->comm));
  MPI_TRY(MPI_Allreduce(v, m, 2, MPI_INT, MPI_MIN, c->comm)); /* the largest as the smallest negation */
  c->node_size_min = m[0];
  c->node_size_max = -m[1];
  return 0;
}

void dp_comm_free(dp_comm *c) {
  watch_stop(c);
  MPI_Comm *own[] = {&c->cross, &c->node, &c->comm};
  for (int i = 0; i < 3; i++)
    if (*own[i] != MPI_COMM_NULL)
      MPI_Comm_free(own[i]);
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

static int node_barrier(dp_comm *c) {
  MPI_TRY(MPI_Barrier(c->node));
  return 0;
}

int dp_comm_node_barrier(dp_comm *c) {
  WATCHED("the node barrier", node_barrier(c));
  return 0;
}

static int allreduce_cross(dp_comm *c, float *buf, size_t n) {
  dp_comm across = *c;
  across.comm = c->cross;
  return allreduce_chunks(&across, buf, n, sizeof(float), MPI_FLOAT);
}

int dp_comm_allreduce_cross_f32(dp_comm *c, float *buf, size_t n) {
  WATCHED("the gradient allreduce across nodes", allreduce_cross(c, buf, n));
  return 0;
}

int dp_comm_allreduce_f64(dp_comm *c, double *buf, size_t n) {
  WATCHED("an allreduce of statistics", allreduce_chunks(c, buf, n, sizeof(double), MPI_DOUBLE));
  return 0;
}

int dp_comm_allreduce_i64(dp_comm *c, int64_t *buf, size_t n) {
  WATCHED("an allreduce of exact sums", allreduce_chunks(c, buf, n, sizeof(int64_t), MPI_INT64_T));
  return 0;
}

/* A ring: at step s every rank passes on its partial sum of one slice and adds its own part of the
 * next, except after the last step (the caller adds its part as it reads the sum). Open MPI 4.1's
 * MPI_Reduce_scatter_block of int64 (2 ranks, 4.3 MB) takes 3 times as long; integer sums are
 * exact, so the order of the additions does not matter. */
static int reduce_scatter_i64(dp_comm *c, const int64_t *all, int64_t *others, int64_t *work, int n_each) {
  int P = c->size, r = c->rank, right = (r + 1) % P, left = (r + P - 1) % P;
  const int64_t *send = all + (size_t)left * (size_t)n_each;
  for (int s = 0; s < P - 1; s++) {
    MPI_TRY(MPI_Sendrecv(send, n_each, MPI_INT64_T, right, 0, others, n_each, MPI_INT64_T, left, 0, c->comm,
                         MPI_STATUS_IGNORE));
    if (s == P - 2)
      break;
    const int64_t *own = all + (size_t)((r + 2 * P - s - 2) % P) * (size_t)n_each;
    for (int i = 0; i < n_each; i++)
      work[i] = (int64_t)((uint64_t)own[i] + (uint64_t)others[i]); /* wrap-around: see reprosum.c */
    send = work;
  }
  return 0;
}

int dp_comm_reduce_scatter_i64(dp_comm *c, const int64_t *all, int64_t *others, int64_t *work, int n_each) {
  WATCHED("the reduce-scatter of exact sums", reduce_scatter_i64(c, all, others, work, n_each));
  return 0;
}

static int alltoallv_f32(dp_comm *c, const float *send, const int *scounts, const int *sdispls, float *recv,
                         const int *rcounts, const int *rdispls) {
  MPI_TRY(MPI_Alltoallv(send, scounts, sdispls, MPI_FLOAT, recv, rcounts, rdispls, MPI_FLOAT, c->comm));
  return 0;
}

int dp_comm_alltoallv_f32(dp_comm *c, const float *send, const int *scounts, const int *sdispls, float *recv,
                          const int *rcounts, const int *rdispls) {
  WATCHED("the exchange of exact sums", alltoallv_f32(c, send, scounts, sdispls, recv, rcounts, rdispls));
  return 0;
}

static int allgatherv_f32(dp_comm *c, float *all, const int *counts, const int *displs) {
  MPI_TRY(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, counts, displs, MPI_FLOAT, c->comm));
  return 0;
}

int dp_comm_allgatherv_f32(dp_comm *c, float *all, const int *counts, const int *displs) {
  WATCHED("the allgather of exact sums", allgatherv_f32(c, all, counts, displs));
  return 0;
}

static int allgather_f64(dp_comm *c, const double *mine, double *all, int n_each) {
  MPI_TRY(MPI_Allgather(mine, n_each, MPI_DOUBLE, all, n_each, MPI_DOUBLE, c->comm));
  return 0;
}

int dp_comm_allgather_f64(dp_comm *c, const double *mine, double *all, int n_each) {
  WATCHED("an allgather of statistics", allgather_f64(c, mine, all, n_each));
  return 0;
}

/* One element of the datatype is a whole vector, so MPI never splits it: its first two int64 say how
 * many maxima follow and how long the vector is (the same on every rank). */
static void max_sum_op(void *in, void *inout, int *len, MPI_Datatype *type) {
  (void)type;
  const int64_t *a = in;
  int64_t *b = inout;
  for (int e = 0; e < *len; e++, a += b[1], b += b[1]) {
    for (int64_t i = 2; i < 2 + b[0]; i++)
      b[i] = a[i] > b[i] ? a[i] : b[i];
    for (int64_t i = 2 + b[0]; i < b[1]; i++)
      b[i] = (int64_t)((uint64_t)b[i] + (uint64_t)a[i]);
  }
}

/* On the stack: no allocation that one rank alone could fail before the collective. */
static int max_sum_i64(dp_comm *c, int64_t *buf, int n_max, int n_sum) {
  int n = 2 + n_max + n_sum;
  int64_t v[2 + DP_COMM_MAX_SUM];
  if (n_max < 0 || n_sum < 0 || n_max + n_sum > DP_COMM_MAX_SUM) /* alike on every rank */
    return dp_fail(DP_EINVAL, "an allreduce of %d int64: more than %d", n_max + n_sum, DP_COMM_MAX_SUM);
  v[0] = n_max, v[1] = n;
  memcpy(v + 2, buf, sizeof(int64_t) * (size_t)(n_max + n_sum));
  MPI_Datatype t;
  MPI_Op op;
  int rc = MPI_Type_contiguous(n, MPI_INT64_T, &t);
  if (rc == MPI_SUCCESS && (rc = MPI_Type_commit(&t)) == MPI_SUCCESS) {
    if ((rc = MPI_Op_create(max_sum_op, 1, &op)) == MPI_SUCCESS) {
      rc = MPI_Allreduce(MPI_IN_PLACE, v, 1, t, op, c->comm);
      MPI_Op_free(&op);
    }
    MPI_Type_free(&t);
  }
  memcpy(buf, v + 2, sizeof(int64_t) * (size_t)(n_max + n_sum));
  return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Allreduce", __FILE__, __LINE__);
}

int dp_comm_allreduce_max_sum_i64(dp_comm *c, int64_t *buf, int n_max, int n_sum) {
  WATCHED("an allreduce (max and sum)", max_sum_i64(c, buf, n_max, n_sum));
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

int dp_comm_bcast_leaders(dp_comm *c, void *buf, size_t bytes) {
  if (c->node_rank != 0)
    return 0;
  dp_comm leaders = *c;
  leaders.comm = c->cross;
  WATCHED("a broadcast", bcast(&leaders, buf, bytes, 0));
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

/* Counts and displacements in floats: a piece of predictions per rank stays far below INT_MAX. */
static int gather_f32(dp_comm *c, const float *mine, int n, float *all, const int *counts, const int *displs,
                      int root) {
  MPI_TRY(MPI_Gatherv(mine, n, MPI_FLOAT, all, counts, displs, MPI_FLOAT, root, c->comm));
  return 0;
}

int dp_comm_gatherv_f32(dp_comm *c, const float *mine, int n, float *all, const int *counts, const int *displs,
                        int root) {
  WATCHED("a gather", gather_f32(c, mine, n, all, counts, displs, root));
  return 0;
}

/* The node communicator is made again here rather than kept: this runs once, at start-up. */
static int node_allgather(dp_comm *c, const void *mine, void *all, size_t bytes) {
  if (bytes > (size_t)INT_MAX)
    return dp_fail(DP_EMPI, "node allgather of %zu bytes: more than MPI's int count", bytes);
  MPI_Comm node;
  MPI_TRY(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
  int rc = MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, node);
  MPI_Comm_free(&node);
  if (rc != MPI_SUCCESS)
    return mpi_fail(rc, "MPI_Allgather", __FILE__, __LINE__);
  return 0;
}

int dp_comm_node_allgather(dp_comm *c, const void *mine, void *all, size_t bytes) {
  WATCHED("an allgather on the node", node_allgather(c, mine, all, bytes));
  return 0;
}

int dp_comm_agree(dp_comm *c, int status, int *reporter) {
  /* MINLOC over (failing rank, its code): every rank learns the lowest failing rank and its code. */
  int mine[2] = {status < 0 ? c->rank : c->size, status}, first[2];
  watch_begin(c, "the agreement on errors");
  int rc = MPI_Allreduce(mine, first, 1, MPI_2INT, MPI_MINLOC, c->comm);
  watch_end(c);
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
