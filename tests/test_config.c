/* The configuration parser: the shipped config and a minimal one parse with the documented values
 * and defaults; --set overrides apply (and are rejected when malformed); every kind of bad file
 * gives DP_ECONFIG with a `file:line: message` that names the key and what was expected; the
 * written config parses back to the same config; --list shows every section and default. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/config.h"
#include "dptrain/norm.h"
#include "dptrain/error.h"
#include "dptrain/optim.h"

#define HEAD "[data]\npath = d.h5\n[layer]\nunits = 10\n" /* lines 1-4 */

static dp_config cfg, cfg2; /* large: keep them off the stack */

static void assert_contains(const char *haystack, const char *needle) {
  if (!strstr(haystack, needle))
    fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/* Parses text as `name`; expects DP_ECONFIG and each of the NULL-terminated substrings in the message. */
static void expect_error(const char *text, const char *name, const char *const *sets, int n_sets, ...) {
  dp_error_clear();
  int rc = dp_config_parse_string(&cfg, text, name, sets, n_sets);
  if (rc != DP_ECONFIG)
    fail_msg("parsing \"%s\": expected DP_ECONFIG, got %d", text, rc);
  const char *msg = dp_errmsg(rc);
  va_list ap;
  va_start(ap, n_sets);
  for (const char *s; (s = va_arg(ap, const char *));)
    assert_contains(msg, s);
  va_end(ap);
}

/* The text dp_config_write produces for c (malloc'd). */
static char *written(const dp_config *c) {
  FILE *f = tmpfile();
  assert_non_null(f);
  assert_int_equal(dp_config_write(c, f), 0);
  long n = ftell(f);
  assert_true(n > 0);
  rewind(f);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = 0;
  fclose(f);
  return buf;
}

static void test_shipped_config(void **state) {
  (void)state;
  int rc = dp_config_load(&cfg, "configs/fashion_mlp.ini", NULL, 0);
  if (rc)
    fail_msg("%s", dp_errmsg(rc));
  assert_string_equal(cfg.file, "configs/fashion_mlp.ini");
  assert_string_equal(cfg.data.path, "data/fashion_mnist.h5");
  assert_int_equal(cfg.data.in_memory, DP_INMEM_AUTO);
  assert_int_equal(cfg.model.loss, DP_LOSS_SOFTMAX_CE);
  assert_int_equal(cfg.n_layers, 3);
  assert_true(cfg.data.mean == 0.2860 && cfg.data.std == 0.3530);
  static const int units[] = {512, 256, 10}, lines[] = {15, 21, 26};
  static const int norms[] = {DP_NORM_BATCH, DP_NORM_BATCH, DP_NORM_NONE};
  static const dp_act acts[] = {DP_ACT_RELU, DP_ACT_RELU, DP_ACT_IDENTITY};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(cfg.layer[i].units, units[i]);
    assert_int_equal(cfg.layer[i].activation, acts[i]);
    assert_int_equal(cfg.layer[i].init, DP_INIT_AUTO);
    assert_int_equal(cfg.layer[i].init_dist, DP_DIST_UNIFORM);
    assert_int_equal(cfg.layer[i].line, lines[i]);
    assert_int_equal(cfg.layer[i].norm, norms[i]);
  }
  assert_int_equal(cfg.optimizer.name, DP_OPT_SGD);
  assert_true(cfg.optimizer.lr == 0.2);
  assert_true(cfg.optimizer.momentum == 0.9);
  assert_false(cfg.optimizer.nesterov);
  assert_int_equal(cfg.schedule.name, DP_SCHED_COSINE);
  assert_int_equal(cfg.train.batch_size, 256);
  assert_int_equal(cfg.train.epochs, 5);
  assert_int_equal(cfg.train.max_steps, 0);
  assert_int_equal(cfg.train.seed, 1);
  assert_true(cfg.train.shuffle);
  assert_false(cfg.train.drop_last);
  assert_int_equal(cfg.train.log_every, 50);
  assert_int_equal(cfg.train.eval_every, 0);
  assert_string_equal(cfg.train.out_dir, "runs/fashion_mlp");

  dp_error_clear(); /* a missing file */
  rc = dp_config_load(&cfg, "configs/no_such_file.ini", NULL, 0);
  assert_int_equal(rc, DP_ECONFIG);
  assert_contains(dp_errmsg(rc), "configs/no_such_file.ini: cannot open");
}

static void test_minimal_defaults(void **state) {
  (void)state;
  assert_int_equal(dp_config_parse_string(&cfg, HEAD, "min.ini", NULL, 0), 0);
  assert_string_equal(cfg.file, "min.ini");
  assert_string_equal(cfg.data.path, "d.h5");
  assert_int_equal(cfg.data.in_memory, DP_INMEM_AUTO);
  assert_int_equal(cfg.model.loss, DP_LOSS_SOFTMAX_CE);
  assert_int_equal(cfg.n_layers, 1);
  assert_int_equal(cfg.layer[0].units, 10);
  assert_int_equal(cfg.layer[0].activation, DP_ACT_RELU);
  assert_int_equal(cfg.layer[0].init, DP_INIT_AUTO);
  assert_int_equal(cfg.layer[0].line, 3);
  assert_int_equal(cfg.optimizer.name, DP_OPT_SGD);
  assert_true(cfg.optimizer.lr == 0.01); /* lr 0 resolves to sgd's default */
  assert_true(cfg.optimizer.momentum == 0.0);
  assert_true(cfg.optimizer.alpha == 0.99);
  assert_true(cfg.optimizer.eps == 1e-8);
  assert_true(cfg.optimizer.beta1 == 0.9 && cfg.optimizer.beta2 == 0.999);
  assert_true(cfg.optimizer.bias_correction);
  assert_int_equal(cfg.optimizer.history, 10);
  assert_int_equal(cfg.schedule.name, DP_SCHED_CONSTANT);
  assert_int_equal(cfg.schedule.step_size, 1000);
  assert_true(cfg.schedule.gamma == 0.1);
  assert_int_equal(cfg.schedule.n_milestones, 0);
  assert_int_equal(cfg.schedule.base_batch, 256);
  assert_int_equal(cfg.train.batch_size, 128);
  assert_int_equal(cfg.train.epochs, 10);
  assert_int_equal(cfg.train.seed, 1);
  assert_true(cfg.train.shuffle);
  assert_false(cfg.train.drop_last);
  assert_int_equal(cfg.train.log_every, 50);
  assert_false(cfg.train.deterministic);
  assert_int_equal(cfg.train.chunk_rows, 128); /* batch 256 at 2 ranks: a chunk each, the default's shapes */
  assert_string_equal(cfg.train.out_dir, "runs/default");
  assert_int_equal(cfg.train.threads, 0);
  assert_string_equal(cfg.sweep.lr, "1e-4:1:9");
  assert_int_equal(cfg.sweep.steps, 300);
  assert_true(cfg.sweep.diverge_factor == 4.0);

  /* adam's default lr; aliases, lists and case-insensitive values */
  assert_int_equal(dp_config_parse_string(&cfg, HEAD "[optimizer]\nname = Adam\nbeta = 0.5\n"
                                                     "[schedule]\nname = multistep\nmilestones = 3, 10,20\n",
                                          "m.ini", NULL, 0),
                   0);
  assert_true(cfg.optimizer.lr == 1e-3);
  assert_true(cfg.optimizer.alpha == 0.5);
  assert_int_equal(cfg.schedule.n_milestones, 3);
  assert_int_equal(cfg.schedule.milestones[2], 20);
}

