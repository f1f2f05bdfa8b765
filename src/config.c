#include "dptrain/config.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "dptrain/error.h"
#include "dptrain/norm.h"
#include "dptrain/paths.h"

/* ---- the key table: the single source of truth for parsing, defaults, --list and the docs ---- */

/* Each enum's names come from its X-macro in the header that declares it; index = enum value. */
#define NAME_OF(e, name) name,
static const char *const in_memory_names[] = {DP_IN_MEMORY_MAP(NAME_OF) NULL};
static const char *const standardize_names[] = {DP_STANDARDIZE_MAP(NAME_OF) NULL};
static const char *const keep_best_names[] = {DP_KEEP_BEST_MAP(NAME_OF) NULL};
static const char *const order_names[] = {DP_DATA_ORDER_MAP(NAME_OF) NULL};
static const char *const direct_io_names[] = {DP_DIRECT_IO_MAP(NAME_OF) NULL};
static const char *const loss_names[] = {DP_LOSS_MAP(NAME_OF) NULL};
static const char *const act_names[] = {DP_ACT_MAP(NAME_OF) NULL};
static const char *const init_names[] = {DP_INIT_RULE_MAP(NAME_OF) NULL};
static const char *const dist_names[] = {DP_INIT_DIST_MAP(NAME_OF) NULL};
static const char *const optim_names[] = {DP_OPTIM_KIND_MAP(NAME_OF) NULL};
static const char *const form_names[] = {DP_MOMENTUM_FORM_MAP(NAME_OF) NULL};
static const char *const eps_names[] = {DP_EPS_PLACEMENT_MAP(NAME_OF) NULL};
static const char *const sched_names[] = {DP_SCHED_KIND_MAP(NAME_OF) NULL};
static const char *const scale_names[] = {DP_LR_SCALE_MAP(NAME_OF) NULL};
static const char *const norm_names[] = {DP_NORM_KIND_MAP(NAME_OF) NULL};
static const char *const nonfinite_names[] = {DP_ON_NONFINITE_MAP(NAME_OF) NULL};
static const char *const divergence_names[] = {DP_ON_DIVERGENCE_MAP(NAME_OF) NULL};
static const char *const layer_type_names[] = {DP_LAYER_TYPE_MAP(NAME_OF) NULL};
static const char *const comm_names[] = {DP_COMM_MODE_MAP(NAME_OF) NULL};
#undef NAME_OF

#define C(f) offsetof(dp_config, f)
#define L(f) offsetof(dp_layer_cfg, f)
#define BIG 9.0e15 /* int64 values are parsed exactly; this only bounds the range check */
#define STR_R(r, sec, k, def, off, sz, desc) {sec, k, DP_KEY_STRING, def, desc, off, NULL, 0, 0, sz, NULL, r}
#define NUM_R(r, sec, k, t, def, off, lo, hi, desc) {sec, k, t, def, desc, off, NULL, lo, hi, 0, NULL, r}
#define ENUM_R(r, sec, k, def, off, names, desc) {sec, k, DP_KEY_ENUM, def, desc, off, names, 0, 0, 0, NULL, r}
#define BOOL_R(r, sec, k, def, off, desc) {sec, k, DP_KEY_BOOL, def, desc, off, NULL, 0, 1, 0, NULL, r}
#define STR(...) STR_R(DP_RESUME_MATCH, __VA_ARGS__)
#define NUM(...) NUM_R(DP_RESUME_MATCH, __VA_ARGS__)
#define ENUM(...) ENUM_R(DP_RESUME_MATCH, __VA_ARGS__)
#define BOOL(...) BOOL_R(DP_RESUME_MATCH, __VA_ARGS__)
/* A row's dp_resume_rule: SAFE(NUM, ...) may change on resume, FRESH(STR, ...) is read only at a
 * fresh start; an unmarked row must match the checkpoint (a new key is refused until classified). */
#define SAFE(row, ...) row##_R(DP_RESUME_SAFE, __VA_ARGS__)
#define FRESH(row, ...) row##_R(DP_RESUME_FRESH, __VA_ARGS__)

