/* The run configuration: an INI file with sections [data] [model] [layer]... [optimizer] [schedule]
 * [train] [checkpoint] [sweep].
 *
 * Every key has a type, a default and a one-line description in ONE table (src/config.c); the
 * parser, `dptrain config --list` and the generated reference all read that table, so they cannot
 * drift apart. Errors name the file and line (`file:line: message`) and suggest near-miss keys. */
#ifndef DPTRAIN_CONFIG_H
#define DPTRAIN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dptrain/activations.h"
#include "dptrain/init.h"
#include "dptrain/loss.h"

#define DP_MAX_LAYERS 64
#define DP_PATH_MAX 1024
/* Longest path dptrain builds: a configured path (DP_PATH_MAX) plus a file name under it. */
#define DP_FILE_PATH_MAX (DP_PATH_MAX + 128)

/* X(ENUM suffix, name in the config): the one list of each enum, read by the parser, --list, the
 * docs and (optimizers) optim.c. Append only: written configs and checkpoints store the values. */
#define DP_IN_MEMORY_MAP(X) X(AUTO, "auto") X(TRUE, "true") X(FALSE, "false")
typedef enum {
#define DP_IN_MEMORY_ENUM(e, name) DP_INMEM_##e,
  DP_IN_MEMORY_MAP(DP_IN_MEMORY_ENUM)
#undef DP_IN_MEMORY_ENUM
} dp_in_memory;
/* [checkpoint] keep_best: the validation figure best.h5 is kept by (and early stopping watches). */
#define DP_KEEP_BEST_MAP(X) X(OFF, "off") X(VAL_LOSS, "val_loss") X(VAL_ACC, "val_acc")
typedef enum {
#define DP_KEEP_BEST_ENUM(e, name) DP_BEST_##e,
  DP_KEEP_BEST_MAP(DP_KEEP_BEST_ENUM)
#undef DP_KEEP_BEST_ENUM
} dp_keep_best;
/* [data] standardize: none (the file's scale only), scalar ([data] mean and std), per_feature (the
 * training split's per-feature mean and std that `dptrain convert` stores in the file). */
#define DP_STANDARDIZE_MAP(X) X(NONE, "none") X(SCALAR, "scalar") X(PER_FEATURE, "per_feature")
typedef enum {
#define DP_STANDARDIZE_ENUM(e, name) DP_STD_##e,
  DP_STANDARDIZE_MAP(DP_STANDARDIZE_ENUM)
#undef DP_STANDARDIZE_ENUM
} dp_standardize;
/* [data] order: auto (blocks when the training set is read from the file, random when held in memory). */
#define DP_DATA_ORDER_MAP(X) X(AUTO, "auto") X(RANDOM, "random") X(BLOCKS, "blocks")
typedef enum {
#define DP_DATA_ORDER_ENUM(e, name) DP_ORDER_##e,
  DP_DATA_ORDER_MAP(DP_DATA_ORDER_ENUM)
#undef DP_DATA_ORDER_ENUM
} dp_data_order;
/* [data] direct_io: read a streamed x past the page cache (O_DIRECT) always (true), never (false), or
 * when the file is larger than half the memory the node's ranks may use (auto). */
#define DP_DIRECT_IO_MAP(X) X(AUTO, "auto") X(TRUE, "true") X(FALSE, "false")
typedef enum {
#define DP_DIRECT_IO_ENUM(e, name) DP_DIRECT_##e,
  DP_DIRECT_IO_MAP(DP_DIRECT_IO_ENUM)
#undef DP_DIRECT_IO_ENUM
} dp_direct_io;
#define DP_OPTIM_KIND_MAP(X) X(SGD, "sgd") X(RMSPROP, "rmsprop") X(ADAM, "adam") X(ADAMW, "adamw") X(LBFGS, "lbfgs")
typedef enum {
#define DP_OPTIM_KIND_ENUM(e, name) DP_OPT_##e,
  DP_OPTIM_KIND_MAP(DP_OPTIM_KIND_ENUM)
#undef DP_OPTIM_KIND_ENUM
} dp_optim_kind;
#define DP_MOMENTUM_FORM_MAP(X) X(HEAVY_BALL, "heavy_ball") X(DIFFERENCE, "difference")
typedef enum {
#define DP_MOMENTUM_FORM_ENUM(e, name) DP_MOMENTUM_##e,
  DP_MOMENTUM_FORM_MAP(DP_MOMENTUM_FORM_ENUM)
#undef DP_MOMENTUM_FORM_ENUM
} dp_momentum_form;
#define DP_EPS_PLACEMENT_MAP(X) X(OUTSIDE, "outside") X(INSIDE, "inside")
typedef enum {
#define DP_EPS_PLACEMENT_ENUM(e, name) DP_EPS_##e,
  DP_EPS_PLACEMENT_MAP(DP_EPS_PLACEMENT_ENUM)
#undef DP_EPS_PLACEMENT_ENUM
} dp_eps_placement;
#define DP_SCHED_KIND_MAP(X) \
  X(CONSTANT, "constant") X(STEP, "step") X(MULTISTEP, "multistep") X(EXPONENTIAL, "exponential") X(COSINE, "cosine")
