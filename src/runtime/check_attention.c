/* `weft check attention`: runs sequence-parallel softmax attention (parallel/attention_sp.h) on
 * inputs from an HDF5 file and writes the results, so an outside oracle
 * (tests/ref/check_attention.py, PyTorch) can compare at any rank count and algorithm.
 *
 *   IN.h5 : q [B,N,H,d], k [B,N,Hkv,d], v [B,N,Hkv,d] f32 (H a multiple of Hkv); optional
 *           dout [B,N,H,d]; root attributes causal (integer 0 or 1, required) and
 *           softmax_scale (optional, default 1/sqrt(d))
 *   OUT.h5: out [B,N,H,d], lse [B,H,N] (natural log), with dout also dq [B,N,H,d],
 *           dk, dv [B,N,Hkv,d], all f32; root attributes algo (the one that ran, auto
 *           resolved), ranks, bytes_sent_fwd_max, bytes_sent_bwd_max, time_fwd_s, time_bwd_s,
 *           and for the record algo_requested, ulysses_degree (the one used), softmax_scale,
 *           causal, device, dtype
 *
 * Files hold tokens in natural order; the plan holds n slots per rank in weft's layout (zigzag
 * when causal, contiguous otherwise, padding at the end of the padded sequence), which the
 * plan reports slot by slot (weft_attn_sp_plan_positions). A rank's real slots form a few runs
 * of consecutive positions (at most two: one per zigzag chunk), so every rank reads and writes
 * its own hyperslabs of each dataset collectively, one call per run, padded with empty calls
 * to the largest run count of any rank (collective I/O needs the same calls everywhere).
 * Padding slots are zero on input; on output they are skipped in the file and checked against
 * the header's contract (out 0, lse -inf, gradients 0), the one property the file cannot show
 * the oracle. Rejected: rank 0 reading everything and gathering the results (the runs make
 * hyperslabs just as simple, and no rank holds more than its share).
 *
 * --dtype bf16 (CUDA only) rounds q, k, v and dout to bf16 on the device
 * (weft_elementwise_cast) before the plan sees them; the outputs stay f32.
 *
 * Errors in the input file (a missing dataset, a wrong dtype or rank, shapes that disagree, H
 * not a multiple of Hkv, a missing or bad causal attribute) are found the same way on every
 * rank and reported in one line by rank 0, naming the dataset or attribute and the value; all
 * ranks then finalise MPI cleanly and exit 1. Usage errors that depend on the job (bf16 on
 * the CPU device, a Ulysses degree not dividing the rank count) exit 2 the same way. Failures
 * inside the library follow the session's abort policy (session.h).
 *
 * Timing: a barrier, then the call, on every rank; the reported time is the slowest rank's.
 * Bytes: weft_attn_sp_plan_stats (this rank's sends over all of the plan's communicators),
 * the largest rank's. Both come from the first (cold) call: this is a correctness driver;
 * `weft bench attention` is where time is measured properly. */
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_input.h"
#include "checks.h"
#include "cli.h"
#include "session.h"
#include "weft/attention_sp.h"
#include "weft/check.h"
#include "weft/elementwise.h"
#include "weft/kernel_ctx.h"
#include "weft/log.h"
#include "weft/tensor_file.h"
#include "weft/timer.h"

#define CMD "weft check attention"

typedef struct check_opts {
  const char *algo_name, *device, *dtype_name, *input, *output;
  long ulysses;
  weft_attn_sp_algo_t algo;
  weft_dtype_t dtype;
} check_opts_t;

/* Tensors of this rank, each [outer, n, inner] in slot order: host copies for the file, f32
 * device copies for the plan. */
enum { T_Q, T_K, T_V, T_DOUT, T_OUT, T_LSE, T_DQ, T_DK, T_DV, T_COUNT };
static const char *const k_names[T_COUNT] = {"q", "k", "v", "dout", "out", "lse", "dq", "dk", "dv"};

/* A run of slots holding consecutive global positions [pos, pos + len). */
typedef struct slot_run {
  int64_t slot, pos, len;
} slot_run_t;

