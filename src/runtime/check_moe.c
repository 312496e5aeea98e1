/* `weft check moe`: runs the expert-parallel MoE layer (parallel/moe_ep.h) on inputs from an
 * HDF5 file and writes the results, so an outside oracle (tests/ref/check_moe.py, PyTorch)
 * can compare at any rank count.
 *
 *   IN.h5 : x [T,h], w_router [h,E], w1 [E,h,f], w3 [E,h,f], w2 [E,f,h] (f32); optional
 *           dy [T,h]; root attributes topk (integer 1..E, required), normalize (integer 0/1,
 *           default 0), capacity_factor (float, default 0 = dropless), aux_weight and z_weight
 *           (floats, default 0; float attributes must be stored as floats: 1.0, not 1)
 *   OUT.h5: y [T,h] f32, counts [E] i64 (the c_i before dropping), expert_rows [E] i64 (slots
 *           each expert processed after dropping), aux_loss and z_loss (0-d f32 datasets: the
 *           unweighted LBL and z-loss of the whole batch); with dy also dx [T,h], dw_router
 *           [h,E], dw1, dw3 [E,h,f], dw2 [E,f,h]: gradients of
 *           sum(y * dy) + aux_weight * aux_loss + z_weight * z_loss;
 *           root attributes ranks, bytes_sent_max, bytes_sent_min_possible, bytes_payload_max,
 *           bytes_payload_total, bytes_min_total, time_fwd_s, time_bwd_s, capacity, dropped,
 *           and for the record topk, normalize, capacity_factor, aux_weight, z_weight, device
 *
 * The ep group is the world: rank r reads and writes its expert block [r E/P, (r+1) E/P) of
 * w1, w3, w2 and their gradients as hyperslabs, and the whole router. Tokens are split
 * contiguously, the first T % P ranks one more (a rank may hold none). dw_router is each
 * rank's tokens' share (moe_ep.h), summed here with one all-reduce and written once.
 * Rejected: rank 0 reading everything and scattering it (hyperslabs are as simple, and no rank
 * holds more than its share of the experts).
 * aux_loss is the sum of the ranks' aux_loss_partial, added in double in rank order (the
 * partials are all-gathered as their 64-bit patterns: weft_comm reduces no f64). It is a 0-d
 * (scalar) dataset, which the tensor file writes as an HDF5 scalar dataspace; rejected: a [1]
 * dataset, which would make the oracle index a scalar.
 *
 * Bytes (moe_ep.h's per-pass stats, max over ranks): bytes_sent_max = fwd.payload +
 * fwd.meta + bwd.payload + bwd.meta; bytes_payload_max = fwd.payload + bwd.payload;
 * bytes_sent_min_possible = fwd.minimum + bwd.minimum (the bwd terms only with dy); and the
 * sums over ranks bytes_payload_total and bytes_min_total (every (token, remote rank) pair
 * counted once per direction: the de-duplication seen without the per-rank attribution).
 * Timing: a barrier, then the call, on every rank; the slowest rank's time, from the first
 * (cold) call: this is a correctness driver, not a benchmark.
 *
 * Errors in the input file (a missing dataset, a wrong dtype or rank, shapes that disagree,
 * bad attributes, E not divisible by the ranks, non-finite values) are found the same way on
 * every rank and reported in one line by one rank, naming the dataset or attribute and the
 * value; all ranks then finalise MPI cleanly and exit 1. Failures inside the library follow
 * the session's abort policy (session.h). */
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
#include "weft/check.h"
#include "weft/kernel_ctx.h"
#include "weft/moe_ep.h"
#include "weft/tensor_file.h"
#include "weft/timer.h"

#define CMD "weft check moe"

typedef struct check_opts {
  const char *device, *input, *output;
} check_opts_t;

/* Tensors of this rank: host copies for the file, device copies for the layer. */
enum { T_X, T_ROUTER, T_W1, T_W3, T_W2, T_DY, T_Y, T_DX, T_DROUTER, T_DW1, T_DW3, T_DW2, T_COUNT };
static const char *const k_names[T_COUNT] = {"x", "w_router", "w1",        "w3",  "w2",  "dy",
                                             "y", "dx",       "dw_router", "dw1", "dw3", "dw2"};
