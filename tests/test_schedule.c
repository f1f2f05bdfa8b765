/* Step-size schedules against the formulas of include/dptrain/schedule.h, to 1e-12 relative. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "dptrain/config.h"
#include "dptrain/schedule.h"

static const double BASE = 0.1;

static void near(double got, double want, const char *what, int64_t k) {
  if (!(fabs(got - want) <= 1e-12 * fabs(want) + 1e-300))
    fail_msg("%s at k = %lld: got %.17g, want %.17g", what, (long long)k, got, want);
}

static dp_config config(dp_sched_kind kind) {
  dp_config c;
  dp_config_defaults(&c);
  c.optimizer.lr = BASE;
  c.schedule.name = kind;
  return c;
}

static void test_constant(void **state) {
  (void)state;
  dp_config c = config(DP_SCHED_CONSTANT);
  dp_schedule s;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 100, 128);
  for (int64_t k = 0; k < 200; k += 7)
    near(dp_schedule_lr(&s, k), BASE, "constant", k);
}

static void test_step(void **state) {
  (void)state;
  dp_config c = config(DP_SCHED_STEP);
  c.schedule.step_size = 10;
  c.schedule.gamma = 0.5;
  dp_schedule s;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 100, 128);
  for (int64_t k = 0; k < 60; k++)
    near(dp_schedule_lr(&s, k), BASE * pow(0.5, (double)(k / 10)), "step", k);
  near(dp_schedule_lr(&s, 9), BASE, "step, last before the first decay", 9);
  near(dp_schedule_lr(&s, 10), BASE * 0.5, "step, first decay", 10);
  near(dp_schedule_lr(&s, 29), BASE * 0.25, "step", 29);
}

static void test_multistep(void **state) {
  (void)state;
  dp_config c = config(DP_SCHED_MULTISTEP);
  const int64_t ms[] = {5, 12, 30};
  memcpy(c.schedule.milestones, ms, sizeof ms);
  c.schedule.n_milestones = 3;
  c.schedule.gamma = 0.1;
  dp_schedule s;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 100, 128);
  const int64_t ks[] = {0, 4, 5, 11, 12, 29, 30, 99, 1000};
  const int passed[] = {0, 0, 1, 1, 2, 2, 3, 3, 3};
  for (int i = 0; i < 9; i++)
    near(dp_schedule_lr(&s, ks[i]), BASE * pow(0.1, passed[i]), "multistep", ks[i]);
}

static void test_multistep_from_config_text(void **state) {
  (void)state;
  dp_config c;
  const char *text = "[data]\npath = x.h5\n[layer]\nunits = 2\n[optimizer]\nlr = 0.2\n"
                     "[schedule]\nname = multistep\nmilestones = 3, 8\ngamma = 0.5\n";
  assert_int_equal(dp_config_parse_string(&c, text, "ms.ini", NULL, 0), 0);
  assert_int_equal(c.schedule.n_milestones, 2);
  dp_schedule s;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 20, 128);
  near(dp_schedule_lr(&s, 2), 0.2, "multistep (text)", 2);
  near(dp_schedule_lr(&s, 3), 0.1, "multistep (text)", 3);
  near(dp_schedule_lr(&s, 8), 0.05, "multistep (text)", 8);
}

static void test_exponential(void **state) {
  (void)state;
  dp_config c = config(DP_SCHED_EXPONENTIAL);
  c.schedule.gamma = 0.95;
  dp_schedule s;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 100, 128);
  for (int64_t k = 0; k < 100; k++)
    near(dp_schedule_lr(&s, k), BASE * pow(0.95, (double)k), "exponential", k);
}

static void test_cosine(void **state) {
  (void)state;
  const double min_lr = 1e-3;
  const int64_t T = 100;
  dp_config c = config(DP_SCHED_COSINE);
  c.schedule.min_lr = min_lr;
  dp_schedule s;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, T, 128);
  near(dp_schedule_lr(&s, 0), BASE, "cosine start", 0);
  near(dp_schedule_lr(&s, T / 2), (BASE + min_lr) / 2, "cosine middle", T / 2);
  near(dp_schedule_lr(&s, T), min_lr, "cosine end", T);
  near(dp_schedule_lr(&s, T + 10), min_lr, "cosine past the end", T + 10);
  for (int64_t k = 0; k <= T; k++) {
    near(dp_schedule_lr(&s, k), min_lr + (BASE - min_lr) * (1 + cos(M_PI * (double)k / (double)T)) / 2, "cosine", k);
    if (k > 0) /* monotone decreasing */
      assert_true(dp_schedule_lr(&s, k) < dp_schedule_lr(&s, k - 1));
  }
}