static const dp_key keys[] = {
    STR("data", "path", NULL, C(data.path), DP_PATH_MAX, "HDF5 data file with /train/x, /train/y (and optionally /test)"),
    {"data", "shape", DP_KEY_INTS, "", "C,H,W: each row of /train/x is a C x H x W image (row-major, PyTorch's NCHW), "
     "for conv2d and pooling layers; empty = flat rows", C(data.shape), NULL, 1, 1 << 24, 3, NULL, DP_RESUME_MATCH},
    SAFE(ENUM, "data", "in_memory", "auto", C(data.in_memory), in_memory_names,
         "hold the training set in memory (auto: when it takes at most half of a rank's memory share)"),
    NUM("data", "mean", DP_KEY_DOUBLE, "0", C(data.mean), -1e30, 1e30,
        "subtracted from every input (after the file's scale): `dptrain convert` prints the training set's"),
    NUM("data", "std", DP_KEY_DOUBLE, "1", C(data.std), 1e-30, 1e30,
        "inputs are divided by it after subtracting mean: standardised inputs train faster"),
    ENUM("data", "standardize", "scalar", C(data.standardize), standardize_names,
         "none (the file's scale only), scalar (mean and std above) or per_feature (each feature by the training "
         "split's mean and std that `dptrain convert` stores in the file; a constant feature's std counts as 1)"),
    NUM("data", "val_fraction", DP_KEY_DOUBLE, "0", C(data.val_fraction), 0, 0.99,
        "hold this fraction of the training rows out for validation (chosen from seed, never trained on, the "
        "same at any rank count); 0 = none, or the file's /val group when it has one"),

    ENUM("data", "order", "auto", C(data.order), order_names,
         "the epochs' row order: random (a full shuffle), blocks (blocks of block_rows permuted, rows shuffled "
         "within shuffle_blocks of them: streams a file in large reads) or auto (blocks when the training set is "
         "read from the file, random when it is held in memory)"),
    NUM("data", "block_rows", DP_KEY_INT64, "0", C(data.block_rows), 0, BIG,
        "order = blocks: rows per block; 0 = the file's chunk rows (blocks of about 2 MB when not chunked)"),
    NUM("data", "shuffle_blocks", DP_KEY_INT, "16", C(data.shuffle_blocks), 1, 1 << 20,
        "order = blocks: consecutive blocks of each epoch's block permutation whose rows are shuffled together"),
    SAFE(ENUM, "data", "direct_io", "auto", C(data.direct_io), direct_io_names,
         "order = blocks read from the file: read x's chunks past the page cache with O_DIRECT (convert's layout; "
         "others and file systems without O_DIRECT use HDF5's reads): true, false, or auto (when the file is larger "
         "than half the memory the node's ranks may use: no pages it caches would be read again)"),
    SAFE(NUM, "data", "prefetch_mb", DP_KEY_DOUBLE, "256", C(data.prefetch_mb), 0.001, 1e9,
         "order = blocks read from the file: memory (MB) of each rank's ring of blocks read ahead (at most half of "
         "its share of the node's memory)"),

    ENUM("model", "loss", "softmax_cross_entropy", C(model.loss), loss_names,
         "softmax_cross_entropy (integer labels) or mse (float targets)"),
    FRESH(STR, "model", "init_from", "", C(model.init_from), DP_PATH_MAX,
        "start from the /model weights of this checkpoint (or any file with that layout); empty = none"),

    ENUM("layer", "type", "dense", L(type), layer_type_names,
         "dense (fully connected), conv2d, maxpool, avgpool, flatten or dropout; conv2d and the pools need [data] "
         "shape and come before flatten and dense layers; the last layer is dense"),
    NUM("layer", "units", DP_KEY_INT, NULL, L(units), 1, 1 << 24,
        "dense: outputs of this fully-connected layer (required; the last layer's are the classes or targets)"),
    NUM("layer", "filters", DP_KEY_INT, NULL, L(filters), 1, 1 << 20, "conv2d: output channels (required)"),
    {"layer", "kernel", DP_KEY_INTS, "", "conv2d, maxpool, avgpool: the window, k (k x k) or kh,kw (pools: square; "
     "required)", L(kernel), NULL, 1, 4096, 2, NULL, DP_RESUME_MATCH},
    NUM("layer", "stride", DP_KEY_INT, "0", L(stride), 0, 4096,
        "conv2d, maxpool, avgpool: the window's step; 0 = the default (conv2d 1, pools the kernel)"),
    NUM("layer", "padding", DP_KEY_INT, "0", L(padding), 0, 4096,
        "conv2d: zeros added on each side, or same (the output keeps the input's size at stride 1; odd kernels)"),
    NUM("layer", "rate", DP_KEY_DOUBLE, "0.5", L(rate), 0, 1,
        "dropout: the fraction of units zeroed in training, below 1 (the others scaled by 1/(1 - rate)); off in "
        "evaluation"),
    ENUM("layer", "activation", "relu", L(activation), act_names, "identity, relu, tanh or sigmoid"),
    ENUM("layer", "init", "auto", L(init), init_names,
         "weight initialisation; auto follows the activation (Xavier; sigmoid x4, relu x sqrt 2)"),
    ENUM("layer", "init_dist", "uniform", L(init_dist), dist_names, "distribution of init = auto: uniform or normal"),
    ENUM("layer", "norm", "none", L(norm), norm_names,
         "normalise the net sums before the activation: none, batch or layer (a normed layer has no bias)"),
    BOOL("layer", "sync", "true", L(sync),
         "batch norm: statistics over the global batch (all ranks); false = the rank's shard only (faster, "
         "depends on the rank count)"),
    NUM("layer", "eps", DP_KEY_DOUBLE, "1e-5", L(eps), 1e-12, 1, "norm: epsilon in sqrt(var + eps)"),
    NUM("layer", "norm_momentum", DP_KEY_DOUBLE, "0.1", L(norm_momentum), 0, 1,
        "batch norm: running statistics r = (1 - m) r + m batch (unbiased variance), used for evaluation"),

    ENUM("optimizer", "name", "sgd", C(optimizer.name), optim_names, "sgd, rmsprop, adam, adamw or lbfgs"),
    NUM("optimizer", "lr", DP_KEY_DOUBLE, "0", C(optimizer.lr), 0, 1e6,
        "step size gamma; 0 = the optimizer's default (sgd 0.01, rmsprop 0.01, adam/adamw 0.001, lbfgs 1)"),
    NUM("optimizer", "momentum", DP_KEY_DOUBLE, "0", C(optimizer.momentum), 0, 0.999999,
        "momentum beta (sgd: p = beta p + g; rmsprop: on the scaled step); 0 = none"),
    NUM("optimizer", "dampening", DP_KEY_DOUBLE, "0", C(optimizer.dampening), 0, 1,
        "sgd: p = beta p + (1 - dampening) g"),
    NUM("optimizer", "weight_decay", DP_KEY_DOUBLE, "0", C(optimizer.weight_decay), 0, 1e6,
        "L2 penalty added to the gradient (adamw: decoupled decay of the weights)"),
    BOOL("optimizer", "nesterov", "false", C(optimizer.nesterov), "sgd: Nesterov momentum"),
    ENUM("optimizer", "momentum_form", "heavy_ball", C(optimizer.momentum_form), form_names,
         "sgd: heavy_ball (p = beta p + g; w -= lr p) or difference (w += -lr g + beta (w - w_prev))"),
    NUM("optimizer", "alpha", DP_KEY_DOUBLE, "0.99", C(optimizer.alpha), 0, 0.999999,
        "rmsprop: decay of the squared-gradient average v = alpha v + (1 - alpha) g^2"),
    {"optimizer", "beta", DP_KEY_DOUBLE, "0.99", "rmsprop: another name for alpha", C(optimizer.alpha), NULL, 0,
     0.999999, 0, "alpha", DP_RESUME_MATCH},
    NUM("optimizer", "eps", DP_KEY_DOUBLE, "1e-8", C(optimizer.eps), 1e-30, 1,
        "rmsprop, adam: epsilon in the denominator (0 would divide 0 by 0 for a weight whose gradient is 0)"),
    NUM("optimizer", "beta1", DP_KEY_DOUBLE, "0.9", C(optimizer.beta1), 0, 0.999999, "adam: decay of the first moment"),
    NUM("optimizer", "beta2", DP_KEY_DOUBLE, "0.999", C(optimizer.beta2), 0, 0.999999,
        "adam: decay of the second moment"),
    BOOL("optimizer", "bias_correction", "true", C(optimizer.bias_correction),
         "adam: divide m and v by (1 - beta^t)"),
    ENUM("optimizer", "eps_placement", "outside", C(optimizer.eps_placement), eps_names,
         "adam: m/(sqrt(v) + eps) (outside) or m/sqrt(v + eps) (inside)"),
    NUM("optimizer", "history", DP_KEY_INT, "10", C(optimizer.history), 1, 1000, "lbfgs: curvature pairs kept"),
    SAFE(NUM, "optimizer", "max_iter", DP_KEY_INT64, "100", C(optimizer.max_iter), 1, BIG, "lbfgs: iterations"),
    SAFE(NUM, "optimizer", "tolerance_grad", DP_KEY_DOUBLE, "1e-7", C(optimizer.tolerance_grad), 0, 1e6,
        "lbfgs: stop when max |gradient| is at most this"),
    SAFE(NUM, "optimizer", "tolerance_change", DP_KEY_DOUBLE, "1e-9", C(optimizer.tolerance_change), 0, 1e6,
        "lbfgs: stop when the step or the loss change is below this"),
    NUM("optimizer", "clip_norm", DP_KEY_DOUBLE, "0", C(optimizer.clip_norm), 0, 1e30,
        "clip the averaged gradient to this global L2 norm; 0 = off"),

    ENUM("schedule", "name", "constant", C(schedule.name), sched_names,
         "step-size schedule: constant, step, multistep, exponential or cosine"),
    NUM("schedule", "step_size", DP_KEY_INT64, "1000", C(schedule.step_size), 1, BIG,
        "step: multiply by gamma every step_size steps"),
    NUM("schedule", "gamma", DP_KEY_DOUBLE, "0.1", C(schedule.gamma), 0, 1, "step, multistep, exponential: factor"),
    {"schedule", "milestones", DP_KEY_LIST, "", "multistep: ascending steps at which to multiply by gamma",
     C(schedule.milestones), NULL, 1, BIG, DP_MAX_MILESTONES, NULL, DP_RESUME_MATCH},
    NUM("schedule", "min_lr", DP_KEY_DOUBLE, "0", C(schedule.min_lr), 0, 1e6, "cosine: the final step size"),
    NUM("schedule", "warmup_steps", DP_KEY_INT64, "0", C(schedule.warmup_steps), 0, BIG,
        "linear warm-up from 0 over this many steps"),
    ENUM("schedule", "lr_scale", "none", C(schedule.lr_scale), scale_names,
         "linear: lr x batch_size / base_batch (the linear scaling rule for large batches)"),
    NUM("schedule", "base_batch", DP_KEY_INT64, "256", C(schedule.base_batch), 1, BIG,
        "the batch size lr was tuned for (lr_scale = linear)"),

    NUM("train", "batch_size", DP_KEY_INT64, "128", C(train.batch_size), 1, BIG,
        "GLOBAL mini-batch, split across ranks; full = the whole training set"),
    SAFE(NUM, "train", "epochs", DP_KEY_INT, "10", C(train.epochs), 0, INT_MAX, "passes over the training set"),
    SAFE(NUM, "train", "max_steps", DP_KEY_INT64, "0", C(train.max_steps), 0, BIG, "stop after this many steps; 0 = no limit"),
    NUM("train", "seed", DP_KEY_UINT64, "1", C(train.seed), 0, 0, "seed of the initial weights and the shuffles"),
    BOOL("train", "shuffle", "true", C(train.shuffle), "draw a new order of the rows every epoch"),
    BOOL("train", "drop_last", "false", C(train.drop_last), "drop an epoch's last batch when it is short"),
    SAFE(NUM, "train", "log_every", DP_KEY_INT, "50", C(train.log_every), 1, INT_MAX, "steps between progress lines"),
    SAFE(NUM, "train", "eval_every", DP_KEY_INT64, "0", C(train.eval_every), 0, BIG,
        "evaluate the test set every this many steps (and at the end); 0 = after each epoch"),
    SAFE(STR, "train", "out_dir", "runs/default", C(train.out_dir), DP_PATH_MAX, "where metrics.jsonl and config.ini go"),
    SAFE(NUM, "train", "threads", DP_KEY_INT, "0", C(train.threads), 0, 1024,
        "OpenBLAS threads per rank, over any variable; 0 = OPENBLAS_NUM_THREADS or OMP_NUM_THREADS when set, "
        "else the rank's share of the cores in its affinity mask"),
    SAFE(NUM, "train", "bucket_mb", DP_KEY_DOUBLE, "1", C(train.bucket_mb), 0, 1e6,
        "gradient allreduce buckets (MB), started during the backward pass; 0 = one allreduce after it"),
    SAFE(BOOL, "train", "deterministic", "false", C(train.deterministic),
         "the same model bit for bit at any number of ranks (and bucket_mb, and across resume): the batch in "
         "chunks of chunk_rows rows, every sum exact"),
    SAFE(NUM, "train", "chunk_rows", DP_KEY_INT, "128", C(train.chunk_rows), 1, 1 << 20,
         "deterministic: rows per chunk, the unit of work a rank takes (larger is faster, fewer spreads wider)"),
    SAFE(ENUM, "train", "comm", "auto", C(train.comm), comm_names,
         "node: the weights and optimizer state once per node in shared memory, gradients summed there and "
         "each rank updating its slice; flat: every rank its own copy, one allreduce; auto: node where every "
         "node runs as many ranks, more than one, and the optimizer is not lbfgs"),
    SAFE(STR, "train", "timeline", "", C(train.timeline), DP_PATH_MAX,
        "write a Chrome trace (chrome://tracing, Perfetto) of the first timeline_steps steps here; empty = none"),
    SAFE(NUM, "train", "timeline_steps", DP_KEY_INT, "20", C(train.timeline_steps), 1, 100000,
        "steps the timeline covers"),
    SAFE(ENUM, "train", "on_nonfinite", "abort", C(train.on_nonfinite), nonfinite_names,
         "a NaN/Inf loss or gradient: abort (exit 3), skip_step (no update), or restore (reload the last "
         "checkpoint with half the step size)"),
    SAFE(NUM, "train", "max_restores", DP_KEY_INT, "3", C(train.max_restores), 0, 1000,
        "on_nonfinite = restore: give up (exit 3) after this many restores"),
    SAFE(NUM, "train", "max_skips", DP_KEY_INT64, "100", C(train.max_skips), 0, BIG,
        "on_nonfinite = skip_step: give up (exit 3, no checkpoint) after this many skipped updates in all; "
        "0 = no limit"),
    SAFE(NUM, "train", "max_consecutive_skips", DP_KEY_INT, "10", C(train.max_consecutive_skips), 0, 1000000,
        "on_nonfinite = skip_step: give up (exit 3, no checkpoint) after this many skipped updates in a row; "
        "0 = no limit"),
    SAFE(ENUM, "train", "on_divergence", "warn", C(train.on_divergence), divergence_names,
         "a finite loss whose log-interval mean exceeds [sweep] diverge_factor x the first step's loss: warn "
         "(once), or abort (exit 3)"),
    SAFE(NUM, "train", "collective_timeout", DP_KEY_DOUBLE, "0", C(train.collective_timeout), 0, 1e7,
        "abort the job when a collective has not completed after this many seconds (a stuck rank; checkpoint "
        "writes, evaluation and start-up are not counted); 0 = off"),
    SAFE(NUM, "train", "early_stop_patience", DP_KEY_INT, "0", C(train.early_stop_patience), 0, INT_MAX,
        "end the run after this many evaluations without an improvement of keep_best's figure (val_loss when "
        "off); 0 = off. Needs validation data"),
    SAFE(NUM, "train", "early_stop_min_delta", DP_KEY_DOUBLE, "0", C(train.early_stop_min_delta), 0, 1e30,
        "early stopping: the least improvement that counts"),

    SAFE(NUM, "checkpoint", "every_steps", DP_KEY_INT64, "0", C(checkpoint.every_steps), 0, BIG,
        "save every this many steps; 0 = off"),
    SAFE(NUM, "checkpoint", "every_seconds", DP_KEY_DOUBLE, "0", C(checkpoint.every_seconds), 0, 1e9,
        "save when this many seconds passed since the last save (rank 0's clock); 0 = off"),
    SAFE(BOOL, "checkpoint", "at_epoch_end", "false", C(checkpoint.at_epoch_end), "save at the end of every epoch"),
    SAFE(BOOL, "checkpoint", "at_end", "true", C(checkpoint.at_end), "save the finished run's final state"),
    SAFE(NUM, "checkpoint", "keep_last", DP_KEY_INT, "3", C(checkpoint.keep_last), 0, 1 << 20,
        "keep this many newest checkpoints (older ones are removed once a new one is complete); 0 = all"),
    SAFE(STR, "checkpoint", "dir", "", C(checkpoint.dir), DP_PATH_MAX, "where ckpt-<step>.h5 go; empty = out_dir/checkpoints"),
    ENUM("checkpoint", "keep_best", "off", C(checkpoint.keep_best), keep_best_names,
         "keep best.h5 (beside the checkpoints, never removed by keep_last): the model of the evaluation with "
         "the lowest val_loss or highest val_acc; off = none. Needs validation data"),

    SAFE(STR, "sweep", "lr", "1e-4:1:9", C(sweep.lr), 256, "step sizes: LO:HI:N (log-spaced) or a,b,c"),
    SAFE(NUM, "sweep", "steps", DP_KEY_INT64, "300", C(sweep.steps), 1, BIG, "steps of each run"),
    SAFE(NUM, "sweep", "ranks_per_run", DP_KEY_INT, "1", C(sweep.ranks_per_run), 1, 1 << 20, "ranks that train one step size"),
    SAFE(NUM, "sweep", "diverge_factor", DP_KEY_DOUBLE, "4", C(sweep.diverge_factor), 1, 1e30,
        "a run diverged when its loss exceeds this x its first loss (or is NaN/Inf); training too: "
        "[train] on_divergence"),
};

