/* dptrain's command line: parses arguments and dispatches. The only place an error becomes an
 * exit code. */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/bench.h"
#include "dptrain/blas.h"
#include "dptrain/checkpoint.h"
#include "dptrain/comm.h"
#include "dptrain/config.h"
#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/metrics.h"
#include "dptrain/paths.h"
#include "dptrain/predict.h"
#include "dptrain/run.h"
#include "dptrain/sweep.h"
#include "dptrain/train.h"

/* Whether a launcher (mpirun, srun) started this process: set before MPI_Init. */
static int launched;

#define DP_VERSION "0.1.0"
#define DP_MAX_SETS 256

static const char usage_main[] =
    "usage: dptrain <command> [options]\n"
    "\n"
    "Distributed data-parallel mini-batch training of neural networks (MPI + OpenBLAS + HDF5).\n"
    "\n"
    "commands:\n"
    "  train CONFIG.ini [--set section.key=value ...] [--resume PATH|auto] [--quiet]\n"
    "                      train the model CONFIG describes; run under `mpirun -np N` for N ranks\n"
    "  sweep CONFIG.ini [--lr LO:HI:N] [--steps S] [--ranks-per-run K] [-o sweep.csv]\n"
    "                      short runs over a log grid of step sizes, in parallel groups of ranks\n"
    "  convert idx IMAGES LABELS [TEST_IMAGES TEST_LABELS] -o OUT.h5\n"
    "                      convert gzip'd IDX files (MNIST family) to dptrain's HDF5 layout\n"
    "  convert csv TRAIN.csv [--test TEST.csv] [--label-col N] [--header] [--regression]\n"
    "              [--scale S] -o OUT.h5\n"
    "                      convert a numeric CSV with a label column\n"
    "  convert rechunk IN.h5 OUT.h5 [--chunk-mb X]\n"
    "                      re-lay a data file in chunks of whole rows for streaming\n"
    "  convert synthetic -o OUT.h5 --rows N [--features D] [--classes K] [--test-rows T]\n"
    "              [--seed S] [--chunk-mb X]\n"
    "                      generate a learnable classification set of any size\n"
    "  inspect CKPT.h5     print a checkpoint's step, optimizer, layers and config\n"
    "  bench [options]     time training steps against sgemm, allreduce and disk references\n"
    "  eval CKPT.h5 [--data FILE]\n"
    "                      evaluate a checkpoint on the /test split (any number of ranks)\n"
    "  predict CKPT.h5 DATA [-o OUT.h5|OUT.csv] [--split train|test]\n"
    "                      the model's outputs for every row of DATA (HDF5 or CSV; any number of ranks)\n"
    "  config --list       print every configuration key with its type, default and meaning\n"
    "  config --markdown   the same as a Markdown reference (docs/config.md)\n"
    "  config --check CONFIG.ini [--set ...]\n"
    "                      validate a configuration and the files it names, without training\n"
    "\n"
    "options: --help (also after a command), --version\n"
    "exit codes: 0 success, 1 runtime error, 2 usage or configuration error, 3 diverged\n";

static const char usage_train[] =
    "usage: dptrain train CONFIG.ini [--set section.key=value ...] [--resume PATH|auto] [--overwrite]\n"
    "                     [--quiet|--verbose]\n"
    "\n"
    "Trains the model that CONFIG.ini describes on its [data] path. Under `mpirun -np N` the global\n"
    "mini-batch ([train] batch_size) is split across the N ranks and the gradients are summed by an\n"
    "allreduce every step, so the result does not depend on N beyond rounding.\n"
    "\n"
    "  --set section.key=value   override a key (repeatable); layer keys as layer.<i>.key, i from 0\n"
    "  --resume PATH             continue from a checkpoint (ckpt-<step>.h5), at any number of ranks\n"
    "  --resume auto             continue from the newest checkpoint in [checkpoint] dir, or start fresh\n"
    "  --overwrite               start fresh even where another run's checkpoints are: they are moved\n"
    "                            aside into previous-<time>/ (without it such a start is refused);\n"
    "                            with --resume PATH from elsewhere, the same for the run found there\n"
    "  --quiet                   no progress output (metrics.jsonl is still written)\n"
    "  --verbose                 progress lines also show the gradient norm and the step's time split\n"
    "\n"
    "On a terminal rank 0 shows a live progress bar per epoch (loss, step size, samples/s, ETA);\n"
    "otherwise (batch logs) a plain line every [train] log_every steps.\n"
    "\n"
    "Checkpoints ([checkpoint] every_steps, every_seconds, at_epoch_end, at_end, keep_last) go to\n"
    "out_dir/checkpoints. On SIGTERM, SIGUSR1 or SIGINT the run saves a checkpoint at the next step\n"
    "and exits 0 (mpirun, when it is the one signalled, returns 1 all the same: Open MPI's rule).\n"
    "A fresh run, or a resume of a checkpoint from elsewhere, refuses a directory that holds another\n"
    "run's checkpoints (see --overwrite), and a resume refuses a config whose model, data or\n"
    "optimizer differ from the checkpoint's.\n"
    "\n"
    "Writes [train] out_dir/metrics.jsonl and out_dir/config.ini (the effective configuration).\n"
    "`dptrain config --list` lists every key.\n";