typedef enum {
#define DP_SCHED_KIND_ENUM(e, name) DP_SCHED_##e,
  DP_SCHED_KIND_MAP(DP_SCHED_KIND_ENUM)
#undef DP_SCHED_KIND_ENUM
} dp_sched_kind;
#define DP_LR_SCALE_MAP(X) X(NONE, "none") X(LINEAR, "linear")
typedef enum {
#define DP_LR_SCALE_ENUM(e, name) DP_LR_SCALE_##e,
  DP_LR_SCALE_MAP(DP_LR_SCALE_ENUM)
#undef DP_LR_SCALE_ENUM
} dp_lr_scale;
#define DP_ON_NONFINITE_MAP(X) X(ABORT, "abort") X(SKIP, "skip_step") X(RESTORE, "restore")
#define DP_ON_DIVERGENCE_MAP(X) X(WARN, "warn") X(ABORT, "abort")
#define DP_COMM_MODE_MAP(X) X(AUTO, "auto") X(NODE, "node") X(FLAT, "flat")
typedef enum {
#define DP_COMM_MODE_ENUM(e, name) DP_COMM_##e,
  DP_COMM_MODE_MAP(DP_COMM_MODE_ENUM)
#undef DP_COMM_MODE_ENUM
} dp_comm_mode;
typedef enum {
#define DP_ON_DIVERGENCE_ENUM(e, name) DP_DIVERGENCE_##e,
  DP_ON_DIVERGENCE_MAP(DP_ON_DIVERGENCE_ENUM)
#undef DP_ON_DIVERGENCE_ENUM
} dp_on_divergence;
typedef enum {
#define DP_ON_NONFINITE_ENUM(e, name) DP_NONFINITE_##e,
  DP_ON_NONFINITE_MAP(DP_ON_NONFINITE_ENUM)
#undef DP_ON_NONFINITE_ENUM
} dp_on_nonfinite;

/* [layer] type: image layers (conv2d, the pools) work on C×H×W activations and come before the
 * dense layers; flatten hands the image on as one row per sample (implicit before a first dense). */
#define DP_LAYER_TYPE_MAP(X) \
  X(DENSE, "dense") X(CONV2D, "conv2d") X(MAXPOOL, "maxpool") X(AVGPOOL, "avgpool") X(FLATTEN, "flatten") X(DROPOUT, "dropout")
typedef enum {
#define DP_LAYER_TYPE_ENUM(e, name) DP_LAYER_##e,
  DP_LAYER_TYPE_MAP(DP_LAYER_TYPE_ENUM)
#undef DP_LAYER_TYPE_ENUM
} dp_layer_type;
/* [layer] padding = same: the output keeps the input's size at stride 1. */
#define DP_PAD_SAME (-1)

#define DP_MAX_MILESTONES 32

typedef struct {
  dp_sched_kind name;
  int64_t step_size;     /* step: decay every step_size steps */
  double gamma;          /* step, multistep, exponential: the decay factor */
  int64_t milestones[DP_MAX_MILESTONES]; /* multistep: ascending steps */
  int n_milestones;
  double min_lr;         /* cosine: the floor */
  int64_t warmup_steps;  /* linear warm-up from 0 */
  dp_lr_scale lr_scale;  /* linear: lr × batch_size / base_batch */
  int64_t base_batch;
} dp_schedule_cfg;