enum { N_KEYS = sizeof keys / sizeof keys[0] };
static const char *const sections[] = {"data",  "model", "layer",      "optimizer",
                                       "schedule", "train", "checkpoint", "sweep", NULL};

const dp_key *dp_config_keys(size_t *n) {
  *n = N_KEYS;
  return keys;
}

const char *dp_key_type_name(dp_key_type t) {
  static const char *const names[] = {"int", "int64", "uint64", "float", "bool", "string", "enum", "list", "ints"};
  return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* ---- values ---- */

static void trim(char *s) {
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1]))
    s[--n] = 0;
  size_t i = 0;
  while (isspace((unsigned char)s[i]))
    i++;
  memmove(s, s + i, n - i + 1);
}

/* Every value parser returns 0, or DP_ECONFIG with the message "<what>: expected <want>, got '<v>'";
 * `what` names the key and where it was set ("[train] epochs", "--set train.epochs=x"). */
static int expected(const char *what, const char *v, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int expected(const char *what, const char *v, const char *fmt, ...) {
  char want[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(want, sizeof want, fmt, ap);
  va_end(ap);
  return dp_fail(DP_ECONFIG, "%s: expected %s, got '%s'", what, want, v);
}

/* The whole of v: strtoll alone takes "12abc" as 12, "" as 0 and clamps an overflow. */
static int parse_i64(const char *what, const char *v, double lo, double hi, int64_t *out) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (end == v || *end || errno == ERANGE || x < lo || x > hi)
    return expected(what, v, "an integer in [%.0f, %.0f]", lo, hi);
  *out = x;
  return 0;
}

/* strtoull takes "-1" for 2^64 - 1, so a sign is refused here. */
static int parse_u64(const char *what, const char *v, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (end == v || *end || errno == ERANGE || v[0] == '-')
    return expected(what, v, "a non-negative integer");
  *out = x;
  return 0;
}

/* NaN passes every comparison, hence isfinite; ERANGE also refuses values below the normal range.
 * The kernels compute in float: a value that float cannot hold but as 0 (or a denormal) would not
 * mean what was written, and 0 often means "the default". */
static int parse_double(const char *what, const char *v, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (end == v || *end || errno == ERANGE || !isfinite(x) || x < lo || x > hi)
    return expected(what, v, "a number in [%g, %g]", lo, hi);
  if (x != 0 && fabs(x) < FLT_MIN)
    return expected(what, v, "0 or a number of magnitude at least %g (smaller ones are 0 in float32)", FLT_MIN);
  *out = x;
  return 0;
}

static int lookup_choice(const char *const *names, const char *v) {
  for (int i = 0; names[i]; i++)
    if (!strcasecmp(names[i], v))
      return i;
  return -1;
}

static void choices_text(const char *const *names, char *buf, size_t len, const char *sep) {
  buf[0] = 0;
  for (int i = 0; names[i]; i++) {
    size_t n = strlen(buf);
    snprintf(buf + n, len - n, "%s%s", i ? sep : "", names[i]);
  }
}

static int parse_list(const dp_key *k, const char *v, void *dst, const char *what) {
  int64_t *arr = dst;
  int *count = (int *)(arr + k->size), n = 0;
  char buf[512];
  if (strlen(v) >= sizeof buf)
    return expected(what, v, "a list shorter than %zu characters", sizeof buf);
  memcpy(buf, v, strlen(v) + 1);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    trim(tok);
    int64_t x;
    int ascending = k->type == DP_KEY_LIST;
    if ((size_t)n == k->size || parse_i64(what, tok, k->min, k->max, &x) < 0 || (ascending && n && x <= arr[n - 1]))
      return expected(what, v, "up to %zu %sintegers >= %.0f, comma-separated", k->size, ascending ? "ascending " : "",
                      k->min);
    arr[n++] = x;
  }
  *count = n;
  return 0;
}