static const char usage_sweep[] =
    "usage: dptrain sweep CONFIG.ini [--lr LO:HI:N | --lr a,b,c] [--steps S] [--ranks-per-run K]\n"
    "                    [-o sweep.csv] [--set section.key=value ...] [--quiet]\n"
    "\n"
    "Trains CONFIG briefly ([sweep] steps, default 300) for each step size on a log grid\n"
    "(--lr 1e-4:1:9 = 9 values from 1e-4 to 1) and reports the final and best loss of each, marking\n"
    "runs whose loss became NaN/Inf or grew past [sweep] diverge_factor x its first value.\n"
    "The ranks are split into groups of --ranks-per-run (default 1); each group trains its share of\n"
    "the grid data-parallel, so 8 ranks with --ranks-per-run 2 run 4 step sizes at once.\n"
    "Writes sweep.csv (lr, final_loss, best_loss, diverged, steps; default [train] out_dir/sweep.csv).\n";

static const char usage_convert[] =
    "usage: dptrain convert idx IMAGES LABELS [TEST_IMAGES TEST_LABELS] -o OUT.h5\n"
    "       dptrain convert csv TRAIN.csv [--test TEST.csv] [--label-col N] [--header]\n"
    "                           [--regression] [--scale S] -o OUT.h5\n"
    "       dptrain convert rechunk IN.h5 OUT.h5 [--chunk-mb X]\n"
    "       dptrain convert synthetic -o OUT.h5 --rows N [--features D] [--classes K] [--test-rows T]\n"
    "                                 [--seed S] [--chunk-mb X]\n"
    "\n"
    "idx: IDX files, gzip'd or plain (MNIST, Fashion-MNIST); images become /train/x uint8 with\n"
    "     scale 1/255, labels /train/y; the optional pair becomes /test.\n"
    "csv: one sample per line, numbers separated by ',', ';' (decimal commas allowed) or tabs, as the\n"
    "     first line shows; \"quoted\" fields, CRLF and blank lines are fine, an empty field is an error;\n"
    "     --label-col picks the label column (0-based, negative counts from the end; default -1, the\n"
    "     last); --header skips the first line (a first line without numbers is skipped anyway);\n"
    "     --regression stores the label column as a float target instead of a class;\n"
    "     --scale sets the x scale attribute (default 1).\n"
    "rechunk: rewrites IN (any layout dptrain reads) as OUT with x and y in checksummed chunks of whole\n"
    "     rows of about X MB (default 2), every other attribute and dataset copied; streamed in pieces,\n"
    "     so a file larger than memory is fine.\n"
    "synthetic: N training and T test rows (default 10000) of D float32 features (default 256) in K\n"
    "     classes (default 10), each class a mixture of Gaussian clusters (learnable, not separable);\n"
    "     the same for a seed (default 1); written in pieces, at disk speed.\n"
    "idx and csv write chunks of about 2 MB too: a streamed block is one or a few chunks.\n";

static const char usage_bench[] =
    "usage: dptrain bench [--data FILE] [--hidden 512,256 | --config CONFIG] [--batch 128] [--seconds 3]\n"
    "                     [--threads N] [--bucket-mb MB] [--comm auto|node|flat] [--sgemm] [--allreduce]\n"
    "                     [--ckpt-dir DIR]\n"
    "\n"
    "Times training steps of a ReLU MLP (784-hidden-10, SGD momentum) on FILE (default\n"
    "data/fashion_mnist.h5), or of CONFIG's model with its optimizer (on its data unless --data), at\n"
    "the GLOBAL batch given, and prints one JSON object: samples/s, GFLOP/s, the step split\n"
    "(compute, communication wait, optimizer; max over ranks), peak RSS with its parts. --sgemm also\n"
    "times the step's GEMM shapes alone (a conv2d's on its im2col rows) and each conv2d layer's\n"
    "kernels alone; --allreduce times allreduces of 1 KiB .. 16 MiB and fits t(n) = alpha + n beta;\n"
    "--ckpt-dir times a checkpoint write against a plain write of as many bytes. `make bench` runs\n"
    "the whole benchmark (scripts/bench.sh).\n";

static const char usage_ckpt[] =
    "usage: dptrain inspect CKPT.h5\n"
    "       dptrain eval CKPT.h5 [--data FILE.h5]\n"
    "\n"
    "inspect: the checkpoint's format, step, epoch, world size, optimizer, layers and stored config.\n"
    "eval: loss and accuracy (mse: RMSE and MAE) of its model on the /test split of FILE (default: the\n"
    "      stored config's [data] path); runs under mpirun at any number of ranks.\n";