/* Layout of each: token rows [T,h], the router [h,E], expert blocks [E,h,f] or [E,f,h]. */
enum { L_TOKENS, L_ROUTER, L_W13, L_W2 };
static const int k_layout[T_COUNT] = {
    [T_X] = L_TOKENS,       [T_ROUTER] = L_ROUTER, [T_W1] = L_W13,   [T_W3] = L_W13,
    [T_W2] = L_W2,          [T_DY] = L_TOKENS,     [T_Y] = L_TOKENS, [T_DX] = L_TOKENS,
    [T_DROUTER] = L_ROUTER, [T_DW1] = L_W13,       [T_DW3] = L_W13,  [T_DW2] = L_W2};

typedef struct check_run {
  const check_opts_t *opt;
  weft_comm_t *comm;
  const weft_device_t *dev;
  int rank, size;
  int64_t T, H, E, F, n, start, el, e0; /* n tokens from start; el experts from e0 */
  bool has_dy;
  weft_moe_config_t cfg;
  bool input_error; /* reported to the user; exit 1 after a clean finalise */
  weft_kernel_ctx_t *ctx;
  weft_moe_plan_t *plan;
  float *host[T_COUNT], *dev_buf[T_COUNT];
  size_t count[T_COUNT];
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

/* Dataset `name` must be an ndim-D f32 array of shape `want` (-1: any; *got gets the shape).
 * `dims` names the dimensions, `why` says where the known ones come from. */
static weft_status_t expect_shape(check_run_t *r, weft_tensor_file_t *file, const char *name,
                                  int ndim, const char *dims, const int64_t *want, const char *why,
                                  int64_t *got) {
  weft_check_input_t in = {CMD, r->opt->input, r->rank, false};
  weft_tensor_file_info_t info;
  WEFT_CHECK(weft_check_query(&in, file, name, ndim, dims, &info));
  if (in.error) {
    r->input_error = true;
    return WEFT_OK;
  }
  bool ok = true;
  char expected[96];
  size_t used = (size_t)snprintf(expected, sizeof expected, "[");
  for (int d = 0; d < ndim; d++) {
    ok = ok && (want[d] < 0 || info.shape[d] == want[d]);
    if (used >= sizeof expected) continue;
    if (want[d] < 0)
      used += (size_t)snprintf(expected + used, sizeof expected - used, "%s*", d ? "," : "");
    else
      used += (size_t)snprintf(expected + used, sizeof expected - used, "%s%lld", d ? "," : "",
                               (long long)want[d]);
    if (got) got[d] = info.shape[d];
  }
  if (used < sizeof expected) snprintf(expected + used, sizeof expected - used, "]");
  if (!ok) {
    char shape[96];
    weft_check_format_shape(&info, shape, sizeof shape);
    INPUT_ERROR(r, "dataset '%s' has shape %s, expected %s = %s (%s)", name, shape, dims, expected,
                why);
  }
  return WEFT_OK;
}

/* Integer root attribute in [lo, hi]; a missing one is `fallback` (or an error if required). */
static weft_status_t read_int_attr(check_run_t *r, weft_tensor_file_t *file, const char *name,
                                   bool required, int64_t fallback, int64_t lo, int64_t hi,
                                   const char *meaning, int64_t *value_p) {
  bool exists = false;
  *value_p = fallback;
  WEFT_CHECK(weft_tensor_file_attr_exists(file, NULL, name, &exists));
  if (!exists) {
    if (required) INPUT_ERROR(r, "root attribute '%s' is missing (%s)", name, meaning);
    return WEFT_OK;
  }
  if (weft_tensor_file_attr_read_i64(file, NULL, name, value_p) != WEFT_OK) {
    INPUT_ERROR(r, "root attribute '%s' is not an integer (%s)", name, meaning);
  } else if (*value_p < lo || *value_p > hi) {
    INPUT_ERROR(r, "root attribute '%s' is %lld, expected %lld %s %lld (%s)", name,
                (long long)*value_p, (long long)lo, hi == lo + 1 ? "or" : "..", (long long)hi,
                meaning);
  }
  return WEFT_OK;
}

/* Optional float root attribute, finite and >= 0, default 0. */
static weft_status_t read_factor_attr(check_run_t *r, weft_tensor_file_t *file, const char *name,
                                      double *value_p) {
  bool exists = false;
  *value_p = 0.0;
  WEFT_CHECK(weft_tensor_file_attr_exists(file, NULL, name, &exists));
  if (!exists) return WEFT_OK;
  if (weft_tensor_file_attr_read_f64(file, NULL, name, value_p) != WEFT_OK) {
    INPUT_ERROR(r, "root attribute '%s' is not a floating-point number (write 1.0, not 1)", name);
  } else if (!(isfinite(*value_p) && *value_p >= 0.0)) {
    INPUT_ERROR(r, "root attribute '%s' is %g, expected a finite number >= 0", name, *value_p);
  }
  return WEFT_OK;
}

/* Shapes, attributes and this rank's share; sets r->input_error on a bad file. */
static weft_status_t read_header(check_run_t *r, weft_tensor_file_t *file) {
  int64_t got[3];
  const int64_t any2[2] = {-1, -1};
  WEFT_CHECK(expect_shape(r, file, "x", 2, "[T,h]", any2, "tokens by hidden", got));
  if (r->input_error) return WEFT_OK;
  r->T = got[0], r->H = got[1];
  const int64_t router[2] = {r->H, -1};
  WEFT_CHECK(expect_shape(r, file, "w_router", 2, "[h,E]", router, "h from x", got));
  if (r->input_error) return WEFT_OK;
  r->E = got[1];
  const int64_t w1[3] = {r->E, r->H, -1};
  WEFT_CHECK(expect_shape(r, file, "w1", 3, "[E,h,f]", w1, "h from x, E from w_router", got));
  if (r->input_error) return WEFT_OK;
  r->F = got[2];
  const int64_t w3[3] = {r->E, r->H, r->F}, w2[3] = {r->E, r->F, r->H};
  WEFT_CHECK(expect_shape(r, file, "w3", 3, "[E,h,f]", w3, "the shape of w1", NULL));
  if (!r->input_error)
    WEFT_CHECK(expect_shape(r, file, "w2", 3, "[E,f,h]", w2, "E, f from w1, h from x", NULL));
  if (r->input_error) return WEFT_OK;
  bool exists = false;
  WEFT_CHECK(weft_tensor_file_exists(file, "dy", &exists));
  r->has_dy = exists;
  const int64_t dy[2] = {r->T, r->H};
  if (exists) WEFT_CHECK(expect_shape(r, file, "dy", 2, "[T,h]", dy, "the shape of x", NULL));
  if (r->input_error) return WEFT_OK;

  int64_t topk = 0, normalize = 0;
  WEFT_CHECK(read_int_attr(r, file, "topk", true, 0, 1, r->E, "experts per token, 1..E", &topk));
  if (!r->input_error)
    WEFT_CHECK(read_int_attr(r, file, "normalize", false, 0, 0, 1,
                             "1 renormalises the top-k weights", &normalize));
  r->cfg = (weft_moe_config_t){
      .hidden = r->H, .ffn = r->F, .experts = r->E, .topk = (int)topk, .normalize = normalize == 1};
  if (!r->input_error)
    WEFT_CHECK(read_factor_attr(r, file, "capacity_factor", &r->cfg.capacity_factor));
  if (!r->input_error) WEFT_CHECK(read_factor_attr(r, file, "aux_weight", &r->cfg.aux_weight));
  if (!r->input_error) WEFT_CHECK(read_factor_attr(r, file, "z_weight", &r->cfg.z_weight));
  if (r->input_error) return WEFT_OK;
  if (r->E % r->size != 0) {
    INPUT_ERROR(r,
                "dataset 'w_router' has E = %lld experts, not divisible by the %d ranks (each "
                "rank owns an equal block of experts)",
                (long long)r->E, r->size);
    return WEFT_OK;
  }
  int64_t base = r->T / r->size, extra = r->T % r->size;
  r->n = base + (r->rank < extra ? 1 : 0);
  r->start = r->rank * base + (r->rank < extra ? r->rank : extra);
  r->el = r->E / r->size;
  r->e0 = r->rank * r->el;
  return WEFT_OK;
}

/* The hyperslab of tensor t this rank reads or writes; returns its ndim. */
static int slab(const check_run_t *r, int t, int64_t *global, int64_t *start, int64_t *count) {
  switch (k_layout[t]) {
  case L_TOKENS:
    global[0] = r->T, global[1] = r->H, start[0] = r->start, start[1] = 0;
    count[0] = r->n, count[1] = r->H;
    return 2;
  case L_ROUTER:
    global[0] = count[0] = r->H, global[1] = count[1] = r->E, start[0] = start[1] = 0;
    return 2;
  default: {
    bool w2 = k_layout[t] == L_W2;
    global[0] = r->E, count[0] = r->el, start[0] = r->e0;
    global[1] = count[1] = w2 ? r->F : r->H, global[2] = count[2] = w2 ? r->H : r->F;
    start[1] = start[2] = 0;
    return 3;
  }
  }
}

static weft_status_t alloc_buffers(check_run_t *r) {
  for (int t = 0; t < T_COUNT; t++) {
    int64_t global[3], start[3], count[3];
    int ndim = slab(r, t, global, start, count);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= (size_t)count[d];
    r->count[t] = numel;
    size_t bytes = (numel ? numel : 1) * sizeof(float); /* a rank may hold no tokens */
    r->host[t] = calloc(1, bytes);
    if (!r->host[t]) return WEFT_ERR_NO_MEMORY;
    WEFT_CHECK(weft_device_alloc(r->dev, bytes, (void **)&r->dev_buf[t]));
    WEFT_CHECK(weft_device_memset(r->dev, r->dev_buf[t], 0, bytes)); /* gradients start at 0 */
  }
  return WEFT_OK;
}

static void free_buffers(check_run_t *r) {
  weft_moe_plan_destroy(r->plan);
  weft_kernel_ctx_destroy(r->ctx);
  for (int t = 0; t < T_COUNT; t++) {
    free(r->host[t]);
    if (r->dev) weft_device_free(r->dev, r->dev_buf[t]);
  }
}

static weft_status_t read_inputs(check_run_t *r, weft_tensor_file_t *file) {
  for (int t = T_X; t <= T_DY; t++) {
    if (t == T_DY && !r->has_dy) break;
    int64_t global[3], start[3], count[3];
    int ndim = slab(r, t, global, start, count);
    WEFT_CHECK(weft_tensor_file_read_slab(file, k_names[t], WEFT_DTYPE_F32, ndim, global, start,
                                          count, r->host[t]));
    WEFT_CHECK(weft_device_copy(r->dev, r->dev_buf[t], r->host[t], r->count[t] * sizeof(float),
                                WEFT_COPY_HOST_TO_DEVICE));
  }
  return WEFT_OK;
}

/* Inputs must be finite. Each rank checks what it read; the lowest rank with a bad value
 * names the first one, with its index in the file. */
static weft_status_t check_finite(check_run_t *r) {
  for (int t = T_X; t <= T_DY; t++) {
    if (t == T_DY && !r->has_dy) break;
    size_t bad = SIZE_MAX;
    for (size_t i = 0; i < r->count[t] && bad == SIZE_MAX; i++)
      if (!isfinite(r->host[t][i])) bad = i;
    int32_t first = bad == SIZE_MAX ? r->size : r->rank;
    WEFT_CHECK(weft_comm_allreduce(r->comm, &first, &first, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN,
                                   WEFT_MEM_HOST));
    if (first == r->size) continue;
    r->input_error = true;
    if (first != r->rank) return WEFT_OK;
    int64_t global[3], start[3], count[3], rest = (int64_t)bad;
    int ndim = slab(r, t, global, start, count);
    char where[96];
    size_t used = 0;
    for (int d = ndim - 1; d >= 0; d--) { /* row-major unravel, written last dim first */
      global[d] = start[d] + rest % count[d];
      rest /= count[d];
    }
    for (int d = 0; d < ndim; d++)
      used += (size_t)snprintf(where + used, sizeof where - used, "%s%lld", d ? "," : "[",
                               (long long)global[d]);
    fprintf(stderr, CMD ": %s: dataset '%s' has value %g at %s]; inputs must be finite\n",
            r->opt->input, k_names[t], (double)r->host[t][bad], where);
    fflush(stderr);
    return WEFT_OK;
  }
  return WEFT_OK;
}

static weft_status_t compute(check_run_t *r, double *seconds) {
  float **d = r->dev_buf;
  WEFT_CHECK(weft_kernel_ctx_create(r->dev, NULL, &r->ctx));
  WEFT_CHECK(weft_moe_plan_create(r->comm, NULL, r->ctx, &r->cfg, &r->plan));
  const weft_moe_weights_t w = {d[T_ROUTER], d[T_W1], d[T_W3], d[T_W2]};
  const weft_moe_grads_t g = {d[T_DROUTER], d[T_DW1], d[T_DW3], d[T_DW2]};
  WEFT_CHECK(weft_comm_barrier(r->comm));
  double t0 = weft_time_now();
  WEFT_CHECK(weft_moe_forward(r->plan, r->n, d[T_X], &w, d[T_Y]));
  seconds[0] = weft_time_now() - t0;
  if (!r->has_dy) return WEFT_OK;
  WEFT_CHECK(weft_comm_barrier(r->comm));
  t0 = weft_time_now();
  WEFT_CHECK(weft_moe_backward(r->plan, d[T_X], &w, d[T_DY], d[T_DX], &g));
  seconds[1] = weft_time_now() - t0;
  return WEFT_OK;
}

/* What the file gets beyond the tensors: reductions of the ranks' stats. */
typedef struct check_totals {
  double seconds[2], aux_loss, z_loss;
  int64_t bytes_sent, bytes_min, bytes_payload, dropped;
  int64_t sums[2]; /* payload and minimum summed over the ranks */
} check_totals_t;

static weft_status_t reduce_stats(check_run_t *r, const double *seconds, check_totals_t *tot) {
  const weft_moe_stats_t *st = weft_moe_plan_stats(r->plan);
  uint64_t sent = st->fwd.payload + st->fwd.meta, payload = st->fwd.payload;
  uint64_t minimum = st->fwd.minimum;
  if (r->has_dy) {
    sent += st->bwd.payload + st->bwd.meta;
    payload += st->bwd.payload;
    minimum += st->bwd.minimum;
  }
  /* Slowest rank's times (i64 picoseconds: comm reduces no f64) and the largest byte counts. */
  int64_t mx[5] = {(int64_t)(seconds[0] * 1e12), (int64_t)(seconds[1] * 1e12), (int64_t)sent,
                   (int64_t)minimum, (int64_t)payload};
  WEFT_CHECK(
      weft_comm_allreduce(r->comm, mx, mx, 5, WEFT_DTYPE_I64, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  tot->seconds[0] = (double)mx[0] * 1e-12, tot->seconds[1] = (double)mx[1] * 1e-12;
  tot->bytes_sent = mx[2], tot->bytes_min = mx[3], tot->bytes_payload = mx[4];
  int64_t sums[3] = {st->dropped, (int64_t)payload, (int64_t)minimum};
  WEFT_CHECK(
      weft_comm_allreduce(r->comm, sums, sums, 3, WEFT_DTYPE_I64, WEFT_REDUCE_SUM, WEFT_MEM_HOST));
  tot->dropped = sums[0], tot->sums[0] = sums[1], tot->sums[1] = sums[2];
  /* The loss partials in double: all-gathered as bit patterns, summed in rank order. */
  double mine[2] = {st->aux_loss_partial, st->z_loss_partial};
  double *all = malloc((size_t)r->size * sizeof mine);
  if (!all) return WEFT_ERR_NO_MEMORY;
  weft_status_t s = weft_comm_allgather(r->comm, mine, all, 2, WEFT_DTYPE_I64, WEFT_MEM_HOST);
  tot->aux_loss = tot->z_loss = 0.0;
  for (int p = 0; p < r->size && s == WEFT_OK; p++)
    tot->aux_loss += all[2 * p], tot->z_loss += all[2 * p + 1];
  free(all);
  if (s != WEFT_OK || !r->has_dy) return s;
  /* The router gradient: each rank holds its tokens' share. */
  WEFT_CHECK(weft_device_copy(r->dev, r->host[T_DROUTER], r->dev_buf[T_DROUTER],
                              r->count[T_DROUTER] * sizeof(float), WEFT_COPY_DEVICE_TO_HOST));
  return weft_comm_allreduce(r->comm, r->host[T_DROUTER], r->host[T_DROUTER], r->count[T_DROUTER],
                             WEFT_DTYPE_F32, WEFT_REDUCE_SUM, WEFT_MEM_HOST);
}

static weft_status_t write_attrs(check_run_t *r, weft_tensor_file_t *file,
                                 const check_totals_t *tot) {
  const weft_moe_stats_t *st = weft_moe_plan_stats(r->plan);
  const struct {
    const char *name;
    int64_t value;
  } ints[] = {{"ranks", r->size},
              {"bytes_sent_max", tot->bytes_sent},
              {"bytes_sent_min_possible", tot->bytes_min},
              {"bytes_payload_max", tot->bytes_payload},
              {"bytes_payload_total", tot->sums[0]},
              {"bytes_min_total", tot->sums[1]},
              {"capacity", st->capacity},
              {"dropped", tot->dropped},
              {"topk", r->cfg.topk},
              {"normalize", r->cfg.normalize}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, ints[i].name, ints[i].value));
  const struct {
    const char *name;
    double value;
  } reals[] = {{"time_fwd_s", tot->seconds[0]},
               {"time_bwd_s", tot->seconds[1]},
               {"capacity_factor", r->cfg.capacity_factor},
               {"aux_weight", r->cfg.aux_weight},
               {"z_weight", r->cfg.z_weight}};
  for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
    WEFT_CHECK(weft_tensor_file_attr_write_f64(file, NULL, reals[i].name, reals[i].value));
  return weft_tensor_file_attr_write_str(file, NULL, "device", weft_device_kind_name(r->dev->kind));
}

static weft_status_t write_outputs(check_run_t *r, weft_tensor_file_t *file,
                                   const check_totals_t *tot) {
  static const int outs[] = {T_Y, T_DX, T_DW1, T_DW3, T_DW2};
  for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
    int t = outs[i];
    if (t != T_Y && !r->has_dy) break;
    int64_t global[3], start[3], count[3];
    int ndim = slab(r, t, global, start, count);
    WEFT_CHECK(weft_device_copy(r->dev, r->host[t], r->dev_buf[t], r->count[t] * sizeof(float),
                                WEFT_COPY_DEVICE_TO_HOST));
    WEFT_CHECK(weft_tensor_file_write_slab(file, k_names[t], WEFT_DTYPE_F32, ndim, global, start,
                                           count, r->host[t]));
  }
  const weft_moe_stats_t *st = weft_moe_plan_stats(r->plan);
  if (r->has_dy) {
    const int64_t shape[2] = {r->H, r->E};
    WEFT_CHECK(
        weft_tensor_file_write(file, "dw_router", WEFT_DTYPE_F32, 2, shape, r->host[T_DROUTER]));
  }
  WEFT_CHECK(weft_tensor_file_write(file, "counts", WEFT_DTYPE_I64, 1, &r->E, st->counts));
  WEFT_CHECK(weft_tensor_file_write_slab(file, "expert_rows", WEFT_DTYPE_I64, 1, &r->E, &r->e0,
                                         &r->el, st->expert_rows));
  const float losses[2] = {(float)tot->aux_loss, (float)tot->z_loss};
  WEFT_CHECK(weft_tensor_file_write(file, "aux_loss", WEFT_DTYPE_F32, 0, NULL, &losses[0]));
  WEFT_CHECK(weft_tensor_file_write(file, "z_loss", WEFT_DTYPE_F32, 0, NULL, &losses[1]));
  return write_attrs(r, file, tot);
}

static void print_summary(const check_run_t *r, const check_totals_t *tot) {
  const weft_moe_stats_t *st = weft_moe_plan_stats(r->plan);
  printf(CMD ": %d rank(s), %s, T %lld h %lld f %lld E %lld (%lld per rank) k %d", r->size,
         weft_device_kind_name(r->dev->kind), (long long)r->T, (long long)r->H, (long long)r->F,
         (long long)r->E, (long long)r->el, r->cfg.topk);
  if (st->capacity > 0)
    printf(", capacity %lld (%lld dropped)", (long long)st->capacity, (long long)tot->dropped);
  printf(": aux_loss %.6g, forward %.6f s", tot->aux_loss, tot->seconds[0]);
  if (r->has_dy) printf(", backward %.6f s", tot->seconds[1]);
  printf("; %lld B sent (max rank), payload %lld B, minimum %lld B -> %s\n",
         (long long)tot->bytes_sent, (long long)tot->bytes_payload, (long long)tot->bytes_min,
         r->opt->output);
  fflush(stdout);
}

static weft_status_t check_run(check_run_t *r) {
  weft_tensor_file_t *in = NULL;
  WEFT_CHECK(weft_tensor_file_open(r->opt->input, WEFT_TENSOR_FILE_READ, r->comm, &in));
  weft_status_t st = read_header(r, in);
  if (st == WEFT_OK && !r->input_error) st = alloc_buffers(r);
  if (st == WEFT_OK && !r->input_error) st = read_inputs(r, in);
  weft_status_t close_st = weft_tensor_file_close(in);
  if (st == WEFT_OK) st = close_st;
  if (st == WEFT_OK && !r->input_error) st = check_finite(r);
  if (st != WEFT_OK || r->input_error) return st;

  double seconds[2] = {0, 0};
  check_totals_t tot;
  WEFT_CHECK(compute(r, seconds));
  WEFT_CHECK(reduce_stats(r, seconds, &tot));
  weft_tensor_file_t *out = NULL;
  WEFT_CHECK(weft_tensor_file_create(r->opt->output, r->comm, &out));
  st = write_outputs(r, out, &tot);
  close_st = weft_tensor_file_close(out);
  WEFT_CHECK(st != WEFT_OK ? st : close_st);
  if (r->rank == 0) print_summary(r, &tot);
  return WEFT_OK;
}

static const weft_cli_command_t k_command = {
    "check moe", "Run the expert-parallel MoE layer on IN.h5 and write the results to OUT.h5.",
    "[--device cpu|cuda] --input IN.h5 --output OUT.h5", NULL};

static void print_format_help(void) {
  printf(
      "\nIN.h5 : x [T,h], w_router [h,E], w1 [E,h,f], w3 [E,h,f], w2 [E,f,h], float32;\n"
      "        optional dy [T,h]; root attributes topk (int 1..E, required), normalize (int\n"
      "        0/1, default 0), capacity_factor (float, default 0 = dropless), aux_weight,\n"
      "        z_weight (floats, default 0)\n"
      "        y = sum over the kept top-k slots of weight * (silu(x W1_e) * (x W3_e)) W2_e\n"
      "OUT.h5: y [T,h]; counts [E] (int64, slots routed to each expert before dropping);\n"
      "        expert_rows [E] (int64, slots processed after dropping); aux_loss, z_loss\n"
      "        (scalar float32, unweighted, whole batch); with dy also dx, dw_router, dw1,\n"
      "        dw3, dw2 (gradients of sum(y * dy) + aux_weight * aux_loss + z_weight * z_loss);\n"
      "        root attributes ranks, bytes_sent_max, bytes_sent_min_possible,\n"
      "        bytes_payload_max (busiest rank), bytes_payload_total, bytes_min_total (sums\n"
      "        over ranks), time_fwd_s, time_bwd_s (slowest rank),\n"
      "        capacity, dropped, topk, normalize, capacity_factor, aux_weight, z_weight, device\n"
      "The experts are split in equal contiguous blocks over the ranks (E divisible by P); the\n"
      "tokens contiguously (the first T %% P ranks get one more).\n");
}

int weft_check_moe(int argc, char **argv) {
  check_opts_t o = {"auto", NULL, NULL};
  const weft_cli_flag_t flags[] = {
      {"device", 0, WEFT_CLI_STRING, &o.device, "auto|cpu|cuda", "device each rank opens (auto)"},
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
  if (!o.input || !*o.input)
    problem = "--input IN.h5 is required";
  else if (!o.output || !*o.output)
    problem = "--output OUT.h5 is required";
  if (problem) {
    fprintf(stderr, CMD ": %s (see " CMD " --help)\n", problem);
    return WEFT_EXIT_USAGE;
  }
  weft_session_t session;
  weft_session_start(&session, "check moe", &argc, &argv, o.device);
  check_run_t r = {.opt = &o,
                   .comm = session.world,
                   .dev = session.boot.device,
                   .rank = session.boot.world_rank,
                   .size = session.boot.world_size};
  weft_status_t st = check_run(&r);
  if (st == WEFT_OK) free_buffers(&r); /* on failure the session aborts the job */
  int rc = weft_session_end(&session, st);
  return r.input_error ? WEFT_EXIT_FAILURE : rc;
}