static int parse_number(const dp_key *k, const char *v, void *dst, const char *what) {
  if (k->type == DP_KEY_DOUBLE)
    return parse_double(what, v, k->min, k->max, dst);
  if (k->type == DP_KEY_UINT64)
    return parse_u64(what, v, dst);
  int64_t x;
  DP_TRY(parse_i64(what, v, k->min, k->max, &x));
  if (k->type == DP_KEY_INT)
    *(int *)dst = (int)x;
  else
    *(int64_t *)dst = x;
  return 0;
}

static int parse_bool(const char *v, bool *dst, const char *what) {
  static const char *const yes[] = {"true", "yes", "on", "1", NULL}, *const no[] = {"false", "no", "off", "0", NULL};
  int t = lookup_choice(yes, v), f = lookup_choice(no, v);
  if (t < 0 && f < 0)
    return expected(what, v, "true or false");
  *dst = t >= 0;
  return 0;
}

static int parse_enum(const dp_key *k, const char *v, int *dst, const char *what) {
  int i = lookup_choice(k->choices, v);
  if (i < 0) {
    char c[256];
    choices_text(k->choices, c, sizeof c, ", ");
    return expected(what, v, "one of %s", c);
  }
  *dst = i;
  return 0;
}

/* Whether `key = v` reads back as v: the file format has no quoting. */
static int writable(const char *v) {
  for (const char *c = v; *c; c++)
    if ((unsigned char)*c < 32 || (*c == ';' && c > v && isspace((unsigned char)c[-1])))
      return 0;
  return 1;
}

/* Parses value v for key k into base + k->offset; what names the key for the message. */
static int parse_value(const dp_key *k, const char *v, void *base, const char *what) {
  void *dst = (char *)base + k->offset;
  if (!strcmp(k->key, "batch_size") && !strcasecmp(v, "full")) {
    *(int64_t *)dst = 0;
    return 0;
  }
  if (!strcmp(k->key, "padding") && !strcasecmp(v, "same")) {
    *(int *)dst = DP_PAD_SAME;
    return 0;
  }
  switch (k->type) {
  case DP_KEY_STRING:
    if (strlen(v) >= k->size || (!v[0] && !(k->def && !k->def[0]))) /* empty only where it is the default */
      return expected(what, v, "a non-empty string shorter than %zu characters", k->size);
    if (!writable(v))
      return expected(what, v, "no control characters and no ';' after a blank (config.ini, where every run "
                               "stores its configuration, could not hold it: there ' ;' starts a comment)");
    memcpy(dst, v, strlen(v) + 1);
    return 0;
  case DP_KEY_BOOL:
    return parse_bool(v, dst, what);
  case DP_KEY_ENUM:
    return parse_enum(k, v, dst, what);
  case DP_KEY_LIST:
  case DP_KEY_INTS:
    return parse_list(k, v, dst, what);
  default: {
    int rc = parse_number(k, v, dst, what);
    if (rc == 0 || (strcmp(k->key, "batch_size") && strcmp(k->key, "padding")))
      return rc;
    return strcmp(k->key, "padding") ? expected(what, v, "an integer >= 1 or 'full'")
                                     : expected(what, v, "an integer >= 0 or 'same'");
  }
  }
}

/* ---- suggestions for near misses ---- */

static size_t edit_distance(const char *a, const char *b) {
  size_t n = strlen(a), m = strlen(b), row[64];
  if (m >= 64)
    return 99;
  for (size_t j = 0; j <= m; j++)
    row[j] = j;
  for (size_t i = 1; i <= n; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= m; j++) {
      size_t up = row[j], cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
      size_t best = diag + cost;
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[m];
}

static int close_enough(const char *typo, const char *name, size_t *best) {
  size_t d = edit_distance(typo, name), len = strlen(name);
  size_t limit = len / 3 > 2 ? len / 3 : 2;
  if (d <= limit && d < *best) {
    *best = d;
    return 1;
  }
  return 0;
}

static const char *suggest_key(const char *section, const char *typo) {
  const char *hit = NULL;
  size_t best = 99;
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(keys[i].section, section) && close_enough(typo, keys[i].key, &best))
      hit = keys[i].key;
  return hit;
}

static const char *section_of_key(const char *key) {
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(keys[i].key, key))
      return keys[i].section;
  return NULL;
}

static const char *suggest_section(const char *typo) {
  const char *hit = NULL;
  size_t best = 99;
  for (int i = 0; sections[i]; i++)
    if (close_enough(typo, sections[i], &best))
      hit = sections[i];
  return hit;
}

static int find_key(const char *section, const char *key) {
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(keys[i].section, section) && !strcasecmp(keys[i].key, key))
      return i;
  return -1;
}

/* The key an alias stands for (itself when it is no alias). */
static int canonical_key(int i) {
  if (keys[i].alias_of)
    for (int j = 0; j < N_KEYS; j++)
      if (!strcmp(keys[j].section, keys[i].section) && !strcmp(keys[j].key, keys[i].alias_of))
        return j;
  return i;
}

static int known_section(const char *s) { return lookup_choice(sections, s) >= 0; }

/* Key i's bit in dp_layer_cfg.given: its place among the layer keys. */
static unsigned layer_key_bit(int i) {
  unsigned b = 0;
  for (int j = 0; j < i; j++)
    b += !strcmp(keys[j].section, "layer");
  return 1u << b;
}

/* The layer keys each type takes besides `type`. */
static const char *const type_keys[] = {
    [DP_LAYER_DENSE] = "units, activation, init, init_dist, norm, sync, eps, norm_momentum",
    [DP_LAYER_CONV2D] = "filters, kernel, stride, padding, activation, init, init_dist, norm, sync, eps, norm_momentum",
    [DP_LAYER_MAXPOOL] = "kernel, stride",
    [DP_LAYER_AVGPOOL] = "kernel, stride",
    [DP_LAYER_FLATTEN] = "",
    [DP_LAYER_DROPOUT] = "rate",
};

static int key_applies(dp_layer_type t, const char *key) {
  size_t n = strlen(key);
  if (!strcmp(key, "type"))
    return 1;
  for (const char *s = type_keys[t]; (s = strstr(s, key)); s += n)
    if ((s == type_keys[t] || s[-1] == ' ') && (s[n] == ',' || s[n] == 0))
      return 1;
  return 0;
}

/* "unknown key 'x' in [s] (did you mean 'y'?)" — or where the key does belong. */
static void unknown_key_text(const char *section, const char *key, char *buf, size_t len) {
  const char *hint = suggest_key(section, key), *home = section_of_key(key);
  if (hint)
    snprintf(buf, len, "unknown key '%s' in [%s] (did you mean '%s'?)", key, section, hint);
  else if (home)
    snprintf(buf, len, "unknown key '%s' in [%s] (it belongs in [%s])", key, section, home);
  else
    snprintf(buf, len, "unknown key '%s' in [%s] (see `dptrain config --list`)", key, section);
}

/* ---- parsing ---- */

/* inih reads lines of at most 198 characters (Debian's INI_MAX_LINE 200), but a path may be
 * DP_PATH_MAX long, and config.ini must hold any value it was given: longer lines are read here. */
#define LONG_LINE_MAX (DP_PATH_MAX + 256)
#define LONG_VALUE "\x01" /* what inih gets as such a line's value: files cannot hold control characters */

typedef struct {
  dp_config *c;
  const char *name; /* the file, for messages */
  FILE *f;          /* reading from a file, or */
  const char *text; /* from memory */
  size_t pos;
  int line;
  char section[64];
  int instance;     /* counts section headers: duplicate keys are per instance */
  int section_line[16]; /* where each section of `sections` began; only [layer] may repeat */
  char long_line[LONG_LINE_MAX + 2]; /* a line longer than inih's buffer; its value goes round inih */
  const char *long_value;
  int seen_line[N_KEYS], seen_instance[N_KEYS];
  int err;
} parser;

