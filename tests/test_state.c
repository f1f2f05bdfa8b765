/* The training-state registry and the checkpoint code that iterates it: a round trip restores every
 * registered tensor and scalar; loads refuse a missing entry, an out-of-range scalar, a constant that
 * differs, a tensor of another shape, and change nothing when they refuse; optional entries (scalars
 * and tensors) keep their value when absent; a model-only load reads only the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dptrain/checkpoint.h"
#include "dptrain/error.h"
#include "dptrain/state.h"

/* A small state as components register theirs: a model tensor, an optimizer slot, counters. */
typedef struct {
  dp_state st;
  float w[6], m[6];
  double rho[3];
  int64_t step, layers;
  int count;
  double lr_factor;
  char kind[16];
} fixture;

static void build(fixture *f, int64_t w_cols) {
  memset(f, 0, sizeof *f);
  dp_state_init(&f->st);
  int64_t wd[2] = {2, w_cols}, rd[2] = {3, 1};
  assert_int_equal(dp_state_tensor(&f->st, DP_T_F32, f->w, 2, wd, DP_ST_MODEL, "model/layer%d/weight", 0), 0);
  assert_int_equal(dp_state_tensor(&f->st, DP_T_F32, f->m, 2, wd, 0, "optimizer/m/layer%d/weight", 0), 0);
  assert_int_equal(dp_state_tensor(&f->st, DP_T_F64, f->rho, 1, rd, 0, "optimizer/lbfgs/rho"), 0);
  assert_int_equal(dp_state_i64(&f->st, &f->step, 0, 1000, 0, "step"), 0);
  assert_int_equal(dp_state_i64(&f->st, &f->layers, 0, 64, DP_ST_MODEL | DP_ST_CONST, "n_layers"), 0);
  assert_int_equal(dp_state_int(&f->st, &f->count, 0, 5, 0, "optimizer/lbfgs/count"), 0);
  assert_int_equal(dp_state_f64(&f->st, &f->lr_factor, 1e-300, 1.0, DP_ST_OPTIONAL, "lr_factor"), 0);
  assert_int_equal(dp_state_str(&f->st, f->kind, sizeof f->kind, DP_ST_CONST, "optimizer"), 0);
  f->layers = 1;
  f->lr_factor = 1.0;
  strcpy(f->kind, "adam");
}

static void fill(fixture *f, float base) {
  for (int i = 0; i < 6; i++)
    f->w[i] = base + (float)i, f->m[i] = -base - (float)i;
  for (int i = 0; i < 3; i++)
    f->rho[i] = base / (i + 1.0);
  f->step = 42;
  f->count = 3;
  f->lr_factor = 0.25;
}

static char dir[64];

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/dptrain-test-state-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void save(const fixture *f, char *path, size_t len) {
  assert_int_equal(dp_ckpt_save(&f->st, dir, f->step, 0, path, len), 0);
}

static void test_registry(void **state) {
  (void)state;
  fixture f;
  build(&f, 3);
  assert_non_null(dp_state_find(&f.st, "optimizer/lbfgs/rho"));
  assert_null(dp_state_find(&f.st, "optimizer/lbfgs"));
  int64_t d[2] = {1, 1};
  assert_int_equal(dp_state_tensor(&f.st, DP_T_F32, f.w, 1, d, 0, "model/layer0/weight"), DP_EINVAL); /* twice */
  /* 2 tensors of 6 floats, 3 doubles; scalars count their size */
  assert_true(dp_state_bytes(&f.st, DP_ST_MODEL) == 6 * 4 + 8);
  assert_true(dp_state_bytes(&f.st, 0) == 2 * 6 * 4 + 3 * 8 + 8 + 8 + sizeof(int) + 8 + 16);
  dp_state_free(&f.st);
}

static void test_round_trip(void **state) {
  (void)state;
  fixture a, b;
  build(&a, 3);
  fill(&a, 1.5f);
  char path[256];
  save(&a, path, sizeof path);
  build(&b, 3);
  assert_int_equal(dp_ckpt_read(&b.st, path, 0), 0);
  assert_memory_equal(a.w, b.w, sizeof a.w);
  assert_memory_equal(a.m, b.m, sizeof a.m);
  assert_memory_equal(a.rho, b.rho, sizeof a.rho);
  assert_int_equal(b.step, 42);
  assert_int_equal(b.count, 3);
  assert_true(b.lr_factor == 0.25);
  dp_state_free(&a.st);
  dp_state_free(&b.st);
}

/* A model-only load (init_from, eval) reads the model and leaves the rest alone. */
static void test_model_only(void **state) {
  (void)state;
  fixture a, b;
  build(&a, 3);
  fill(&a, 2.0f);
  char path[256];
  save(&a, path, sizeof path);
  build(&b, 3);
  strcpy(b.kind, "sgd"); /* another optimizer does not matter for the weights */
  assert_int_equal(dp_ckpt_read(&b.st, path, DP_ST_MODEL), 0);
  assert_memory_equal(a.w, b.w, sizeof a.w);
  assert_true(b.m[0] == 0.0f && b.step == 0 && b.count == 0);
  dp_state_free(&a.st);
  dp_state_free(&b.st);
}

/* Refused loads name what is wrong and change nothing. */
static void expect_refused(fixture *b, const char *path, const char *text) {
  float before[6];
  memcpy(before, b->w, sizeof before);
  int64_t step = b->step;
  assert_int_equal(dp_ckpt_read(&b->st, path, 0), DP_ECKPT);
  if (!strstr(dp_errmsg(DP_ECKPT), text))
    fail_msg("message '%s' lacks '%s'", dp_errmsg(DP_ECKPT), text);
  assert_memory_equal(before, b->w, sizeof before);
  assert_int_equal(step, b->step);
}

