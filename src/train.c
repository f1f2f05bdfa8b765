#include "dptrain/train.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/error.h"
#include "faults.h"

/* Rows per forward/backward pass: a rank's shard larger than this is processed in pieces with the
 * gradients accumulated, so "full" batches need no more activation memory than ordinary ones. */
enum { DP_MICRO_MAX = 1024, DP_EVAL_ROWS = 256 };

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static int check_labels(const dp_config *cfg, dp_comm *comm, dp_dataset *ds, int out_dim) {
  int64_t lo, hi;
  dp_split_range(ds->n, comm->rank, comm->size, &lo, &hi);
  int32_t mn = 0, mx = 0;
  int rc = hi > lo ? dp_dataset_label_range(ds, lo, hi, &mn, &mx) : 0;
  DP_TRY(dp_comm_agree(comm, rc, NULL));
  /* MAX over (-min, max): one collective gives both ends. Empty shards must not win. */
  double r[2] = {hi > lo ? -(double)mn : -1e300, hi > lo ? (double)mx : -1e300};
  DP_TRY(dp_comm_allreduce_max_f64(comm, r, 2));
  rc = 0;
  if (-r[0] < 0 || r[1] >= out_dim)
    rc = dp_fail(DP_ESHAPE,
                 "%s: /%s/y: labels range %.0f..%.0f, but the last [layer] has %d unit%s: expected labels in 0..%d",
                 ds->path, ds->group, -r[0], r[1], out_dim, dp_plural(out_dim), out_dim - 1);
  (void)cfg;
  return dp_comm_agree(comm, rc, NULL); /* all ranks know; one of them reports */
}

int dp_check_data_fits(const dp_config *cfg, dp_comm *comm, dp_dataset *ds, int64_t in_dim, int out_dim) {
  int rc = 0;
  if (ds->d != in_dim)
    rc = dp_fail(DP_ESHAPE, "%s: /%s/x has %lld feature%s per row, the model takes %lld", ds->path, ds->group,
                 (long long)ds->d, dp_plural(ds->d), (long long)in_dim);
  else if (cfg->model.loss == DP_LOSS_SOFTMAX_CE && !ds->has_labels)
    rc = dp_fail(DP_ESHAPE, "%s: /%s/y: loss softmax_cross_entropy needs integer class labels (N), found float targets",
                 ds->path, ds->group);
  else if (cfg->model.loss == DP_LOSS_MSE && ds->has_labels)
    rc = dp_fail(DP_ESHAPE, "%s: /%s/y: loss mse needs float32 targets (N, K), found integer labels", ds->path,
                 ds->group);
  else if (cfg->model.loss == DP_LOSS_MSE && ds->k != out_dim)
    rc = dp_fail(DP_ESHAPE, "%s: /%s/y has %lld target%s per row, but the last [layer] has %d unit%s", ds->path,
                 ds->group, (long long)ds->k, dp_plural(ds->k), out_dim, dp_plural(out_dim));
  /* Every rank sees the same shapes, so they all fail alike; agree anyway before the collective. */
  DP_TRY(dp_comm_agree(comm, rc, NULL));
  return ds->has_labels ? check_labels(cfg, comm, ds, out_dim) : 0;
}

static int plan_steps(dp_trainer *t) {
  const dp_config *cfg = t->cfg;
  /* Only the training split holds validation rows out (eval and predict pass other sets). */
  if (!strcmp(t->train->group, "train"))
    DP_TRY(dp_val_split_make(&t->val, t->train->n, cfg->data.val_fraction, cfg->train.seed, cfg->file));
  t->n_train = t->train->n - t->val.n_val;
  t->batch = cfg->train.batch_size == 0 ? t->n_train : cfg->train.batch_size;
  t->steps_per_epoch = cfg->train.drop_last ? t->n_train / t->batch : ceil_div(t->n_train, t->batch);
  if (t->steps_per_epoch == 0)
    return dp_fail(DP_ECONFIG,
                   "%s: [train] batch_size %lld is larger than the %lld training rows and drop_last = true: "
                   "no step per epoch",
                   cfg->file, (long long)t->batch, (long long)t->n_train);
  t->total_steps = dp_total_steps(cfg, t->steps_per_epoch);
  return 0;
}

int64_t dp_total_steps(const dp_config *cfg, int64_t steps_per_epoch) {
  int64_t total = (int64_t)cfg->train.epochs * steps_per_epoch;
  if (dp_optim_kind_line_search(cfg->optimizer.name)) /* one iteration per step: max_iter counts them */
    total = cfg->optimizer.max_iter;
  if (cfg->train.max_steps > 0 && cfg->train.max_steps < total)
    total = cfg->train.max_steps;
  return total;
}

/* Refuses, before allocating anything, a model that cannot fit in this node's memory with every
 * rank of the node holding its copy (units = 16000000 would otherwise be found out by malloc, or
 * worse by the kernel's OOM killer a minute later). Collective. */
static int check_model_size(const dp_trainer *t, int64_t max_batch) {
  const dp_config *cfg = t->cfg;
  double weights = 0, acts = 0, in = (double)t->train->d;
  int big = 0;
  for (int i = 0; i < cfg->n_layers; i++) {
    double w = (double)dp_dense_params((int)in, cfg->layer[i].units, 1); /* the larger count: a norm's */
    if (w > (double)dp_dense_params((int)in, cfg->layer[big].units, 1))
      big = i;
    weights += w;
    acts += 3.0 * (double)max_batch * cfg->layer[i].units;
    in = cfg->layer[i].units;
  }
  int rc = 0, images = cfg->data.n_shape > 0;
  if (images) /* image layers: sizes follow from the geometry, which the model works out */
    rc = dp_model_plan(cfg->layer, cfg->n_layers, cfg->model.loss, cfg->data.shape, (int)t->train->d, (int)max_batch,
                       &weights, &acts);
  double bytes = 4.0 * (weights * 4 + acts); /* params, grads, up to two optimizer slots */
  if (cfg->train.deterministic)
    bytes += 8.0 * weights; /* the fixed-point sums */
  /* Every rank on the node holds as much, besides the epoch's order and the rows it keeps in memory. */
  const dp_dataset *ds = t->train;
  double data = 8.0 * (double)ds->n * (t->streaming ? 2 : 1) + dp_dataset_mem_bytes(ds, ds->mem_hi - ds->mem_lo) +
                (double)t->ring_slots * dp_stream_block_bytes(ds, t->order.block_rows);
  /* ... and one rank builds each checkpoint in memory: parameters and optimizer slots once more. */
  double image = 4.0 * weights * 3;
  double mem = dp_node_memory(), ranks = t->comm->node_size, need = (bytes + data) * ranks + image;
  char why[96] = "a smaller batch_size or fewer filters need less";
  if (!images)
    snprintf(why, sizeof why, "[layer %d] units = %d is the largest layer", big, cfg->layer[big].units);
  if (rc == 0 && mem > 0 && need > mem)
    rc = dp_fail(DP_ECONFIG,
                   "%s: each rank needs %.3g GB (the model's parameters, gradients, optimizer state and activations "
                   "%.3g GB, data %.3g GB): %.3g GB for the %.0f rank%s on this node, more than its %.3g GB of "
                   "memory; %s%s",
                   cfg->file, (bytes + data) / 1e9, bytes / 1e9, data / 1e9, need / 1e9, ranks, ranks > 1 ? "s" : "",
                   mem / 1e9, why, ranks > 1 ? " (or start fewer ranks per node)" : "");
  return dp_comm_agree(t->comm, rc, NULL); /* nodes differ: the ranks of a smaller one must not go alone */
}