static int parse_error(parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int parse_error(parser *p, int line, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (line > 0)
    p->err = dp_fail(DP_ECONFIG, "%s:%d: %s", p->name, line, msg);
  else
    p->err = dp_fail(DP_ECONFIG, "%s: %s", p->name, msg);
  return p->err;
}

static void layer_defaults(dp_layer_cfg *l, int line) {
  memset(l, 0, sizeof *l);
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(keys[i].section, "layer") && keys[i].def)
      parse_value(&keys[i], keys[i].def, l, "default");
  l->line = line;
}

/* A section header, seen by the reader: inih does not tell a handler where a section starts, and
 * each [layer] must start a new layer even when the previous one had the same name. */
static void enter_section(parser *p, const char *line) {
  const char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
  if (!close)
    return; /* inih reports the syntax error */
  size_t n = (size_t)(close - open - 1);
  if (n >= sizeof p->section)
    n = sizeof p->section - 1;
  memcpy(p->section, open + 1, n);
  p->section[n] = 0;
  trim(p->section);
  for (char *q = p->section; *q; q++) /* [Train] is [train]: keys are looked up by the lower-case name */
    *q = (char)tolower((unsigned char)*q);
  p->instance++;
  if (!known_section(p->section)) {
    const char *hint = suggest_section(p->section);
    if (hint)
      parse_error(p, p->line, "unknown section [%s] (did you mean [%s]?)", p->section, hint);
    else
      parse_error(p, p->line, "unknown section [%s] (sections: data, model, layer, optimizer, schedule, train, checkpoint, sweep)",
                  p->section);
  } else if (strcmp(p->section, "layer") && p->section_line[lookup_choice(sections, p->section)]) {
    /* A second [train] would silently override the first one's keys. */
    parse_error(p, p->line, "duplicate section [%s] (first on line %d): put all its keys in one; only [layer] repeats",
                p->section, p->section_line[lookup_choice(sections, p->section)]);
  } else if (strcmp(p->section, "layer")) {
    p->section_line[lookup_choice(sections, p->section)] = p->line;
  } else {
    if (p->c->n_layers == DP_MAX_LAYERS)
      parse_error(p, p->line, "too many [layer] sections (at most %d)", DP_MAX_LAYERS);
    else
      layer_defaults(&p->c->layer[p->c->n_layers++], p->line);
  }
}

/* The next character of the file or text; EOF at the end. */
static int next_char(parser *p) {
  if (p->f)
    return getc(p->f);
  return p->text[p->pos] ? (unsigned char)p->text[p->pos++] : EOF;
}

/* One line into buf; *got = 0 at the end of the input. A NUL byte (which would silently cut the
 * line short) is an error. */
static int next_line(parser *p, char *buf, int num, int *got) {
  int i = 0, ch = EOF;
  while (i < num - 1 && (ch = next_char(p)) != EOF) {
    if (ch == 0)
      return parse_error(p, p->line + 1, "not a text line (control character 0x00)");
    buf[i++] = (char)ch;
    if (ch == '\n')
      break;
  }
  buf[i] = 0;
  *got = i > 0;
  return 0;
}

/* What inih would take for a syntax error, caught here first so that the FIRST bad line is the one
 * reported (inih carries on past a syntax error and would let a later error replace it). */
static int is_syntax_error(const char *s) {
  if (*s == 0 || *s == '\n' || *s == '\r' || *s == ';' || *s == '#')
    return 0;
  if (*s == '[')
    return strchr(s, ']') == NULL;
  return strpbrk(s, "=:") == NULL;
}

/* The rest of a line longer than inih's buffer: inih gets "key = LONG_VALUE", the handler the value,
 * cut at an inline comment (a ';' after a blank) and trimmed as inih would. */
static char *long_line(parser *p, char *buf, int num) {
  size_t n = strlen(buf);
  memcpy(p->long_line, buf, n + 1);
  int ch = EOF;
  while (n < LONG_LINE_MAX && (ch = next_char(p)) != EOF && ch != '\n')
    p->long_line[n++] = (char)(ch ? ch : 1); /* 1: refused below as a control character, as NUL is */
  p->long_line[n] = 0;
  if (n == LONG_LINE_MAX && ch != EOF && next_char(p) != '\n') {
    parse_error(p, p->line, "line longer than %d characters", LONG_LINE_MAX);
    return NULL;
  }
  char *l = p->long_line, *sep = strpbrk(l, "=:");
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)l[i] < 32 && !isspace((unsigned char)l[i]))
      return parse_error(p, p->line, "not a text line (control character 0x%02x)", (unsigned char)l[i]), NULL;
  while (*l == ' ' || *l == '\t')
    l++;
  if (!sep || *l == '[' || *l == ';' || *l == '#' || sep - l > num - 8) {
    parse_error(p, p->line, "line longer than %d characters that is no 'key = value'", num - 2);
    return NULL;
  }
  char *value = sep + 1;
  for (char *c = value; *c; c++)
    if (*c == ';' && c > value && isspace((unsigned char)c[-1]))
      *c = 0;
  snprintf(buf, (size_t)num, "%.*s= " LONG_VALUE "\n", (int)(sep - l), l);
  p->long_value = value;
  return buf;
}

/* inih's reader: one line at a time, counting lines and noticing section headers. Returning NULL
 * ends the parse, which is how an error found here stops it. */
static char *reader(char *buf, int num, void *stream) {
  parser *p = stream;
  int got = 0;
  if (p->err || next_line(p, buf, num, &got) < 0 || !got)
    return NULL;
  p->line++;
  size_t n = strlen(buf);
  p->long_value = NULL;
  if (n == (size_t)num - 1 && buf[n - 1] != '\n')
    return long_line(p, buf, num);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)buf[i] < 32 && !isspace((unsigned char)buf[i])) {
      parse_error(p, p->line, "not a text line (control character 0x%02x)", (unsigned char)buf[i]);
      return NULL;
    }
  /* No leading blanks reach inih: it would take an indented line as the continuation of the
   * previous value. A UTF-8 byte-order mark on the first line goes too. */
  size_t skip = p->line == 1 && !strncmp(buf, "\xEF\xBB\xBF", 3) ? 3 : 0;
  while (buf[skip] == ' ' || buf[skip] == '\t')
    skip++;
  memmove(buf, buf + skip, n - skip + 1);
  if (is_syntax_error(buf)) {
    parse_error(p, p->line, "syntax error (expected 'key = value' or '[section]')");
    return NULL;
  }
  if (*buf == '[')
    enter_section(p, buf);
  return p->err ? NULL : buf;
}

static void *key_base(dp_config *c, const dp_key *k) {
  return !strcmp(k->section, "layer") ? (void *)&c->layer[c->n_layers - 1] : (void *)c;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
  parser *p = user;
  (void)section; /* the reader's own record of the section also knows about repeated [layer]s */
  if (p->err)
    return 0;
  char key[128], val[LONG_LINE_MAX + 1];
  snprintf(key, sizeof key, "%s", name);
  snprintf(val, sizeof val, "%s", p->long_value && !strcmp(value, LONG_VALUE) ? p->long_value : value);
  trim(key);
  trim(val);
  if (!p->section[0]) {
    parse_error(p, p->line, "key '%s' outside any section", key);
    return 0;
  }
  int i = find_key(p->section, key);
  if (i < 0) {
    char msg[300];
    unknown_key_text(p->section, key, msg, sizeof msg);
    parse_error(p, p->line, "%s", msg);
    return 0;
  }
  i = canonical_key(i);
  if (p->seen_instance[i] == p->instance) {
    parse_error(p, p->line, "duplicate key '%s' in [%s] (first set on line %d)", keys[i].key, p->section,
                p->seen_line[i]);
    return 0;
  }
  p->seen_instance[i] = p->instance;
  p->seen_line[i] = p->line;
  char what[128];
  if (!strcmp(p->section, "layer"))
    snprintf(what, sizeof what, "[layer %d] %s", p->c->n_layers - 1, keys[i].key);
  else
    snprintf(what, sizeof what, "[%s] %s", p->section, keys[i].key);
  if (parse_value(&keys[i], val, key_base(p->c, &keys[i]), what) < 0) {
    parse_error(p, p->line, "%s", dp_errmsg(DP_ECONFIG)); /* adds the file and line */
    return 0;
  }
  if (!strcmp(p->section, "layer"))
    p->c->layer[p->c->n_layers - 1].given |= layer_key_bit(i);
  return 1;
}

static int run_parser(parser *p) {
  int rc = ini_parse_stream(reader, p, handler, p);
  if (p->err)
    return p->err;
  if (rc > 0)
    return parse_error(p, rc, "syntax error (expected 'key = value' or '[section]')");
  if (rc < 0)
    return parse_error(p, 0, "cannot parse (out of memory)");
  return 0;
}

/* ---- --set overrides: section.key=value, layer.<i>.key=value ---- */

