/* What a resume may change: dp_config_diff names every differing key as --set names it, with both
 * values as config.ini writes them; the key table classifies the keys a resume depends on (the
 * model, the data, the optimizer's state must match; run length, logging and checkpoints may
 * change; init_from is for a fresh start only), and an unclassified key must match. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "dptrain/config.h"

#define BASE "[data]\npath = d.h5\n[layer]\nunits = 10\n[layer]\nunits = 3\nactivation = identity\n"

static dp_config a, b; /* large: off the stack */

static const dp_key *key(const char *section, const char *name) {
  size_t n;
  const dp_key *k = dp_config_keys(&n);
  for (size_t i = 0; i < n; i++)
    if (!strcmp(k[i].section, section) && !strcmp(k[i].key, name))
      return &k[i];
  fail_msg("no key %s.%s", section, name);
  return NULL;
}

static void test_no_difference(void **state) {
  (void)state;
  dp_config_change ch[4];
  assert_int_equal(dp_config_parse_string(&a, BASE, "a", NULL, 0), 0);
  assert_int_equal(dp_config_parse_string(&b, BASE, "b", NULL, 0), 0);
  assert_int_equal(dp_config_diff(&a, &b, ch, 4), 0);
}

static void test_differences_named(void **state) {
  (void)state;
  const char *sets[] = {"layer.1.activation=tanh", "train.epochs=7", "optimizer.momentum=0.9", "train.batch_size=full"};
  dp_config_change ch[8];
  assert_int_equal(dp_config_parse_string(&a, BASE, "a", NULL, 0), 0);
  assert_int_equal(dp_config_parse_string(&b, BASE, "b", sets, 4), 0);
  int n = dp_config_diff(&a, &b, ch, 8);
  assert_int_equal(n, 4);
  const char *want[][3] = {{"layer.1.activation", "identity", "tanh"},
                           {"optimizer.momentum", "0", "0.9"},
                           {"train.batch_size", "128", "full"},
                           {"train.epochs", "10", "7"}};
  for (int w = 0; w < 4; w++) {
    int found = 0;
    for (int i = 0; i < n; i++)
      if (!strcmp(ch[i].name, want[w][0])) {
        assert_string_equal(ch[i].from, want[w][1]);
        assert_string_equal(ch[i].to, want[w][2]);
        found = 1;
      }
    if (!found)
      fail_msg("no change reported for %s", want[w][0]);
  }
  /* Only as many as fit are written; the count is all of them. */
  assert_int_equal(dp_config_diff(&a, &b, ch, 1), 4);
}

static void test_classification(void **state) {
  (void)state;
  const char *match[][2] = {{"data", "path"},       {"data", "mean"},         {"model", "loss"},
                            {"layer", "units"},     {"layer", "activation"},  {"layer", "norm"},
                            {"optimizer", "name"},  {"optimizer", "lr"},      {"optimizer", "momentum"},
                            {"schedule", "name"},   {"train", "batch_size"},  {"train", "seed"},
                            {"train", "shuffle"},   {"train", "drop_last"}};
  const char *safe[][2] = {{"train", "epochs"},          {"train", "max_steps"},   {"train", "log_every"},
                           {"train", "eval_every"},      {"train", "out_dir"},     {"train", "threads"},
                           {"checkpoint", "every_steps"}, {"checkpoint", "keep_last"}, {"checkpoint", "dir"},
                           {"optimizer", "max_iter"}};
  for (size_t i = 0; i < sizeof match / sizeof match[0]; i++)
    if (key(match[i][0], match[i][1])->resume != DP_RESUME_MATCH)
      fail_msg("%s.%s must match on resume", match[i][0], match[i][1]);
  for (size_t i = 0; i < sizeof safe / sizeof safe[0]; i++)
    if (key(safe[i][0], safe[i][1])->resume != DP_RESUME_SAFE)
      fail_msg("%s.%s is safe to change on resume", safe[i][0], safe[i][1]);
  assert_int_equal(key("model", "init_from")->resume, DP_RESUME_FRESH);
  /* A key nobody classified is refused on resume: that is the zero value. */
  assert_int_equal(DP_RESUME_MATCH, 0);
  assert_string_equal(dp_resume_rule_name(DP_RESUME_MATCH), "must match");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_difference),
      cmocka_unit_test(test_differences_named),
      cmocka_unit_test(test_classification),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