/* [train] deterministic: passes of whole chunks (a rank's chunks in one pass with batch norm). */
static int64_t exact_pass_rows(const dp_trainer *t, int batch_norm) {
  int64_t C = t->cfg->train.chunk_rows;
  int64_t rows = ceil_div(ceil_div(t->batch, C), t->comm->size) * C;
  if (!batch_norm && rows > DP_MICRO_MAX)
    rows = (DP_MICRO_MAX / C > 1 ? DP_MICRO_MAX / C : 1) * C;
  return rows;
}

static int alloc_buffers(dp_trainer *t) {
  int64_t local = ceil_div(t->batch, t->comm->size);
  int batch_norm = 0;
  for (int i = 0; i < t->cfg->n_layers; i++)
    batch_norm |= t->cfg->layer[i].norm == DP_NORM_BATCH;
  if (t->cfg->train.deterministic)
    local = exact_pass_rows(t, batch_norm);
  if (batch_norm && local > INT_MAX / 4)
    return dp_fail(DP_ECONFIG, "%s: batch norm needs a rank's whole shard (%lld rows) in one pass: too many",
                   t->cfg->file, (long long)local);
  /* Batch statistics cover the whole global batch: a shard must go through in one pass. */
  int max_batch = (int)(batch_norm || local < DP_MICRO_MAX ? local : DP_MICRO_MAX);
  if (max_batch < DP_EVAL_ROWS && !t->cfg->train.deterministic) /* which evaluates a chunk a pass */
    max_batch = DP_EVAL_ROWS;
  DP_TRY(check_model_size(t, max_batch));
  const dp_config *cfg = t->cfg;
  DP_TRY(dp_model_create(&t->model, cfg->layer, cfg->n_layers, cfg->model.loss, cfg->data.n_shape ? cfg->data.shape : NULL,
                         (int)t->train->d, max_batch));
  dp_optim_hparams h;
  dp_optim_hparams_from_cfg(&h, &cfg->optimizer);
  DP_TRY(dp_optim_create(&t->optim, &h, t->model.n_floats));
  size_t B = (size_t)max_batch;
  t->perm = malloc(sizeof(int64_t) * (size_t)t->train->n); /* drawn over every row, then filtered */
  if (t->streaming && !(t->perm_next = malloc(sizeof(int64_t) * (size_t)t->train->n)))
    return dp_fail(DP_ENOMEM, "trainer: cannot allocate the next epoch's order of %lld rows", (long long)t->n_train);
  t->rows = malloc(sizeof(int64_t) * B);
  t->x = malloc(sizeof(float) * B * (size_t)t->train->d);
  t->labels = malloc(sizeof(int32_t) * B);
  t->targets = malloc(sizeof(float) * B * (size_t)(t->train->k > 0 ? t->train->k : 1));
  if (!t->perm || !t->rows || !t->x || !t->labels || !t->targets)
    return dp_fail(DP_ENOMEM, "trainer: cannot allocate batch buffers for %lld rows", (long long)t->n_train);
  return 0;
}

/* The reader's ring: prefetch_mb (at most half of this rank's share of the node's memory) in whole
 * blocks, and never fewer than a step's shard may need. */
static int plan_ring(dp_trainer *t) {
  const dp_config *cfg = t->cfg;
  const dp_dataset *ds = t->train;
  int64_t br = t->order.block_rows, nblocks = ceil_div(ds->n, br), shard = ceil_div(t->batch, t->comm->size);
  double block = dp_stream_block_bytes(ds, br), budget = cfg->data.prefetch_mb * 1e6;
  double share = dp_node_memory() / t->comm->node_size / 2;
  if (share > 0 && budget > share)
    budget = t->prefetch_cap = share;
  int64_t slots = (int64_t)(budget / block), need = dp_stream_slots_needed(shard, br, t->order.window,
                                                                          t->order.shuffle, nblocks);
  /* Held-out rows leave gaps in the order: a shard's rows then span at most themselves and all of
   * those in the unfiltered order (and still at most one block each). */
  int64_t gapped = dp_stream_slots_needed(shard + t->val.n_val, br, t->order.window, t->order.shuffle, nblocks);
  if (t->val.n_val > 0 && gapped > need)
    need = gapped < shard ? gapped : shard;
  if (slots > nblocks)
    slots = nblocks;
  if (slots > (int64_t)UINT32_MAX / br) /* ring rows are 32-bit */
    slots = (int64_t)UINT32_MAX / br;
  t->ring_slots = slots;
  if (slots >= need)
    return 0;
  return dp_fail(DP_ECONFIG,
                 "%s: [data] prefetch_mb = %g%s holds %lld block%s of %lld rows (%.3g MB each), but a step's shard of "
                 "%lld rows may need %lld (shuffle_blocks = %lld): raise prefetch_mb to %.0f, or lower shuffle_blocks "
                 "or block_rows",
                 cfg->file, cfg->data.prefetch_mb, t->prefetch_cap > 0 ? " (limited by the node's memory)" : "",
                 (long long)slots, dp_plural(slots), (long long)br, block / 1e6, (long long)shard, (long long)need,
                 (long long)t->order.window, ceil((double)need * block / 1e6));
}