static void test_batch_full(void **state) {
  (void)state;
  assert_int_equal(dp_config_parse_string(&cfg, HEAD "[train]\nbatch_size = full\n", "f.ini", NULL, 0), 0);
  assert_int_equal(cfg.train.batch_size, 0);
  const char *set[] = {"train.batch_size=full", "optimizer.name=lbfgs"};
  assert_int_equal(dp_config_parse_string(&cfg, HEAD, "f.ini", set, 2), 0);
  assert_int_equal(cfg.train.batch_size, 0);
  assert_true(cfg.optimizer.lr == 1.0);
  /* lbfgs needs the full batch */
  expect_error(HEAD "[optimizer]\nname = lbfgs\n", "l.ini", NULL, 0, "l.ini: ", "lbfgs", "batch_size = full", NULL);
}

static void test_set_overrides(void **state) {
  (void)state;
  const char *text = HEAD "[layer]\nunits = 5\n";
  const char *set[] = {"train.epochs=3", "optimizer.lr=0.2", "layer.1.units=64", "layer.0.activation=tanh"};
  assert_int_equal(dp_config_parse_string(&cfg, text, "s.ini", set, 4), 0);
  assert_int_equal(cfg.train.epochs, 3);
  assert_true(cfg.optimizer.lr == 0.2);
  assert_int_equal(cfg.layer[0].units, 10);
  assert_int_equal(cfg.layer[1].units, 64);
  assert_int_equal(cfg.layer[0].activation, DP_ACT_TANH);

  const char *s1[] = {"nosuch.key=1"}, *s2[] = {"train.epochs"}, *s3[] = {"layer.9.units=3"},
             *s4[] = {"train.epoch=3"}, *s5[] = {"train.epochs=ten"}, *s6[] = {"trian.epochs=3"};
  expect_error(text, "s.ini", s1, 1, "--set nosuch.key=1", "unknown section [nosuch]", NULL);
  expect_error(text, "s.ini", s2, 1, "--set train.epochs:", "section.key=value", NULL);
  expect_error(text, "s.ini", s3, 1, "--set layer.9.units=3", "0 <= i < 2", NULL);
  expect_error(text, "s.ini", s4, 1, "unknown key 'epoch'", "did you mean 'epochs'", NULL);
  expect_error(text, "s.ini", s5, 1, "--set train.epochs=ten", "expected an integer", "got 'ten'", NULL);
  expect_error(text, "s.ini", s6, 1, "did you mean [train]", NULL);
}

static void test_unknown_names(void **state) {
  (void)state;
  expect_error(HEAD "[train]\nepoch = 3\n", "bad.ini", NULL, 0, "bad.ini:6:", "unknown key 'epoch' in [train]",
               "did you mean 'epochs'", NULL);
  expect_error(HEAD "[train]\nlr = 3\n", "bad.ini", NULL, 0, "bad.ini:6:", "'lr'", "belongs in [optimizer]", NULL);
  expect_error(HEAD "[train]\nzzzzzz = 3\n", "bad.ini", NULL, 0, "bad.ini:6:", "'zzzzzz'", "config --list", NULL);
  expect_error(HEAD "[trian]\nepochs = 3\n", "bad.ini", NULL, 0, "bad.ini:5:", "unknown section [trian]",
               "did you mean [train]", NULL);
  expect_error(HEAD "[network]\n", "bad.ini", NULL, 0, "bad.ini:5:", "unknown section [network]", "sections: data",
               NULL);
  expect_error("epochs = 3\n" HEAD, "bad.ini", NULL, 0, "bad.ini:1:", "'epochs' outside any section", NULL);
}