typedef struct check_run {
  const check_opts_t *opt;
  weft_comm_t *comm;
  const weft_device_t *dev;
  int rank, size;
  int64_t B, N, H, HKV, D, n;
  bool has_dout, causal;
  double scale;
  bool input_error; /* reported to the user; exit 1 after a clean finalise */
  bool usage_error; /* reported to the user; exit 2 after a clean finalise */
  bool contract_error;
  weft_kernel_ctx_t *ctx;
  weft_attn_sp_plan_t *plan;
  const int64_t *positions; /* [n], the plan's */
  slot_run_t *runs;         /* [n_runs] */
  int n_runs, max_runs;     /* this rank's, and the most of any rank */
  float *host[T_COUNT], *dev_buf[T_COUNT];
  void *dev_lp[T_DOUT + 1]; /* bf16 copies of q, k, v, dout (--dtype bf16) */
  float *pack;              /* [B * n * H * d]: one run of one tensor, as in the file */
} check_run_t;

/* Reports a problem with the input file: one line, by rank 0 (every rank found the same). */
#define INPUT_ERROR(r, ...)                           \
  do {                                                \
    if ((r)->rank == 0) {                             \
      fprintf(stderr, CMD ": %s: ", (r)->opt->input); \
      fprintf(stderr, __VA_ARGS__);                   \
      fprintf(stderr, "\n");                          \
      fflush(stderr);                                 \
    }                                                 \
    (r)->input_error = true;                          \
  } while (0)

/* [outer, n, inner] view of tensor t; the file holds [outer, N, inner]. */
static int64_t outer_of(const check_run_t *r, int t) { return t == T_LSE ? r->B * r->H : r->B; }
static int64_t inner_of(const check_run_t *r, int t) {
  if (t == T_LSE) return 1;
  return (t == T_K || t == T_V || t == T_DK || t == T_DV ? r->HKV : r->H) * r->D;
}

/* Dataset `name` must exist, be f32 and 4-D with no empty dimension; *info_p gets its shape. */
static weft_status_t query4(check_run_t *r, weft_tensor_file_t *file, const char *name,
                            weft_tensor_file_info_t *info_p) {
  weft_check_input_t in = {CMD, r->opt->input, r->rank, false};
  weft_status_t st = weft_check_query4(&in, file, name, "[B,N,heads,d]", info_p);
  if (in.error) r->input_error = true;
  return st;
}

/* `name` must be [B, N, heads, d] with q's B, N, d. `like` names what it must match. */
static weft_status_t expect_shape(check_run_t *r, weft_tensor_file_t *file, const char *name,
                                  int64_t heads, const char *like) {
  weft_tensor_file_info_t info;
  WEFT_CHECK(query4(r, file, name, &info));
  if (r->input_error) return WEFT_OK;
  if (info.shape[0] != r->B || info.shape[1] != r->N || info.shape[2] != heads ||
      info.shape[3] != r->D) {
    char shape[96];
    weft_check_format_shape(&info, shape, sizeof shape);
    INPUT_ERROR(r, "dataset '%s' has shape %s, expected [%lld,%lld,%lld,%lld] to match %s", name,
                shape, (long long)r->B, (long long)r->N, (long long)heads, (long long)r->D, like);
  }
  return WEFT_OK;
}

/* The causal attribute: required, integer 0 or 1. */
static weft_status_t read_causal(check_run_t *r, weft_tensor_file_t *file) {
  bool exists = false;
  WEFT_CHECK(weft_tensor_file_attr_exists(file, NULL, "causal", &exists));
  if (!exists) {
    INPUT_ERROR(r, "root attribute 'causal' is missing (1 for causal attention, 0 otherwise)");
    return WEFT_OK;
  }
  int64_t causal = -1;
  if (weft_tensor_file_attr_read_i64(file, NULL, "causal", &causal) != WEFT_OK) {
    INPUT_ERROR(r, "root attribute 'causal' is not an integer; expected 0 or 1");
    return WEFT_OK;
  }
  if (causal != 0 && causal != 1) {
    INPUT_ERROR(r, "root attribute 'causal' is %lld, expected 0 or 1", (long long)causal);
    return WEFT_OK;
  }
  r->causal = causal == 1;
  return WEFT_OK;
}

