/* A Chrome trace-event timeline of the first steps of a run ([train] timeline = path.json):
 * one process per rank, spans for data, forward, backward, each gradient bucket's allreduce, the
 * optimizer, evaluation and checkpoints. Open it in chrome://tracing or https://ui.perfetto.dev
 * to see the overlap of communication with computation, and which rank the others wait for.
 *
 * Recording writes into a buffer allocated when the run starts: nothing allocates in a step. */
#ifndef DPTRAIN_TIMELINE_H
#define DPTRAIN_TIMELINE_H

#include "dptrain/comm.h"

typedef struct {
  char name[24];
  int arg;          /* a layer or bucket index; -1 none */
  double t0, t1;    /* seconds since the timeline's origin */
} dp_span;

typedef struct {
  dp_span *span;
  int n, cap;
  double origin;    /* MPI_Wtime right after a barrier: the ranks' common zero */
  int active;
} dp_timeline;

/* Starts recording on every rank (collective: one barrier), room for cap spans. */
int dp_timeline_start(dp_timeline *tl, dp_comm *comm, int cap);
/* Records a span from t0 to t1 (MPI_Wtime values); a no-op when tl is NULL, stopped, or full. */
void dp_timeline_span(dp_timeline *tl, const char *name, int arg, double t0, double t1);
/* Stops recording and writes every rank's spans to path from rank 0, whole or not at all
 * (dp_write_durable_stdio). Collective. */
int dp_timeline_write(dp_timeline *tl, dp_comm *comm, const char *path);
void dp_timeline_free(dp_timeline *tl);

#endif