static void test_bad_values(void **state) {
  (void)state;
  expect_error(HEAD "[train]\nepochs = ten\n", "bad.ini", NULL, 0, "bad.ini:6:", "[train] epochs",
               "expected an integer", "got 'ten'", NULL);
  expect_error(HEAD "[optimizer]\nlr = abc\n", "bad.ini", NULL, 0, "bad.ini:6:", "[optimizer] lr", "expected a number",
               "got 'abc'", NULL);
  expect_error(HEAD "[optimizer]\nlr = nan\n", "bad.ini", NULL, 0, "bad.ini:6:", "lr", NULL);
  expect_error(HEAD "[train]\nshuffle = maybe\n", "bad.ini", NULL, 0, "bad.ini:6:", "shuffle", "true or false",
               "got 'maybe'", NULL);
  expect_error(HEAD "[train]\nbatch_size = -5\n", "bad.ini", NULL, 0, "bad.ini:6:", "batch_size",
               "an integer >= 1 or 'full'", NULL);
  expect_error(HEAD "[train]\nbatch_size = 0\n", "bad.ini", NULL, 0, "bad.ini:6:", "batch_size", ">= 1 or 'full'",
               NULL);
  expect_error(HEAD "[train]\nseed = -1\n", "bad.ini", NULL, 0, "bad.ini:6:", "seed", "non-negative integer", NULL);
  expect_error("[data]\npath = d\n[layer]\nunits = 0\n", "bad.ini", NULL, 0, "bad.ini:4:", "[layer 0] units",
               "integer in [1, ", NULL);
  expect_error(HEAD "[layer]\nunits = 1.5\n", "bad.ini", NULL, 0, "bad.ini:6:", "[layer 1] units", NULL);
  expect_error(HEAD "[optimizer]\nmomentum = 1.5\n", "bad.ini", NULL, 0, "bad.ini:6:", "momentum",
               "a number in [0, ", "got '1.5'", NULL);
  expect_error(HEAD "[layer]\nunits = 3\nactivation = swish\n", "bad.ini", NULL, 0, "bad.ini:7:",
               "[layer 1] activation", "one of identity, relu, tanh, sigmoid", "got 'swish'", NULL);
  expect_error(HEAD "[schedule]\nmilestones = 5, 3\n", "bad.ini", NULL, 0, "bad.ini:6:", "milestones", "ascending",
               NULL);
  expect_error(HEAD "[schedule]\nname = multistep\n", "bad.ini", NULL, 0, "bad.ini: ", "milestones", NULL);
  expect_error(HEAD "[optimizer]\nnesterov = true\n", "bad.ini", NULL, 0, "bad.ini: ", "nesterov", "momentum > 0",
               NULL);
}

/* Numbers are the whole value: trailing junk, overflow, an empty value or NaN is DP_ECONFIG naming
 * the key, never a silently truncated or clamped number. */
static void test_bad_numbers(void **state) {
  (void)state;
  expect_error(HEAD "[train]\nepochs = 12abc\n", "n.ini", NULL, 0, "n.ini:6:", "[train] epochs", "expected an integer",
               "got '12abc'", NULL);
  expect_error(HEAD "[train]\nmax_steps = 99999999999999999999\n", "n.ini", NULL, 0, "n.ini:6:", "[train] max_steps",
               "expected an integer", NULL);
  expect_error(HEAD "[train]\nepochs = 4294967297\n", "n.ini", NULL, 0, "n.ini:6:", "[train] epochs", NULL);
  expect_error(HEAD "[train]\nseed = 99999999999999999999\n", "n.ini", NULL, 0, "n.ini:6:", "[train] seed",
               "non-negative integer", NULL);
  expect_error(HEAD "[train]\nseed = 12abc\n", "n.ini", NULL, 0, "n.ini:6:", "[train] seed", NULL);
  expect_error(HEAD "[train]\nepochs =\n", "n.ini", NULL, 0, "n.ini:6:", "[train] epochs", "got ''", NULL);
  expect_error(HEAD "[optimizer]\nlr =\n", "n.ini", NULL, 0, "n.ini:6:", "[optimizer] lr", "expected a number", NULL);
  expect_error(HEAD "[optimizer]\nmomentum = nan\n", "n.ini", NULL, 0, "n.ini:6:", "[optimizer] momentum",
               "a number in [0, ", "got 'nan'", NULL);
  expect_error(HEAD "[optimizer]\nlr = inf\n", "n.ini", NULL, 0, "n.ini:6:", "[optimizer] lr", NULL);
  expect_error(HEAD "[optimizer]\nlr = 1e999\n", "n.ini", NULL, 0, "n.ini:6:", "[optimizer] lr", NULL);
  expect_error(HEAD "[optimizer]\nlr = 0.1x\n", "n.ini", NULL, 0, "n.ini:6:", "[optimizer] lr", "got '0.1x'", NULL);
  expect_error(HEAD "[layer]\nunits = 12abc\n", "n.ini", NULL, 0, "n.ini:6:", "[layer 1] units", NULL);
  expect_error(HEAD "[schedule]\nmilestones = 3, 5x\n", "n.ini", NULL, 0, "n.ini:6:", "[schedule] milestones",
               "ascending integers", NULL);
  expect_error(HEAD "[schedule]\nmilestones = 3, 99999999999999999999\n", "n.ini", NULL, 0, "n.ini:6:",
               "[schedule] milestones", NULL);

  const char *s1[] = {"train.epochs=12abc"}, *s2[] = {"train.max_steps=99999999999999999999"},
             *s3[] = {"layer.0.units="}, *s4[] = {"optimizer.momentum=nan"}, *s5[] = {"layer..units=3"},
             *s6[] = {"layer.99999999999999999999.units=3"}, *s7[] = {"layer.0x.units=3"};
  expect_error(HEAD, "n.ini", s1, 1, "--set train.epochs=12abc: expected an integer", "got '12abc'", NULL);
  expect_error(HEAD, "n.ini", s2, 1, "--set train.max_steps=99999999999999999999: expected an integer", NULL);
  expect_error(HEAD, "n.ini", s3, 1, "--set layer.0.units=: expected an integer", "got ''", NULL);
  expect_error(HEAD, "n.ini", s4, 1, "--set optimizer.momentum=nan: expected a number in [0, ", NULL);
  expect_error(HEAD, "n.ini", s5, 1, "--set layer..units=3: expected layer.<i>.key=value", NULL);
  expect_error(HEAD, "n.ini", s6, 1, "0 <= i < 1", NULL);
  expect_error(HEAD, "n.ini", s7, 1, "0 <= i < 1", NULL);

  /* what is valid stays valid: signs, exponents, the extremes */
  const char *ok[] = {"train.epochs=+3", "optimizer.lr=2.5e-1", "train.seed=18446744073709551615",
                      "train.max_steps=9000000000000000", "data.mean=-0.5"};
  assert_int_equal(dp_config_parse_string(&cfg, HEAD, "ok.ini", ok, 5), 0);
  assert_int_equal(cfg.train.epochs, 3);
  assert_true(cfg.optimizer.lr == 0.25);
  assert_true(cfg.train.seed == UINT64_MAX);
  assert_int_equal(cfg.train.max_steps, 9000000000000000LL);
  assert_true(cfg.data.mean == -0.5);
}