/* Shapes of q, k, v (and dout), causal and the scale; sets r->input_error on a bad file. */
static weft_status_t read_header(check_run_t *r, weft_tensor_file_t *file) {
  weft_tensor_file_info_t q, k;
  WEFT_CHECK(query4(r, file, "q", &q));
  if (r->input_error) return WEFT_OK;
  r->B = q.shape[0], r->N = q.shape[1], r->H = q.shape[2], r->D = q.shape[3];
  WEFT_CHECK(query4(r, file, "k", &k));
  if (r->input_error) return WEFT_OK;
  r->HKV = k.shape[2];
  WEFT_CHECK(expect_shape(r, file, "k", r->HKV, "q"));
  if (r->input_error) return WEFT_OK;
  if (r->H % r->HKV != 0) {
    INPUT_ERROR(r,
                "dataset 'q' has %lld heads, not a multiple of the %lld key/value heads of "
                "dataset 'k'",
                (long long)r->H, (long long)r->HKV);
    return WEFT_OK;
  }
  WEFT_CHECK(expect_shape(r, file, "v", r->HKV, "k"));
  if (r->input_error) return WEFT_OK;
  bool exists = false;
  WEFT_CHECK(weft_tensor_file_exists(file, "dout", &exists));
  r->has_dout = exists;
  if (exists) WEFT_CHECK(expect_shape(r, file, "dout", r->H, "q"));
  if (r->input_error) return WEFT_OK;
  WEFT_CHECK(read_causal(r, file));
  if (r->input_error) return WEFT_OK;
  r->scale = 1.0 / sqrt((double)r->D);
  WEFT_CHECK(weft_tensor_file_attr_exists(file, NULL, "softmax_scale", &exists));
  if (exists) {
    /* 0 is refused: the plan reads a zero scale as "the default 1/sqrt(d)". */
    if (weft_tensor_file_attr_read_f64(file, NULL, "softmax_scale", &r->scale) != WEFT_OK ||
        !isfinite(r->scale) || r->scale == 0.0) {
      INPUT_ERROR(r, "root attribute 'softmax_scale' must be a finite non-zero number");
      return WEFT_OK;
    }
  }
  return WEFT_OK;
}

/* Usage errors that depend on the job: bf16 needs CUDA, a Ulysses degree must divide P. All
 * ranks agree (a device could differ per rank), and rank 0 explains. */