static void test_warmup_constant(void **state) {
  (void)state;
  const int64_t W = 10;
  dp_config c = config(DP_SCHED_CONSTANT);
  c.schedule.warmup_steps = W;
  dp_schedule s;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 100, 128);
  /* Starts near 0, rises by base/W per step, reaches base at the end of the warm-up. */
  assert_true(dp_schedule_lr(&s, 0) <= BASE / (double)W * (1 + 1e-12));
  for (int64_t k = 0; k < W; k++) {
    near(dp_schedule_lr(&s, k), BASE * (double)(k + 1) / (double)W, "warm-up", k);
    if (k > 0)
      near(dp_schedule_lr(&s, k) - dp_schedule_lr(&s, k - 1), BASE / (double)W, "warm-up increment", k);
  }
  near(dp_schedule_lr(&s, W - 1), BASE, "end of warm-up", W - 1);
  for (int64_t k = W; k < 100; k += 9)
    near(dp_schedule_lr(&s, k), BASE, "after warm-up", k);
}

static void test_warmup_then_schedule_runs_on_shifted_k(void **state) {
  (void)state;
  const int64_t W = 20, T = 120;
  dp_config c = config(DP_SCHED_COSINE);
  c.schedule.warmup_steps = W;
  c.schedule.min_lr = 0.01;
  dp_schedule s;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, T, 128);
  near(dp_schedule_lr(&s, 0), BASE / (double)W, "cosine warm-up start", 0);
  near(dp_schedule_lr(&s, W), BASE, "cosine after warm-up", W);
  near(dp_schedule_lr(&s, W + (T - W) / 2), (BASE + 0.01) / 2, "cosine middle of T'", W + (T - W) / 2);
  near(dp_schedule_lr(&s, T), 0.01, "cosine end", T);
  for (int64_t k = W; k <= T; k++) {
    double kp = (double)(k - W), Tp = (double)(T - W);
    near(dp_schedule_lr(&s, k), 0.01 + (BASE - 0.01) * (1 + cos(M_PI * kp / Tp)) / 2, "cosine after warm-up", k);
  }

  c = config(DP_SCHED_STEP);
  c.schedule.warmup_steps = W;
  c.schedule.step_size = 7;
  c.schedule.gamma = 0.3;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, T, 128);
  for (int64_t k = W; k < T; k++)
    near(dp_schedule_lr(&s, k), BASE * pow(0.3, (double)((k - W) / 7)), "step after warm-up", k);

  c = config(DP_SCHED_EXPONENTIAL);
  c.schedule.warmup_steps = W;
  c.schedule.gamma = 0.9;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, T, 128);
  for (int64_t k = W; k < T; k++)
    near(dp_schedule_lr(&s, k), BASE * pow(0.9, (double)(k - W)), "exponential after warm-up", k);
}

static void test_linear_scaling(void **state) {
  (void)state;
  dp_config c = config(DP_SCHED_CONSTANT);
  dp_schedule s;
  /* lr_scale = none: the batch does not matter. */
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 100, 1024);
  near(dp_schedule_lr(&s, 3), BASE, "no scaling", 3);

  c.schedule.lr_scale = DP_LR_SCALE_LINEAR;
  c.schedule.base_batch = 256;
  const int64_t batches[] = {256, 1024, 64, 100};
  for (int i = 0; i < 4; i++) {
    dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 100, batches[i]);
    near(dp_schedule_lr(&s, 3), BASE * (double)batches[i] / 256.0, "linear scaling", 3);
  }

  /* The warm-up and the decay start from the scaled base. */
  c.schedule.name = DP_SCHED_COSINE;
  c.schedule.warmup_steps = 10;
  c.schedule.min_lr = 0;
  dp_schedule_init(&s, &c.schedule, c.optimizer.lr, 110, 1024);
  near(dp_schedule_lr(&s, 0), 4 * BASE / 10, "scaled warm-up", 0);
  near(dp_schedule_lr(&s, 10), 4 * BASE, "scaled peak", 10);
  near(dp_schedule_lr(&s, 60), 2 * BASE, "scaled cosine middle", 60);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constant),
      cmocka_unit_test(test_step),
      cmocka_unit_test(test_multistep),
      cmocka_unit_test(test_multistep_from_config_text),
      cmocka_unit_test(test_exponential),
      cmocka_unit_test(test_cosine),
      cmocka_unit_test(test_warmup_constant),
      cmocka_unit_test(test_warmup_then_schedule_runs_on_shifted_k),
      cmocka_unit_test(test_linear_scaling),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