static const dp_key *find_key(const char *section, const char *key) {
  size_t n;
  const dp_key *k = dp_config_keys(&n);
  for (size_t i = 0; i < n; i++)
    if (!strcmp(k[i].section, section) && !strcmp(k[i].key, key))
      return &k[i];
  fail_msg("no key [%s] %s", section, key);
  return NULL;
}

/* Each enum's name function gives, for every value v, config's choice v, and the choices end with
 * the enum (count is the last value + 1). */
#define CHECK_NAMES(section, key, count, name_of)                                 \
  do {                                                                            \
    const char *const *c_ = find_key(section, key)->choices;                      \
    for (int v_ = 0; v_ < (count); v_++)                                          \
      assert_string_equal(name_of(v_), c_[v_]);                                   \
    assert_null(c_[count]);                                                       \
  } while (0)

/* A name that can never be a choice: the functions' answer for a value outside the enum. */
#define CHECK_OUTSIDE(name_of, count, answer) assert_string_equal(name_of(count), answer)

static void test_enum_names(void **state) {
  (void)state;
  CHECK_NAMES("layer", "activation", DP_ACT_SIGMOID + 1, dp_act_name);
  CHECK_NAMES("model", "loss", DP_LOSS_MSE + 1, dp_loss_name);
  CHECK_NAMES("layer", "norm", DP_NORM_LAYER + 1, dp_norm_name);
  CHECK_NAMES("optimizer", "name", DP_OPT_LBFGS + 1, dp_optim_name);
  CHECK_NAMES("layer", "init", DP_INIT_XAVIER_NORMAL + 1, dp_init_rule_name);
  CHECK_NAMES("layer", "init_dist", DP_DIST_NORMAL + 1, dp_init_dist_name);
  CHECK_OUTSIDE(dp_act_name, DP_ACT_SIGMOID + 1, "?");
  CHECK_OUTSIDE(dp_loss_name, DP_LOSS_MSE + 1, "?");
  CHECK_OUTSIDE(dp_norm_name, DP_NORM_LAYER + 1, "unknown");
  CHECK_OUTSIDE(dp_init_rule_name, DP_INIT_XAVIER_NORMAL + 1, "?");
  CHECK_OUTSIDE(dp_init_dist_name, DP_DIST_NORMAL + 1, "?");
  for (int v = DP_NORM_NONE; v <= DP_NORM_LAYER; v++) {
    dp_norm_kind k;
    assert_int_equal(dp_norm_from_name(find_key("layer", "norm")->choices[v], &k), 0);
    assert_int_equal(k, v);
  }
}

/* The names and their order as files and checkpoints know them (value = position): an enum may
 * grow at its end, never change what a stored value means. */
static void test_enum_values(void **state) {
  (void)state;
  static const struct {
    const char *section, *key, *names;
  } want[] = {
      {"data", "in_memory", "auto|true|false"},
      {"data", "standardize", "none|scalar|per_feature"},
      {"data", "order", "auto|random|blocks"},
      {"data", "direct_io", "auto|true|false"},
      {"model", "loss", "softmax_cross_entropy|mse"},
      {"layer", "activation", "identity|relu|tanh|sigmoid"},
      {"layer", "init", "auto|uniform_fanin|xavier_uniform|xavier_normal"},
      {"layer", "init_dist", "uniform|normal"},
      {"layer", "norm", "none|batch|layer"},
      {"layer", "type", "dense|conv2d|maxpool|avgpool|flatten|dropout"},
      {"optimizer", "name", "sgd|rmsprop|adam|adamw|lbfgs"},
      {"optimizer", "momentum_form", "heavy_ball|difference"},
      {"optimizer", "eps_placement", "outside|inside"},
      {"schedule", "name", "constant|step|multistep|exponential|cosine"},
      {"schedule", "lr_scale", "none|linear"},
      {"train", "on_nonfinite", "abort|skip_step|restore"},
      {"train", "comm", "auto|node|flat"},
      {"train", "on_divergence", "warn|abort"},
      {"checkpoint", "keep_best", "off|val_loss|val_acc"},
  };
  size_t n, enums = 0;
  const dp_key *k = dp_config_keys(&n);
  for (size_t i = 0; i < n; i++)
    enums += k[i].type == DP_KEY_ENUM;
  assert_int_equal(enums, sizeof want / sizeof want[0]);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    char got[256] = "";
    const char *const *c = find_key(want[i].section, want[i].key)->choices;
    for (int v = 0; c[v]; v++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", v ? "|" : "", c[v]);
    assert_string_equal(got, want[i].names);
  }
  assert_int_equal(DP_INMEM_FALSE, 2);
  assert_int_equal(DP_LOSS_MSE, 1);
  assert_int_equal(DP_ACT_SIGMOID, 3);
  assert_int_equal(DP_INIT_XAVIER_NORMAL, 3);
  assert_int_equal(DP_DIST_NORMAL, 1);
  assert_int_equal(DP_NORM_LAYER, 2);
  assert_int_equal(DP_LAYER_DROPOUT, 5);
  assert_int_equal(DP_OPT_LBFGS, 4);
  assert_int_equal(DP_MOMENTUM_DIFFERENCE, 1);
  assert_int_equal(DP_EPS_INSIDE, 1);
  assert_int_equal(DP_SCHED_COSINE, 4);
  assert_int_equal(DP_LR_SCALE_LINEAR, 1);
  assert_int_equal(DP_NONFINITE_RESTORE, 2);
  assert_int_equal(DP_DIVERGENCE_ABORT, 1);
}