/* The <i>. of `layer.<i>.key=value` at the start of name: the layer's base, and *key after the dot. */
static int set_layer(dp_config *c, const char *spec, char *name, void **base, char **key) {
  char *dot = strchr(name, '.');
  int64_t i;
  if (dot)
    *dot = 0;
  if (!dot || parse_i64(spec, name, 0, c->n_layers - 1, &i) < 0)
    return dp_fail(DP_ECONFIG, "--set %s: expected layer.<i>.key=value with 0 <= i < %d (the layers in the file)",
                   spec, c->n_layers);
  *base = &c->layer[i];
  *key = dot + 1;
  return 0;
}

/* The key=value of a --set, into base (the config, or the layer set_layer found). */
static int set_key(const char *spec, const char *section, const char *name, const char *value, void *base) {
  char key[128], val[DP_PATH_MAX + 1], what[DP_PATH_MAX + 256];
  if (strlen(name) >= sizeof key)
    return dp_fail(DP_ECONFIG, "--set %s: key too long", spec);
  memcpy(key, name, strlen(name) + 1);
  trim(key);
  if (!known_section(section)) {
    const char *hint = suggest_section(section);
    return dp_fail(DP_ECONFIG, "--set %s: unknown section [%s]%s%s%s", spec, section, hint ? " (did you mean [" : "",
                   hint ? hint : "", hint ? "]?)" : "");
  }
  int i = find_key(section, key);
  if (i < 0) {
    char msg[300];
    unknown_key_text(section, key, msg, sizeof msg);
    return dp_fail(DP_ECONFIG, "--set %s: %s", spec, msg);
  }
  if (strlen(value) >= sizeof val) /* no key takes a longer value: refused, never cut */
    return dp_fail(DP_ECONFIG, "--set %.60s...: value longer than %zu characters", spec, sizeof val - 1);
  memcpy(val, value, strlen(value) + 1);
  trim(val);
  snprintf(what, sizeof what, "--set %s", spec);
  DP_TRY(parse_value(&keys[i], val, base, what));
  if (!strcmp(section, "layer"))
    ((dp_layer_cfg *)base)->given |= layer_key_bit(i);
  return 0;
}

static int apply_set(dp_config *c, const char *spec) {
  char buf[DP_PATH_MAX + 256], section[64];
  if (strlen(spec) >= sizeof buf)
    return dp_fail(DP_ECONFIG, "--set %.60s...: longer than %zu characters", spec, sizeof buf - 1);
  memcpy(buf, spec, strlen(spec) + 1);
  char *eq = strchr(buf, '='), *dot = strchr(buf, '.');
  if (!eq || !dot || dot > eq)
    return dp_fail(DP_ECONFIG, "--set %s: expected section.key=value (layer keys: layer.<i>.key=value)", spec);
  *eq = 0;
  *dot = 0;
  trim(buf);
  if (strlen(buf) >= sizeof section)
    return dp_fail(DP_ECONFIG, "--set %s: unknown section", spec);
  memcpy(section, buf, strlen(buf) + 1);
  char *name = dot + 1;
  void *base = c;
  if (!strcmp(section, "layer"))
    DP_TRY(set_layer(c, spec, name, &base, &name));
  return set_key(spec, section, name, eq + 1, base);
}

/* ---- validation across keys, once everything is read ---- */

/* The keys of layer i that its type does not take. */
static int check_layer_keys(parser *p, int i) {
  const dp_layer_cfg *l = &p->c->layer[i];
  for (int k = 0; k < N_KEYS; k++)
    if (!strcmp(keys[k].section, "layer") && (l->given & layer_key_bit(k)) && !key_applies(l->type, keys[k].key))
      return parse_error(p, l->line, "[layer %d] %s does not apply to type = %s (its keys: %s)", i, keys[k].key,
                         layer_type_names[l->type], type_keys[l->type][0] ? type_keys[l->type] : "none");
  return 0;
}

/* Layer i's own required keys and values. */
static int check_layer_values(parser *p, int i) {
  const dp_layer_cfg *l = &p->c->layer[i];
  const char *type = layer_type_names[l->type];
  int pool = l->type == DP_LAYER_MAXPOOL || l->type == DP_LAYER_AVGPOOL;
  if (l->type == DP_LAYER_DENSE && l->units < 1)
    return parse_error(p, l->line, "[layer %d] units is required", i);
  if (l->type == DP_LAYER_CONV2D && l->filters < 1)
    return parse_error(p, l->line, "[layer %d] filters is required for type = conv2d", i);
  if ((pool || l->type == DP_LAYER_CONV2D) && l->n_kernel == 0)
    return parse_error(p, l->line, "[layer %d] kernel is required for type = %s (k, or kh,kw)", i, type);
  if (pool && l->n_kernel == 2 && l->kernel[0] != l->kernel[1])
    return parse_error(p, l->line, "[layer %d] kernel = %lld,%lld: %s takes a square kernel", i,
                       (long long)l->kernel[0], (long long)l->kernel[1], type);
  int odd = l->n_kernel > 0 && l->kernel[0] % 2 && l->kernel[l->n_kernel - 1] % 2;
  if (l->type == DP_LAYER_CONV2D && l->padding == DP_PAD_SAME && !odd)
    return parse_error(p, l->line, "[layer %d] padding = same needs an odd kernel (or give the padding)", i);
  if (l->type == DP_LAYER_CONV2D && l->norm == DP_NORM_LAYER)
    return parse_error(p, l->line, "[layer %d] norm = layer: conv2d takes none or batch", i);
  if (l->type == DP_LAYER_DROPOUT && l->rate >= 1.0)
    return parse_error(p, l->line, "[layer %d] rate = %g: expected a rate in [0, 1) (1 would drop every unit)", i,
                       l->rate);
  return 0;
}

/* Image layers first: conv2d and the pools need [data] shape and no dense or flatten before them;
 * a pool works on a convolution's output; the last layer is dense. */
static int check_layer_order(parser *p) {
  const dp_config *c = p->c;
  int flat = -1, conv = 0; /* flat: the first dense or flatten layer */
  for (int i = 0; i < c->n_layers; i++) {
    const dp_layer_cfg *l = &c->layer[i];
    const char *type = layer_type_names[l->type];
    int image = l->type == DP_LAYER_CONV2D || l->type == DP_LAYER_MAXPOOL || l->type == DP_LAYER_AVGPOOL;
    if ((image || l->type == DP_LAYER_FLATTEN) && c->data.n_shape == 0)
      return parse_error(p, l->line, "[layer %d] type = %s needs [data] shape = C,H,W (the image a row holds)", i,
                         type);
    if ((image || l->type == DP_LAYER_FLATTEN) && flat >= 0)
      return parse_error(p, l->line, "[layer %d] type = %s after [layer %d] (%s): image layers come before flatten "
                         "and dense layers", i, type, flat, layer_type_names[c->layer[flat].type]);
    if (image && l->type != DP_LAYER_CONV2D && !conv)
      return parse_error(p, l->line, "[layer %d] type = %s needs a conv2d before it (pooling works on its output)", i,
                         type);
    conv |= l->type == DP_LAYER_CONV2D;
    if (flat < 0 && (l->type == DP_LAYER_DENSE || l->type == DP_LAYER_FLATTEN))
      flat = i;
  }
  const dp_layer_cfg *last = &c->layer[c->n_layers - 1];
  if (last->type != DP_LAYER_DENSE)
    return parse_error(p, last->line, "[layer %d] type = %s: the last layer must be dense (its units are the classes "
                       "or targets)", c->n_layers - 1, layer_type_names[last->type]);
  return 0;
}

static int check_layers(parser *p) {
  dp_config *c = p->c;
  if (c->n_layers == 0)
    return parse_error(p, 0, "no [layer] section: the model needs at least one layer");
  if (c->data.n_shape != 0 && c->data.n_shape != 3)
    return parse_error(p, 0, "[data] shape: expected C,H,W (three positive integers), got %d value%s",
                       c->data.n_shape, c->data.n_shape > 1 ? "s" : "");
  for (int i = 0; i < c->n_layers; i++) {
    DP_TRY(check_layer_keys(p, i));
    DP_TRY(check_layer_values(p, i));
  }
  DP_TRY(check_layer_order(p));
  for (int i = 0; i < c->n_layers; i++) /* a shard's own statistics depend on the rank count */
    if (c->train.deterministic && c->layer[i].norm == DP_NORM_BATCH && !c->layer[i].sync)
      return parse_error(p, c->layer[i].line, "[layer %d] sync = false: [train] deterministic needs batch norm "
                         "over the global batch (sync = true)", i);
  return 0;
}

