/* `dptrain bench`: training throughput with its references, measured in the same process. */
#include "dptrain/bench.h"

#include <cblas.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/blas.h"
#include "dptrain/checkpoint.h"
#include "dptrain/conv.h"
#include "dptrain/error.h"
#include "dptrain/train.h"
#include "vec.h"

/* A "Field:   1234 kB" line of a /proc file, in bytes (0 when absent). */
static double proc_kb(const char *path, const char *field) {
  FILE *f = fopen(path, "r");
  char line[256];
  double kb = 0;
  size_t n = strlen(field);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, field, n) && line[n] == ':')
      kb = strtod(line + n + 1, NULL); /* the kernel's text, not user input */
  if (f)
    fclose(f);
  return kb * 1024.0;
}

/* Resident set size now (VmRSS) or at its peak (VmHWM), in bytes. */
static double rss_bytes(const char *field) { return proc_kb("/proc/self/status", field); }

/* /proc/cpuinfo's first "model name", for the report: which CPU the ratios were measured on. */
static void cpu_model(char *name, size_t size) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  snprintf(name, size, "unknown");
  while (f && fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (strncmp(line, "model name", 10) || !colon)
      continue;
    snprintf(name, size, "%s", colon + 1 + strspn(colon + 1, " \t"));
    name[strcspn(name, "\n\"\\")] = 0; /* a JSON string as it stands */
    break;
  }
  if (f)
    fclose(f);
}

/* The node's memory: the sum of its ranks' proportional set sizes, in which a page shared by k
 * processes counts 1/k in each, so a shared window counts once. Collective. */
static int node_pss(dp_comm *c, double *sum) {
  double mine = proc_kb("/proc/self/smaps_rollup", "Pss"), all[1024];
  *sum = 0;
  if (c->node_size_max > 1024) /* the same answer on every rank: all skip the collective */
    return 0;
  DP_TRY(dp_comm_node_allgather(c, &mine, all, sizeof mine));
  for (int r = 0; r < c->node_size; r++)
    *sum += all[r];
  return 0;
}

/* --config: that file's model, optimizer and data (or --data), at the bench's batch, threads and
 * buckets, for as many steps as the timing takes. */
static int config_file(const dp_bench_opts *o, dp_config *cfg) {
  enum { N_SETS = 7 };
  char buf[N_SETS][DP_PATH_MAX + 16];
  const char *sets[N_SETS];
  int n = 0;
  snprintf(buf[n++], sizeof buf[0], "train.batch_size=%ld", o->batch);
  snprintf(buf[n++], sizeof buf[0], "train.threads=%d", o->threads);
  snprintf(buf[n++], sizeof buf[0], "train.bucket_mb=%.17g", o->bucket_mb);
  snprintf(buf[n++], sizeof buf[0], "train.epochs=1000000");
  snprintf(buf[n++], sizeof buf[0], "train.max_steps=0");
  if (o->data)
    snprintf(buf[n++], sizeof buf[0], "data.path=%s", o->data);
  snprintf(buf[n++], sizeof buf[0], "train.comm=%s", o->comm ? o->comm : "auto");
  for (int i = 0; i < n; i++)
    sets[i] = buf[i];
  return dp_config_load(cfg, o->config, sets, n);
}

static int make_config(const dp_bench_opts *o, dp_config *cfg) {
  if (o->config)
    return config_file(o, cfg);
  char text[4096], *p = text;
  size_t left = sizeof text;
  int k = snprintf(p, left, "[data]\npath = %s\n[model]\n", o->data ? o->data : DP_BENCH_DATA);
  p += k, left -= (size_t)k;
  char hidden[256];
  snprintf(hidden, sizeof hidden, "%s", o->hidden);
  for (char *h = strtok(hidden, ","); h; h = strtok(NULL, ",")) {
    k = snprintf(p, left, "[layer]\nunits = %s\nactivation = relu\n", h);
    p += k, left -= (size_t)k;
  }
  snprintf(p, left,
           "[layer]\nunits = 10\nactivation = identity\n[optimizer]\nname = sgd\nlr = 0.05\nmomentum = 0.9\n"
           "[train]\nbatch_size = %ld\nepochs = 1000000\nthreads = %d\nbucket_mb = %g\ncomm = %s\nout_dir = /tmp\n",
           o->batch, o->threads, o->bucket_mb, o->comm ? o->comm : "auto");
  return dp_config_parse_string(cfg, text, "bench.ini", NULL, 0);
}