/* [data] order for this data set: by default blocks when it is read from the file, random when held
 * in memory; blocks of the file's chunks, or about 2 MB of rows when it is not chunked. */
static int resolve_order(dp_trainer *t) {
  const dp_config *cfg = t->cfg;
  const dp_dataset *ds = t->train;
  int in_memory = ds->mem_lo == 0 && ds->mem_hi == ds->n;
  int blocks = cfg->data.order == DP_ORDER_BLOCKS || (cfg->data.order == DP_ORDER_AUTO && !in_memory);
  int64_t br = cfg->data.block_rows ? cfg->data.block_rows : dp_dataset_chunk_rows(ds);
  if (br == 0)
    br = (int64_t)(2e6 / (double)dp_row_bytes(ds->d, ds->x_u8));
  br = br < 1 ? 1 : br > ds->n ? ds->n : br;
  t->order = (dp_order){cfg->train.seed, cfg->train.shuffle, blocks, br, cfg->data.shuffle_blocks};
  if (blocks)
    snprintf(t->order_text, sizeof t->order_text, "blocks %lld %d", (long long)br, cfg->data.shuffle_blocks);
  else
    snprintf(t->order_text, sizeof t->order_text, "random");
  /* The reader plans the default split of rows; deterministic mode's chunks read their rows directly. */
  t->streaming = blocks && !in_memory && !cfg->train.deterministic;
  if (t->streaming) /* now, so the start-up report can say how the reader will read */
    DP_TRY(dp_dataset_stream_x(t->train, cfg->data.direct_io));
  return t->streaming ? plan_ring(t) : 0;
}

/* A line search (L-BFGS) needs the same objective at every evaluation: the full batch. */
static int check_full_batch(const dp_trainer *t) {
  if (dp_optim_line_search(&t->optim) && t->batch != t->n_train)
    return dp_fail(DP_ECONFIG, "%s: [optimizer] name = %s needs [train] batch_size = full (it is %lld)", t->cfg->file,
                   dp_optim_name(t->cfg->optimizer.name), (long long)t->batch);
  return 0;
}

/* The effective configuration as text, stored with every checkpoint. */
static int config_text(dp_trainer *t) {
  size_t len = 0;
  FILE *mem = open_memstream(&t->config_text, &len);
  if (!mem)
    return dp_fail(DP_ENOMEM, "trainer: cannot hold the configuration text");
  int rc = dp_config_write(t->cfg, mem);
  if (fclose(mem) != 0 && rc == 0)
    rc = dp_fail(DP_ENOMEM, "trainer: cannot hold the configuration text");
  return rc;
}

/* The trainer's own part of the state: where it is in the data and what it was run with. */
static int register_state(dp_trainer *t) {
  dp_state *st = &t->state;
  DP_TRY(dp_model_register(&t->model, st));
  DP_TRY(dp_optim_register(&t->optim, st, t->model.params, t->model.grads));
  DP_TRY(dp_state_i64(st, &t->step, 0, INT64_MAX, 0, "step"));
  DP_TRY(dp_state_i64(st, &t->epoch, 0, INT64_MAX, 0, "epoch"));
  DP_TRY(dp_state_i64(st, &t->pos, 0, t->steps_per_epoch, 0, "position"));
  DP_TRY(dp_state_i64(st, &t->samples_seen, 0, INT64_MAX, DP_ST_INFO, "samples_seen"));
  DP_TRY(dp_state_i64(st, &t->world_size, 0, INT64_MAX, DP_ST_INFO, "world_size"));
  DP_TRY(dp_state_i64(st, &t->seed, INT64_MIN, INT64_MAX, DP_ST_INFO, "seed"));
  /* Written since on_nonfinite = restore; older checkpoints ran at the full step size. */
  DP_TRY(dp_state_f64(st, &t->lr_factor, DBL_MIN, 1.0, DP_ST_OPTIONAL, "lr_factor"));
  /* The resolved order: position means a place in it (order = auto resolves by in_memory, block_rows = 0
   * by the file's chunks). Older checkpoints lack it. */
  DP_TRY(dp_state_str(st, t->order_text, sizeof t->order_text, DP_ST_CONST | DP_ST_OPTIONAL, "data_order"));
  /* The input transform the weights were trained on is part of the model: a model load (eval,
   * init_from, predict) applies the checkpoint's. Older checkpoints lack it: the configuration's stays. */
  int64_t d[2] = {t->train->d, 1};
  DP_TRY(dp_state_tensor(st, DP_T_F32, t->train->x_scale, 1, d, DP_ST_MODEL | DP_ST_OPTIONAL, "input/scale"));
  DP_TRY(dp_state_tensor(st, DP_T_F32, t->train->x_shift, 1, d, DP_ST_MODEL | DP_ST_OPTIONAL, "input/shift"));
  if (t->cfg->train.deterministic)
    DP_TRY(dp_exactsync_register(&t->exact, st));
  DP_TRY(config_text(t));
  int64_t len[2] = {(int64_t)strlen(t->config_text), 1};
  return dp_state_tensor(st, DP_T_U8, t->config_text, 1, len, DP_ST_INFO, "config");
}

/* Batch norm's sums across the ranks of the trainer's communicator. */
static int reduce_f64(void *ctx, double *buf, int n) { return dp_comm_allreduce_f64(ctx, buf, (size_t)n); }

/* [train] comm: node moves the parameters, the optimizer state and (unless deterministic mode reduces
 * them exactly) the gradients into the node's shared memory. Collective. */
static int node_comm(dp_trainer *t) {
  int want;
  DP_TRY(dp_nodesync_wanted(t->comm, t->cfg->train.comm, dp_optim_line_search(&t->optim), &want, &t->flat_why));
  return want ? dp_nodesync_init(&t->node, t->comm, &t->model, &t->optim, t->cfg->train.deterministic) : 0;
}