static int check_optimizer(parser *p) {
  dp_config *c = p->c;
  dp_optim_cfg *o = &c->optimizer;
  if (o->lr == 0.0) {
    static const double defaults[] = {0.01, 0.01, 1e-3, 1e-3, 1.0};
    o->lr = defaults[o->name];
  }
  if (o->name == DP_OPT_SGD && o->momentum_form == DP_MOMENTUM_DIFFERENCE &&
      (o->nesterov || o->dampening > 0 || o->weight_decay > 0))
    return parse_error(p, 0, "[optimizer] momentum_form = difference takes no nesterov, dampening or weight_decay");
  if (o->nesterov && (o->momentum == 0 || o->dampening != 0))
    return parse_error(p, 0, "[optimizer] nesterov = true needs momentum > 0 and dampening = 0");
  if (o->name == DP_OPT_LBFGS && c->train.batch_size != 0)
    return parse_error(p, 0, "[optimizer] name = lbfgs is a full-batch method: set [train] batch_size = full");
  if (c->schedule.name == DP_SCHED_MULTISTEP && c->schedule.n_milestones == 0)
    return parse_error(p, 0, "[schedule] name = multistep needs milestones, e.g. milestones = 3000, 6000");
  return 0;
}

static int validate(parser *p) {
  if (!p->c->data.path[0])
    return parse_error(p, 0, "[data] path is required");
  if (p->c->data.standardize != DP_STD_SCALAR && (p->c->data.mean != 0.0 || p->c->data.std != 1.0))
    return parse_error(p, 0, "[data] mean and std apply with standardize = scalar, not %s",
                       standardize_names[p->c->data.standardize]);
  if (p->c->checkpoint.keep_best == DP_BEST_VAL_ACC && p->c->model.loss == DP_LOSS_MSE)
    return parse_error(p, 0, "[checkpoint] keep_best = val_acc needs a classifier: loss = mse has no accuracy "
                       "(use val_loss)");
  DP_TRY(check_layers(p));
  return check_optimizer(p);
}

/* ---- public ---- */

void dp_config_defaults(dp_config *c) {
  memset(c, 0, sizeof *c);
  for (int i = 0; i < N_KEYS; i++)
    if (strcmp(keys[i].section, "layer") && keys[i].def && !keys[i].alias_of)
      parse_value(&keys[i], keys[i].def, c, "default");
}

static int finish(parser *p, const char *const *sets, int n_sets) {
  DP_TRY(run_parser(p));
  for (int i = 0; i < n_sets; i++)
    DP_TRY(apply_set(p->c, sets[i]));
  return validate(p);
}

static void init_parser(parser *p, dp_config *c, const char *name) {
  memset(p, 0, sizeof *p);
  dp_config_defaults(c);
  snprintf(c->file, sizeof c->file, "%s", name);
  p->c = c;
  p->name = c->file;
}

int dp_config_parse_string(dp_config *c, const char *text, const char *name, const char *const *sets, int n_sets) {
  parser p;
  init_parser(&p, c, name);
  p.text = text;
  return finish(&p, sets, n_sets);
}

int dp_config_load(dp_config *c, const char *path, const char *const *sets, int n_sets) {
  parser p;
  init_parser(&p, c, path);
  struct stat pre; /* opening a FIFO would block until a writer comes: refuse it first */
  if (stat(path, &pre) == 0 && !S_ISREG(pre.st_mode) && !S_ISDIR(pre.st_mode))
    return dp_fail(DP_ECONFIG, "%s: cannot read: it is a %s (expected an INI file, a regular file)", path,
                   S_ISFIFO(pre.st_mode) ? "FIFO" : "device, socket or other special file");
  p.f = fopen(path, "r");
  if (!p.f) {
    int e = errno;
    char rel[DP_PATH_MAX + 64];
    dp_path_relative_note(path, rel, sizeof rel);
    return dp_fail(DP_ECONFIG, "%s: cannot open: %s%s%s%s", path, strerror(e), rel[0] ? " (" : "", rel,
                   rel[0] ? ")" : "");
  }
  struct stat st;
  if (fstat(fileno(p.f), &st) == 0 && S_ISDIR(st.st_mode)) { /* fopen takes a directory; reading fails */
    fclose(p.f);
    return dp_fail(DP_ECONFIG, "%s: cannot read: it is a directory (expected an INI file)", path);
  }
  int rc = finish(&p, sets, n_sets);
  fclose(p.f);
  return rc;
}

/* ---- writing and listing ---- */

void dp_format_double(char *buf, size_t len, double v) {
  for (int digits = 15; digits < 17; digits++) { /* 17 always reads back */
    snprintf(buf, len, "%.*g", digits, v);
    if (strtod(buf, NULL) == v)
      return;
  }
  snprintf(buf, len, "%.17g", v);
}

static void format_value(const dp_key *k, const void *base, char *buf, size_t len) {
  const void *v = (const char *)base + k->offset;
  switch (k->type) {
  case DP_KEY_INT:
    if (!strcmp(k->key, "padding") && *(const int *)v == DP_PAD_SAME)
      snprintf(buf, len, "same");
    else
      snprintf(buf, len, "%d", *(const int *)v);
    return;
  case DP_KEY_INT64:
    if (!strcmp(k->key, "batch_size") && *(const int64_t *)v == 0)
      snprintf(buf, len, "full");
    else
      snprintf(buf, len, "%lld", (long long)*(const int64_t *)v);
    return;
  case DP_KEY_UINT64:
    snprintf(buf, len, "%llu", (unsigned long long)*(const uint64_t *)v);
    return;
  case DP_KEY_DOUBLE:
    dp_format_double(buf, len, *(const double *)v);
    return;
  case DP_KEY_BOOL:
    snprintf(buf, len, "%s", *(const bool *)v ? "true" : "false");
    return;
  case DP_KEY_STRING:
    snprintf(buf, len, "%s", (const char *)v);
    return;
  case DP_KEY_ENUM:
    snprintf(buf, len, "%s", k->choices[*(const int *)v]);
    return;
  case DP_KEY_LIST:
  case DP_KEY_INTS: {
    const int64_t *arr = v;
    int n = *(const int *)(arr + k->size);
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
      size_t used = strlen(buf);
      snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)arr[i]);
    }
    return;
  }
  }
}

static void write_section(FILE *f, const char *section, const void *base) {
  fprintf(f, "[%s]\n", section);
  for (int i = 0; i < N_KEYS; i++) {
    if (strcmp(keys[i].section, section) || keys[i].alias_of)
      continue;
    dp_layer_type type = !strcmp(section, "layer") ? ((const dp_layer_cfg *)base)->type : DP_LAYER_DENSE;
    if (!strcmp(section, "layer") && !key_applies(type, keys[i].key))
      continue; /* it would be refused when read back */
    if (!strcmp(section, "layer") && !strcmp(keys[i].key, "type") && type == DP_LAYER_DENSE)
      continue; /* a dense layer's file reads as before layer types existed */
    char buf[1100];
    format_value(&keys[i], base, buf, sizeof buf);
    fprintf(f, "%s = %s\n", keys[i].key, buf);
  }
  fputc('\n', f);
}

int dp_config_write(const dp_config *c, FILE *f) {
  write_section(f, "data", c);
  write_section(f, "model", c);
  for (int i = 0; i < c->n_layers; i++)
    write_section(f, "layer", &c->layer[i]);
  write_section(f, "optimizer", c);
  write_section(f, "schedule", c);
  write_section(f, "train", c);
  write_section(f, "checkpoint", c);
  write_section(f, "sweep", c);
  if (ferror(f))
    return dp_fail(DP_EIO, "cannot write the configuration: %s", strerror(errno));
  return 0;
}

const char *dp_resume_rule_name(dp_resume_rule r) {
  static const char *const names[] = {"must match", "safe to change", "fresh start only"};
  return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}

/* Adds key k (of layer, or -1) to the changes when its text differs between base a and base b. */
static int diff_key(const dp_key *k, int layer, const void *a, const void *b, dp_config_change *out, int n, int max) {
  char va[1100], vb[1100];
  format_value(k, a, va, sizeof va);
  format_value(k, b, vb, sizeof vb);
  if (!strcmp(va, vb))
    return n;
  if (n < max) {
    dp_config_change *c = &out[n];
    c->key = k;
    c->layer = layer;
    if (layer >= 0)
      snprintf(c->name, sizeof c->name, "layer.%d.%s", layer, k->key);
    else
      snprintf(c->name, sizeof c->name, "%s.%s", k->section, k->key);
    snprintf(c->from, sizeof c->from, "%.*s", (int)sizeof c->from - 1, va); /* long paths are cut */
    snprintf(c->to, sizeof c->to, "%.*s", (int)sizeof c->to - 1, vb);
  }
  return n + 1;
}

