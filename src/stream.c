/* The streaming reader (include/dptrain/stream.h): one thread, a ring of block slots, a queue of
 * planned steps. Shared fields are under mu; the slot tables are the reader's own, except that the
 * trainer reads the slots its acquired step refers to, which the reader does not replace until the
 * step is released (consumed). */
#include "dptrain/stream.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/comm.h"
#include "dptrain/error.h"
#include "faults.h"

struct dp_stream {
  dp_stream_cfg c;
  size_t row_bytes;
  int64_t n_rows, nblocks;
  char *x;            /* slots · block_rows rows of x, in the file's dtype */
  int32_t *labels;    /* or */
  float *targets;     /* (slots · block_rows, k) */
  int32_t *block_slot; /* (nblocks) its slot, or -1 */
  int64_t *slot_block; /* (slots) its block, or -1 */
  int64_t *slot_use;   /* (slots) the last step that uses it; a slot is free once that step is consumed */
  int64_t *mark;       /* (nblocks) the step that last listed it, while planning */
  int64_t *need;       /* (max_rows) the blocks of the step being planned */
  int64_t cursor;      /* where the search for a free slot goes on: the oldest are found first */
  int queue;           /* planned steps held at once */
  uint32_t *refs;      /* (queue, max_rows) ring row of each row of a planned step */
  int64_t *count;      /* (queue) rows of each planned step */
  long long reads;     /* blocks read so far */
  int drop_behind;     /* the file is larger than the memory that could cache it */
  double since_drop;   /* bytes read since the cache was last dropped */

  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t cv;   /* any change below */
  int stop, err;
  char msg[1024];
  const int64_t *order[2]; /* by epoch parity */
  int64_t order_epoch[2], order_n[2];
  int64_t planned;     /* steps before this one are in the ring */
  int64_t consumed;    /* steps before this one are released */
  int64_t acquired;    /* the trainer's step, -1 none */
};

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t dp_stream_slots_needed(int64_t shard, int64_t block_rows, int64_t window, int shuffle, int64_t nblocks) {
  if (shard <= 0)
    return 1;
  /* In file order a shard spans consecutive blocks; shuffled, it spans whole windows, at most one
   * more than its length fills plus the one window made short by the short last block. */
  int64_t need = shuffle ? window * ((shard - 1) / (window * block_rows) + 3) : (shard - 1) / block_rows + 2;
  return min64(min64(need, shard), nblocks);
}