static const char usage_predict[] =
    "usage: dptrain predict CKPT.h5 DATA [-o OUT.h5|OUT.csv] [--split train|test]\n"
    "\n"
    "The model of CKPT.h5 (batch norm on its running statistics, the input transform it was trained\n"
    "with) on every row of DATA: an HDF5 data file's /test split (--split train: /train), or a .csv of\n"
    "raw features, one row per line, optionally with a label column last (`convert csv`'s layout).\n"
    "OUT.h5 gets /y (rows, outputs) and, for a classifier, /label (the argmax); OUT.csv the same as\n"
    "columns y0..y<K-1>[,label]; without -o the CSV goes to standard output. y holds class\n"
    "probabilities (softmax) for a classifier, the outputs for mse. Under mpirun the rows are split\n"
    "across the ranks and rank 0 writes them in order. A NaN or Inf input is an error naming its row.\n";

static const char usage_config[] =
    "usage: dptrain config --list\n"
    "       dptrain config --markdown\n"
    "       dptrain config --check CONFIG.ini [--set section.key=value ...]\n"
    "\n"
    "  --list       every key of the key table: section, key, type, default, description\n"
    "  --markdown   the same table as a Markdown reference, one table per section, with the allowed\n"
    "               values and ranges (docs/config.md is this output)\n"
    "  --check      parse and validate CONFIG.ini with the overrides, and check the files it names as a\n"
    "               run would: the data exists and fits the layers and the loss, init_from fits the\n"
    "               model, the output directories can be made; trains and writes nothing (mpirun: any N)\n"
    "\n"
    "Relative paths in a config resolve against the current directory.\n";

static int finish(int rc, const dp_comm *c);

/* A usage error takes the path of every other error (dp_fail, then finish), and adds the usage. */
static int usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *usage, const char *fmt, ...) {
  char msg[DP_FILE_PATH_MAX + 256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int code = finish(dp_fail(DP_EUSAGE, "%s", msg), NULL);
  fputs(usage, stderr);
  return code;
}

/* Command-line numbers are the whole argument, never the "12" of "12abc" or the 0 of "": 0, or
 * DP_EUSAGE with "OPT expects WANT, got 'V'". */
static int opt_int(const char *opt, const char *v, int64_t lo, int64_t hi, const char *want, int64_t *out) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (end == v || *end || errno == ERANGE || x < lo || x > hi)
    return dp_fail(DP_EUSAGE, "%s expects %s, got '%s'", opt, want, v);
  *out = x;
  return 0;
}

/* As opt_int; NaN and Inf are never a valid option value. */
static int opt_double(const char *opt, const char *v, double lo, double hi, const char *want, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (end == v || *end || errno == ERANGE || !isfinite(x) || x < lo || x > hi)
    return dp_fail(DP_EUSAGE, "%s expects %s, got '%s'", opt, want, v);
  *out = x;
  return 0;
}

static int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

/* Turns an error into a message and an exit code. When every rank knows of the error
 * (dp_comm_agree), one rank prints and all exit cleanly; when only this rank knows, it aborts the
 * job so no other rank is left waiting in a collective. */
static int finish(int rc, const dp_comm *c) {
  int rank = c ? c->rank : 0, size = c ? c->size : 1;
  if (rc < 0) {
    int rep = dp_error_reporter();
    if (rep == -1 || rep == rank)
      fprintf(stderr, "dptrain: error: %s\n", dp_errmsg(rc));
    if (rep == -1 && size > 1) {
      fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, dp_exit_code(rc));
    }
  }
  return dp_exit_code(rc);
}

typedef struct {
  const char *config;
  const char *sets[DP_MAX_SETS];
  int n_sets;
  int quiet, verbose;
  const char *resume;
  int overwrite;
  int sweep; /* accept the sweep options below */
  const char *lr, *ranks_per_run, *steps, *csv;
} train_args;

/* The sweep's options with a value; returns the slot for option s, or NULL. */
static const char **sweep_option(train_args *a, const char *s) {
  if (!a->sweep)
    return NULL;
  if (!strcmp(s, "--lr"))
    return &a->lr;
  if (!strcmp(s, "--ranks-per-run"))
    return &a->ranks_per_run;
  if (!strcmp(s, "--steps"))
    return &a->steps;
  if (!strcmp(s, "-o"))
    return &a->csv;
  return NULL;
}