/* FLOPs of one training sample: per weight (and output pixel of a conv2d) 2 forward, 2 for its
 * gradient, 2 for the input gradient, which the first layer does not need. */
static double train_flops(const dp_model *m) {
  double f = 0;
  for (int i = 0; i < m->n_layers; i++)
    f += (i ? 6.0 : 4.0) * m->layer[i].in * m->layer[i].out * m->geom[i].pix;
  return f;
}

typedef struct {
  double seconds, samples, steps, compute, comm, optim;
} timing;

static int time_window(dp_trainer *t, double seconds, timing *tm) {
  dp_step_result r;
  memset(tm, 0, sizeof *tm);
  double t0 = MPI_Wtime();
  for (;;) {
    DP_TRY(dp_trainer_step(t, &(dp_step_request){0}, &r));
    tm->steps++, tm->samples += (double)r.batch;
    tm->compute += r.time.compute, tm->comm += r.time.comm, tm->optim += r.time.optim;
    /* Rank 0's clock decides, so every rank runs the same number of steps. */
    int more = MPI_Wtime() - t0 < seconds;
    DP_TRY(dp_comm_bcast(t->comm, &more, sizeof more, 0));
    if (!more)
      break;
  }
  tm->seconds = MPI_Wtime() - t0;
  return 0;
}

/* The best of three windows: on a shared (virtual) machine other tenants slow some windows down,
 * never speed one up, so the fastest is the closest to what the code can do. */
static int time_steps(dp_trainer *t, double seconds, timing *best) {
  dp_step_result r;
  for (int i = 0; i < 10; i++) /* warm-up: page faults, BLAS buffers, MPI connections */
    DP_TRY(dp_trainer_step(t, &(dp_step_request){0}, &r));
  memset(best, 0, sizeof *best);
  for (int w = 0; w < 3; w++) {
    timing tm;
    DP_TRY(time_window(t, seconds / 3, &tm));
    if (tm.samples / tm.seconds > best->samples / (best->seconds > 0 ? best->seconds : 1e300))
      *best = tm;
  }
  return 0;
}

static double gemm_seconds(int ta, int tb, int M, int N, int K, double seconds) {
  float *A = calloc((size_t)M * K, sizeof(float)), *B = calloc((size_t)K * N, sizeof(float)),
        *C = calloc((size_t)M * N, sizeof(float));
  double dt = NAN;
  if (A && B && C) {
    int lda = ta ? M : K, ldb = tb ? K : N, n;
    CBLAS_TRANSPOSE tA = ta ? CblasTrans : CblasNoTrans, tB = tb ? CblasTrans : CblasNoTrans;
    cblas_sgemm(CblasRowMajor, tA, tB, M, N, K, 1, A, lda, B, ldb, 0, C, N);
    for (int w = 0; w < 3; w++) { /* best of three windows, as for the training steps */
      double t0 = MPI_Wtime();
      for (n = 0; MPI_Wtime() - t0 < seconds / 3 || n < 3; n++)
        cblas_sgemm(CblasRowMajor, tA, tB, M, N, K, 1, A, lda, B, ldb, 0, C, N);
      double w_dt = (MPI_Wtime() - t0) / n;
      dt = isnan(dt) || w_dt < dt ? w_dt : dt;
    }
  }
  free(A);
  free(B);
  free(C);
  return dt;
}

/* Layer i's GEMMs in a step of B samples, each shape timed for about per seconds: a conv2d's dense
 * part runs on its B·oh·ow im2col rows; a layer without parameters has none. */
