/* dp_write_durable and dp_write_durable_stdio: a fill that fails leaves the old file untouched and
 * no temp file, with a message naming the temp file and what was written; a fill that succeeds
 * replaces the file whole. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/fsutil.h"
#include "dptrain/error.h"

static char dir[64], path[128], tmp[160];

static int setup(void **state) {
  (void)state;
  strcpy(dir, "/tmp/dptrain-fsutil-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(path, sizeof path, "%s/f.txt", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  remove(path);
  remove(tmp);
  return rmdir(dir);
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

/* The whole file, or "" when it cannot be read. */
static const char *contents(const char *p) {
  static char buf[256];
  buf[0] = 0;
  FILE *f = fopen(p, "r");
  if (f) {
    buf[fread(buf, 1, sizeof buf - 1, f)] = 0;
    fclose(f);
  }
  return buf;
}

static void expect_msg(int rc, int code, const char *s1, const char *s2) {
  const char *msg = dp_errmsg(rc);
  if (rc != code)
    fail_msg("rc %d (%s), expected %d", rc, msg, code);
  if (!strstr(msg, s1) || !strstr(msg, s2))
    fail_msg("message \"%s\" does not contain \"%s\" and \"%s\"", msg, s1, s2);
}

/* Fills by path, as HDF5 does: writes ctx's text, then fails with the code in `fail` (0: succeeds). */
typedef struct {
  const char *text;
  int fail;
  int saw_tmp; /* the fill was given "<path>.tmp" */
} path_fill;

static int fill_path(const char *t, void *arg) {
  path_fill *p = arg;
  p->saw_tmp = !strcmp(t, tmp);
  FILE *f = fopen(t, "w");
  if (!f)
    return DP_EIO;
  fputs(p->text, f);
  fclose(f);
  errno = 0; /* the failure below is ours, not the system's: the message must say so */
  return p->fail ? dp_fail(p->fail, "the fill gave up") : 0;
}

static int fill_stdio(FILE *f, void *arg) {
  const path_fill *p = arg;
  fputs(p->text, f);
  errno = 0;
  return p->fail ? dp_fail(p->fail, "the fill gave up") : 0;
}

static void test_fill_succeeds_replaces(void **state) {
  (void)state;
  path_fill p = {"first\n", 0, 0};
  assert_int_equal(dp_write_durable(path, "the test file", fill_path, &p), 0);
  assert_true(p.saw_tmp);
  assert_string_equal(contents(path), "first\n");
  assert_false(exists(tmp));
  p.text = "second, longer\n";
  assert_int_equal(dp_write_durable(path, "the test file", fill_path, &p), 0);
  assert_string_equal(contents(path), "second, longer\n");
  assert_false(exists(tmp));
  p.text = "third\n";
  assert_int_equal(dp_write_durable_stdio(path, "the test file", fill_stdio, &p), 0);
  assert_string_equal(contents(path), "third\n");
  assert_false(exists(tmp));
}

static void test_fill_fails_keeps_old(void **state) {
  (void)state;
  path_fill good = {"old\n", 0, 0}, bad = {"half of the new", DP_EDATA, 0};
  assert_int_equal(dp_write_durable(path, "the test file", fill_path, &good), 0);
  expect_msg(dp_write_durable(path, "the test file", fill_path, &bad), DP_EIO, tmp, "the test file");
  assert_true(strstr(dp_errmsg(DP_EIO), "the fill gave up") != NULL);
  assert_string_equal(contents(path), "old\n");
  assert_false(exists(tmp));
  expect_msg(dp_write_durable_stdio(path, "the test file", fill_stdio, &bad), DP_EIO, tmp, "the test file");
  assert_string_equal(contents(path), "old\n");
  assert_false(exists(tmp));
  bad.fail = DP_ENOMEM; /* out of memory stays out of memory */
  expect_msg(dp_write_durable(path, "the test file", fill_path, &bad), DP_ENOMEM, tmp, "the test file");
  assert_string_equal(contents(path), "old\n");
  assert_false(exists(tmp));
}

/* No file at all before: a failed fill leaves none. */
static void test_fill_fails_no_file(void **state) {
  (void)state;
  remove(path);
  path_fill bad = {"partial", DP_EIO, 0};
  expect_msg(dp_write_durable(path, "the test file", fill_path, &bad), DP_EIO, tmp, "the test file");
  assert_false(exists(path));
  assert_false(exists(tmp));
}

/* A directory that does not exist: the temp file cannot be created, the message names it. */
static void test_missing_directory(void **state) {
  (void)state;
  char p[200], t[210];
  snprintf(p, sizeof p, "%s/no-such-dir/f.txt", dir);
  snprintf(t, sizeof t, "%s.tmp", p);
  path_fill good = {"x", 0, 0};
  expect_msg(dp_write_durable_stdio(p, "the test file", fill_stdio, &good), DP_EIO, t, "the test file");
  assert_false(exists(p));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fill_succeeds_replaces),
      cmocka_unit_test(test_fill_fails_keeps_old),
      cmocka_unit_test(test_fill_fails_no_file),
      cmocka_unit_test(test_missing_directory),
  };
  return cmocka_run_group_tests_name("fsutil", tests, setup, teardown);
}