/* Returns 0, or an exit code after printing the problem (rank 0 only prints). */
static int parse_train_args(int argc, char **argv, train_args *a, int print, const char *usage) {
  int sweep = a->sweep;
  memset(a, 0, sizeof *a);
  a->sweep = sweep;
  for (int i = 0; i < argc; i++) {
    const char *s = argv[i];
    const char **slot = sweep_option(a, s);
    if (slot) {
      if (i + 1 >= argc)
        return print ? usage_error(usage, "option '%s' needs a value", s) : 2;
      *slot = argv[++i];
    } else if (is_help(s)) {
      if (print)
        fputs(usage, stdout);
      return -1;
    } else if (!strcmp(s, "--set")) {
      if (i + 1 >= argc)
        return print ? usage_error(usage, "--set needs a value: --set section.key=value") : 2;
      if (a->n_sets == DP_MAX_SETS)
        return print ? usage_error(usage, "too many --set options (at most %d)", DP_MAX_SETS) : 2;
      a->sets[a->n_sets++] = argv[++i];
    } else if (!strncmp(s, "--set=", 6)) {
      if (a->n_sets == DP_MAX_SETS)
        return print ? usage_error(usage, "too many --set options (at most %d)", DP_MAX_SETS) : 2;
      a->sets[a->n_sets++] = s + 6;
    } else if (!sweep && !strcmp(s, "--resume")) {
      if (i + 1 >= argc)
        return print ? usage_error(usage, "--resume needs a checkpoint path or auto") : 2;
      a->resume = argv[++i];
    } else if (!sweep && !strcmp(s, "--overwrite")) {
      a->overwrite = 1;
    } else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) {
      a->quiet = 1;
    } else if (!sweep && (!strcmp(s, "--verbose") || !strcmp(s, "-v"))) {
      a->verbose = 1;
    } else if (s[0] == '-' && s[1]) {
      return print ? usage_error(usage, "unknown option '%s'", s) : 2;
    } else if (a->config) {
      return print ? usage_error(usage, "unexpected argument '%s' (one CONFIG file only)", s) : 2;
    } else {
      a->config = s;
    }
  }
  if (!a->config)
    return print ? usage_error(usage, "missing CONFIG.ini") : 2;
  /* With --resume PATH it moves aside another run's checkpoints where PATH is to continue. */
  if (a->overwrite && a->resume && !strcmp(a->resume, "auto"))
    return print ? usage_error(usage, "--overwrite starts a fresh run, --resume continues one: give one of them") : 2;
  return 0;
}

/* What train and sweep share: MPI, the arguments (parsed alike on every rank), the config, then
 * run(args, config, comm), and one exit code. */
typedef int (*config_command)(const train_args *a, const dp_config *cfg, dp_comm *comm);

static int with_config(int argc, char **argv, int sweep, const char *usage, config_command run) {
  MPI_Init(&argc, &argv);
  int world_rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  train_args a = {.sweep = sweep};
  int code = parse_train_args(argc, argv, &a, world_rank == 0, usage);
  if (code != 0) { /* every rank parsed the same arguments and stops alike */
    MPI_Finalize();
    return code < 0 ? 0 : code;
  }
  dp_comm comm;
  int rc = dp_comm_init(&comm, MPI_COMM_WORLD);
  if (rc == 0) {
    dp_config cfg;
    rc = dp_comm_agree(&comm, dp_config_load(&cfg, a.config, a.sets, a.n_sets), NULL);
    if (rc == 0)
      rc = run(&a, &cfg, &comm);
  }
  code = finish(rc, &comm);
  dp_comm_free(&comm);
  MPI_Finalize();
  return code;
}

/* Under mpirun or srun a rank's stdout is a pseudo-terminal even when the launcher writes to a batch
 * log, so launched ranks print plain lines unless DPTRAIN_PROGRESS=bar asks for the bar (make run
 * does on a terminal); DPTRAIN_PROGRESS=lines forces lines anywhere. */
static dp_progress_mode progress_mode(void) {
  const char *v = getenv("DPTRAIN_PROGRESS");
  if (v && !strcmp(v, "bar"))
    return DP_PROGRESS_BAR;
  if (v && !strcmp(v, "lines"))
    return DP_PROGRESS_LINES;
  return launched ? DP_PROGRESS_LINES : DP_PROGRESS_AUTO;
}

static int run_train(const train_args *a, const dp_config *cfg, dp_comm *comm) {
  dp_run_opts o = {
      .out = a->quiet ? NULL : stdout, .verbose = a->verbose, .progress = progress_mode(), .overwrite = a->overwrite};
  return dp_train_run(cfg, comm, a->resume, &o);
}

static int cmd_train(int argc, char **argv) {
  dp_catch_stop_signals();
  return with_config(argc, argv, 0, usage_train, run_train);
}