static double layer_sgemm_seconds(const dp_model *m, int i, int B, double per) {
  const dp_dense *l = &m->layer[i];
  int rows = B * m->geom[i].pix;
  if (!l->in)
    return 0;
  double s = gemm_seconds(0, 1, rows, l->out, l->in, per); /* y = x Wᵀ */
  s += gemm_seconds(1, 0, l->out, l->in, rows, per);       /* dW = dzᵀ x */
  if (i)
    s += gemm_seconds(0, 0, rows, l->in, l->out, per);     /* dx = dz W */
  return s;
}

/* The step's GEMMs alone, at the shard's batch: their time bounds the step from below. */
static double sgemm_step_seconds(const dp_model *m, int B, double seconds) {
  double s = 0, per = seconds / (3.0 * m->n_layers);
  for (int i = 0; i < m->n_layers; i++)
    s += layer_sgemm_seconds(m, i, B, per);
  return s;
}

/* Conv2d layer i's kernels alone on B images, best of three windows of about seconds / 3: forward
 * (im2col, sgemm, bias) and backward (dW, and dx through col2im except in layer 0), without the
 * activation and norm passes it shares with dense layers. NAN when out of memory. */
static double conv_seconds(const dp_model *m, int i, int B, double seconds) {
  const dp_conv_geom *g = &m->geom[i].conv;
  dp_img in = m->geom[i].nchw ? dp_img_nchw(g->c, g->h, g->w) : dp_img_nhwc(g->c, g->h, g->w);
  size_t nx = (size_t)B * g->c * g->h * g->w, nz = (size_t)B * g->oh * g->ow * g->f;
  size_t nw = (size_t)g->f * g->c * g->kh * g->kw, nc = dp_conv_col_floats(g, B);
  float *x = malloc(nx * 4), *dx = malloc(nx * 4), *z = malloc(nz * 4), *dz = malloc(nz * 4), *w = malloc(nw * 4),
        *dw = malloc(nw * 4), *b = calloc((size_t)g->f, 4), *db = malloc((size_t)g->f * 4), *col = malloc(nc * 4);
  double dt = NAN;
  if (x && dx && z && dz && w && dw && b && db && col) {
    /* values, not calloc's shared zero page, which would make im2col's reads look cached */
    for (size_t k = 0; k < nx; k++)
      x[k] = 1e-3f * (float)(k & 1023);
    for (size_t k = 0; k < nz; k++)
      dz[k] = 1e-3f * (float)(k & 511);
    for (size_t k = 0; k < nw; k++)
      w[k] = 1e-3f * (float)(k & 255);
    for (int r = 0; r < 3; r++) {
      double t0 = MPI_Wtime(), w_dt;
      int n = 0;
      do {
        dp_conv_forward(g, x, in, B, w, b, z, col);
        dp_conv_backward(g, x, in, B, w, dz, dw, db, i ? dx : NULL, col, 0);
        n++;
      } while ((w_dt = MPI_Wtime() - t0) < seconds / 3 || n < 3);
      dt = isnan(dt) || w_dt / n < dt ? w_dt / n : dt;
    }
  }
  free(x), free(dx), free(z), free(dz), free(w), free(dw), free(b), free(db), free(col);
  return dt;
}

/* The conv2d layers' kernels against the sgemm time of their im2col shapes, at B samples: what the
 * im2col/col2im passes around the GEMMs cost (the report sets conv_s against the step). */
