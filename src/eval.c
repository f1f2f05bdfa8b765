/* `dptrain eval`: a checkpoint's model on a data set's test split, at any number of ranks. */
#include <stdlib.h>
#include <string.h>

#include "dptrain/checkpoint.h"
#include "dptrain/error.h"
#include "dptrain/paths.h"
#include "dptrain/run.h"
#include "dptrain/train.h"

enum { CONFIG_MAX = 1 << 20 };

/* Rank 0 reads the configuration stored in the checkpoint; every rank parses the same text. */
static int checkpoint_config(const char *ckpt, const char *data, dp_comm *comm, dp_config *cfg) {
  char *text = calloc(CONFIG_MAX, 1);
  if (!text)
    return dp_fail(DP_ENOMEM, "out of memory");
  int rc = comm->rank == 0 ? dp_ckpt_config_text(ckpt, text, CONFIG_MAX) : 0;
  rc = dp_comm_agree(comm, rc, NULL);
  if (rc == 0)
    rc = dp_comm_bcast(comm, text, CONFIG_MAX, 0);
  char set[DP_FILE_PATH_MAX], name[DP_FILE_PATH_MAX];
  const char *sets[1] = {set};
  snprintf(set, sizeof set, "data.path=%s", data ? data : "");
  snprintf(name, sizeof name, "%s:/config", ckpt);
  if (rc == 0)
    rc = dp_comm_agree(comm, dp_config_parse_string(cfg, text, name, sets, data ? 1 : 0), NULL);
  free(text);
  return rc;
}

static int eval_on(const dp_config *cfg, const char *ckpt, dp_comm *comm, dp_dataset *test, FILE *out) {
  dp_trainer t;
  DP_TRY(dp_trainer_create(&t, cfg, comm, test));
  int64_t lo, hi; /* NaN or Inf in float inputs or targets, as training checks: each rank its share */
  dp_split_range(test->n, comm->rank, comm->size, &lo, &hi);
  int rc = dp_comm_agree(comm, dp_dataset_check_finite(test, lo, hi), NULL);
  if (rc == 0)
    rc = dp_ckpt_load(&t.state, ckpt, DP_ST_MODEL, comm);
  dp_scores e;
  if (rc == 0)
    rc = dp_trainer_evaluate(&t, test, &e);
  if (rc == 0 && out) {
    fprintf(out, "%s on %s (/test, %lld row%s): test_loss %.5f", ckpt, cfg->data.path, (long long)test->n,
            dp_plural(test->n), e.loss);
    if (cfg->model.loss == DP_LOSS_MSE)
      fprintf(out, "  test_rmse %.5g  test_mae %.5g\n", e.rmse, e.mae);
    else
      fprintf(out, "  test_acc %.4f\n", e.acc);
  }
  dp_trainer_free(&t);
  return rc;
}

int dp_eval_run(const char *ckpt, const char *data, dp_comm *comm, FILE *out) {
  /* Up front, as a run checks its paths: rank 0 reads the checkpoint, every rank the data. */
  DP_TRY(dp_comm_agree(comm, comm->rank == 0 ? dp_paths_check_input(ckpt, "checkpoint", "", DP_ECKPT) : 0, NULL));
  dp_config *cfg = malloc(sizeof *cfg);
  if (!cfg)
    return dp_fail(DP_ENOMEM, "out of memory");
  int rc = checkpoint_config(ckpt, data, comm, cfg);
  if (rc == 0)
    rc = dp_comm_agree(comm, dp_paths_check_input(cfg->data.path, "data file",
                                                  data ? "--data" : "[data] path of the checkpoint's config", DP_EDATA),
                       NULL);
  dp_dataset test;
  dp_dataset_init(&test);
  if (rc == 0) {
    int found, o = dp_dataset_open(&test, cfg->data.path, "test", &found);
    if (o == 0 && !found)
      o = dp_fail(DP_EDATA, "%s: no /test group to evaluate on (pass --data FILE)", cfg->data.path);
    /* As the model was trained; the checkpoint's /input/scale and /input/shift then replace it (a
     * per_feature model's statistics come with it, not from this file). */
    if (cfg->data.standardize == DP_STD_SCALAR)
      dp_dataset_standardize(&test, cfg->data.mean, cfg->data.std);
    rc = dp_comm_agree(comm, o, NULL);
  }
  if (rc == 0)
    rc = eval_on(cfg, ckpt, comm, &test, comm->rank == 0 ? out : NULL);
  dp_dataset_close(&test);
  free(cfg);
  return rc;
}