static int sweep_options(const train_args *a, const dp_config *cfg, dp_sweep_opts *o, char *csv, size_t len) {
  memset(o, 0, sizeof *o);
  o->steps = cfg->sweep.steps;
  o->ranks_per_run = cfg->sweep.ranks_per_run;
  o->diverge_factor = cfg->sweep.diverge_factor;
  DP_TRY(dp_sweep_parse_grid(a->lr ? a->lr : cfg->sweep.lr, o->lr, &o->n));
  if (a->steps)
    DP_TRY(opt_int("--steps", a->steps, 1, INT64_MAX, "a positive integer", &o->steps));
  int64_t n;
  if (a->ranks_per_run) {
    DP_TRY(opt_int("--ranks-per-run", a->ranks_per_run, 1, INT_MAX, "a positive integer", &n));
    o->ranks_per_run = (int)n;
  }
  if (a->csv)
    snprintf(csv, len, "%s", a->csv);
  else
    snprintf(csv, len, "%s/sweep.csv", cfg->train.out_dir);
  o->csv = csv;
  return 0;
}

static int run_sweep(const train_args *a, const dp_config *cfg, dp_comm *comm) {
  dp_sweep_opts o;
  char csv[DP_PATH_MAX + 16];
  DP_TRY(dp_comm_agree(comm, sweep_options(a, cfg, &o, csv, sizeof csv), NULL));
  DP_TRY(dp_paths_check_sweep(cfg, comm, o.csv)); /* before the sweep, not after it */
  FILE *out = comm->rank == 0 && !a->quiet ? stdout : NULL;
  dp_sweep_result res[DP_SWEEP_MAX];
  DP_TRY(dp_sweep_run(cfg, comm, &o, res, out));
  int rc = 0;
  if (comm->rank == 0) {
    rc = dp_mkdirs_for(o.csv);
    if (rc == 0)
      rc = dp_sweep_report(res, o.n, o.csv, out);
  }
  return dp_comm_agree(comm, rc, NULL);
}

static int cmd_sweep(int argc, char **argv) { return with_config(argc, argv, 1, usage_sweep, run_sweep); }

/* One bench option with a value; the ranges are checked together afterwards, in one message. */
static int bench_option(const char *s, const char *v, dp_bench_opts *o) {
  int64_t n;
  if (!strcmp(s, "--data"))
    o->data = v;
  else if (!strcmp(s, "--hidden"))
    o->hidden = v;
  else if (!strcmp(s, "--config"))
    o->config = v;
  else if (!strcmp(s, "--ckpt-dir"))
    o->ckpt_dir = v;
  else if (!strcmp(s, "--comm")) {
    if (strcmp(v, "auto") && strcmp(v, "node") && strcmp(v, "flat"))
      return dp_fail(DP_EUSAGE, "--comm expects auto, node or flat, got '%s'", v);
    o->comm = v;
  }
  else if (!strcmp(s, "--seconds"))
    return opt_double(s, v, -DBL_MAX, DBL_MAX, "a number", &o->seconds);
  else if (!strcmp(s, "--bucket-mb"))
    return opt_double(s, v, -DBL_MAX, DBL_MAX, "a number", &o->bucket_mb);
  else if (!strcmp(s, "--batch")) {
    DP_TRY(opt_int(s, v, LONG_MIN, LONG_MAX, "an integer", &n));
    o->batch = (long)n;
  } else if (!strcmp(s, "--threads")) {
    DP_TRY(opt_int(s, v, INT_MIN, INT_MAX, "an integer", &n));
    o->threads = (int)n;
  } else {
    return dp_fail(DP_EUSAGE, "unknown option '%s'", s);
  }
  return 0;
}

static int parse_bench(int argc, char **argv, dp_bench_opts *o) {
  for (int i = 0; i < argc; i++) {
    const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(s, "--sgemm"))
      o->sgemm = 1;
    else if (!strcmp(s, "--allreduce"))
      o->allreduce = 1;
    else if (!v)
      return usage_error(usage_bench, "unknown option or missing value: '%s'", s);
    else if (bench_option(s, argv[++i], o) < 0)
      return usage_error(usage_bench, "%s", dp_errmsg(DP_EUSAGE));
  }
  if (o->batch < 1 || !(o->seconds > 0) || o->threads < 0 || o->bucket_mb < 0)
    return usage_error(usage_bench, "--batch, --seconds must be positive; --threads, --bucket-mb >= 0");
  return 0;
}

static int cmd_bench(int argc, char **argv) {
  dp_bench_opts o = {.hidden = "512,256", .batch = 128, .seconds = 3,
                     .bucket_mb = 1};
  for (int i = 0; i < argc; i++)
    if (is_help(argv[i])) {
      fputs(usage_bench, stdout);
      return 0;
    }
  int code = parse_bench(argc, argv, &o);
  if (code)
    return code;
  MPI_Init(&argc, &argv);
  dp_comm comm;
  int rc = dp_comm_init(&comm, MPI_COMM_WORLD);
  if (rc == 0)
    rc = dp_bench_run(&o, &comm, stdout);
  code = finish(rc, &comm);
  dp_comm_free(&comm);
  MPI_Finalize();
  return code;
}