int dp_config_diff(const dp_config *a, const dp_config *b, dp_config_change *out, int max) {
  int n = 0, layers = a->n_layers < b->n_layers ? a->n_layers : b->n_layers;
  for (int i = 0; i < N_KEYS; i++) {
    const dp_key *k = &keys[i];
    if (k->alias_of)
      continue;
    if (strcmp(k->section, "layer"))
      n = diff_key(k, -1, a, b, out, n, max);
    else
      for (int l = 0; l < layers; l++)
        n = diff_key(k, l, &a->layer[l], &b->layer[l], out, n, max);
  }
  return n;
}

/* The type column: an enum's choices, or "enum" when they are too long for the column (the row
 * then names them after the description unless it names each already), so every row lines up. */
enum { LIST_TYPE_W = 16 };

static void list_type(const dp_key *k, char *type, size_t len, char *more, size_t more_len) {
  more[0] = 0;
  snprintf(type, len, "%s", dp_key_type_name(k->type));
  if (k->type != DP_KEY_ENUM)
    return;
  char choices[160];
  choices_text(k->choices, choices, sizeof choices, "|");
  if (strlen(choices) <= LIST_TYPE_W) {
    snprintf(type, len, "%s", choices);
    return;
  }
  for (int i = 0; k->choices[i]; i++)
    if (!strstr(k->desc, k->choices[i])) {
      snprintf(more, more_len, "; one of %s", choices);
      return;
    }
}

static const char *list_default(const dp_key *k) { return k->def ? (k->def[0] ? k->def : "(empty)") : "(required)"; }

void dp_config_list(FILE *f) {
  int ws = 7, wk = 3, wd = 7; /* "section", "key", "default" */
  for (int i = 0; i < N_KEYS; i++) {
    int ns = (int)strlen(keys[i].section), nk = (int)strlen(keys[i].key), nd = (int)strlen(list_default(&keys[i]));
    ws = ns > ws ? ns : ws;
    wk = nk > wk ? nk : wk;
    wd = nd > wd ? nd : wd;
  }
  fprintf(f, "%-*s  %-*s  %-*s  %-*s  description\n", ws, "section", wk, "key", LIST_TYPE_W, "type", wd, "default");
  for (int i = 0; i < N_KEYS; i++) {
    const dp_key *k = &keys[i];
    char type[160], more[180];
    list_type(k, type, sizeof type, more, sizeof more);
    fprintf(f, "%-*s  %-*s  %-*s  %-*s  %s%s\n", ws, k->section, wk, k->key, LIST_TYPE_W, type, wd, list_default(k),
            k->desc, more);
  }
}

/* ---- the Markdown reference (docs/config.md is this output, checked by tests/cli/test_docs.sh) ---- */

static const char *const section_intro[] = {
    "The training data.",
    "The loss and an optional starting point.",
    "One `[layer]` section per layer, in order from input to output: dense (fully connected) by default, or "
    "an image layer (conv2d, maxpool, avgpool: they need `[data] shape`), flatten or dropout, each taking "
    "only its own keys. The last one is dense and its `units` is the number of classes (or regression "
    "targets). On the command line: "
    "`--set layer.<i>.key=value`, i from 0.",
    "The optimizer; each key names the optimizers it applies to.",
    "The step size gamma of each step: an optional linear warm-up, then the schedule.",
    "The training loop.",
    "When and where checkpoints are written (rank 0, atomically).",
    "`dptrain sweep`: short runs over a grid of step sizes.",
};
_Static_assert(sizeof section_intro / sizeof section_intro[0] == sizeof sections / sizeof sections[0] - 1,
               "one introduction per section");

/* A table cell: '|' would end the cell and '<' '>' would open HTML, so they are escaped. */
static void md_cell(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '|')
      fputs("\\|", f);
    else if (*s == '<')
      fputs("&lt;", f);
    else if (*s == '>')
      fputs("&gt;", f);
    else
      fputc(*s, f);
  }
}

/* Bounds at or past this are sanity limits, not part of the key's meaning: only the minimum is shown. */
#define MD_UNBOUNDED 1e6

static void md_range(const dp_key *k, char *buf, size_t len) {
  char lo[64], hi[64];
  const char *fmt = k->type == DP_KEY_DOUBLE ? "%g" : "%.0f";
  snprintf(lo, sizeof lo, fmt, k->min);
  snprintf(hi, sizeof hi, fmt, k->max);
  switch (k->type) {
  case DP_KEY_ENUM: {
    buf[0] = 0;
    for (int i = 0; k->choices[i]; i++) {
      size_t n = strlen(buf);
      snprintf(buf + n, len - n, "%s`%s`", i ? ", " : "", k->choices[i]);
    }
    return;
  }
  case DP_KEY_BOOL:
    snprintf(buf, len, "`true`, `false`");
    return;
  case DP_KEY_STRING:
    snprintf(buf, len, "up to %zu characters%s", k->size - 1, k->def && !k->def[0] ? ", may be empty" : "");
    return;
  case DP_KEY_LIST:
    snprintf(buf, len, "up to %zu ascending integers ≥ %s, comma-separated", k->size, lo);
    return;
  case DP_KEY_INTS:
    snprintf(buf, len, "up to %zu integers from %s to %s, comma-separated, may be empty", k->size, lo, hi);
    return;
  case DP_KEY_UINT64:
    snprintf(buf, len, "0 to 2^64 − 1");
    return;
  default:
    if (k->max >= MD_UNBOUNDED)
      snprintf(buf, len, "≥ %s", lo);
    else
      snprintf(buf, len, "%s to %s", lo, hi);
    if (!strcmp(k->key, "batch_size") || !strcmp(k->key, "padding")) {
      size_t n = strlen(buf);
      snprintf(buf + n, len - n, ", or `%s`", strcmp(k->key, "padding") ? "full" : "same");
    }
    return;
  }
}

void dp_config_markdown(FILE *f) {
  fputs("<!-- Generated by `build/dptrain config --markdown` from the key table in src/config.c.\n"
        "     Do not edit by hand: change the table and regenerate. tests/cli/test_docs.sh checks it. -->\n"
        "# Configuration reference\n"
        "\n"
        "_Generated by `build/dptrain config --markdown`; do not edit by hand._\n"
        "\n"
        "A configuration is an INI file with the sections below (`[layer]` once per layer). Every key can be\n"
        "overridden on the command line with `--set section.key=value` (layer keys: `--set layer.<i>.key=value`,\n"
        "layers counted from 0). Booleans also accept `yes`/`no`, `on`/`off` and `1`/`0`; enum values are\n"
        "case-insensitive. `build/dptrain config --check FILE` validates a file and the files it names (they\n"
        "exist and fit the model) without training, and every run writes its effective configuration, defaults\n"
        "included, to `out_dir/config.ini`. Relative paths resolve against the current directory.\n"
        "\n"
        "\"On resume\" says what `--resume` does when a key differs from the checkpoint's stored configuration:\n"
        "a key that changes the model, the data or the optimizer's state **must match** (the resume stops and\n"
        "lists every such key), one that is **safe to change** takes the new value from the resume on (one line\n"
        "per key, old -> new), and **fresh start only** is not read by a resume at all.\n",
        f);
  for (int s = 0; sections[s]; s++) {
    fprintf(f, "\n## [%s]\n\n%s\n\n", sections[s], section_intro[s]);
    fputs("| key | type | default | allowed values / range | description | on resume |\n"
          "|---|---|---|---|---|---|\n",
          f);
    for (int i = 0; i < N_KEYS; i++) {
      const dp_key *k = &keys[i];
      if (strcmp(k->section, sections[s]))
        continue;
      const dp_key *target = &keys[canonical_key(i)];
      char range[300], def[300];
      md_range(target, range, sizeof range);
      if (k->alias_of)
        snprintf(def, sizeof def, "alias of `%s`", k->alias_of);
      else if (!k->def)
        snprintf(def, sizeof def, "required");
      else if (!k->def[0])
        snprintf(def, sizeof def, "(empty)");
      else
        snprintf(def, sizeof def, "`%s`", k->def);
      fprintf(f, "| `%s` | %s | ", k->key, dp_key_type_name(k->type));
      md_cell(f, def);
      fputs(" | ", f);
      md_cell(f, range);
      fputs(" | ", f);
      md_cell(f, k->desc);
      fprintf(f, " | %s |\n", dp_resume_rule_name(target->resume));
    }
  }
}