/* Whether [section] key's description lists its choices by hand (so it must list every one). */
static int desc_lists_choices(const dp_key *k) {
  static const char *const listed[] = {"model.loss",        "layer.activation",        "layer.init_dist",
                                       "layer.norm",        "optimizer.name",          "optimizer.momentum_form",
                                       "schedule.name",     "optimizer.eps_placement", "train.on_nonfinite",
                                       "train.on_divergence"};
  char name[64];
  snprintf(name, sizeof name, "%s.%s", k->section, k->key);
  for (size_t i = 0; i < sizeof listed / sizeof listed[0]; i++)
    if (!strcmp(name, listed[i]))
      return 1;
  return 0;
}

/* Every choice of every enum key parses to its position and is written back by that name. */
static void test_enum_round_trip(void **state) {
  (void)state;
  size_t n;
  const dp_key *k = dp_config_keys(&n);
  for (size_t i = 0; i < n; i++) {
    if (k[i].type != DP_KEY_ENUM || !strcmp(k[i].key, "type")) /* types need their own keys: test_layer_types */
      continue;
    int layer = !strcmp(k[i].section, "layer");
    for (int v = 0; k[i].choices[v]; v++) {
      char set[128], line[128];
      snprintf(set, sizeof set, "%s%s.%s=%s", k[i].section, layer ? ".0" : "", k[i].key, k[i].choices[v]);
      /* what lbfgs and multistep need, so that every choice validates */
      const char *sets[] = {"train.batch_size=full", "schedule.milestones=5", set};
      int rc = dp_config_parse_string(&cfg, HEAD, "e.ini", sets, 3);
      if (rc)
        fail_msg("%s: %s", set, dp_errmsg(rc));
      const char *base = layer ? (const char *)&cfg.layer[0] : (const char *)&cfg;
      assert_int_equal(*(const int *)(base + k[i].offset), v);
      char *text = written(&cfg);
      snprintf(line, sizeof line, "\n%s = %s\n", k[i].key, k[i].choices[v]);
      assert_contains(text, line);
      free(text);
      if (desc_lists_choices(&k[i]))
        assert_contains(k[i].desc, k[i].choices[v]);
    }
  }
}

static void test_bad_structure(void **state) {
  (void)state;
  expect_error(HEAD "[train]\nepochs = 3\n\nepochs = 4\n", "bad.ini", NULL, 0, "bad.ini:8:",
               "duplicate key 'epochs' in [train]", "first set on line 6", NULL);
  /* the same key in two [layer]s, or in a repeated section, is not a duplicate */
  assert_int_equal(dp_config_parse_string(&cfg, HEAD "[layer]\nunits = 4\n", "ok.ini", NULL, 0), 0);
  expect_error("[layer]\nunits = 10\n", "bad.ini", NULL, 0, "bad.ini", "[data] path is required", NULL);
  expect_error("[data]\npath = d.h5\n[train]\nepochs = 3\n", "bad.ini", NULL, 0, "bad.ini", "no [layer] section",
               NULL);
  expect_error(HEAD "[layer]\nactivation = tanh\n", "bad.ini", NULL, 0, "bad.ini:5:", "[layer 1] units is required",
               NULL);
  expect_error("", "empty.ini", NULL, 0, "empty.ini", "required", NULL);
  expect_error("; only a comment\n\n", "empty.ini", NULL, 0, "empty.ini", "required", NULL);
  expect_error(HEAD "\x01\xff\xfe garbage\x02\n", "bin.ini", NULL, 0, "bin.ini:5:", "not a text line",
               "0x01", NULL);
  expect_error("\x7f" "ELF\x02\x01\x01", "bin.ini", NULL, 0, "bin.ini:1:", "control character", NULL);
  expect_error(HEAD "[train]\nepochs 3\n", "bad.ini", NULL, 0, "bad.ini:6:", "syntax error", "key = value", NULL);
  expect_error(HEAD "[train\n", "bad.ini", NULL, 0, "bad.ini:5:", "syntax error", NULL);
  /* Lines past inih's 198 characters are read (a long path must fit), up to DP_PATH_MAX + 256. */
  char longline[3100];
  snprintf(longline, sizeof longline, HEAD "[train]\nepochs = %03000d\n", 1);
  expect_error(longline, "long.ini", NULL, 0, "long.ini:6:", "line longer than", NULL);
}

/* A value that does not mean what was written is an error: a second [train] (which would override
 * the first), a number float holds only as 0, eps = 0 (0/0 for a zero gradient), a --set value or
 * list longer than its buffer (never cut). */
static void test_values_as_written(void **state) {
  (void)state;
  expect_error(HEAD "[train]\nepochs = 3\n[optimizer]\nlr = 0.1\n[train]\nseed = 2\n", "dup.ini", NULL, 0,
               "dup.ini:9:", "duplicate section [train] (first on line 5)", NULL);
  expect_error(HEAD "[optimizer]\nlr = 1e-39\n", "u.ini", NULL, 0, "u.ini:6:", "[optimizer] lr",
               "smaller ones are 0 in float32", NULL);
  expect_error(HEAD "[optimizer]\nlr = 1e-400\n", "u.ini", NULL, 0, "u.ini:6:", "[optimizer] lr", NULL);
  expect_error(HEAD "[optimizer]\nname = adam\neps = 0\n", "e.ini", NULL, 0, "e.ini:7:", "[optimizer] eps",
               "[1e-30, 1]", NULL);
  const char *rms[] = {"optimizer.name=rmsprop", "optimizer.eps=0"};
  expect_error(HEAD, "e.ini", rms, 2, "--set optimizer.eps=0", NULL);
  static char big[2 * DP_PATH_MAX], list[700];
  snprintf(big, sizeof big, "data.path=/%0*d", DP_PATH_MAX + 10, 0);
  const char *sets[] = {big};
  expect_error(HEAD, "s.ini", sets, 1, "value longer than 1024 characters", NULL);
  int n = snprintf(list, sizeof list, "schedule.milestones=1");
  for (int i = 2; n < 600; i++)
    n += snprintf(list + n, sizeof list - (size_t)n, ",%d", i);
  sets[0] = list;
  expect_error(HEAD, "s.ini", sets, 1, "a list shorter than 512 characters", NULL);
  /* [layer] repeats on purpose */
  assert_int_equal(dp_config_parse_string(&cfg, HEAD "[layer]\nunits = 3\n[layer]\nunits = 2\n", "ok.ini", NULL, 0), 0);
  assert_int_equal(cfg.n_layers, 3);
}