typedef struct {
  dp_optim_kind name;
  double lr;                   /* 0 in the file means the optimizer's own default */
  double momentum;
  double dampening, weight_decay, clip_norm;
  bool nesterov;
  dp_momentum_form momentum_form;
  double alpha, eps;           /* rmsprop (eps also adam) */
  double beta1, beta2;         /* adam, adamw */
  bool bias_correction;
  dp_eps_placement eps_placement;
  int history;                 /* lbfgs */
  int64_t max_iter;
  double tolerance_grad, tolerance_change;
} dp_optim_cfg;

typedef struct {
  dp_layer_type type;
  int units;             /* dense */
  int filters;           /* conv2d */
  int64_t kernel[2];     /* conv2d, pools: kh, kw (one value: square) */
  int n_kernel;
  int stride;            /* conv2d, pools: 0 = the type's default (conv2d 1, pools the kernel) */
  int padding;           /* conv2d: zeros on each side, or DP_PAD_SAME */
  double rate;           /* dropout */
  unsigned given;        /* layer keys set in the file or by --set (bit: the key's place among the layer keys) */
  dp_act activation;
  dp_init_rule init;
  dp_init_dist init_dist;
  int norm;              /* dp_norm_kind: none, batch or layer, on the net sums before the activation */
  bool sync;             /* batch norm: statistics over the global batch (all ranks) */
  double eps;            /* norm: ε in √(σ² + ε) */
  double norm_momentum;  /* batch norm: running statistics r = (1 − m) r + m · batch */
  int line; /* line of its [layer] header, for messages; 0 when unknown */
} dp_layer_cfg;

typedef struct {
  char file[DP_PATH_MAX]; /* where it was read from, for messages */

  struct {
    char path[DP_PATH_MAX];
    int64_t shape[3];  /* C, H, W of the image a row holds (n_shape = 0: flat rows) */
    int n_shape;
    dp_in_memory in_memory;
    double mean, std; /* inputs become (x - mean) / std after the file's scale */
    dp_standardize standardize;
    double val_fraction; /* training rows held out for validation; 0 = none (or the file's /val) */
    dp_data_order order;
    dp_direct_io direct_io;
    int64_t block_rows;   /* order = blocks: rows per block; 0 = the file's chunk rows */
    int shuffle_blocks;   /* order = blocks: the window of blocks shuffled together */
    double prefetch_mb;   /* the streaming reader's ring of blocks */
  } data;

  struct {
    dp_loss_kind loss;
    char init_from[DP_PATH_MAX]; /* checkpoint whose /model weights start the run; "" = none */
  } model;

  int n_layers;
  dp_layer_cfg layer[DP_MAX_LAYERS];

  dp_optim_cfg optimizer;

  dp_schedule_cfg schedule;

  struct {
    int64_t every_steps;   /* 0 = off */
    double every_seconds;  /* 0 = off */
    bool at_epoch_end, at_end;
    int keep_last;         /* 0 = keep all */
    char dir[DP_PATH_MAX]; /* "" = out_dir/checkpoints */
    dp_keep_best keep_best; /* best.h5 beside the rolling checkpoints */
  } checkpoint;

  struct {
    char lr[256];          /* grid: "LO:HI:N" (log-spaced) or "a,b,c" */
    int64_t steps;
    int ranks_per_run;
    double diverge_factor;
  } sweep;

  struct {
    int64_t batch_size; /* global mini-batch; 0 means "full" (the whole training set) */
    int epochs;
    int64_t max_steps; /* 0 = no limit */
    uint64_t seed;
    bool shuffle;
    bool drop_last;
    int log_every;
    int64_t eval_every; /* 0 = after each epoch only */
    char out_dir[DP_PATH_MAX];
    int threads; /* BLAS threads per rank; 0 = the variables, else the affinity mask (dp_blas_set_threads) */
    double bucket_mb; /* gradient allreduce buckets; 0 = one allreduce after the backward pass */
    bool deterministic; /* the same bits at any rank count: chunks of chunk_rows rows, exact sums */
    int chunk_rows;
    dp_comm_mode comm; /* node: one model copy per node, reduction in shared memory (nodesync.h) */
    char timeline[DP_PATH_MAX]; /* Chrome trace of the first timeline_steps steps; "" = none */
    int timeline_steps;
    dp_on_nonfinite on_nonfinite;
    int max_restores;      /* on_nonfinite = restore: at most this many times */
    int64_t max_skips;     /* on_nonfinite = skip_step: at most this many skipped updates; 0 = no limit */
    int max_consecutive_skips; /* and at most this many in a row; 0 = no limit */
    dp_on_divergence on_divergence; /* a finite loss past [sweep] diverge_factor x its first value */
    double collective_timeout; /* seconds; 0 = wait forever */
    int early_stop_patience;   /* evaluations without an improvement before the run ends; 0 = off */
    double early_stop_min_delta; /* the least change of the watched figure that counts as one */
  } train;
} dp_config;