static int cmd_inspect(int argc, char **argv) {
  if (argc == 1 && is_help(argv[0])) {
    fputs(usage_ckpt, stdout);
    return 0;
  }
  if (argc != 1 || argv[0][0] == '-')
    return usage_error(usage_ckpt, "inspect needs exactly one checkpoint file");
  int rc = dp_paths_check_input(argv[0], "checkpoint", "", DP_ECKPT);
  return finish(rc < 0 ? rc : dp_ckpt_inspect(argv[0], stdout), NULL);
}

static int cmd_eval(int argc, char **argv) {
  const char *ckpt = NULL, *data = NULL;
  for (int i = 0; i < argc; i++) {
    if (is_help(argv[i])) {
      fputs(usage_ckpt, stdout);
      return 0;
    } else if (!strcmp(argv[i], "--data") && i + 1 < argc) {
      data = argv[++i];
    } else if (argv[i][0] == '-') {
      return usage_error(usage_ckpt, "unknown option or missing value: '%s'", argv[i]);
    } else if (ckpt) {
      return usage_error(usage_ckpt, "unexpected argument '%s'", argv[i]);
    } else {
      ckpt = argv[i];
    }
  }
  if (!ckpt)
    return usage_error(usage_ckpt, "eval needs a checkpoint file");
  MPI_Init(&argc, &argv);
  dp_comm comm;
  int rc = dp_comm_init(&comm, MPI_COMM_WORLD);
  if (rc == 0)
    rc = dp_eval_run(ckpt, data, &comm, stdout);
  int code = finish(rc, &comm);
  dp_comm_free(&comm);
  MPI_Finalize();
  return code;
}

static int cmd_predict(int argc, char **argv) {
  dp_predict_opts o = {.split = "test"};
  const char **pos[] = {&o.ckpt, &o.data};
  int n = 0;
  for (int i = 0; i < argc; i++) {
    int has_val = i + 1 < argc;
    if (is_help(argv[i])) {
      fputs(usage_predict, stdout);
      return 0;
    } else if (!strcmp(argv[i], "-o") && has_val) {
      o.out = argv[++i];
    } else if (!strcmp(argv[i], "--split") && has_val) {
      o.split = argv[++i];
      if (strcmp(o.split, "train") && strcmp(o.split, "test"))
        return usage_error(usage_predict, "--split expects train or test, got '%s'", o.split);
    } else if (argv[i][0] == '-' && argv[i][1]) {
      return usage_error(usage_predict, has_val ? "unknown option '%s'" : "option '%s' needs a value", argv[i]);
    } else if (n == 2) {
      return usage_error(usage_predict, "unexpected argument '%s'", argv[i]);
    } else {
      *pos[n++] = argv[i];
    }
  }
  if (n != 2)
    return usage_error(usage_predict, "predict needs a checkpoint and a data file");
  MPI_Init(&argc, &argv);
  dp_comm comm;
  int rc = dp_comm_init(&comm, MPI_COMM_WORLD);
  if (rc == 0) {
    rc = dp_paths_check_input(o.ckpt, "checkpoint", "", DP_ECKPT);
    if (rc == 0)
      rc = dp_paths_check_input(o.data, "data file", "", DP_EDATA);
    if (rc == 0 && o.out)
      rc = dp_paths_check_output(o.out, "the predictions", "-o");
    if (rc == 0 && o.out && comm.rank == 0)
      rc = dp_mkdirs_for(o.out);
    rc = dp_comm_agree(&comm, rc, NULL);
  }
  if (rc == 0)
    rc = dp_predict_run(&o, &comm, stdout);
  int code = finish(rc, &comm);
  dp_comm_free(&comm);
  MPI_Finalize();
  return code;
}

/* The files too, as a run would check them before its first step: a config is only "ok" if it can train. */
static int run_check(const train_args *a, const dp_config *cfg, dp_comm *comm) {
  (void)a;
  return dp_config_check_files(cfg, comm, comm->rank == 0 ? stdout : NULL);
}

static int cmd_config(int argc, char **argv) {
  if (argc < 1)
    return usage_error(usage_config, "config needs --list, --markdown or --check CONFIG.ini");
  if (is_help(argv[0])) {
    fputs(usage_config, stdout);
    return 0;
  }
  if (!strcmp(argv[0], "--list") || !strcmp(argv[0], "--markdown")) {
    if (argc > 1)
      return usage_error(usage_config, "unexpected argument '%s'", argv[1]);
    if (!strcmp(argv[0], "--list"))
      dp_config_list(stdout);
    else
      dp_config_markdown(stdout);
    return 0;
  }
  if (strcmp(argv[0], "--check"))
    return usage_error(usage_config, "unknown option '%s'", argv[0]);
  return with_config(argc - 1, argv + 1, 0, usage_config, run_check);
}

/* -o before the inputs are read, not after: its directory is made as a run's out_dir is. */
static int convert_output(const char *out) {
  DP_TRY(dp_paths_check_output(out, "the converted data", "-o"));
  return dp_mkdirs_for(out);
}

