/* The collective watchdog belongs to its communicator: a sweep's group and the world each have their
 * own timeout and step, and freeing one leaves the other watching. A stuck collective is made at one
 * rank with a receive nothing matches; the watchdog then ends the process, so those cases run in a
 * child (this binary again with --stuck MODE), started before this process initialises MPI. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dptrain/comm.h"

static const char *self;

/* A world and a group split from it, as src/sweep.c makes them. */
static void two_comms(dp_comm *world, dp_comm *group) {
  assert_int_equal(dp_comm_init(world, MPI_COMM_WORLD), 0);
  MPI_Comm sub;
  assert_int_equal(MPI_Comm_split(world->comm, world->rank, world->rank, &sub), MPI_SUCCESS);
  assert_int_equal(dp_comm_init(group, sub), 0);
  MPI_Comm_free(&sub);
}

/* --- child: a collective on one communicator that never completes */
static int stuck(const char *mode) {
  MPI_Init(NULL, NULL);
  dp_comm world, group;
  two_comms(&world, &group);
  int on_group = strcmp(mode, "group") == 0;
  dp_comm_set_timeout(&world, on_group ? 30 : 0.3);
  dp_comm_set_timeout(&group, on_group ? 0.3 : 30);
  dp_comm_set_step(&world, 5);
  dp_comm_set_step(&group, 9);
  if (!on_group)
    dp_comm_free(&group); /* its watchdog gone, the world's still watches */
  dp_comm *c = on_group ? &group : &world;
  int x;
  MPI_Request req;
  MPI_Irecv(&x, 1, MPI_INT, 0, 99, c->comm, &req);
  dp_comm_wait_all(c, &req, 1);
  return 3; /* not reached when the watchdog works */
}

/* Runs the child; its exit status (or -1 if it was still running after 20 s), stderr into err. */
static int run_stuck(const char *mode, char *err, size_t cap, double *took) {
  char path[] = "/tmp/dptrain-comm-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, 2);
    execl(self, self, "--stuck", mode, (char *)NULL);
    _exit(127);
  }
  assert_true(pid > 0);
  int st = 0, rc = -1;
  for (int i = 0; i < 2000; i++) {
    if (waitpid(pid, &st, WNOHANG) == pid) {
      rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
    nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
  }
  if (rc == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  *took = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  ssize_t n = pread(fd, err, cap - 1, 0);
  err[n > 0 ? n : 0] = 0;
  close(fd);
  unlink(path);
  return rc;
}

static void expect_stuck(const char *mode, const char *want) {
  char err[4096];
  double took;
  int rc = run_stuck(mode, err, sizeof err, &took);
  const char *first = strstr(err, "dptrain: error:");
  if (rc != 1 || !strstr(err, want) || !first || strstr(first + 1, "dptrain: error:"))
    fail_msg("--stuck %s: exit %d after %.1f s, want exit 1 and one line with '%s'; stderr:\n%s", mode, rc, took, want,
             err);
  assert_true(took >= 0.3 && took < 10);
}

static void test_group_watchdog_fires_with_its_step(void **state) {
  (void)state;
  expect_stuck("group", "dptrain: error: rank 0: step 9: the gradient allreduce did not complete within 0.3 s "
                        "([train] collective_timeout): another rank is stuck or dead; ending the job\n");
}

static void test_world_watches_after_group_freed(void **state) {
  (void)state;
  expect_stuck("world", "rank 0: step 5: the gradient allreduce did not complete within 0.3 s");
}

/* --- in this process */
static void test_each_comm_has_its_own(void **state) {
  (void)state;
  dp_comm world, group;
  two_comms(&world, &group);
  assert_null(world.watch);
  assert_int_equal(dp_comm_set_timeout(&world, 5), 0);
  assert_int_equal(dp_comm_set_timeout(&group, 5), 0);
  assert_non_null(world.watch);
  assert_non_null(group.watch);
  assert_ptr_not_equal(world.watch, group.watch);
  dp_comm_set_step(&world, 1);
  dp_comm_set_step(&group, 2);
  float v = 1;
  assert_int_equal(dp_comm_allreduce_f32(&group, &v, 1), 0);
  dp_comm_free(&group);
  assert_null(group.watch);
  assert_int_equal(dp_comm_allreduce_f32(&world, &v, 1), 0);
  assert_int_equal(dp_comm_agree(&world, 0, NULL), 0);
  dp_comm_free(&world);
  assert_null(world.watch);
}

static void test_timeout_changed_and_off(void **state) {
  (void)state;
  dp_comm c;
  assert_int_equal(dp_comm_init(&c, MPI_COMM_WORLD), 0);
  dp_comm_set_step(&c, 3); /* no watchdog: nothing to record it in */
  assert_int_equal(dp_comm_set_timeout(&c, 0), 0);
  assert_null(c.watch);
  assert_int_equal(dp_comm_set_timeout(&c, 5), 0);
  struct dp_watch *w = c.watch;
  assert_int_equal(dp_comm_set_timeout(&c, 2), 0);
  assert_ptr_equal(c.watch, w);
  assert_int_equal(dp_comm_set_timeout(&c, 0), 0);
  assert_null(c.watch);
  dp_comm_free(&c);
}

/* A sweep makes and frees a group per call: no watchdog may outlive its communicator. */
static void test_many_groups(void **state) {
  (void)state;
  for (int i = 0; i < 50; i++) {
    dp_comm world, group;
    two_comms(&world, &group);
    dp_comm_set_timeout(&world, 1);
    dp_comm_set_timeout(&group, 1);
    dp_comm_free(&group);
    dp_comm_free(&world);
  }
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--stuck") == 0)
    return stuck(argv[2]);
  self = argv[0];
  const struct CMUnitTest children[] = {
      cmocka_unit_test(test_group_watchdog_fires_with_its_step),
      cmocka_unit_test(test_world_watches_after_group_freed),
  };
  int failed = cmocka_run_group_tests_name("comm watchdog (stuck children)", children, NULL, NULL);
  MPI_Init(&argc, &argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_each_comm_has_its_own),
      cmocka_unit_test(test_timeout_changed_and_off),
      cmocka_unit_test(test_many_groups),
  };
  failed += cmocka_run_group_tests_name("comm watchdog", tests, NULL, NULL);
  MPI_Finalize();
  return failed ? 1 : 0;
}