static int create(dp_trainer *t, const dp_config *cfg, dp_comm *comm, dp_dataset *train) {
  memset(t, 0, sizeof *t);
  t->cfg = cfg;
  t->comm = comm;
  t->train = train;
  t->perm_epoch = -1;
  t->next_epoch = -1;
  t->stream_step = -1;
  t->lr_factor = 1.0;
  t->world_size = comm->size;
  t->seed = (int64_t)cfg->train.seed;
  dp_state_init(&t->state);
  int rc = plan_steps(t);
  if (rc == 0)
    rc = resolve_order(t);
  if (rc == 0)
    rc = alloc_buffers(t);
  DP_TRY(dp_comm_agree(comm, rc, NULL)); /* the windows are collective */
  rc = node_comm(t);
  if (rc == 0) {
    dp_model_set_reduce(&t->model, reduce_f64, comm);
    if (cfg->train.deterministic)
      rc = dp_exactsync_init(&t->exact, &t->model, comm, cfg->train.chunk_rows);
    else if (!t->node.reduce)
      dp_gradsync_init(&t->sync, &t->model, comm, cfg->train.bucket_mb);
  }
  if (rc == 0)
    rc = check_full_batch(t);
  if (rc == 0)
    rc = register_state(t);
  dp_nodesync_mark(&t->node, &t->state);
  dp_schedule_init(&t->sched, &cfg->schedule, cfg->optimizer.lr, t->total_steps, t->batch);
  DP_TRY(dp_comm_agree(comm, rc, NULL));
  DP_TRY(dp_check_data_fits(cfg, comm, train, train->d, t->model.out_dim));
  if (comm->rank == 0)
    dp_model_init(&t->model, cfg->layer, cfg->train.seed);
  return dp_state_bcast(&t->state, comm, DP_ST_MODEL, 0); /* batch norm's running statistics too */
}

int dp_trainer_create(dp_trainer *t, const dp_config *cfg, dp_comm *comm, dp_dataset *train) {
  int rc = create(t, cfg, comm, train);
  if (rc < 0)
    dp_trainer_free(t); /* callers may free it again: a freed trainer is all zeros */
  return rc;
}

void dp_trainer_free(dp_trainer *t) {
  dp_stream_stop(t->stream); /* first: it reads the data set and perm */
  free(t->perm_next);
  dp_state_free(&t->state);
  dp_exactsync_free(&t->exact);
  free(t->config_text);
  dp_model_free(&t->model);
  dp_optim_free(&t->optim);
  dp_nodesync_free(&t->node); /* after both: they no longer point into its windows */
  free(t->perm);
  free(t->rows);
  free(t->x);
  free(t->labels);
  free(t->targets);
  dp_val_split_free(&t->val);
  memset(t, 0, sizeof *t);
}

/* The epoch's order of the rows, drawn from (seed, epoch) alone, so every rank — and a resumed run
 * at any rank count — computes the same order without communicating. The one place the list of
 * training rows is made: the reader follows these arrays (order.h). */
static void draw_order(dp_trainer *t, int64_t epoch, int64_t *rows) {
  dp_order_epoch(&t->order, epoch, t->train->n, rows);
  dp_val_split_filter(&t->val, rows, t->train->n); /* the held-out rows leave; n_train remain */
}

static int start_stream(dp_trainer *t) {
  dp_stream_cfg c = {.ds = t->train,
                     .block_rows = t->order.block_rows,
                     .slots = t->ring_slots,
                     .rank = t->comm->rank,
                     .size = t->comm->size,
                     .batch = t->batch,
                     .steps_per_epoch = t->steps_per_epoch,
                     .total_steps = t->total_steps,
                     .epoch = t->epoch,
                     .pos = t->pos,
                     .step = t->step,
                     .max_rows = ceil_div(t->batch, t->comm->size)};
  DP_TRY(dp_stream_start(&t->stream, &c));
  dp_stream_order(t->stream, t->epoch, t->perm, t->n_train);
  return 0;
}

/* This epoch's order in perm (drawn now, or ahead for the reader); when streaming, the reader runs
 * and has the next epoch's order too (perm_next), so that it reads across the epoch's end. The
 * previous epoch's array is reused only now: the reader planned all of its steps before the
 * trainer could take the last one. */
static int epoch_order(dp_trainer *t) {
  if (t->perm_epoch != t->epoch) {
    if (t->next_epoch == t->epoch) {
      int64_t *p = t->perm;
      t->perm = t->perm_next, t->perm_next = p, t->next_epoch = -1;
    } else {
      draw_order(t, t->epoch, t->perm);
      if (t->stream)
        dp_stream_order(t->stream, t->epoch, t->perm, t->n_train);
    }
    t->perm_epoch = t->epoch;
  }
  if (!t->streaming)
    return 0;
  if (!t->stream)
    DP_TRY(start_stream(t));
  if (t->next_epoch != t->epoch + 1 && (t->epoch + 1) * t->steps_per_epoch < t->total_steps) {
    draw_order(t, t->epoch + 1, t->perm_next);
    t->next_epoch = t->epoch + 1;
    dp_stream_order(t->stream, t->next_epoch, t->perm_next, t->n_train);
  }
  return 0;
}

int dp_trainer_prefetch(dp_trainer *t) {
  if (!t->streaming || t->step >= t->total_steps)
    return 0;
  DP_TRY(epoch_order(t));
  return dp_stream_wait(t->stream, t->step);
}

/* The step's rows from the reader's ring, once per step (a line search evaluates the same rows
 * several times). */
static int acquire_rows(dp_trainer *t, int64_t n) {
  if (!t->stream || t->stream_step == t->step)
    return 0;
  int64_t got = 0;
  DP_TRY(dp_stream_acquire(t->stream, t->step, &got));
  t->stream_step = t->step;
  if (got != n)
    return dp_fail(DP_EINVAL, "step %lld: the streaming reader holds %lld rows of this rank, the step takes %lld",
                   (long long)t->step + 1, (long long)got, (long long)n);
  return 0;
}

static int gather(dp_trainer *t, const int64_t *rows, int64_t c, int nb) {
  int32_t *labels = t->train->has_labels ? t->labels : NULL;
  float *targets = t->train->has_labels ? NULL : t->targets;
  if (t->stream) {
    dp_stream_copy(t->stream, c, nb, t->x, labels, targets);
    return 0;
  }
  return dp_dataset_gather(t->train, rows + c, nb, t->x, labels, targets);
}