double dp_stream_block_bytes(const dp_dataset *ds, int64_t block_rows) {
  return dp_dataset_mem_bytes(ds, block_rows);
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* A slot no unreleased step uses, waiting for the trainer when there is none: -1 when stopped. */
static int64_t free_slot(dp_stream *s) {
  pthread_mutex_lock(&s->mu);
  int64_t found = -1;
  while (found < 0 && !s->stop) {
    for (int64_t i = 0; i < s->c.slots && found < 0; i++) {
      int64_t k = (s->cursor + i) % s->c.slots;
      if (s->slot_use[k] < s->consumed)
        found = k;
    }
    if (found < 0)
      pthread_cond_wait(&s->cv, &s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  return found;
}

/* How many of the slots after `slot` (up to want in all) are free too: consecutive blocks then
 * go into consecutive slots with one read. */
static int64_t free_run(dp_stream *s, int64_t slot, int64_t want) {
  int64_t k = 1;
  pthread_mutex_lock(&s->mu);
  while (k < want && slot + k < s->c.slots && s->slot_use[slot + k] < s->consumed)
    k++;
  pthread_mutex_unlock(&s->mu);
  s->cursor = (slot + k) % s->c.slots;
  return k;
}

/* Blocks b..b+k-1 into slots slot..slot+k-1, in one read. */
static int read_blocks(dp_stream *s, int64_t b, int64_t k, int64_t slot, int64_t step) {
  dp_dataset *ds = s->c.ds;
  int64_t br = s->c.block_rows, lo = b * br, n = min64(k * br, s->n_rows - lo), at = slot * br;
  for (int64_t i = slot; i < slot + k; i++) {
    if (s->slot_block[i] >= 0)
      s->block_slot[s->slot_block[i]] = -1;
    s->slot_block[i] = -1;
  }
  int rc = dp_fault_stream_read(s->reads++) ? dp_fail(DP_EIO, "%s: /%s/x: injected read error", ds->path, ds->group)
                                            : 0;
  if (rc == 0)
    rc = dp_dataset_read_block(ds, lo, n, s->x + (size_t)at * s->row_bytes, s->labels ? s->labels + at : NULL,
                               s->targets ? s->targets + at * ds->k : NULL);
  if (rc < 0) {
    char why[1024];
    snprintf(why, sizeof why, "%s", dp_errmsg(rc));
    return dp_fail(rc, "%s (the streaming reader, rows %lld..%lld for step %lld)", why, (long long)lo,
                   (long long)(lo + n - 1), (long long)step + 1);
  }
  s->since_drop += (double)n * (double)s->row_bytes;
  if (s->drop_behind && s->since_drop >= 64e6) {
    dp_dataset_drop_cache(ds);
    s->since_drop = 0;
  }
  for (int64_t i = 0; i < k; i++) {
    s->slot_block[slot + i] = b + i;
    s->block_slot[b + i] = (int32_t)(slot + i);
    s->slot_use[slot + i] = step;
  }
  return 0;
}

/* Puts the blocks of one step's rows in the ring (in ascending file order, runs of consecutive
 * blocks read at once when free slots follow each other) and maps each row to its
 * ring row. 1 when stopped meanwhile. */
static int plan_step(dp_stream *s, int64_t step, const int64_t *rows, int64_t m) {
  int64_t br = s->c.block_rows, nneed = 0;
  for (int64_t i = 0; i < m; i++) {
    int64_t b = rows[i] / br;
    if (rows[i] < 0 || rows[i] >= s->n_rows)
      return dp_fail(DP_EINVAL, "%s: step %lld: row %lld is not a training row", s->c.ds->path, (long long)step + 1,
                     (long long)rows[i]);
    if (s->mark[b] != step)
      s->mark[b] = step, s->need[nneed++] = b;
  }
  if (nneed > s->c.slots)
    return dp_fail(DP_ECONFIG, "%s: step %lld needs %lld blocks of %lld rows, the reader's ring holds %lld: raise "
                   "[data] prefetch_mb, or lower shuffle_blocks or block_rows", s->c.ds->path, (long long)step + 1,
                   (long long)nneed, (long long)br, (long long)s->c.slots);
  /* As a gather from the file checked it: a step served from blocks read earlier still stops when
   * the file changed, as every step of a run that reads the file does. */
  if (dp_dataset_unchanged(s->c.ds) < 0) {
    char why[1024];
    snprintf(why, sizeof why, "%s", dp_errmsg(DP_EDATA));
    return dp_fail(DP_EDATA, "%s (the streaming reader, before step %lld)", why, (long long)step + 1);
  }
  qsort(s->need, (size_t)nneed, sizeof *s->need, cmp64);
  for (int64_t i = 0; i < nneed; i++) /* held already: kept for this step */
    if (s->block_slot[s->need[i]] >= 0)
      s->slot_use[s->block_slot[s->need[i]]] = step;
  for (int64_t i = 0; i < nneed;) {
    int64_t b = s->need[i], run = 1;
    if (s->block_slot[b] >= 0) {
      i++;
      continue;
    }
    while (i + run < nneed && s->need[i + run] == b + run && s->block_slot[b + run] < 0)
      run++;
    int64_t slot = free_slot(s);
    if (slot < 0)
      return 1;
    int64_t k = free_run(s, slot, run);
    DP_TRY(read_blocks(s, b, k, slot, step));
    i += k;
  }
  int q = (int)((step - s->c.step) % s->queue);
  uint32_t *ref = s->refs + (size_t)q * (size_t)s->c.max_rows;
  for (int64_t i = 0; i < m; i++)
    ref[i] = (uint32_t)(s->block_slot[rows[i] / br] * br + rows[i] % br);
  s->count[q] = m;
  return 0;
}

/* The next step's rows of this rank, once the queue has room and its epoch's order is known; NULL
 * when stopped. */
static const int64_t *next_rows(dp_stream *s, int64_t step, int64_t epoch, int64_t pos, int64_t *m) {
  pthread_mutex_lock(&s->mu);
  while (!s->stop && (step - s->consumed >= s->queue || s->order_epoch[epoch & 1] != epoch))
    pthread_cond_wait(&s->cv, &s->mu);
  const int64_t *rows = s->stop ? NULL : s->order[epoch & 1];
  int64_t n = s->order_n[epoch & 1];
  pthread_mutex_unlock(&s->mu);
  int64_t g0 = min64(pos * s->c.batch, n), g1 = min64(g0 + s->c.batch, n), lo, hi;
  dp_split_range(g1 - g0, s->c.rank, s->c.size, &lo, &hi);
  *m = hi - lo;
  return rows ? rows + g0 + lo : NULL;
}

static void *reader(void *arg) {
  dp_stream *s = arg;
  int64_t epoch = s->c.epoch, pos = s->c.pos;
  int rc = 0;
  for (int64_t step = s->c.step; rc == 0 && step < s->c.total_steps; step++, pos++) {
    if (pos == s->c.steps_per_epoch)
      epoch++, pos = 0;
    int64_t m;
    const int64_t *rows = next_rows(s, step, epoch, pos, &m);
    rc = rows ? plan_step(s, step, rows, m) : 1;
    pthread_mutex_lock(&s->mu);
    if (rc == 0)
      s->planned = step + 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
  if (rc < 0) {
    pthread_mutex_lock(&s->mu);
    s->err = rc;
    snprintf(s->msg, sizeof s->msg, "%s", dp_errmsg(rc));
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
  return NULL;
}

static int alloc_ring(dp_stream *s) {
  const dp_stream_cfg *c = &s->c;
  size_t rows = (size_t)(c->slots * c->block_rows), q = (size_t)s->queue;
  size_t mr = (size_t)(c->max_rows > 0 ? c->max_rows : 1);
  s->x = malloc(rows * s->row_bytes);
  if (c->ds->has_labels)
    s->labels = malloc(rows * sizeof *s->labels);
  else
    s->targets = malloc(rows * (size_t)c->ds->k * sizeof *s->targets);
  s->block_slot = malloc((size_t)s->nblocks * sizeof *s->block_slot);
  s->mark = malloc((size_t)s->nblocks * sizeof *s->mark);
  s->slot_block = malloc((size_t)c->slots * sizeof *s->slot_block);
  s->slot_use = malloc((size_t)c->slots * sizeof *s->slot_use);
  s->need = malloc(mr * sizeof *s->need);
  s->refs = malloc(q * mr * sizeof *s->refs);
  s->count = calloc(q, sizeof *s->count);
  if (!s->x || (!s->labels && !s->targets) || !s->block_slot || !s->mark || !s->slot_block || !s->slot_use ||
      !s->need || !s->refs || !s->count)
    return dp_fail(DP_ENOMEM, "%s: no memory for the streaming reader's ring of %lld blocks (%.1f MB)", c->ds->path,
                   (long long)c->slots, (double)c->slots * dp_stream_block_bytes(c->ds, c->block_rows) / 1e6);
  for (int64_t b = 0; b < s->nblocks; b++)
    s->block_slot[b] = -1, s->mark[b] = -1;
  for (int64_t i = 0; i < c->slots; i++)
    s->slot_block[i] = -1, s->slot_use[i] = -1;
  return 0;
}

static void free_ring(dp_stream *s) {
  free(s->x);
  free(s->labels);
  free(s->targets);
  free(s->block_slot);
  free(s->mark);
  free(s->slot_block);
  free(s->slot_use);
  free(s->need);
  free(s->refs);
  free(s->count);
  free(s);
}

int dp_stream_drops_cache(const dp_dataset *ds) {
  return !ds->direct && dp_dataset_larger_than_memory(ds);
}

int dp_stream_start(dp_stream **out, const dp_stream_cfg *c) {
  *out = NULL;
  dp_stream *s = calloc(1, sizeof *s);
  if (!s)
    return dp_fail(DP_ENOMEM, "no memory for the streaming reader");
  s->c = *c;
  s->row_bytes = dp_row_bytes(c->ds->d, c->ds->x_u8);
  s->n_rows = c->ds->n;
  s->nblocks = (s->n_rows + c->block_rows - 1) / c->block_rows;
  /* Steps planned ahead: about 4 MB of row references, 2 to 64 steps. */
  int64_t q = ((int64_t)4 << 20) / (4 * (c->max_rows > 0 ? c->max_rows : 1));
  s->queue = (int)(q < 2 ? 2 : q > 64 ? 64 : q);
  s->planned = s->consumed = c->step;
  s->acquired = -1;
  s->order_epoch[0] = s->order_epoch[1] = -1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  int rc = alloc_ring(s);
  if (rc == 0)
    rc = dp_dataset_stream_x(c->ds, DP_DIRECT_FALSE); /* the trainer chose direct reads already, or not */
  s->drop_behind = dp_stream_drops_cache(c->ds);
  if (rc == 0) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    s->started = pthread_create(&s->thread, NULL, reader, s) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!s->started)
      rc = dp_fail(DP_ENOMEM, "%s: cannot start the streaming reader's thread", c->ds->path);
  }
  if (rc < 0) {
    dp_stream_stop(s);
    return rc;
  }
  *out = s;
  return 0;
}

void dp_stream_order(dp_stream *s, int64_t epoch, const int64_t *rows, int64_t n) {
  pthread_mutex_lock(&s->mu);
  s->order[epoch & 1] = rows;
  s->order_n[epoch & 1] = n;
  s->order_epoch[epoch & 1] = epoch;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

int dp_stream_wait(dp_stream *s, int64_t step) {
  pthread_mutex_lock(&s->mu);
  while (s->planned <= step && !s->err && !s->stop)
    pthread_cond_wait(&s->cv, &s->mu);
  int rc = s->planned > step ? 0 : s->err;
  char msg[sizeof s->msg];
  memcpy(msg, s->msg, sizeof msg);
  pthread_mutex_unlock(&s->mu);
  return rc < 0 ? dp_fail(rc, "%s", msg) : 0;
}

int dp_stream_acquire(dp_stream *s, int64_t step, int64_t *n) {
  pthread_mutex_lock(&s->mu);
  while (s->planned <= step && !s->err)
    pthread_cond_wait(&s->cv, &s->mu);
  int rc = s->planned > step ? 0 : s->err;
  char msg[sizeof s->msg];
  memcpy(msg, s->msg, sizeof msg);
  if (rc == 0) {
    s->acquired = step;
    *n = s->count[(step - s->c.step) % s->queue];
  }
  pthread_mutex_unlock(&s->mu);
  return rc < 0 ? dp_fail(rc, "%s", msg) : 0;
}

void dp_stream_copy(const dp_stream *s, int64_t c, int nb, float *x, int32_t *labels, float *targets) {
  const dp_dataset *ds = s->c.ds;
  const uint32_t *ref = s->refs + (size_t)((s->acquired - s->c.step) % s->queue) * (size_t)s->c.max_rows + c;
  size_t rb = s->row_bytes;
  int64_t d = ds->d, k = ds->k;
  for (int i = 0; i < nb && i < 4; i++)
    __builtin_prefetch(s->x + ref[i] * rb, 0, 0);
  for (int i = 0; i < nb; i++) {
    if (i + 4 < nb) /* the rows are scattered over a window of blocks, as shuffled rows in memory are */
      for (size_t o = 0; o < rb; o += 64)
        __builtin_prefetch(s->x + ref[i + 4] * rb + o, 0, 0);
    dp_dataset_convert_rows(ds, s->x + ref[i] * rb, ds->x_u8, 1, x + i * d);
    if (labels)
      labels[i] = s->labels[ref[i]];
    if (targets)
      memcpy(targets + i * k, s->targets + ref[i] * k, (size_t)k * sizeof *targets);
  }
}

void dp_stream_release(dp_stream *s) {
  pthread_mutex_lock(&s->mu);
  s->consumed = s->acquired + 1;
  s->acquired = -1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void dp_stream_stop(dp_stream *s) {
  if (!s)
    return;
  if (s->started) {
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
  }
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free_ring(s);
}