/* config.ini must read back as written whatever the value: long paths (any length a path may
 * have), ';', '#', '=' and spaces inside; what the format cannot hold is refused when parsed. */
static void test_round_trip_any_value(void **state) {
  (void)state;
  static char path[DP_PATH_MAX], set[DP_PATH_MAX + 32], text[DP_PATH_MAX + 256];
  snprintf(path, sizeof path, "/data/%0900d/a;b #c=d: e.h5", 7);
  snprintf(set, sizeof set, "data.path=%s", path);
  const char *sets[] = {set, "train.out_dir=/runs/x;y#1"};
  assert_int_equal(dp_config_parse_string(&cfg, HEAD, "rt.ini", sets, 2), 0);
  assert_string_equal(cfg.data.path, path);
  char *a = written(&cfg);
  assert_int_equal(dp_config_parse_string(&cfg2, a, "written.ini", NULL, 0), 0);
  assert_string_equal(cfg2.data.path, path);
  assert_string_equal(cfg2.train.out_dir, "/runs/x;y#1");
  char *b = written(&cfg2);
  assert_string_equal(a, b);
  free(a);
  free(b);
  /* a long line in a file, with an inline comment after it */
  snprintf(text, sizeof text, "[data]\npath = %s   ; the data\n[layer]\nunits = 3\n", path);
  assert_int_equal(dp_config_parse_string(&cfg, text, "long.ini", NULL, 0), 0);
  assert_string_equal(cfg.data.path, path);
  const char *comment[] = {"data.path=/a ;b"}, *tab[] = {"train.out_dir=/a\t;b"}, *nl[] = {"data.path=/a\nb"};
  expect_error(HEAD, "s.ini", comment, 1, "--set data.path=/a ;b", "no ';' after a blank", NULL);
  expect_error(HEAD, "s.ini", tab, 1, "no ';' after a blank", NULL);
  expect_error(HEAD, "s.ini", nl, 1, "no control characters", NULL);
}

/* What real files contain: capitals, a byte-order mark, indentation, stray NUL bytes, spaces in
 * --set, an alias next to its key; and the first of two errors is the one reported. */
static void test_real_world_files(void **state) {
  (void)state;
  assert_int_equal(dp_config_parse_string(&cfg, HEAD "[Train]\nEpochs = 3\n", "p.ini", NULL, 0), 0);
  assert_int_equal(cfg.train.epochs, 3);
  assert_int_equal(dp_config_parse_string(&cfg, "\xEF\xBB\xBF" HEAD, "p.ini", NULL, 0), 0);
  assert_int_equal(dp_config_parse_string(&cfg, HEAD "[train]\nepochs = 3\n  seed = 2\n  [optimizer]\n  lr = 0.5\n",
                                          "p.ini", NULL, 0), 0);
  assert_int_equal(cfg.train.seed, 2);
  assert_true(cfg.optimizer.lr == 0.5);
  const char *sets[] = {" train.epochs = 4 "};
  assert_int_equal(dp_config_parse_string(&cfg, HEAD, "p.ini", sets, 1), 0);
  assert_int_equal(cfg.train.epochs, 4);
  expect_error(HEAD "[train]\nepochs 3\nfoo = 1\n", "p.ini", NULL, 0, "p.ini:6:", "syntax error", NULL);
  expect_error(HEAD "[optimizer]\nname = rmsprop\nalpha = 0.5\nbeta = 0.6\n", "p.ini", NULL, 0, "p.ini:8:",
               "duplicate key 'alpha'", "line 7", NULL);

  char path[] = "/tmp/dptrain-cfg-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "wb");
  fputs(HEAD "[train]\n", f);
  fwrite("epochs = 3\0garbage\n", 1, 19, f);
  fclose(f);
  dp_error_clear();
  int rc = dp_config_load(&cfg, path, NULL, 0);
  remove(path);
  assert_int_equal(rc, DP_ECONFIG);
  assert_contains(dp_errmsg(rc), ":6: not a text line (control character 0x00)");
}

static void test_round_trip(void **state) {
  (void)state;
  assert_int_equal(dp_config_load(&cfg, "configs/fashion_mlp.ini", NULL, 0), 0);
  char *a = written(&cfg);
  assert_contains(a, "[layer]\nunits = 256\nactivation = relu\n");
  assert_contains(a, "lr = 0.2\n"); /* the shortest text that reads back to the same double */
  assert_contains(a, "mean = 0.286\n");
  assert_int_equal(dp_config_parse_string(&cfg2, a, "written.ini", NULL, 0), 0);
  char *b = written(&cfg2);
  assert_string_equal(a, b);
  assert_int_equal(cfg2.n_layers, 3);
  assert_true(cfg2.optimizer.lr == cfg.optimizer.lr && cfg2.optimizer.momentum == cfg.optimizer.momentum);
  assert_int_equal(memcmp(&cfg.optimizer, &cfg2.optimizer, sizeof cfg.optimizer), 0);
  assert_int_equal(memcmp(&cfg.train, &cfg2.train, sizeof cfg.train), 0);
  free(a);
  free(b);

  /* non-default values of every type: full batch, lbfgs, lists, uint64, odd doubles */
  const char *set[] = {"train.batch_size=full", "optimizer.name=lbfgs", "optimizer.lr=0.1",
                       "schedule.name=multistep", "schedule.milestones=7,70,700", "train.seed=18446744073709551615",
                       "data.in_memory=false", "model.loss=mse", "train.drop_last=yes", "layer.0.init_dist=normal"};
  assert_int_equal(dp_config_parse_string(&cfg, HEAD, "rt.ini", set, 10), 0);
  a = written(&cfg);
  assert_contains(a, "batch_size = full\n");
  assert_contains(a, "milestones = 7, 70, 700\n");
  assert_int_equal(dp_config_parse_string(&cfg2, a, "written.ini", NULL, 0), 0);
  b = written(&cfg2);
  assert_string_equal(a, b);
  assert_int_equal(cfg2.train.batch_size, 0);
  assert_true(cfg2.train.seed == UINT64_MAX);
  assert_true(cfg2.optimizer.lr == 0.1);
  assert_int_equal(memcmp(&cfg.schedule, &cfg2.schedule, sizeof cfg.schedule), 0);
  free(a);
  free(b);
}