/* Where the averaged gradient and the reduced extra slots are after the reduction: the model's own
 * blocks, or with comm = node the node's shared reduced block. */
static float *avg_grads(const dp_trainer *t) { return t->node.reduce ? t->node.reduced + 16 : t->model.grads; }
static float *avg_extra(const dp_trainer *t) { return avg_grads(t) - DP_GRAD_EXTRA; }

/* An empty pass: zero gradients, and the same batch-norm reduces every other rank makes. */
static void empty_pass(dp_trainer *t, float scale) {
  dp_model *m = &t->model;
  t->sync.armed = 1;
  dp_model_forward(m, t->x, 0);
  dp_model_backward(m, t->x, t->labels, t->targets, 0, scale, 0, NULL);
}

/* Σ|y - t| over B rows of K outputs: regression's MAE, which the loss does not give. */
static double abs_error_sum(const dp_model *m, const float *y, const float *targets, int B) {
  if (m->loss != DP_LOSS_MSE)
    return 0.0;
  double s = 0.0;
  for (size_t i = 0; i < (size_t)B * (size_t)m->out_dim; i++)
    s += fabs((double)y[i] - (double)targets[i]);
  return s;
}

/* Forward and backward over rows[0..n) in passes of at most max_batch rows (one pass when a layer
 * normalises over the batch). A rank that fails still makes the passes' collectives. */
static int shard_gradients(dp_trainer *t, const int64_t *rows, int64_t n, float scale, double *loss, int *correct,
                           double *abserr) {
  dp_model *m = &t->model;
  *loss = 0.0;
  *correct = 0;
  *abserr = 0.0;
  if (n == 0) { /* an empty shard still sends zero gradients */
    empty_pass(t, scale);
    return m->err;
  }
  for (int64_t c = 0; c < n; c += m->max_batch) {
    int nb = (int)(n - c < m->max_batch ? n - c : m->max_batch);
    double t0 = MPI_Wtime();
    int rc = gather(t, rows, c, nb);
    if (rc < 0) {
      if (c == 0)
        empty_pass(t, scale);
      return rc;
    }
    int hits = 0;
    t->sync.armed = c + nb == n; /* the last pass: buckets start as its layers finish */
    double t1 = MPI_Wtime();
    dp_model_set_pass(m, t->cfg->train.seed, t->step, (rows - t->perm) + c); /* dropout's rows: epoch positions */
    *abserr += abs_error_sum(m, dp_model_forward(m, t->x, nb), t->targets, nb);
    double t2 = MPI_Wtime();
    *loss += dp_model_backward(m, t->x, t->labels, t->targets, nb, scale, c > 0, &hits);
    dp_timeline_span(t->tl, "data", -1, t0, t1);
    dp_timeline_span(t->tl, "forward", -1, t1, t2);
    dp_timeline_span(t->tl, "backward", -1, t2, MPI_Wtime());
    *correct += hits;
  }
  return m->err;
}

/* [train] deterministic: this rank takes a contiguous range of whole chunks of the global batch
 * (maybe none), and the chunks' contributions are added exactly (gradsync.h): the same sums at any
 * rank count. A redo (a gradient far larger or smaller than the last) passes over the rows again. */
static int batch_gradient_exact(dp_trainer *t, int64_t g0, int64_t g1, const dp_step_request *req, int local_status,
                                dp_step_result *r) {
  int64_t Bg = g1 - g0, C = t->cfg->train.chunk_rows, chunks = ceil_div(Bg, C), c0, c1;
  dp_split_range(chunks, t->comm->rank, t->comm->size, &c0, &c1);
  int64_t lo = c0 * C < Bg ? c0 * C : Bg, hi = c1 * C < Bg ? c1 * C : Bg;
  float scale = 1.0f / (float)Bg;
  int rc = local_status, redo = 1;
  dp_exact_sums s;
  for (int attempt = 0; redo; attempt++) {
    double t0 = MPI_Wtime(), loss, abserr; /* the chunks' own sums are the ones that count */
    int correct;
    dp_exactsync_begin(&t->exact, chunks, c1 - c0);
    if (rc == 0)
      rc = shard_gradients(t, t->perm + g0 + lo, hi - lo, scale, &loss, &correct, &abserr);
    else
      empty_pass(t, scale);
    double t1 = MPI_Wtime();
    redo = dp_exactsync_finish(&t->exact, rc < 0, req->stop, req->save, attempt == 0, &s);
    if (redo < 0)
      return redo;
    t->time.compute += t1 - t0;
    t->time.comm += MPI_Wtime() - t1;
  }
  r->stop = s.stop > 0;
  r->save = s.save > 0;
  if (s.failed > 0)
    return dp_comm_agree(t->comm, rc, NULL);
  int regression = t->model.loss == DP_LOSS_MSE;
  r->loss = s.loss / (double)Bg;
  r->acc = regression ? NAN : (double)s.correct / (double)Bg;
  r->mae = regression ? s.abserr / ((double)Bg * t->model.out_dim) : NAN;
  return 0;
}

static int take_sums(dp_trainer *t, int64_t Bg, int rc, dp_step_result *r);

/* Gradient of the mean loss over rows [g0, g1) of this epoch's order, summed across ranks into the
 * gradient block, with the loss and accuracy riding on the same allreduce. */