static void test_refusals(void **state) {
  (void)state;
  fixture a, b;
  build(&a, 3);
  fill(&a, 3.0f);
  char path[256];
  save(&a, path, sizeof path);

  build(&b, 2); /* another shape */
  expect_refused(&b, path, "/model/layer0/weight is (2, 3) in the checkpoint, (2, 2)");
  dp_state_free(&b.st);

  build(&b, 3); /* another constant */
  strcpy(b.kind, "sgd");
  expect_refused(&b, path, "attribute optimizer differs");
  dp_state_free(&b.st);

  build(&b, 3); /* an entry the file does not have */
  int64_t extra = 0, one[2] = {1, 1};
  float v[1];
  assert_int_equal(dp_state_i64(&b.st, &extra, 0, 10, 0, "optimizer/lbfgs/head"), 0);
  expect_refused(&b, path, "missing attribute optimizer/lbfgs/head");
  dp_state_free(&b.st);
  build(&b, 3);
  assert_int_equal(dp_state_tensor(&b.st, DP_T_F32, v, 1, one, 0, "optimizer/v/layer0/bias"), 0);
  expect_refused(&b, path, "missing dataset /optimizer/v/layer0/bias");
  dp_state_free(&b.st);

  build(&b, 3); /* a scalar out of the registered range */
  b.st.e[5].hi = 2; /* optimizer/lbfgs/count: the file holds 3 */
  expect_refused(&b, path, "optimizer/lbfgs/count is out of range");
  dp_state_free(&b.st);
  dp_state_free(&a.st);
}

/* An optional entry absent from the file keeps its value. */
static void test_optional(void **state) {
  (void)state;
  fixture a, b;
  build(&a, 3);
  fill(&a, 1.0f);
  char path[256];
  save(&a, path, sizeof path);
  build(&b, 3);
  double later = 0.5;
  float scale[3] = {2, 3, 4}; /* an optional tensor (the input transform) that older files lack */
  int64_t sd[2] = {3, 1};
  assert_int_equal(dp_state_f64(&b.st, &later, 0, 1, DP_ST_OPTIONAL, "added_later"), 0);
  assert_int_equal(dp_state_tensor(&b.st, DP_T_F32, scale, 1, sd, DP_ST_MODEL | DP_ST_OPTIONAL, "input/scale"), 0);
  assert_int_equal(dp_ckpt_read(&b.st, path, 0), 0);
  assert_true(later == 0.5);
  assert_true(scale[0] == 2 && scale[2] == 4);
  assert_int_equal(b.step, 42);
  assert_int_equal(dp_ckpt_read(&b.st, path, DP_ST_MODEL), 0);
  assert_true(scale[1] == 3);
  /* present, it is read like any tensor, and a wrong shape is still refused */
  float stored[3] = {5, 6, 7}, small[2];
  int64_t d2[2] = {2, 1};
  assert_int_equal(dp_state_tensor(&a.st, DP_T_F32, stored, 1, sd, DP_ST_MODEL | DP_ST_OPTIONAL, "input/scale"), 0);
  a.step = 43;
  save(&a, path, sizeof path);
  assert_int_equal(dp_ckpt_read(&b.st, path, DP_ST_MODEL), 0);
  assert_true(scale[0] == 5 && scale[2] == 7);
  fixture c;
  build(&c, 3);
  assert_int_equal(dp_state_tensor(&c.st, DP_T_F32, small, 1, d2, DP_ST_MODEL | DP_ST_OPTIONAL, "input/scale"), 0);
  assert_int_equal(dp_ckpt_read(&c.st, path, DP_ST_MODEL), DP_ECKPT);
  dp_state_free(&a.st);
  dp_state_free(&b.st);
  dp_state_free(&c.st);
}

/* inspect prints the stored configuration's numbers in their shortest form, as config.ini now has
 * them: older files hold 0.20000000000000001; paths, lists, integers and ranges stay as written. */
static void test_inspect_numbers(void **state) {
  (void)state;
  fixture f;
  build(&f, 3);
  fill(&f, 1.0f);
  char text[] = "[data]\npath = data/v1.5e\nmean = 0.28599999999999998\n[optimizer]\nlr = 0.20000000000000001\n"
                "eps = 1.0000000000000001e-05\n[schedule]\nmilestones = 7, 70\n[train]\nepochs = 10\n"
                "[sweep]\nlr = 1e-4:1:9\n";
  int64_t len[2] = {(int64_t)strlen(text), 1};
  assert_int_equal(dp_state_tensor(&f.st, DP_T_U8, text, 1, len, DP_ST_INFO, "config"), 0);
  char path[256];
  save(&f, path, sizeof path);
  FILE *out = tmpfile();
  assert_non_null(out);
  assert_int_equal(dp_ckpt_inspect(path, out), 0);
  char buf[4096] = "";
  rewind(out);
  size_t n = fread(buf, 1, sizeof buf - 1, out);
  buf[n] = 0;
  fclose(out);
  static const char *const want[] = {"\nmean = 0.286\n", "\nlr = 0.2\n",         "\neps = 1e-05\n",
                                     "\npath = data/v1.5e\n", "\nmilestones = 7, 70\n", "\nepochs = 10\n",
                                     "\nlr = 1e-4:1:9\n"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!strstr(buf, want[i]))
      fail_msg("inspect lacks \"%s\":\n%s", want[i], buf);
  dp_state_free(&f.st);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registry),  cmocka_unit_test(test_round_trip), cmocka_unit_test(test_model_only),
      cmocka_unit_test(test_refusals), cmocka_unit_test(test_optional),
      cmocka_unit_test(test_inspect_numbers),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