static void conv_report(const dp_model *m, int B, double seconds, FILE *out) {
  int n = 0;
  for (int i = 0; i < m->n_layers; i++)
    n += m->geom[i].type == DP_LAYER_CONV2D;
  if (!n)
    return;
  double conv = 0, gemm = 0;
  fprintf(out, ",\"conv_layers\":[");
  for (int i = 0, k = 0; i < m->n_layers; i++) {
    if (m->geom[i].type != DP_LAYER_CONV2D)
      continue;
    double c = conv_seconds(m, i, B, seconds / n), g = layer_sgemm_seconds(m, i, B, seconds / (3.0 * n));
    const dp_dense *l = &m->layer[i];
    fprintf(out, "%s{\"layer\":%d,\"rows\":%d,\"in\":%d,\"out\":%d,\"s\":%.6g,\"sgemm_s\":%.6g}", k++ ? "," : "",
            i, B * m->geom[i].pix, l->in, l->out, c, g);
    conv += c, gemm += g;
  }
  fprintf(out, "],\"conv_s\":%.6g,\"conv_sgemm_s\":%.6g", conv, gemm);
}

/* The memory traffic of SGD with momentum, without its arithmetic: read three arrays, write two;
 * vectorised as the update loops are. */
DP_VECTOR_LOOP
static void stream5(size_t n, const float *restrict g, float *restrict w, float *restrict p) {
  for (size_t i = 0; i < n; i++) {
    w[i] += g[i];
    p[i] += g[i];
  }
}

/* Seconds to stream the optimizer step's bytes (n floats of weights, momentum and gradient) through
 * the same core, best of many passes: the floor an update loop over these buffers cannot beat. */
static double stream_seconds(size_t n) {
  float *g = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float)), *p = malloc(n * sizeof(float));
  double best = NAN;
  for (size_t i = 0; g && w && p && i < n; i++) /* every page its own: calloc'd ones share the zero page */
    g[i] = w[i] = p[i] = 1e-3f * (float)(i & 1023);
  for (int r = 0; g && w && p && r < 50; r++) {
    double t0 = MPI_Wtime();
    stream5(n, g, w, p);
    double dt = MPI_Wtime() - t0;
    best = isnan(best) || dt < best ? dt : best;
  }
  free(g);
  free(w);
  free(p);
  return best;
}

/* Allreduce time for 2^10 .. 2^24 bytes; fits t(n) = alpha + n beta by least squares. */
static int allreduce_fit(dp_comm *c, FILE *out) {
  double xs[16], ys[16];
  int k = 0;
  for (size_t bytes = 1024; bytes <= (1u << 24); bytes *= 4, k++) {
    size_t n = bytes / sizeof(float);
    float *buf = calloc(n, sizeof(float));
    if (!buf)
      return dp_fail(DP_ENOMEM, "bench: out of memory");
    int reps = bytes < (1u << 20) ? 200 : 20;
    DP_TRY(dp_comm_allreduce_f32(c, buf, n));
    MPI_Barrier(c->comm);
    double t0 = MPI_Wtime();
    for (int r = 0; r < reps; r++)
      DP_TRY(dp_comm_allreduce_f32(c, buf, n));
    double dt = (MPI_Wtime() - t0) / reps;
    DP_TRY(dp_comm_allreduce_max_f64(c, &dt, 1));
    free(buf);
    xs[k] = (double)bytes, ys[k] = dt;
  }
  double mx = 0, my = 0, sxx = 0, sxy = 0;
  for (int i = 0; i < k; i++)
    mx += xs[i] / k, my += ys[i] / k;
  for (int i = 0; i < k; i++)
    sxx += (xs[i] - mx) * (xs[i] - mx), sxy += (xs[i] - mx) * (ys[i] - my);
  double beta = sxy / sxx, alpha = my - beta * mx;
  if (out) {
    fprintf(out, ",\"allreduce\":{\"ranks\":%d,\"points\":[", c->size);
    for (int i = 0; i < k; i++)
      fprintf(out, "%s[%.0f,%.9g]", i ? "," : "", xs[i], ys[i]);
    fprintf(out, "],\"alpha_s\":%.9g,\"beta_s_per_byte\":%.9g}", alpha, beta);
  }
  return 0;
}