static int batch_gradient(dp_trainer *t, int64_t g0, int64_t g1, const dp_step_request *req, int local_status,
                          dp_step_result *r) {
  if (t->cfg->train.deterministic)
    return batch_gradient_exact(t, g0, g1, req, local_status, r);
  int64_t Bg = g1 - g0, lo, hi;
  dp_split_range(Bg, t->comm->rank, t->comm->size, &lo, &hi);
  float scale = 1.0f / (float)Bg;
  double sum = 0.0, abserr = 0.0;
  int correct = 0, rc = local_status;
  double t0 = MPI_Wtime();
  dp_gradsync_begin(&t->sync);
  if (rc == 0)
    rc = acquire_rows(t, hi - lo);
  if (rc == 0)
    dp_fault_dump_rows(t->comm->rank, t->step + 1, t->perm + g0 + lo, hi - lo);
  if (rc == 0)
    rc = shard_gradients(t, t->perm + g0 + lo, hi - lo, scale, &sum, &correct, &abserr);
  else
    empty_pass(t, scale);
  double t1 = MPI_Wtime();
  float *extra = t->model.extra;
  extra[DP_EXTRA_LOSS] = (float)(sum * scale);
  extra[DP_EXTRA_CORRECT] = (float)correct;
  extra[DP_EXTRA_ABSERR] = (float)(abserr * scale / t->model.out_dim);
  extra[DP_EXTRA_FAILED] = rc < 0 ? 1.0f : 0.0f;
  extra[DP_EXTRA_STOP] = req->stop ? 1.0f : 0.0f;
  extra[DP_EXTRA_SAVE] = req->save ? 1.0f : 0.0f;
  t->time.compute += t1 - t0;
  if (t->fused) { /* the update sums the gradient; the step's sums are taken after it */
    t->fused_status = rc;
    return 0;
  }
  if (t->node.reduce) {
    DP_TRY(dp_nodesync_reduce(&t->node));
    dp_timeline_span(t->tl, "node reduce", -1, t1, MPI_Wtime());
  } else
    DP_TRY(dp_gradsync_finish(&t->sync)); /* the buckets not started during the backward pass */
  t->time.comm += MPI_Wtime() - t1; /* waiting for the slowest rank shows up here */
  return take_sums(t, Bg, rc, r);
}

/* The reduced extra slots: the flags every rank now agrees on, the loss, the accuracy. rc: this
 * rank's own status. */
static int take_sums(dp_trainer *t, int64_t Bg, int rc, dp_step_result *r) {
  const float *extra = avg_extra(t);
  r->stop = extra[DP_EXTRA_STOP] > 0.0f;
  r->save = extra[DP_EXTRA_SAVE] > 0.0f;
  /* Every rank saw the flag: one more collective, on this path only, so that when several ranks
   * failed (a data file changed under all of them) one reports and all exit with its code. */
  if (extra[DP_EXTRA_FAILED] > 0.0f)
    return dp_comm_agree(t->comm, rc, NULL);
  r->loss = extra[DP_EXTRA_LOSS];
  int regression = t->model.loss == DP_LOSS_MSE;
  r->acc = regression ? NAN : extra[DP_EXTRA_CORRECT] / (double)Bg;
  r->mae = regression ? extra[DP_EXTRA_ABSERR] : NAN;
  return 0;
}

/* ‖g‖₂ with 16 float lanes per block of 1024 (so the loop vectorises) and the blocks summed in
 * double (so a million parameters lose no precision). n is a multiple of 16. */
static double grad_norm(const float *g, size_t n) {
  double s = 0.0;
  for (size_t b = 0; b < n; b += 1024) {
    size_t e = b + 1024 < n ? b + 1024 : n;
    float lane[16] = {0};
    for (size_t i = b; i < e; i += 16)
      for (int j = 0; j < 16; j++)
        lane[j] += g[i + j] * g[i + j];
    for (int j = 0; j < 16; j++)
      s += lane[j];
  }
  return sqrt(s);
}

/* Global-norm clipping on the averaged gradient: every rank holds the same gradient, so every rank
 * computes the same norm and the same factor. *g: the gradient the update then reads — with comm =
 * node the shared one is still being read by the others, so this rank's slice of it is scaled into
 * its own gradient block instead. */
static double clip_gradients(dp_trainer *t, int want_norm, const float **g) {
  double clip = t->cfg->optimizer.clip_norm;
  float *avg = avg_grads(t);
  *g = avg;
  if (clip <= 0.0 && !want_norm)
    return NAN; /* one more pass over the gradients, ~3% of a step: only when asked */
  double norm = grad_norm(avg, t->model.n_floats);
  if (clip > 0.0 && norm > clip) {
    float f = (float)(clip / norm), *out = t->model.grads;
    size_t lo = t->node.reduce ? t->node.lo : 0, hi = t->node.reduce ? t->node.hi : t->model.n_floats;
    for (size_t i = lo; i < hi; i++)
      out[i] = avg[i] * f;
    *g = out;
  }
  return norm;
}

/* A line search's objective: the full-batch loss and gradient at w (the model's own blocks). */
typedef struct {
  dp_trainer *t;
  const dp_step_request *req;
  dp_step_result *r;
} step_ctx;

static int full_batch_objective(void *ctx, const float *w, float *g, double *f) {
  step_ctx *c = ctx;
  (void)w;
  (void)g; /* both are the model's own blocks */
  DP_TRY(batch_gradient(c->t, 0, c->t->n_train, c->req, 0, c->r));
  *f = c->r->loss;
  return 0;
}

/* 0 when every float of x (n) is finite. x·0 is NaN exactly for NaN and ±Inf; 16 lanes so that
 * the loop vectorises without reassociating a sum. */
static int all_finite(const float *x, size_t n) {
  float lane[16] = {0};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++)
      lane[j] += x[i + j] * 0.0f;
  for (; i < n; i++)
    lane[0] += x[i] * 0.0f;
  float s = 0.0f;
  for (int j = 0; j < 16; j++)
    s += lane[j];
  return s == 0.0f;
}

/* The averaged gradient and loss, checked on every rank alike (they are the reduced values): -1 when
 * finite, else the first layer with a non-finite gradient (n_layers for the loss itself), with a
 * description in what. */
static int find_nonfinite(const dp_trainer *t, double loss, char *what, size_t len) {
  const dp_model *m = &t->model;
  if (!isfinite(loss)) {
    snprintf(what, len, "the loss is %s", isnan(loss) ? "NaN" : "Inf");
    return m->n_layers;
  }
  for (int i = 0; i < m->n_layers; i++) {
    dp_tensor ts[DP_MAX_TENSORS];
    int n = dp_model_tensors(m, i, ts);
    for (int k = 0; k < n; k++)
      if (!all_finite(avg_grads(t) + ts[k].offset, (size_t)ts[k].dims[0] * (ts[k].rank > 1 ? ts[k].dims[1] : 1))) {
        snprintf(what, len, "the gradient of layer %d's %s is not finite", i, ts[k].name);
        return i;
      }
  }
  return -1;
}

/* After a non-finite loss or gradient: skip the update, or stop with one clear error (every rank
 * found it in the same reduced values, so they all stop and one reports). */