/* One row of the key table. Layer keys have section "layer" and an offset into dp_layer_cfg; all
 * others an offset into dp_config. */
typedef enum {
  DP_KEY_INT,
  DP_KEY_INT64,
  DP_KEY_UINT64,
  DP_KEY_DOUBLE,
  DP_KEY_BOOL,
  DP_KEY_STRING,
  DP_KEY_ENUM,
  DP_KEY_LIST, /* comma-separated ascending int64s: an array of `size` followed by its int count */
  DP_KEY_INTS  /* the same in any order (sizes: a kernel, an image shape) */
} dp_key_type;

/* Whether a key may change when a run resumes. The zero value is the safe one for a key nobody
 * classified: the checkpoint's value is required. */
typedef enum {
  DP_RESUME_MATCH, /* the model, the data or the optimizer's state: must equal the checkpoint's */
  DP_RESUME_SAFE,  /* run length, logging, checkpoint cadence, performance: the new value applies */
  DP_RESUME_FRESH  /* read only at a fresh start (init_from): a resume ignores it */
} dp_resume_rule;

typedef struct {
  const char *section;
  const char *key;
  dp_key_type type;
  const char *def;          /* default as text; NULL = required */
  const char *desc;         /* one line */
  size_t offset;            /* into dp_config, or into dp_layer_cfg for section "layer" */
  const char *const *choices; /* DP_KEY_ENUM: NULL-terminated names, value = index */
  double min, max;          /* numeric range, inclusive */
  size_t size;              /* DP_KEY_STRING: buffer bytes; DP_KEY_LIST: capacity */
  const char *alias_of;     /* another name for that key: parsed, never written */
  dp_resume_rule resume;    /* what a resume may do with it */
} dp_key;

/* The key table and its length. */
const dp_key *dp_config_keys(size_t *n);
const char *dp_key_type_name(dp_key_type t);

/* All defaults, no layers, empty data path. optimizer.lr stays 0 ("the optimizer's default") until
 * validation resolves it, so set it when building a config by hand. */
void dp_config_defaults(dp_config *c);
/* Parses an INI file, then applies `section.key=value` overrides (layer keys: `layer.<i>.key`, i from
 * 0), then validates. Errors: DP_ECONFIG with a `file:line: ...` message (dp_errmsg). */
int dp_config_load(dp_config *c, const char *path, const char *const *sets, int n_sets);
/* The same from text in memory; name is used in messages. */
int dp_config_parse_string(dp_config *c, const char *text, const char *name, const char *const *sets, int n_sets);
/* Writes the effective configuration (every key, defaults included) as INI that parses back to
 * the same configuration. */
int dp_config_write(const dp_config *c, FILE *f);
/* v in the shortest %g form that reads back (strtod) to exactly v: 0.2, not 0.20000000000000001. */
void dp_format_double(char *buf, size_t len, double v);
/* One key whose value differs between two configurations (dp_config_diff). */
typedef struct {
  const dp_key *key;
  int layer;              /* the layer of a layer key, else -1 */
  char name[80];          /* as --set names it: "train.epochs", "layer.0.units" */
  char from[120], to[120]; /* the values as config.ini writes them (long ones cut) */
} dp_config_change;

/* The keys whose values differ from a to b (aliases skipped, layers up to the smaller count; the
 * caller compares n_layers): up to max of them into out; returns how many differ. */
int dp_config_diff(const dp_config *a, const dp_config *b, dp_config_change *out, int max);
/* "must match", "safe to change", "fresh start only": what the reference says of a rule. */
const char *dp_resume_rule_name(dp_resume_rule r);

/* Prints every key: section, key, type, default, description (for `dptrain config --list`). */
void dp_config_list(FILE *f);
/* Prints the same table as a Markdown reference, one section per INI section with key, type,
 * default ("required" when there is none), allowed values or range, and description (for
 * `dptrain config --markdown`; docs/config.md is its output). */
void dp_config_markdown(FILE *f);

#endif
