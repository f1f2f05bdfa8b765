/* Communication between ranks. Every collective the trainer makes goes through here, so the rule
 * "every rank reaches every collective" can be read off one file's callers. MPI errors return
 * instead of aborting (MPI_ERRORS_RETURN on our own duplicated communicator) and become DP_EMPI
 * with the call and its file:line. */
#ifndef DPTRAIN_COMM_H
#define DPTRAIN_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

struct dp_watch;

typedef struct {
  MPI_Comm comm;   /* a duplicate: our collectives never mix with a caller's */
  int rank, size;
  int node_rank;   /* rank among the ranks sharing this node */
  int node_size;   /* ranks sharing this node */
  int n_nodes;
  int node_size_min, node_size_max; /* over the nodes: equal when every node runs as many ranks */
  MPI_Comm node;   /* the ranks of this node (MPI_COMM_TYPE_SHARED), by rank */
  MPI_Comm cross;  /* the ranks of every node with this node_rank, by rank: node_rank 0's are the leaders */
  struct dp_watch *watch; /* this communicator's collective watchdog, NULL without a timeout */
} dp_comm;

/* Duplicates parent and learns the node topology (MPI_Comm_split_type, MPI_COMM_TYPE_SHARED). */
int dp_comm_init(dp_comm *c, MPI_Comm parent);
/* Also stops and joins the communicator's watchdog. */
void dp_comm_free(dp_comm *c);

/* In-place sums over all ranks. */
int dp_comm_allreduce_f32(dp_comm *c, float *buf, size_t n);
/* The same for a gradient bucket: a stuck peer is reported as stuck in "the gradient allreduce". */
int dp_comm_allreduce_grads(dp_comm *c, float *buf, size_t n);
int dp_comm_allreduce_f64(dp_comm *c, double *buf, size_t n);
/* Exact in-place sums of int64 (the deterministic mode's fixed-point values). */
int dp_comm_allreduce_i64(dp_comm *c, int64_t *buf, size_t n);
/* all: size · n_each int64 on every rank. others: the sum over the other ranks of rank r's n_each
 * (all + r · n_each), to which r adds its own; untouched at 1 rank. work: n_each of scratch. */
int dp_comm_reduce_scatter_i64(dp_comm *c, const int64_t *all, int64_t *others, int64_t *work, int n_each);
/* MPI_Alltoallv of floats: rank r's send + sdispls[q] (scounts[q]) reach rank q's recv + rdispls[r]. */
int dp_comm_alltoallv_f32(dp_comm *c, const float *send, const int *scounts, const int *sdispls, float *recv,
                          const int *rcounts, const int *rdispls);
/* In place: rank r's counts[r] floats at all + displs[r] reach every rank's all. */
int dp_comm_allgatherv_f32(dp_comm *c, float *all, const int *counts, const int *displs);
/* Every rank's n_each doubles into all, by rank. */
int dp_comm_allgather_f64(dp_comm *c, const double *mine, double *all, int n_each);
/* In place, in one collective: the maximum over the ranks of buf[0 .. n_max) and the sum of the
 * n_sum after them; n_max + n_sum <= DP_COMM_MAX_SUM. */
enum { DP_COMM_MAX_SUM = 1022 };
int dp_comm_allreduce_max_sum_i64(dp_comm *c, int64_t *buf, int n_max, int n_sum);
/* In-place maximum over all ranks. */
int dp_comm_allreduce_max_f64(dp_comm *c, double *buf, int n);
int dp_comm_bcast(dp_comm *c, void *buf, size_t bytes, int root);
/* Non-blocking in-place sum of n floats (n < 2^31); complete it with dp_comm_wait_all. */
int dp_comm_iallreduce_f32(dp_comm *c, float *buf, size_t n, MPI_Request *req);
/* Progresses pending requests (MPI_Testall); waits for all of them (MPI_Waitall). */
int dp_comm_test_all(dp_comm *c, MPI_Request *req, int n);
int dp_comm_wait_all(dp_comm *c, MPI_Request *req, int n);

/* n floats from every rank into all on root (counts, displs: per rank, read on root only). */
int dp_comm_gatherv_f32(dp_comm *c, const float *mine, int n, float *all, const int *counts, const int *displs,
                        int root);

/* Gathers bytes from every rank on this node into all (node_size * bytes, by node_rank). A
 * collective over all of c: every rank of every node calls it. */
int dp_comm_node_allgather(dp_comm *c, const void *mine, void *all, size_t bytes);

/* [train] comm = node (nodesync.h): the node's ranks wait for each other. */
int dp_comm_node_barrier(dp_comm *c);
/* In-place sum over c->cross: a slice's allreduce with the same local rank of the other nodes. */
int dp_comm_allreduce_cross_f32(dp_comm *c, float *buf, size_t n);
/* From world rank 0 to the node leaders (node_rank 0) only, over the leaders' cross communicator;
 * the other ranks return at once. Collective over the leaders. */
int dp_comm_bcast_leaders(dp_comm *c, void *buf, size_t bytes);

/* Every rank passes its own status (0 or a DP_E code) and gets back 0 if all ranks succeeded, else
 * the code of the lowest failing rank, which is the one that prints its message (*reporter, may be
 * NULL; also recorded with dp_error_set_reporter). A collective: every rank calls it at the same
 * points, which is what lets a failure on one rank end all ranks cleanly, without a hang. */
int dp_comm_agree(dp_comm *c, int status, int *reporter);

/* [train] collective_timeout: a watchdog thread of this communicator's own ends this rank (and so
 * the job) with one message naming the step and the collective when one of the calls above on c
 * has not completed after seconds. Called again, it changes the timeout; 0 stops the watchdog.
 * Each communicator is watched on its own: a sweep's group and the world can both have one. */
int dp_comm_set_timeout(dp_comm *c, double seconds);
/* Known slow phases on some rank while the others wait in the next collective: rank 0's checkpoint
 * write, an evaluation, start-up. Every rank calls both at the same points. From dp_comm_slow_phase
 * until the first collective that completes after dp_comm_slow_phase_end (every rank has then left
 * the phase), a collective may wait seconds (0: without limit) instead of collective_timeout; what
 * ("rank 0's checkpoint write") names the phase in the watchdog's message. */
void dp_comm_slow_phase(dp_comm *c, const char *what, double seconds);
void dp_comm_slow_phase_end(dp_comm *c);
/* The step the trainer is in on c, for that message (nothing without a watchdog). */
void dp_comm_set_step(dp_comm *c, long long step);

/* Rows [*lo, *hi) of n rows that rank r of size gets: contiguous, sizes differ by at most one. */
void dp_split_range(int64_t n, int r, int size, int64_t *lo, int64_t *hi);

#endif