/* Seconds to write and fsync `bytes` zero bytes to path. */
static double plain_write(const char *path, size_t bytes) {
  char *buf = calloc(1, bytes + 1);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  double t0 = MPI_Wtime(), dt = NAN;
  if (buf && fd >= 0 && write(fd, buf, bytes) == (ssize_t)bytes && fsync(fd) == 0)
    dt = MPI_Wtime() - t0;
  if (fd >= 0)
    close(fd);
  remove(path);
  free(buf);
  return dt;
}

/* A checkpoint of the trainer against a plain write + fsync of as many bytes in the same
 * directory, alternating, best of three each (the disk is shared with other tenants). */
static int checkpoint_rate(const dp_trainer *t, const char *dir, FILE *out) {
  char path[DP_FILE_PATH_MAX], plain[DP_FILE_PATH_MAX];
  snprintf(plain, sizeof plain, "%s/plain-write.bin", dir);
  double ck = INFINITY, pw = INFINITY, bytes = 0;
  for (int r = 0; r < 3; r++) {
    double t0 = MPI_Wtime();
    DP_TRY(dp_ckpt_save(&t->state, dir, t->step, 1, path, sizeof path));
    ck = fmin(ck, MPI_Wtime() - t0);
    FILE *f = fopen(path, "rb");
    if (f && fseek(f, 0, SEEK_END) == 0)
      bytes = (double)ftell(f);
    if (f)
      fclose(f);
    remove(path);
    double p = plain_write(plain, (size_t)bytes);
    if (isnan(p))
      return dp_fail(DP_EIO, "%s: cannot write %.0f bytes", plain, bytes);
    pw = fmin(pw, p);
  }
  fprintf(out, ",\"checkpoint\":{\"bytes\":%.0f,\"seconds\":%.6f,\"bytes_per_s\":%.6g,\"plain_bytes_per_s\":%.6g}",
          bytes, ck, bytes / ck, bytes / pw);
  return 0;
}

static void print_memory(const dp_trainer *t, const dp_dataset *ds, double baseline, double pss, FILE *out) {
  const dp_model *m = &t->model;
  double data = ds->mem_hi > ds->mem_lo ? (double)(ds->mem_hi - ds->mem_lo) * (double)dp_row_bytes(ds->d, ds->x_u8) : 0;
  data += ds->mem_labels ? (double)(ds->mem_hi - ds->mem_lo) * 4 : 0;
  double params = 4.0 * m->n_floats, grads = params, state = 4.0 * t->optim.n * t->optim.n_slots;
  double B = m->max_batch, acts = 0, col = 0;
  for (int i = 0; i < m->n_layers; i++) { /* y and dy: a conv2d's of all its output pixels; its im2col scratch */
    acts += 2 * 4.0 * B * (double)m->geom[i].n_out;
    if (m->geom[i].type == DP_LAYER_CONV2D)
      col = fmax(col, 4.0 * (double)dp_conv_col_floats(&m->geom[i].conv, m->max_batch));
  }
  acts += col;
  acts += 4.0 * B * ds->d + 8.0 * (double)t->n_train; /* the gathered rows, the permutation */
  fprintf(out,
          ",\"memory\":{\"peak_rss\":%.0f,\"baseline_rss\":%.0f,\"data\":%.0f,\"params\":%.0f,\"grads\":%.0f,"
          "\"optimizer\":%.0f,\"activations\":%.0f,\"model_copies_per_node\":%d,\"node_pss\":%.0f,"
          "\"ranks_per_node\":%d,\"comm\":\"%s\"}",
          rss_bytes("VmHWM"), baseline, data, params, grads, state, acts, t->node.on ? 1 : t->comm->node_size, pss,
          t->comm->node_size, t->node.on ? "node" : "flat");
}