static void test_list(void **state) {
  (void)state;
  FILE *f = tmpfile();
  assert_non_null(f);
  dp_config_list(f);
  long n = ftell(f);
  rewind(f);
  char *buf = calloc(1, (size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  static const char *const sections[] = {"data ", "model ", "layer ", "optimizer ", "schedule ", "train ", "sweep "};
  for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
    char want[32];
    snprintf(want, sizeof want, "\n%s", sections[i]);
    assert_contains(buf, want);
  }
  /* every key appears, on one line with its default */
  size_t nk;
  const dp_key *k = dp_config_keys(&nk);
  for (size_t i = 0; i < nk; i++)
    assert_contains(buf, k[i].key);
  /* the row of train.batch_size: section, key, type, default */
  int found = 0;
  for (const char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    char sec[16], key[32], type[64], def[32];
    if (sscanf(line, "%15s %31s %63s %31s", sec, key, type, def) == 4 && !strcmp(sec, "train") &&
        !strcmp(key, "batch_size")) {
      assert_string_equal(type, "int64");
      assert_string_equal(def, "128");
      found++;
    }
  }
  assert_int_equal(found, 1);
  assert_contains(buf, "(required)");
  assert_contains(buf, "none|batch|layer");
  /* aligned: every row's description starts where the header's does; an enum too long for the
   * type column says "enum", and its row names every choice */
  const char *col = strstr(buf, "description");
  assert_non_null(col);
  size_t at = (size_t)(col - buf);
  for (const char *line = strchr(buf, '\n') + 1; *line; line = strchr(line, '\n') + 1) {
    const char *end = strchr(line, '\n');
    assert_true(end && (size_t)(end - line) > at);
    if (line[at] == ' ' || line[at - 1] != ' ')
      fail_msg("description not at column %zu: %.*s", at, (int)(end - line), line);
  }
  for (size_t i = 0; i < nk; i++) {
    const char *row = strstr(buf, k[i].desc);
    assert_non_null(row);
    while (row > buf && row[-1] != '\n')
      row--;
    for (int c = 0; k[i].type == DP_KEY_ENUM && k[i].choices[c]; c++)
      if (!strstr(row, k[i].choices[c]) || strstr(row, k[i].choices[c]) > strchr(row, '\n'))
        fail_msg("%s.%s: choice %s missing from its row", k[i].section, k[i].key, k[i].choices[c]);
  }
  assert_contains(buf, "  enum  ");
  free(buf);
}

#define CNN_HEAD "[data]\npath = d.h5\nshape = 2, 6, 6\n"
#define CNN_TAIL "[layer]\ntype = flatten\n[layer]\nunits = 3\n"

/* A CNN's [layer]s parse with their types' keys and defaults, and config.ini writes each layer's own
 * keys only (a dense layer's as before types existed), reading back to the same configuration. */
static void test_layer_types(void **state) {
  (void)state;
  const char *text = CNN_HEAD "[layer]\ntype = conv2d\nfilters = 4\nkernel = 3, 2\nstride = 2\npadding = same\n"
                              "norm = batch\n[layer]\ntype = MaxPool\nkernel = 2\n[layer]\ntype = avgpool\nkernel = 1\n"
                              "stride = 1\n[layer]\ntype = dropout\nrate = 0.25\n" CNN_TAIL;
  const char *sets[] = {"layer.0.kernel=3,3"};
  assert_int_equal(dp_config_parse_string(&cfg, text, "cnn.ini", sets, 1), 0);
  assert_int_equal(cfg.data.n_shape, 3);
  assert_true(cfg.data.shape[0] == 2 && cfg.data.shape[1] == 6 && cfg.data.shape[2] == 6);
  const dp_layer_cfg *l = cfg.layer;
  assert_int_equal(cfg.n_layers, 6);
  assert_int_equal(l[0].type, DP_LAYER_CONV2D);
  assert_int_equal(l[0].filters, 4);
  assert_int_equal(l[0].n_kernel, 2);
  assert_true(l[0].kernel[0] == 3 && l[0].kernel[1] == 3);
  assert_int_equal(l[0].stride, 2);
  assert_int_equal(l[0].padding, DP_PAD_SAME);
  assert_int_equal(l[1].type, DP_LAYER_MAXPOOL);
  assert_int_equal(l[1].n_kernel, 1);
  assert_int_equal(l[1].stride, 0); /* the default: the kernel */
  assert_int_equal(l[3].type, DP_LAYER_DROPOUT);
  assert_true(l[3].rate == 0.25);
  assert_int_equal(l[4].type, DP_LAYER_FLATTEN);
  assert_int_equal(l[5].type, DP_LAYER_DENSE);
  char *a = written(&cfg);
  assert_contains(a, "shape = 2, 6, 6\n");
  assert_contains(a, "[layer]\ntype = conv2d\nfilters = 4\nkernel = 3, 3\nstride = 2\npadding = same\n");
  assert_contains(a, "[layer]\ntype = maxpool\nkernel = 2\nstride = 0\n\n");
  assert_contains(a, "[layer]\ntype = dropout\nrate = 0.25\n\n");
  assert_contains(a, "[layer]\ntype = flatten\n\n");
  assert_contains(a, "[layer]\nunits = 3\n");
  assert_int_equal(dp_config_parse_string(&cfg2, a, "w.ini", NULL, 0), 0);
  free(a);
  assert_int_equal(dp_config_diff(&cfg, &cfg2, NULL, 0), 0);
  /* without a shape, dense layers only; and a first dense layer may take an image as its row */
  assert_int_equal(dp_config_parse_string(&cfg, CNN_HEAD "[layer]\nunits = 3\n", "d.ini", NULL, 0), 0);
  assert_int_equal(cfg.layer[0].type, DP_LAYER_DENSE);
}

/* Each misplaced or missing layer key is one error naming [layer N] and the key. */
static void test_layer_type_errors(void **state) {
  (void)state;
  expect_error(HEAD "[layer]\ntype = conv3d\n", "t.ini", NULL, 0, "t.ini:6:", "[layer 1] type: expected one of dense, "
               "conv2d, maxpool, avgpool, flatten, dropout, got 'conv3d'", NULL);
  expect_error("[data]\npath = d.h5\n[layer]\ntype = conv2d\nfilters = 2\nkernel = 3\n" CNN_TAIL, "t.ini", NULL, 0,
               "t.ini:3:", "[layer 0] type = conv2d needs [data] shape = C,H,W", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = conv2d\nfilters = 2\nkernel = 3\nunits = 4\n" CNN_TAIL, "t.ini", NULL, 0,
               "t.ini:4:", "[layer 0] units does not apply to type = conv2d (its keys: filters, kernel,", NULL);
  const char *sets[] = {"layer.1.rate=0.5"};
  expect_error(CNN_HEAD CNN_TAIL, "t.ini", sets, 1, "t.ini:6:", "[layer 1] rate does not apply to type = dense", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = conv2d\nkernel = 3\n" CNN_TAIL, "t.ini", NULL, 0,
               "[layer 0] filters is required for type = conv2d", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = conv2d\nfilters = 2\n" CNN_TAIL, "t.ini", NULL, 0,
               "[layer 0] kernel is required for type = conv2d", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = conv2d\nfilters = 2\nkernel = 2\npadding = same\n" CNN_TAIL, "t.ini", NULL,
               0, "[layer 0] padding = same needs an odd kernel", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = conv2d\nfilters = 2\nkernel = 3\nnorm = layer\n" CNN_TAIL, "t.ini", NULL, 0,
               "[layer 0] norm = layer: conv2d takes none or batch", NULL);
  expect_error(CNN_HEAD "[layer]\nunits = 4\n[layer]\ntype = conv2d\nfilters = 2\nkernel = 3\n" CNN_TAIL, "t.ini",
               NULL, 0, "t.ini:6:", "[layer 1] type = conv2d after [layer 0] (dense): image layers come before", NULL);
  expect_error(CNN_HEAD CNN_TAIL "[layer]\ntype = maxpool\nkernel = 2\n" CNN_TAIL, "t.ini", NULL, 0,
               "[layer 2] type = maxpool after [layer 0] (flatten)", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = avgpool\nkernel = 2\n" CNN_TAIL, "t.ini", NULL, 0,
               "[layer 0] type = avgpool needs a conv2d before it", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = conv2d\nfilters = 2\nkernel = 3\n[layer]\ntype = maxpool\nkernel = 2,3\n"
               CNN_TAIL, "t.ini", NULL, 0, "[layer 1] kernel = 2,3: maxpool takes a square kernel", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = dropout\nrate = 1\n" CNN_TAIL, "t.ini", NULL, 0,
               "[layer 0] rate = 1: expected a rate in [0, 1)", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = dropout\nrate = -0.1\n" CNN_TAIL, "t.ini", NULL, 0, "[layer 0] rate",
               "expected a number in [0, 1]", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = dropout\n", "t.ini", NULL, 0, "[layer 0] type = dropout: the last layer must "
               "be dense", NULL);
  expect_error("[data]\npath = d.h5\nshape = 2,6\n" CNN_TAIL, "t.ini", NULL, 0, "[data] shape: expected C,H,W", NULL);
  expect_error("[data]\npath = d.h5\nshape = 2,0,6\n" CNN_TAIL, "t.ini", NULL, 0, "[data] shape",
               "integers >= 1", NULL);
  expect_error(CNN_HEAD "[layer]\ntype = conv2d\nfilters = 2\nkernel = 3\npadding = full\n" CNN_TAIL, "t.ini", NULL,
               0, "[layer 0] padding: expected an integer >= 0 or 'same'", NULL);
}

/* config.ini and inspect print numbers in the shortest form that reads back to the same double. */
static void test_shortest_double(void **state) {
  (void)state;
  static const struct {
    double v;
    const char *text;
  } cases[] = {{0.2, "0.2"}, {0.1 + 0.2, "0.30000000000000004"}, {1e-5, "1e-05"}, {0.999, "0.999"}, {0, "0"},
               {1.0 / 3, "0.3333333333333333"}, {5e-324, "4.94065645841247e-324"}, {1e300, "1e+300"},
               {-2.5, "-2.5"}, {123456789012345680.0, "1.2345678901234568e+17"}};
  char buf[64];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dp_format_double(buf, sizeof buf, cases[i].v);
    assert_string_equal(buf, cases[i].text);
    assert_true(strtod(buf, NULL) == cases[i].v);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shipped_config), cmocka_unit_test(test_minimal_defaults),
      cmocka_unit_test(test_batch_full),     cmocka_unit_test(test_set_overrides),
      cmocka_unit_test(test_unknown_names),  cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_bad_structure),  cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_list),           cmocka_unit_test(test_real_world_files),
      cmocka_unit_test(test_bad_numbers),    cmocka_unit_test(test_enum_names),
      cmocka_unit_test(test_enum_values),    cmocka_unit_test(test_enum_round_trip),
      cmocka_unit_test(test_shortest_double), cmocka_unit_test(test_values_as_written),
      cmocka_unit_test(test_round_trip_any_value),
      cmocka_unit_test(test_layer_types),      cmocka_unit_test(test_layer_type_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