static int convert_idx(int argc, char **argv) {
  const char *files[4] = {0}, *out = NULL;
  int n = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "-o")) {
      if (i + 1 >= argc)
        return usage_error(usage_convert, "-o needs a file name");
      out = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1]) {
      return usage_error(usage_convert, "unknown option '%s'", argv[i]);
    } else if (n == 4) {
      return usage_error(usage_convert, "unexpected argument '%s'", argv[i]);
    } else {
      files[n++] = argv[i];
    }
  }
  if ((n != 2 && n != 4) || !out)
    return usage_error(usage_convert, "convert idx needs IMAGES LABELS [TEST_IMAGES TEST_LABELS] and -o OUT.h5");
  int rc = convert_output(out);
  if (rc == 0)
    rc = dp_convert_idx(files[0], files[1], files[2], files[3], out);
  if (rc == 0)
    printf("wrote %s\n", out);
  return finish(rc, NULL);
}

static int convert_csv(int argc, char **argv) {
  dp_csv_options o = {.label_col = -1, .scale = 1.0f};
  for (int i = 0; i < argc; i++) {
    const char *s = argv[i];
    int has_val = i + 1 < argc;
    if (!strcmp(s, "-o") && has_val) {
      o.out = argv[++i];
    } else if (!strcmp(s, "--test") && has_val) {
      o.test_csv = argv[++i];
    } else if (!strcmp(s, "--label-col") && has_val) {
      int64_t col;
      if (opt_int(s, argv[++i], INT_MIN, INT_MAX, "an integer", &col) < 0)
        return usage_error(usage_convert, "%s", dp_errmsg(DP_EUSAGE));
      o.label_col = (int)col;
    } else if (!strcmp(s, "--scale") && has_val) {
      double scale;
      if (opt_double(s, argv[++i], -FLT_MAX, FLT_MAX, "a number", &scale) < 0)
        return usage_error(usage_convert, "%s", dp_errmsg(DP_EUSAGE));
      o.scale = (float)scale;
    } else if (!strcmp(s, "--header")) {
      o.header = 1;
    } else if (!strcmp(s, "--regression")) {
      o.regression = 1;
    } else if (s[0] == '-' && s[1]) {
      return usage_error(usage_convert, has_val ? "unknown option '%s'" : "option '%s' needs a value", s);
    } else if (o.train_csv) {
      return usage_error(usage_convert, "unexpected argument '%s'", s);
    } else {
      o.train_csv = s;
    }
  }
  if (!o.train_csv || !o.out)
    return usage_error(usage_convert, "convert csv needs TRAIN.csv and -o OUT.h5");
  int rc = convert_output(o.out);
  if (rc == 0)
    rc = dp_convert_csv(&o);
  if (rc == 0)
    printf("wrote %s\n", o.out);
  return finish(rc, NULL);
}

static int convert_rechunk(int argc, char **argv) {
  const char *files[2] = {0};
  double mb = 0;
  int n = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--chunk-mb") && i + 1 < argc) {
      if (opt_double(argv[i], argv[i + 1], 0.001, 1024, "a size in MB (0.001 to 1024)", &mb) < 0)
        return usage_error(usage_convert, "%s", dp_errmsg(DP_EUSAGE));
      i++;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      return usage_error(usage_convert, i + 1 < argc ? "unknown option '%s'" : "option '%s' needs a value", argv[i]);
    } else if (n == 2) {
      return usage_error(usage_convert, "unexpected argument '%s'", argv[i]);
    } else {
      files[n++] = argv[i];
    }
  }
  if (n != 2)
    return usage_error(usage_convert, "convert rechunk needs IN.h5 and OUT.h5");
  if (!strcmp(files[0], files[1]))
    return usage_error(usage_convert, "convert rechunk: OUT must be another file than IN");
  int rc = convert_output(files[1]);
  if (rc == 0)
    rc = dp_convert_rechunk(files[0], files[1], mb);
  if (rc == 0)
    printf("wrote %s\n", files[1]);
  return finish(rc, NULL);
}

