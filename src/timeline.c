/* Chrome trace-event timelines: spans per rank, gathered to rank 0 and written as JSON. */
#include "dptrain/timeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"
#include "dptrain/paths.h"
#include "fsutil.h"

int dp_timeline_start(dp_timeline *tl, dp_comm *comm, int cap) {
  memset(tl, 0, sizeof *tl);
  tl->span = calloc((size_t)cap, sizeof *tl->span);
  int rc = tl->span ? 0 : dp_fail(DP_ENOMEM, "timeline: cannot hold %d spans", cap);
  DP_TRY(dp_comm_agree(comm, rc, NULL)); /* also the barrier that lines the clocks up */
  tl->cap = cap;
  tl->origin = MPI_Wtime();
  tl->active = 1;
  return 0;
}

void dp_timeline_span(dp_timeline *tl, const char *name, int arg, double t0, double t1) {
  if (!tl || !tl->active || tl->n == tl->cap)
    return;
  dp_span *s = &tl->span[tl->n++];
  snprintf(s->name, sizeof s->name, "%s", name);
  s->arg = arg;
  s->t0 = t0 - tl->origin;
  s->t1 = t1 - tl->origin;
}

typedef struct {
  const dp_span *all;
  const int *counts; /* spans per rank */
  int ranks;
} gathered;

/* Track 0 holds the computation, track 1 the gradient allreduces that may overlap it. */
static const char *const track_names[2] = {"computation and I/O", "gradient allreduce"};

/* dp_write_durable_stdio's fill. */
static int write_json(FILE *f, void *arg) {
  const gathered *g = arg;
  fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n", f);
  int first = 1;
  for (int r = 0, k = 0; r < g->ranks; r++) {
    fprintf(f, "%s{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"rank %d\"}}",
            first ? "" : ",\n", r, r);
    first = 0;
    /* Named tracks: a viewer otherwise labels them by number ("Thread 1"), which says nothing. */
    for (int tid = 0; tid < 2; tid++)
      fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s\"}}", r,
              tid, track_names[tid]);
    for (int i = 0; i < g->counts[r]; i++, k++) {
      const dp_span *s = &g->all[k];
      /* communication on its own track, so it shows next to the computation it overlaps */
      int tid = !strncmp(s->name, "allreduce", 9) ? 1 : 0;
      fprintf(f, ",\n{\"name\":\"%s", s->name);
      if (s->arg >= 0)
        fprintf(f, " %d", s->arg);
      fprintf(f, "\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f}", r, tid, s->t0 * 1e6,
              (s->t1 - s->t0) * 1e6);
    }
  }
  fputs("\n]}\n", f);
  return ferror(f) ? DP_EIO : 0;
}

static int save(const char *path, const dp_span *all, const int *counts, int ranks) {
  gathered g = {all, counts, ranks};
  /* Its directory is made as out_dir is; dp_paths_check made sure at start-up that it can be. */
  DP_TRY(dp_mkdirs_for(path));
  return dp_write_durable_stdio(path, "the timeline", write_json, &g);
}

/* A failed collective is recorded like any other failure, so the agreement after it still ends
 * every rank the same way. */
static int mpi_status(int mpi_rc, const char *call) {
  if (mpi_rc == MPI_SUCCESS)
    return 0;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(mpi_rc, msg, &len);
  return dp_fail(DP_EMPI, "timeline: %s failed: %s", call, msg);
}

int dp_timeline_write(dp_timeline *tl, dp_comm *comm, const char *path) {
  tl->active = 0;
  int n = tl->n, *counts = NULL, *displs = NULL, total = 0, rc = 0;
  dp_span *all = NULL;
  if (comm->rank == 0) {
    counts = calloc((size_t)comm->size, sizeof *counts);
    displs = calloc((size_t)comm->size, sizeof *displs);
    if (!counts || !displs)
      rc = dp_fail(DP_ENOMEM, "timeline: out of memory");
  }
  /* Rank 0 must hold its buffers before any gather: agree first, so no rank is left in one. */
  rc = dp_comm_agree(comm, rc, NULL);
  if (rc < 0)
    goto out;
  rc = mpi_status(MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, comm->comm), "MPI_Gather");
  if (rc == 0 && comm->rank == 0) {
    for (int r = 0; r < comm->size; r++) /* in bytes: the spans travel as raw bytes */
      displs[r] = total, total += counts[r] * (int)sizeof(dp_span), counts[r] *= (int)sizeof(dp_span);
    all = malloc(total ? (size_t)total : 1);
    if (!all)
      rc = dp_fail(DP_ENOMEM, "timeline: out of memory");
  }
  rc = dp_comm_agree(comm, rc, NULL); /* every rank reaches this one */
  if (rc < 0)
    goto out;
  rc = mpi_status(MPI_Gatherv(tl->span, n * (int)sizeof(dp_span), MPI_BYTE, all, counts, displs, MPI_BYTE, 0,
                              comm->comm),
                  "MPI_Gatherv");
  if (rc == 0 && comm->rank == 0) {
    for (int r = 0; r < comm->size; r++)
      counts[r] /= (int)sizeof(dp_span);
    rc = save(path, all, counts, comm->size);
  }
  rc = dp_comm_agree(comm, rc, NULL);
out:
  free(all);
  free(counts);
  free(displs);
  return rc;
}

void dp_timeline_free(dp_timeline *tl) {
  free(tl->span);
  memset(tl, 0, sizeof *tl);
}