static weft_status_t check_job(check_run_t *r) {
  int32_t bad[2] = {
      r->opt->dtype == WEFT_DTYPE_BF16 && r->dev->kind != WEFT_DEVICE_CUDA,
      r->opt->algo == WEFT_ATTN_SP_HYBRID && r->opt->ulysses > 0 && r->size % r->opt->ulysses != 0};
  WEFT_CHECK(
      weft_comm_allreduce(r->comm, bad, bad, 2, WEFT_DTYPE_I32, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  if (!bad[0] && !bad[1]) return WEFT_OK;
  r->usage_error = true;
  if (r->rank != 0) return WEFT_OK;
  if (bad[0])
    fprintf(stderr,
            "%s: --dtype bf16 needs the CUDA device (--device cuda); the %s device "
            "computes in f32 only\n",
            CMD, weft_device_kind_name(r->dev->kind));
  else
    fprintf(stderr, CMD ": --ulysses-degree %ld does not divide the %d ranks\n", r->opt->ulysses,
            r->size);
  fflush(stderr);
  return WEFT_OK;
}

static weft_status_t create_plan(check_run_t *r) {
  weft_attn_sp_config_t cfg = {.batch = r->B,
                               .heads = r->H,
                               .kv_heads = r->HKV,
                               .head_dim = r->D,
                               .seq_len = r->N,
                               .scale = (float)r->scale,
                               .causal = r->causal,
                               .dtype = r->opt->dtype,
                               .algo = r->opt->algo,
                               .ulysses_degree = (int)r->opt->ulysses};
  WEFT_CHECK(weft_kernel_ctx_create(r->dev, NULL, &r->ctx));
  WEFT_CHECK(weft_attn_sp_plan_create(r->comm, r->ctx, &cfg, &r->plan));
  r->n = weft_attn_sp_plan_layout(r->plan)->local;
  r->positions = weft_attn_sp_plan_positions(r->plan);
  /* Runs of consecutive positions; every rank does as many I/O calls as the busiest. */
  r->runs = calloc((size_t)(r->n > 0 ? r->n : 1), sizeof *r->runs);
  if (!r->runs) return WEFT_ERR_NO_MEMORY;
  for (int64_t s = 0; s < r->n; s++) {
    int64_t pos = r->positions[s];
    if (pos < 0) continue;
    slot_run_t *last = r->n_runs ? &r->runs[r->n_runs - 1] : NULL;
    if (last && last->slot + last->len == s && last->pos + last->len == pos) {
      last->len++;
    } else {
      r->runs[r->n_runs++] = (slot_run_t){s, pos, 1};
    }
  }
  int32_t most = r->n_runs;
  WEFT_CHECK(weft_comm_allreduce(r->comm, &most, &most, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MAX,
                                 WEFT_MEM_HOST));
  r->max_runs = most;
  return WEFT_OK;
}

static weft_status_t alloc_buffers(check_run_t *r) {
  size_t biggest = 1;
  for (int t = 0; t < T_COUNT; t++) {
    size_t count = (size_t)(outer_of(r, t) * r->n * inner_of(r, t));
    size_t bytes = (count ? count : 1) * sizeof(float);
    if (count > biggest) biggest = count;
    r->host[t] = calloc(1, bytes); /* padding slots stay zero */
    if (!r->host[t]) return WEFT_ERR_NO_MEMORY;
    WEFT_CHECK(weft_device_alloc(r->dev, bytes, (void **)&r->dev_buf[t]));
    WEFT_CHECK(weft_device_memset(r->dev, r->dev_buf[t], 0, bytes));
    if (t <= T_DOUT && r->opt->dtype != WEFT_DTYPE_F32)
      WEFT_CHECK(weft_device_alloc(r->dev, (count ? count : 1) * weft_dtype_size(r->opt->dtype),
                                   &r->dev_lp[t]));
  }
  r->pack = malloc(biggest * sizeof(float));
  return r->pack ? WEFT_OK : WEFT_ERR_NO_MEMORY;
}

static void free_buffers(check_run_t *r) {
  for (int t = 0; t < T_COUNT; t++) {
    free(r->host[t]);
    if (r->dev) weft_device_free(r->dev, r->dev_buf[t]);
    if (r->dev && t <= T_DOUT) weft_device_free(r->dev, r->dev_lp[t]);
  }
  free(r->pack);
  free(r->runs);
  weft_attn_sp_plan_destroy(r->plan);
  weft_kernel_ctx_destroy(r->ctx);
}

/* The hyperslab of run i of tensor t (an empty one past this rank's runs). */
static int slab(const check_run_t *r, int t, int i, int64_t *global, int64_t *start,
                int64_t *count) {
  const slot_run_t none = {0, 0, 0};
  const slot_run_t *run = i < r->n_runs ? &r->runs[i] : &none;
  if (t == T_LSE) { /* [B,H,N] */
    int64_t g[3] = {r->B, r->H, r->N}, s[3] = {0, 0, run->pos}, c[3] = {r->B, r->H, run->len};
    memcpy(global, g, sizeof g), memcpy(start, s, sizeof s), memcpy(count, c, sizeof c);
    return 3;
  }
  int64_t heads = inner_of(r, t) / r->D;
  int64_t g[4] = {r->B, r->N, heads, r->D}, s[4] = {0, run->pos, 0, 0};
  int64_t c[4] = {r->B, run->len, heads, r->D};
  memcpy(global, g, sizeof g), memcpy(start, s, sizeof s), memcpy(count, c, sizeof c);
  return 4;
}

/* Between host[t] [outer, n, inner] slots [slot, slot + len) and pack [outer, len, inner]. */
static void copy_run(const check_run_t *r, int t, const slot_run_t *run, bool to_pack) {
  int64_t outer = outer_of(r, t), inner = inner_of(r, t);
  size_t bytes = (size_t)(run->len * inner) * sizeof(float);
  for (int64_t o = 0; o < outer; o++) {
    float *local = r->host[t] + (o * r->n + run->slot) * inner;
    float *packed = r->pack + o * run->len * inner;
    if (to_pack)
      memcpy(packed, local, bytes);
    else
      memcpy(local, packed, bytes);
  }
}

static weft_status_t read_inputs(check_run_t *r, weft_tensor_file_t *file) {
  for (int t = T_Q; t <= T_DOUT; t++) {
    if (t == T_DOUT && !r->has_dout) break;
    for (int i = 0; i < r->max_runs; i++) {
      int64_t global[4], start[4], count[4];
      int ndim = slab(r, t, i, global, start, count);
      WEFT_CHECK(weft_tensor_file_read_slab(file, k_names[t], WEFT_DTYPE_F32, ndim, global, start,
                                            count, r->pack));
      if (i < r->n_runs) copy_run(r, t, &r->runs[i], false);
    }
    size_t count = (size_t)(outer_of(r, t) * r->n * inner_of(r, t));
    WEFT_CHECK(weft_device_copy(r->dev, r->dev_buf[t], r->host[t], count * sizeof(float),
                                WEFT_COPY_HOST_TO_DEVICE));
    if (r->dev_lp[t])
      WEFT_CHECK(weft_elementwise_cast(r->ctx, (int64_t)count, WEFT_DTYPE_F32, r->dev_buf[t],
                                       r->opt->dtype, r->dev_lp[t]));
  }
  return weft_kernel_ctx_synchronize(r->ctx);
}

/* What the plan reads: the bf16 copy, or the f32 buffer itself. */
static const void *plan_input(const check_run_t *r, int t) {
  return r->dev_lp[t] ? r->dev_lp[t] : (const void *)r->dev_buf[t];
}

static weft_status_t compute(check_run_t *r, double *seconds, int64_t *bytes) {
  const void *q = plan_input(r, T_Q), *k = plan_input(r, T_K), *v = plan_input(r, T_V);
  float **d = r->dev_buf;
  WEFT_CHECK(weft_comm_barrier(r->comm));
  double t0 = weft_time_now();
  WEFT_CHECK(weft_attn_sp_forward(r->plan, q, k, v, d[T_OUT], d[T_LSE]));
  seconds[0] = weft_time_now() - t0;
  bytes[0] = (int64_t)weft_attn_sp_plan_stats(r->plan).bytes_fwd;
  if (!r->has_dout) return WEFT_OK;
  WEFT_CHECK(weft_comm_barrier(r->comm));
  t0 = weft_time_now();
  WEFT_CHECK(weft_attn_sp_backward(r->plan, q, k, v, d[T_OUT], d[T_LSE], plan_input(r, T_DOUT),
                                   d[T_DQ], d[T_DK], d[T_DV]));
  seconds[1] = weft_time_now() - t0;
  bytes[1] = (int64_t)weft_attn_sp_plan_stats(r->plan).bytes_bwd;
  return WEFT_OK;
}

/* attention_sp.h: a padding slot has out 0, lse -inf and gradients 0. The file cannot show
 * padding, so the check is made here; the lowest rank with a violation names the first. */
static weft_status_t check_padding(check_run_t *r) {
  int bad_t = -1;
  int64_t bad_o = 0, bad_s = 0, bad_j = 0;
  for (int t = T_OUT; t < T_COUNT && bad_t < 0; t++) {
    if (t >= T_DQ && !r->has_dout) break;
    int64_t outer = outer_of(r, t), inner = inner_of(r, t);
    float want = t == T_LSE ? -INFINITY : 0.0f;
    for (int64_t o = 0; o < outer && bad_t < 0; o++) {
      for (int64_t s = 0; s < r->n && bad_t < 0; s++) {
        if (r->positions[s] >= 0) continue;
        const float *x = r->host[t] + (o * r->n + s) * inner;
        for (int64_t j = 0; j < inner; j++) {
          if (x[j] != want) {
            bad_t = t, bad_o = o, bad_s = s, bad_j = j;
            break;
          }
        }
      }
    }
  }
  int32_t first = bad_t < 0 ? r->size : r->rank;
  WEFT_CHECK(weft_comm_allreduce(r->comm, &first, &first, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN,
                                 WEFT_MEM_HOST));
  if (first == r->size) return WEFT_OK;
  r->contract_error = true;
  if (first == r->rank) {
    float value = r->host[bad_t][(bad_o * r->n + bad_s) * inner_of(r, bad_t) + bad_j];
    fprintf(stderr,
            CMD
            ": rank %d padding slot %lld: %s has %g (outer index %lld, element %lld); "
            "attention_sp.h promises out 0, lse -inf and gradients 0 there\n",
            r->rank, (long long)bad_s, k_names[bad_t], (double)value, (long long)bad_o,
            (long long)bad_j);
    fflush(stderr);
  }
  return WEFT_OK;
}

static weft_status_t fetch_outputs(check_run_t *r) {
  for (int t = T_OUT; t < T_COUNT; t++) {
    if (t >= T_DQ && !r->has_dout) break;
    size_t count = (size_t)(outer_of(r, t) * r->n * inner_of(r, t));
    WEFT_CHECK(weft_device_copy(r->dev, r->host[t], r->dev_buf[t], count * sizeof(float),
                                WEFT_COPY_DEVICE_TO_HOST));
  }
  return WEFT_OK;
}

static weft_status_t write_attrs(check_run_t *r, weft_tensor_file_t *file, const double *seconds,
                                 const int64_t *bytes) {
  const char *algo = weft_attn_sp_algo_name(weft_attn_sp_plan_algo(r->plan));
  WEFT_CHECK(weft_tensor_file_attr_write_str(file, NULL, "algo", algo));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "ranks", r->size));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "bytes_sent_fwd_max", bytes[0]));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "bytes_sent_bwd_max", bytes[1]));
  WEFT_CHECK(weft_tensor_file_attr_write_f64(file, NULL, "time_fwd_s", seconds[0]));
  WEFT_CHECK(weft_tensor_file_attr_write_f64(file, NULL, "time_bwd_s", seconds[1]));
  WEFT_CHECK(weft_tensor_file_attr_write_str(file, NULL, "algo_requested",
                                             weft_attn_sp_algo_name(r->opt->algo)));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "ulysses_degree",
                                             weft_attn_sp_plan_ulysses_degree(r->plan)));
  WEFT_CHECK(weft_tensor_file_attr_write_f64(file, NULL, "softmax_scale", (double)(float)r->scale));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "causal", r->causal));
  WEFT_CHECK(
      weft_tensor_file_attr_write_str(file, NULL, "device", weft_device_kind_name(r->dev->kind)));
  WEFT_CHECK(weft_tensor_file_attr_write_str(file, NULL, "dtype", weft_dtype_name(r->opt->dtype)));
  return WEFT_OK;
}