static int convert_synthetic(int argc, char **argv) {
  dp_synth_options o = {.test_rows = 10000, .features = 256, .classes = 10, .seed = 1};
  static const struct {
    const char *opt;
    int64_t lo, hi;
  } ints[] = {{"--rows", 1, (int64_t)1 << 40}, {"--test-rows", 0, (int64_t)1 << 40}, {"--features", 1, 1 << 24},
              {"--classes", 2, 1 << 16}, {"--seed", 0, INT64_MAX}};
  int64_t *dst[] = {&o.rows, &o.test_rows, &o.features, &o.classes, NULL};
  for (int i = 0; i < argc; i++) {
    const char *s = argv[i];
    int has_val = i + 1 < argc, known = 0;
    if (!strcmp(s, "-o") && has_val) {
      o.out = argv[++i];
      continue;
    }
    if (!strcmp(s, "--chunk-mb") && has_val) {
      if (opt_double(s, argv[++i], 0.001, 1024, "a size in MB (0.001 to 1024)", &o.chunk_mb) < 0)
        return usage_error(usage_convert, "%s", dp_errmsg(DP_EUSAGE));
      continue;
    }
    for (size_t k = 0; k < sizeof ints / sizeof *ints && !known; k++) {
      int64_t v;
      char want[64];
      if (strcmp(s, ints[k].opt) || !has_val)
        continue;
      snprintf(want, sizeof want, "an integer from %lld to %lld", (long long)ints[k].lo, (long long)ints[k].hi);
      if (opt_int(s, argv[++i], ints[k].lo, ints[k].hi, want, &v) < 0)
        return usage_error(usage_convert, "%s", dp_errmsg(DP_EUSAGE));
      if (dst[k])
        *dst[k] = v;
      else
        o.seed = (uint64_t)v;
      known = 1;
    }
    if (!known)
      return usage_error(usage_convert, s[0] == '-' && !has_val ? "option '%s' needs a value" : "unknown argument '%s'",
                         s);
  }
  if (!o.out || !o.rows)
    return usage_error(usage_convert, "convert synthetic needs -o OUT.h5 and --rows N");
  int rc = convert_output(o.out);
  if (rc == 0)
    rc = dp_convert_synthetic(&o);
  if (rc == 0)
    printf("wrote %s: %lld training and %lld test rows of %lld float32 features, %lld classes\n", o.out,
           (long long)o.rows, (long long)o.test_rows, (long long)o.features, (long long)o.classes);
  return finish(rc, NULL);
}

static int cmd_convert(int argc, char **argv) {
  if (argc < 1)
    return usage_error(usage_convert, "convert needs a format: idx, csv, rechunk or synthetic");
  if (is_help(argv[0])) {
    fputs(usage_convert, stdout);
    return 0;
  }
  for (int i = 1; i < argc; i++)
    if (is_help(argv[i])) {
      fputs(usage_convert, stdout);
      return 0;
    }
  if (!strcmp(argv[0], "idx"))
    return convert_idx(argc - 1, argv + 1);
  if (!strcmp(argv[0], "csv"))
    return convert_csv(argc - 1, argv + 1);
  if (!strcmp(argv[0], "rechunk"))
    return convert_rechunk(argc - 1, argv + 1);
  if (!strcmp(argv[0], "synthetic"))
    return convert_synthetic(argc - 1, argv + 1);
  return usage_error(usage_convert, "unknown format '%s' (expected idx, csv, rechunk or synthetic)", argv[0]);
}

/* Started by mpirun or srun? Asked before MPI_Init, which sets the same variables for a singleton. */
static void note_launcher(void) {
  launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") || getenv("SLURM_PROCID");
}

/* dptrain reads data files and writes every file under a temporary name it then renames: HDF5's file
 * lock protects nothing here, and where flock is not supported (some NFS, Lustre and GPFS mounts)
 * HDF5 1.10 fails every open with it. Off for every open alike (HDF5 refuses to open one file twice
 * with different locking); a value the user set wins. */
static void no_file_locking(void) { setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0); }

/* Without a launcher, Open MPI 4.1's MPI_Init forks an orted for the lone process. A stop signal to
 * the process group during start-up (Ctrl-C, timeout(1), a batch system's group kill) kills that
 * daemon before it is ready, and MPI_Init aborts with exit 1 and a page of Open MPI errors. dptrain
 * spawns no processes, so a lone process goes without the daemon (and starts ~80 ms sooner); a value
 * the user set wins. */
static void isolated_singleton(void) {
  if (!launched)
    setenv("OMPI_MCA_ess_singleton_isolated", "1", 0);
}

int main(int argc, char **argv) {
  note_launcher();
  no_file_locking();
  isolated_singleton();
  dp_blas_fix_kernel(argv);
  if (argc < 2)
    return usage_error(usage_main, "missing command");
  const char *cmd = argv[1];
  if (is_help(cmd)) {
    fputs(usage_main, stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version")) {
    printf("dptrain %s\n", DP_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "train"))
    return cmd_train(argc - 2, argv + 2);
  if (!strcmp(cmd, "sweep"))
    return cmd_sweep(argc - 2, argv + 2);
  if (!strcmp(cmd, "convert"))
    return cmd_convert(argc - 2, argv + 2);
  if (!strcmp(cmd, "bench"))
    return cmd_bench(argc - 2, argv + 2);
  if (!strcmp(cmd, "inspect"))
    return cmd_inspect(argc - 2, argv + 2);
  if (!strcmp(cmd, "eval"))
    return cmd_eval(argc - 2, argv + 2);
  if (!strcmp(cmd, "config"))
    return cmd_config(argc - 2, argv + 2);
  if (!strcmp(cmd, "predict"))
    return cmd_predict(argc - 2, argv + 2);
  return usage_error(usage_main, "unknown command '%s'", cmd);
}