static int nonfinite(dp_trainer *t, dp_step_result *r, const char *what, int can_skip) {
  if (can_skip && t->cfg->train.on_nonfinite == DP_NONFINITE_SKIP) {
    r->skipped = 1;
    return 0;
  }
  dp_error_set_reporter(0);
  return dp_fail(DP_ENONFINITE,
                 "step %lld: %s (diverged): the step size %g is probably too large; try a smaller [optimizer] lr, "
                 "or `dptrain sweep` to find where training diverges",
                 (long long)t->step + 1, what, r->lr);
}

/* A line search's iteration: it evaluates the objective itself and cannot skip; its loss and
 * gradient norm are at the point it accepts. */
static int line_search_update(dp_trainer *t, const dp_step_request *req, dp_step_result *r) {
  step_ctx c = {t, req, r};
  int64_t evals = t->optim.lbfgs.evals;
  dp_optim_problem p = {t->model.params, t->model.grads, &r->loss, (float)r->lr, full_batch_objective, &c, 0};
  DP_TRY(dp_optim_update(&t->optim, &p));
  r->converged = t->optim.converged;
  r->acc = r->mae = NAN; /* the last evaluation's, not necessarily at the accepted point */
  r->evals = t->optim.lbfgs.evals - evals;
  r->line_step = t->optim.lbfgs.step;
  r->grad_norm = grad_norm(t->model.grads, t->model.n_floats);
  char what[160];
  if (find_nonfinite(t, r->loss, what, sizeof what) >= 0)
    DP_TRY(nonfinite(t, r, what, 0));
  return 0;
}

/* comm = node on one node, an update that needs nothing but the gradient: the slice's sum and its
 * update in one pass, the step's sums after it. A non-finite gradient (abort only) is named from the
 * reduced gradient, made for that. */
static int fused_update(dp_trainer *t, dp_step_result *r) {
  double t0 = MPI_Wtime(), wait;
  int bad;
  DP_TRY(dp_nodesync_reduce_update(&t->node, &t->optim, (float)r->lr, &bad, &wait));
  t->time.comm += wait;
  t->time.optim = MPI_Wtime() - t0 - wait;
  dp_timeline_span(t->tl, "node reduce", -1, t0, t0 + wait); /* the wait; the sum is the update's */
  dp_timeline_span(t->tl, "optimizer", -1, t0 + wait, t0 + wait + t->time.optim);
  DP_TRY(take_sums(t, r->batch, t->fused_status, r));
  char what[160];
  if (bad || !isfinite(r->loss)) {
    DP_TRY(dp_nodesync_materialize(&t->node));
    if (find_nonfinite(t, r->loss, what, sizeof what) >= 0)
      DP_TRY(nonfinite(t, r, what, 0));
  }
  return 0;
}

/* A first-order update on the step's gradient: skipping needs the verdict before the update;
 * otherwise the update loop itself checks the gradient (a pass over it was 3.5% of a step) and a
 * bad one stops or restores the run. */
static int first_order_update(dp_trainer *t, const dp_step_request *req, dp_step_result *r) {
  if (t->fused)
    return fused_update(t, r);
  char what[160];
  int check_first = t->cfg->train.on_nonfinite == DP_NONFINITE_SKIP || !isfinite(r->loss);
  if (check_first && find_nonfinite(t, r->loss, what, sizeof what) >= 0)
    DP_TRY(nonfinite(t, r, what, 1));
  double t0 = MPI_Wtime();
  if (!r->skipped) {
    const float *g;
    r->grad_norm = clip_gradients(t, req->want_grad_norm, &g);
    dp_optim_problem p = {t->model.params, (float *)g, &r->loss, (float)r->lr, NULL, NULL, 0};
    if (t->node.on)
      DP_TRY(dp_nodesync_update(&t->node, &t->optim, g, p.lr, &p.nonfinite));
    else
      DP_TRY(dp_optim_update(&t->optim, &p));
    if (p.nonfinite && find_nonfinite(t, r->loss, what, sizeof what) >= 0)
      DP_TRY(nonfinite(t, r, what, 0));
  }
  t->time.optim = MPI_Wtime() - t0;
  dp_timeline_span(t->tl, "optimizer", -1, t0, t0 + t->time.optim);
  return 0;
}

int dp_trainer_step(dp_trainer *t, const dp_step_request *req, dp_step_result *r) {
  if (t->pos == t->steps_per_epoch) {
    t->epoch++;
    t->pos = 0;
  }
  /* A reader that cannot start fails this step on this rank, through its allreduce like any other. */
  int local = epoch_order(t);
  if (req->local_status < 0)
    local = req->local_status;
  dp_comm_set_step(t->comm, t->step + 1);
  int64_t g0 = t->pos * t->batch, g1 = g0 + t->batch < t->n_train ? g0 + t->batch : t->n_train;
  *r = (dp_step_result){.lr = dp_schedule_lr(&t->sched, t->step) * t->lr_factor, .batch = g1 - g0,
                        .grad_norm = NAN, .mae = NAN, .line_step = NAN};
  t->time = (dp_step_time){0};
  t->fused = t->node.reduce && t->comm->n_nodes == 1 && !(t->cfg->optimizer.clip_norm > 0) &&
             t->cfg->train.on_nonfinite == DP_NONFINITE_ABORT && !req->want_grad_norm &&
             !dp_optim_line_search(&t->optim);
  /* A line search carries the loss and gradient at its point; a local failure still goes through
   * an evaluation's allreduce, so that every rank stops here. */
  if (dp_optim_needs_gradient(&t->optim) || local < 0)
    DP_TRY(batch_gradient(t, g0, g1, req, local, r));
  if (dp_optim_line_search(&t->optim))
    DP_TRY(line_search_update(t, req, r));
  else
    DP_TRY(first_order_update(t, req, r));
  if (t->stream_step == t->step) {
    dp_stream_release(t->stream);
    t->stream_step = -1;
  }
  r->time = t->time;
  t->pos++;
  t->step++;
  t->samples_seen += r->batch;
  return 0;
}

void dp_trainer_resumed(dp_trainer *t) {
  if (t->pos == t->steps_per_epoch) { /* saved at an epoch's end: continue with the next */
    t->epoch++;
    t->pos = 0;
  }
  t->perm_epoch = -1; /* redrawn from (seed, epoch) at the next step */
  dp_stream_stop(t->stream); /* restarted there, from the position loaded */
  t->stream = NULL;
  t->stream_step = t->next_epoch = -1;
  t->samples_seen = dp_trainer_samples_seen(t);
}