static weft_status_t write_outputs(check_run_t *r, const double *seconds, const int64_t *bytes) {
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_tensor_file_create(r->opt->output, r->comm, &file));
  weft_status_t st = WEFT_OK;
  for (int t = T_OUT; t < T_COUNT && st == WEFT_OK; t++) {
    if (t >= T_DQ && !r->has_dout) break;
    for (int i = 0; i < r->max_runs && st == WEFT_OK; i++) {
      int64_t global[4], start[4], count[4];
      int ndim = slab(r, t, i, global, start, count);
      if (i < r->n_runs) copy_run(r, t, &r->runs[i], true);
      st = weft_tensor_file_write_slab(file, k_names[t], WEFT_DTYPE_F32, ndim, global, start, count,
                                       r->pack);
    }
  }
  if (st == WEFT_OK) st = write_attrs(r, file, seconds, bytes);
  weft_status_t close_st = weft_tensor_file_close(file);
  return st != WEFT_OK ? st : close_st;
}

static weft_status_t check_run(check_run_t *r) {
  weft_tensor_file_t *in = NULL;
  WEFT_CHECK(weft_tensor_file_open(r->opt->input, WEFT_TENSOR_FILE_READ, r->comm, &in));
  weft_status_t st = read_header(r, in);
  if (st == WEFT_OK && !r->input_error) st = check_job(r);
  bool go = st == WEFT_OK && !r->input_error && !r->usage_error;
  if (go) st = create_plan(r);
  if (go && st == WEFT_OK) st = alloc_buffers(r);
  if (go && st == WEFT_OK) st = read_inputs(r, in);
  weft_status_t close_st = weft_tensor_file_close(in);
  if (st == WEFT_OK) st = close_st;
  if (st != WEFT_OK || !go) return st;

  double seconds[2] = {0, 0};
  int64_t bytes[2] = {0, 0};
  WEFT_CHECK(compute(r, seconds, bytes));
  /* Slowest rank's times (i64 picoseconds: comm reduces no f64) and the largest byte counts. */
  int64_t mx[4] = {(int64_t)(seconds[0] * 1e12), (int64_t)(seconds[1] * 1e12), bytes[0], bytes[1]};
  WEFT_CHECK(
      weft_comm_allreduce(r->comm, mx, mx, 4, WEFT_DTYPE_I64, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  seconds[0] = (double)mx[0] * 1e-12, seconds[1] = (double)mx[1] * 1e-12;
  bytes[0] = mx[2], bytes[1] = mx[3];
  WEFT_CHECK(fetch_outputs(r));
  WEFT_CHECK(check_padding(r));
  WEFT_CHECK(write_outputs(r, seconds, bytes)); /* also after a padding violation: for a look */
  if (r->rank == 0) {
    weft_attn_sp_algo_t algo = weft_attn_sp_plan_algo(r->plan);
    printf(CMD ": %s", weft_attn_sp_algo_name(algo));
    if (algo == WEFT_ATTN_SP_HYBRID)
      printf(" (ulysses degree %d)", weft_attn_sp_plan_ulysses_degree(r->plan));
    printf(
        ", %d rank(s), %s %s, B %lld N %lld H %lld Hkv %lld d %lld, %s: forward %.6f s, %lld B "
        "sent (max rank)",
        r->size, weft_device_kind_name(r->dev->kind), weft_dtype_name(r->opt->dtype),
        (long long)r->B, (long long)r->N, (long long)r->H, (long long)r->HKV, (long long)r->D,
        r->causal ? "causal" : "non-causal", seconds[0], (long long)bytes[0]);
    if (r->has_dout) printf("; backward %.6f s, %lld B sent", seconds[1], (long long)bytes[1]);
    printf(" -> %s\n", r->opt->output);
    fflush(stdout);
  }
  return WEFT_OK;
}

static const weft_cli_command_t k_command = {
    "check attention",
    "Run sequence-parallel softmax attention on IN.h5 and write the results to OUT.h5.",
    "--algo ALGO [--ulysses-degree U] [--device cpu|cuda] [--dtype f32|bf16] --input IN.h5 "
    "--output OUT.h5",
    NULL};

static void print_format_help(void) {
  printf(
      "\nIN.h5 : q [B,N,H,d], k [B,N,Hkv,d], v [B,N,Hkv,d] float32 (H a multiple of Hkv; query\n"
      "        head h uses key/value head h / (H/Hkv)); optional dout [B,N,H,d]; root\n"
      "        attributes causal (integer 0 or 1, required) and softmax_scale (default\n"
      "        1/sqrt(d))\n"
      "OUT.h5: out [B,N,H,d], lse [B,H,N] (natural log of the softmax denominator), float32;\n"
      "        with dout also dq, dk, dv (gradients of sum(dout * out), shapes of q, k, v);\n"
      "        root attributes algo (auto resolved), ranks, bytes_sent_fwd_max,\n"
      "        bytes_sent_bwd_max (busiest rank), time_fwd_s, time_bwd_s (slowest rank),\n"
      "        algo_requested, ulysses_degree, softmax_scale, causal, device, dtype\n"
      "Files hold tokens in natural order; the ranks hold them in weft's layout (zigzag chunks\n"
      "when causal, contiguous otherwise). --dtype bf16 needs the CUDA device.\n");
}

int weft_check_attention(int argc, char **argv) {
  check_opts_t o = {"auto", "auto", "f32", NULL, NULL, 0, WEFT_ATTN_SP_AUTO, WEFT_DTYPE_F32};
  const weft_cli_flag_t flags[] = {
      {"algo", 0, WEFT_CLI_STRING, &o.algo_name, "ALGO",
       "ulysses, ring, tokenring, hybrid or auto (the cost model picks; the default)"},
      {"ulysses-degree", 0, WEFT_CLI_INT, &o.ulysses, "U",
       "hybrid: Ulysses group size, dividing the ranks (0 = automatic)"},
      {"device", 0, WEFT_CLI_STRING, &o.device, "auto|cpu|cuda", "device each rank opens (auto)"},
      {"dtype", 0, WEFT_CLI_STRING, &o.dtype_name, "f32|bf16",
       "dtype q, k, v, dout are rounded to before the plan (f32; bf16 needs cuda)"},
      {"input", 'i', WEFT_CLI_STRING, &o.input, "IN.h5", "input file (required)"},
      {"output", 'o', WEFT_CLI_STRING, &o.output, "OUT.h5", "output file (required)"},
  };
  bool help = false;
  if (weft_cli_parse(&k_command, flags, sizeof flags / sizeof flags[0], argc, argv, &help) !=
      WEFT_OK)
    return WEFT_EXIT_USAGE;
  if (help) {
    print_format_help();
    return WEFT_EXIT_OK;
  }
  const char *problem = NULL;
  if (weft_attn_sp_algo_parse(o.algo_name, &o.algo) != WEFT_OK)
    problem = "--algo must be ulysses, ring, tokenring, hybrid or auto";
  else if (o.ulysses < 0 || o.ulysses > INT_MAX)
    problem = "--ulysses-degree must be >= 0 (0 = automatic)";
  else if (strcmp(o.dtype_name, "f32") == 0)
    o.dtype = WEFT_DTYPE_F32;
  else if (strcmp(o.dtype_name, "bf16") == 0)
    o.dtype = WEFT_DTYPE_BF16;
  else
    problem = "--dtype must be f32 or bf16";
  if (!problem && (!o.input || !*o.input))
    problem = "--input IN.h5 is required";
  else if (!problem && (!o.output || !*o.output))
    problem = "--output OUT.h5 is required";
  if (problem) {
    fprintf(stderr, CMD ": %s (see " CMD " --help)\n", problem);
    return WEFT_EXIT_USAGE;
  }
  weft_session_t session;
  weft_session_start(&session, "check attention", &argc, &argv, o.device);
  check_run_t r = {.opt = &o,
                   .comm = session.world,
                   .dev = session.boot.device,
                   .rank = session.boot.world_rank,
                   .size = session.boot.world_size};
  weft_status_t st = check_run(&r);
  if (st == WEFT_OK) free_buffers(&r); /* on failure the session aborts the job */
  int rc = weft_session_end(&session, st);
  if (r.usage_error) return WEFT_EXIT_USAGE;
  return r.input_error || r.contract_error ? WEFT_EXIT_FAILURE : rc;
}
