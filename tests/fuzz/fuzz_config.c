/* Fuzz target: the configuration parser (dp_config_parse_string).
 *
 * The input is INI text. It is parsed (1) whole, with no overrides, and (2) with its last line
 * taken as one `--set section.key=value` override and the lines before it as the file. When a
 * parse succeeds, the configuration is written back (dp_config_write) and that text must parse
 * again to a configuration that writes the same text (config.h: "INI that parses back to the same
 * configuration"); a failure there aborts, so the fuzzer reports it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/config.h"
#include "dptrain/error.h"
#include "fuzz_common.h"

static dp_config cfg, again;

/* dp_config_write into a malloc'd string. */
static char *written(const dp_config *c) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    abort();
  if (dp_config_write(c, f) != 0) {
    fprintf(stderr, "fuzz_config: dp_config_write failed: %s\n", dp_errmsg(DP_EIO));
    abort();
  }
  fclose(f);
  return buf;
}

static void round_trip(const dp_config *c) {
  char *t1 = written(c);
  int rc = dp_config_parse_string(&again, t1, "written.ini", NULL, 0);
  if (rc != 0) {
    fprintf(stderr, "fuzz_config: the written configuration does not parse back: %s\n--- written:\n%s", dp_errmsg(rc),
            t1);
    abort();
  }
  char *t2 = written(&again);
  if (strcmp(t1, t2) != 0) {
    fprintf(stderr, "fuzz_config: the written configuration parses back differently\n--- first:\n%s--- again:\n%s",
            t1, t2);
    abort();
  }
  free(t1);
  free(t2);
}

static void parse(const char *text, const char *const *sets, int n_sets) {
  int rc = dp_config_parse_string(&cfg, text, "fuzz.ini", sets, n_sets);
  fz_log(n_sets ? "parse with --set" : "parse", rc);
  if (rc == 0)
    round_trip(&cfg);
  dp_error_clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 65536) /* longer texts find nothing new, only slow the fuzzer down */
    return 0;
  char *text = malloc(size + 1);
  if (!text)
    return 0;
  memcpy(text, data, size);
  text[size] = 0;
  parse(text, NULL, 0);

  /* the last line as an override, the rest as the file */
  char *nl = strrchr(text, '\n');
  if (nl) {
    *nl = 0;
    const char *set = nl + 1;
    parse(text, &set, 1);
  }
  free(text);
  return 0;
}