void dp_trainer_set_timeline(dp_trainer *t, dp_timeline *tl) { t->tl = t->sync.tl = tl; }

static int evaluate_shard(dp_trainer *t, dp_dataset *ds, const int64_t *rows, int64_t count, dp_scores *e);
static int evaluate_exact(dp_trainer *t, dp_dataset *ds, const int64_t *rows, int64_t count, dp_scores *e);

/* Running statistics of unsynchronised batch norm differ per rank: evaluation and checkpoints use
 * their mean, so that every rank evaluates the same model. */
int dp_trainer_sync_stats(dp_trainer *t) {
  dp_model *m = &t->model;
  int local = 0;
  for (int i = 0; i < m->n_layers; i++)
    local |= m->layer[i].norm.kind == DP_NORM_BATCH && !m->layer[i].norm.sync;
  if (!local || t->comm->size == 1)
    return 0;
  DP_TRY(dp_comm_allreduce_f32(t->comm, m->stats, m->n_stats));
  for (size_t i = 0; i < m->n_stats; i++)
    m->stats[i] /= (float)t->comm->size;
  return 0;
}

int dp_trainer_evaluate(dp_trainer *t, dp_dataset *ds, dp_scores *e) {
  return dp_trainer_evaluate_rows(t, ds, NULL, ds->n, e);
}

int dp_trainer_evaluate_rows(dp_trainer *t, dp_dataset *ds, const int64_t *rows, int64_t count, dp_scores *e) {
  dp_model *m = &t->model;
  DP_TRY(dp_trainer_sync_stats(t));
  dp_model_set_eval(m, 1);
  int rc = t->cfg->train.deterministic ? evaluate_exact(t, ds, rows, count, e) : evaluate_shard(t, ds, rows, count, e);
  dp_model_set_eval(m, 0);
  return rc;
}

/* The scores from the sums of loss, hits and Σ|y - t| over n rows. */
static void scores(const dp_model *m, const double sums[3], double n, dp_scores *e) {
  int regression = m->loss == DP_LOSS_MSE;
  *e = (dp_scores){.loss = sums[0] / n,
                   .acc = regression ? NAN : sums[1] / n,
                   .rmse = regression ? sqrt(sums[0] / n) : NAN, /* the loss is the per-element MSE */
                   .mae = regression ? sums[2] / (n * m->out_dim) : NAN};
}

static int evaluate_shard(dp_trainer *t, dp_dataset *ds, const int64_t *rows, int64_t count, dp_scores *e) {
  dp_model *m = &t->model;
  int64_t lo, hi;
  dp_split_range(count, t->comm->rank, t->comm->size, &lo, &hi);
  double sums[3] = {0.0, 0.0, 0.0}; /* loss, hits, Σ|y - t| */
  int rc = 0;
  for (int64_t c = lo; c < hi && rc == 0; c += m->max_batch) {
    int nb = (int)(hi - c < m->max_batch ? hi - c : m->max_batch);
    for (int i = 0; i < nb; i++)
      t->rows[i] = rows ? rows[c + i] : c + i;
    rc = dp_dataset_gather(ds, t->rows, nb, t->x, ds->has_labels ? t->labels : NULL,
                           ds->has_labels ? NULL : t->targets);
    if (rc == 0) {
      int hits = 0;
      sums[2] += abs_error_sum(m, dp_model_forward(m, t->x, nb), t->targets, nb);
      sums[0] += dp_model_loss(m, t->labels, t->targets, nb, &hits);
      sums[1] += hits;
    }
  }
  DP_TRY(dp_comm_agree(t->comm, rc, NULL));
  DP_TRY(dp_comm_allreduce_f64(t->comm, sums, 3));
  scores(m, sums, (double)count, e);
  return 0;
}

/* [train] deterministic: the rows in chunks of chunk_rows, each rank a range of whole chunks, each
 * chunk's sums on their own, added exactly: the same scores at any rank count. */
static int evaluate_exact(dp_trainer *t, dp_dataset *ds, const int64_t *rows, int64_t count, dp_scores *e) {
  dp_model *m = &t->model;
  int64_t C = t->cfg->train.chunk_rows, chunks = ceil_div(count, C), c0, c1;
  dp_split_range(chunks, t->comm->rank, t->comm->size, &c0, &c1);
  double *v = calloc((size_t)(c1 - c0) * 3 + 3, sizeof(double)), sums[3];
  int rc = v ? 0 : dp_fail(DP_ENOMEM, "evaluation: cannot allocate the sums of %lld chunks", (long long)(c1 - c0));
  for (int64_t c = c0; c < c1 && rc == 0; c++) {
    int nb = (int)(count - c * C < C ? count - c * C : C);
    for (int i = 0; i < nb; i++)
      t->rows[i] = rows ? rows[c * C + i] : c * C + i;
    rc = dp_dataset_gather(ds, t->rows, nb, t->x, ds->has_labels ? t->labels : NULL,
                           ds->has_labels ? NULL : t->targets);
    if (rc == 0) {
      double *s = v + (c - c0) * 3; /* loss, hits, Σ|y - t| */
      int hits = 0;
      s[2] = abs_error_sum(m, dp_model_forward(m, t->x, nb), t->targets, nb);
      s[0] = dp_model_loss(m, t->labels, t->targets, nb, &hits);
      s[1] = hits;
    }
  }
  rc = dp_comm_agree(t->comm, rc, NULL);
  if (rc == 0)
    rc = dp_reprosum_chunks(&t->exact.sums, v, (int)(c1 - c0), 3, chunks, sums);
  free(v);
  DP_TRY(rc);
  scores(m, sums, (double)count, e);
  return 0;
}

int64_t dp_trainer_samples_seen(const dp_trainer *t) {
  int64_t full_epochs = t->step / t->steps_per_epoch, rest = t->step % t->steps_per_epoch;
  int64_t per_epoch = t->steps_per_epoch * t->batch < t->n_train ? t->steps_per_epoch * t->batch : t->n_train;
  int64_t partial = rest * t->batch < per_epoch ? rest * t->batch : per_epoch;
  return full_epochs * per_epoch + partial;
}