static int bench_case(const dp_bench_opts *o, const dp_config *cfg, dp_comm *comm, dp_dataset *ds, double baseline,
                      FILE *out) {
  dp_blas_threads bt;
  int rc = dp_comm_agree(comm, dp_blas_set_threads(comm, o->threads, &bt), NULL);
  dp_trainer t;
  if (rc == 0)
    rc = dp_trainer_create(&t, cfg, comm, ds);
  if (rc < 0)
    return rc;
  int threads = bt.threads;
  timing tm = {0};
  rc = time_steps(&t, o->seconds, &tm);
  double v[3] = {tm.compute / tm.steps, tm.comm / tm.steps, tm.optim / tm.steps}, mx[3] = {v[0], v[1], v[2]};
  if (rc == 0)
    rc = dp_comm_allreduce_max_f64(comm, mx, 3);
  double pss = 0;
  if (rc == 0)
    rc = node_pss(comm, &pss);
  if (rc == 0 && out) {
    double flops = train_flops(&t.model), sps = tm.samples / tm.seconds;
    char cpu[128];
    cpu_model(cpu, sizeof cpu);
    fprintf(out, "{\"ranks\":%d,\"threads\":%d,\"cpu\":\"%s\",\"kernel\":\"%s\",\"%s\":\"%s\",\"batch\":%ld,",
            comm->size, threads, cpu, dp_blas_kernel(), o->config ? "config" : "hidden",
            o->config ? o->config : o->hidden, o->batch);
    fprintf(out, "\"params\":%zu,\"flops_per_sample\":%.0f,\"steps\":%.0f,\"seconds\":%.4f,\"samples_per_s\":%.6g,",
            t.model.n_params, flops, tm.steps, tm.seconds, sps);
    fprintf(out, "\"gflops\":%.4g,\"step_s\":%.6g,\"compute_s_max\":%.6g,\"comm_s_max\":%.6g,\"optim_s_max\":%.6g",
            sps * flops / 1e9, tm.seconds / tm.steps, mx[0], mx[1], mx[2]);
    if (o->sgemm) {
      int64_t lo, hi;
      dp_split_range(o->batch, 0, comm->size, &lo, &hi);
      double g = sgemm_step_seconds(&t.model, (int)(hi - lo), o->seconds);
      fprintf(out, ",\"sgemm_step_s\":%.6g,\"sgemm_samples_per_s\":%.6g", g, (double)(hi - lo) / g);
      fprintf(out, ",\"stream5_s\":%.6g", stream_seconds(t.model.n_floats));
      conv_report(&t.model, (int)(hi - lo), o->seconds, out);
    }
    print_memory(&t, ds, baseline, pss, out);
  }
  if (rc == 0 && o->ckpt_dir && comm->rank == 0)
    rc = checkpoint_rate(&t, o->ckpt_dir, out);
  rc = dp_comm_agree(comm, rc, NULL);
  if (rc == 0 && o->allreduce && comm->size > 1)
    rc = allreduce_fit(comm, out);
  if (rc == 0 && out)
    fprintf(out, "}\n");
  dp_trainer_free(&t);
  return rc;
}

int dp_bench_run(const dp_bench_opts *o, dp_comm *comm, FILE *out) {
  if (comm->rank != 0)
    out = NULL;
  dp_blas_threads bt;
  DP_TRY(dp_comm_agree(comm, dp_blas_set_threads(comm, o->threads, &bt), NULL));
  gemm_seconds(0, 0, 64, 64, 64, 0.0); /* BLAS's buffers belong to the baseline */
  double baseline = rss_bytes("VmRSS");
  dp_config *cfg = malloc(sizeof *cfg);
  int rc = dp_comm_agree(comm, cfg ? make_config(o, cfg) : dp_fail(DP_ENOMEM, "bench: out of memory"), NULL);
  if (rc < 0) {
    free(cfg);
    return rc;
  }
  dp_dataset ds;
  dp_dataset_init(&ds);
  rc = dp_dataset_open(&ds, cfg->data.path, "train", NULL);
  if (rc == 0)
    rc = dp_dataset_load(&ds, 0, ds.n);
  rc = dp_comm_agree(comm, rc, NULL);
  if (rc == 0)
    rc = bench_case(o, cfg, comm, &ds, baseline, out);
  dp_dataset_close(&ds);
  free(cfg);
  return rc;
}
