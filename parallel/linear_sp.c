/* Sequence-parallel gated linear attention: plans, forward and backward (see linear_sp.h).
 *
 * Both passes have the same shape: a communication-free local kernel produces a [B,H,dk,dv]
 * state contribution x_p (S_local forward, dS_local backward) and the rank's row-wise decay
 * Gamma_p = exp(log_gamma_p); an exclusive scan over the ranks with the combine
 *   y = diag(Gamma_p) y_prev + x_p      (row = element / dv inside each [dk, dv] state)
 * gives what enters the rank (S_in forward, run 0 -> P-1; dS_out backward, run P-1 -> 0); a
 * second kernel finishes the rank's outputs. The three algorithms differ only in that scan
 * (hand_off below); the local kernels and the staging are shared, so the algorithms agree by
 * construction except for the order of floating-point operations inside the scan.
 *
 * The buffer holds B*H states back to back, so element e of the buffer belongs to state
 * e / (dk*dv) and row (e / dv) % dk, and its decay is gamma[e / dv] with gamma laid out
 * [B,H,dk]: one division per element, valid for any block boundary the All-Scan chooses.
 *
 * Zigzag plans are created here too (the kernels then see batch 2B, tokens n/2: kshape);
 * their passes, two scans per pass around a turn at rank P-1, are in linear_sp_zigzag.c. */
#include "weft/linear_sp.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "linear_sp_internal.h"
#include "weft/allscan.h"
#include "weft/check.h"
#include "weft/elementwise.h"
#include "weft/gemm.h"
#include "weft/log.h"
#include "weft/timer.h"

const char *weft_linear_sp_algo_name(weft_linear_sp_algo_t algo) {
  switch (algo) {
  case WEFT_LINEAR_SP_ZECO: return "zeco";
  case WEFT_LINEAR_SP_LASP2: return "lasp2";
  case WEFT_LINEAR_SP_RING: return "ring";
  }
  return "unknown";
}

weft_status_t weft_linear_sp_algo_parse(const char *text, weft_linear_sp_algo_t *algo_p) {
  static const weft_linear_sp_algo_t all[] = {WEFT_LINEAR_SP_ZECO, WEFT_LINEAR_SP_LASP2,
                                              WEFT_LINEAR_SP_RING};
  for (size_t i = 0; text && i < sizeof all / sizeof all[0]; i++) {
    if (strcmp(text, weft_linear_sp_algo_name(all[i])) == 0) {
      *algo_p = all[i];
      return WEFT_OK;
    }
  }
  return WEFT_ERR_INVALID_ARG;
}

const weft_gla_shape_t *weft_linear_sp_plan_shape(const weft_linear_sp_plan_t *plan) {
  return &plan->shape;
}

weft_linear_sp_algo_t weft_linear_sp_plan_algo(const weft_linear_sp_plan_t *plan) {
  return plan->algo;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static weft_status_t plan_alloc_device(weft_linear_sp_plan_t *plan, size_t count, float **p) {
  /* At least one element: a rank with no tokens still owns a valid (unused) pointer. */
  return weft_device_alloc(plan->dev, (count ? count : 1) * sizeof(float), (void **)p);
}

static weft_status_t plan_alloc_host(weft_linear_sp_plan_t *plan, size_t count, float **p) {
  return weft_host_alloc_pinned(plan->dev, (count ? count : 1) * sizeof(float), (void **)p);
}

void weft_linear_sp_plan_destroy(weft_linear_sp_plan_t *plan) {
  if (!plan) return;
  weft_device_free(plan->dev, plan->d_state);
  weft_device_free(plan->dev, plan->d_log_gamma);
  weft_device_free(plan->dev, plan->d_ds_out);
  weft_device_free(plan->dev, plan->d_ones);
  if (plan->staged || plan->zigzag) {
    weft_host_free_pinned(plan->dev, plan->h_local);
    weft_host_free_pinned(plan->dev, plan->h_log_gamma);
    weft_host_free_pinned(plan->dev, plan->h_result);
  }
  weft_host_free_pinned(plan->dev, plan->h_carry);
  weft_host_free_pinned(plan->dev, plan->h_gamma);
  weft_host_free_pinned(plan->dev, plan->h_pack);
  weft_host_free_pinned(plan->dev, plan->h_all);
  free(plan->unit);
  free(plan);
}

static weft_status_t plan_check_args(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                     const weft_gla_shape_t *s, weft_linear_sp_algo_t algo,
                                     bool zigzag, weft_linear_sp_plan_t **plan_p) {
  if (!sp || !ctx || !s || !plan_p) {
    WEFT_ERROR("parallel", "linear_sp plan: NULL argument (sp %p, ctx %p, shape %p, plan_p %p)",
               (void *)sp, (void *)ctx, (const void *)s, (void *)plan_p);
    return WEFT_ERR_INVALID_ARG;
  }
  if (s->batch < 1 || s->heads < 1 || s->dk < 1 || s->dv < 1 || s->tokens < 0 || s->chunk < 0) {
    WEFT_ERROR("parallel",
               "linear_sp plan: bad shape B %lld n %lld H %lld dk %lld dv %lld chunk %lld "
               "(B, H, dk, dv >= 1; n, chunk >= 0)",
               (long long)s->batch, (long long)s->tokens, (long long)s->heads, (long long)s->dk,
               (long long)s->dv, (long long)s->chunk);
    return WEFT_ERR_INVALID_ARG;
  }
  if (zigzag && s->tokens % 2 != 0) {
    WEFT_ERROR("parallel",
               "linear_sp zigzag plan: local tokens %lld must be even (two chunks of c tokens)",
               (long long)s->tokens);
    return WEFT_ERR_INVALID_ARG;
  }
  if (algo != WEFT_LINEAR_SP_ZECO && algo != WEFT_LINEAR_SP_LASP2 && algo != WEFT_LINEAR_SP_RING) {
    WEFT_ERROR("parallel", "linear_sp plan: unknown algorithm %d", (int)algo);
    return WEFT_ERR_INVALID_ARG;
  }
  if (s->layout_heads != 0 && s->layout_heads != s->heads) {
    WEFT_ERROR("parallel",
               "linear_sp plan: layout_heads %lld must be 0 or heads (%lld): a plan covers "
               "whole tensors",
               (long long)s->layout_heads, (long long)s->heads);
    return WEFT_ERR_INVALID_ARG;
  }
  const weft_device_t *cd = weft_comm_device(sp), *kd = weft_kernel_ctx_device(ctx);
  if (cd && kd && cd->kind != kd->kind) {
    WEFT_ERROR("parallel", "linear_sp plan: communicator on %s but kernel context on %s",
               weft_device_kind_name(cd->kind), weft_device_kind_name(kd->kind));
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* Cuts the (batch, head) pairs into about LINEAR_SP_UNITS units for the overlapped zeco
 * passes: ranges of whole batch elements when there are enough of them, otherwise head
 * groups of each batch element. The CUDA kernels take whole heads only, so there the units
 * are batch elements (and B = 1 gives one unit: no overlap). Allocated once, at creation. */
#define LINEAR_SP_UNITS 4

static weft_status_t plan_units(weft_linear_sp_plan_t *plan) {
  const weft_gla_shape_t *s = &plan->shape;
  int64_t B = s->batch, H = s->heads, per_b, groups;
  if (B >= LINEAR_SP_UNITS || plan->staged) {
    groups = B < LINEAR_SP_UNITS ? B : LINEAR_SP_UNITS; /* batch ranges, whole heads */
    per_b = 1;
  } else {
    per_b = (LINEAR_SP_UNITS + B - 1) / B; /* head groups per batch element */
    if (per_b > H) per_b = H;
    groups = B * per_b;
  }
  plan->unit = calloc((size_t)groups, sizeof *plan->unit);
  if (!plan->unit) return WEFT_ERR_NO_MEMORY;
  plan->units = (int)groups;
  size_t mat = (size_t)(s->dk * s->dv);
  for (int64_t u = 0; u < groups; u++) {
    linear_sp_unit_t *un = &plan->unit[u];
    if (per_b == 1) { /* batch elements [u*B/groups, (u+1)*B/groups) */
      un->b0 = u * B / groups;
      un->batch = (u + 1) * B / groups - un->b0;
      un->h0 = 0;
      un->heads = H;
    } else { /* heads [j*H/per_b, (j+1)*H/per_b) of batch element u / per_b */
      int64_t j = u % per_b;
      un->b0 = u / per_b;
      un->batch = 1;
      un->h0 = j * H / per_b;
      un->heads = (j + 1) * H / per_b - un->h0;
    }
    un->gamma_off = (size_t)((un->b0 * H + un->h0) * s->dk);
    un->state_off = un->gamma_off * (size_t)s->dv;
    un->state_count = (size_t)(un->batch * un->heads) * mat;
  }
  return WEFT_OK;
}

weft_linear_sp_stats_t weft_linear_sp_plan_stats(const weft_linear_sp_plan_t *plan) {
  return plan->stats;
}

void weft_linear_sp_plan_stats_reset(weft_linear_sp_plan_t *plan) {
  memset(&plan->stats, 0, sizeof plan->stats);
}

void weft_linear_sp_plan_set_overlap(weft_linear_sp_plan_t *plan, bool overlap) {
  if (plan) plan->overlap = overlap;
}

bool linear_sp_use_overlap(const weft_linear_sp_plan_t *plan) {
  return plan->algo == WEFT_LINEAR_SP_ZECO && plan->overlap && plan->can_overlap;
}

/* Both layouts: zigzag plans differ in their kernel shape, their host buffers (piece-major,
 * never aliases) and h_carry, and have no overlap units. */
static weft_status_t plan_create(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                 const weft_gla_shape_t *local_shape, weft_linear_sp_algo_t algo,
                                 size_t scan_blocks, bool zigzag, weft_linear_sp_plan_t **plan_p) {
  WEFT_CHECK(plan_check_args(sp, ctx, local_shape, algo, zigzag, plan_p));
  *plan_p = NULL;
  weft_linear_sp_plan_t *plan = calloc(1, sizeof *plan);
  if (!plan) return WEFT_ERR_NO_MEMORY;
  const weft_gla_shape_t *s = local_shape;
  plan->comm = sp;
  plan->ctx = ctx;
  plan->dev = weft_kernel_ctx_device(ctx);
  plan->shape = *s;
  plan->shape.layout_heads = s->heads;
  /* Zigzag: [B, 2c, H, d] is [2B, c, H, d] with batch index 2b + piece, so the kernels run
   * on both pieces at once with no copy (linear_sp_zigzag.c). */
  plan->kshape = plan->shape;
  if (zigzag) {
    plan->kshape.batch = 2 * s->batch;
    plan->kshape.tokens = s->tokens / 2;
  }
  plan->zigzag = zigzag;
  plan->algo = algo;
  plan->blocks = scan_blocks;
  plan->rank = weft_comm_rank(sp);
  plan->size = weft_comm_size(sp);
  plan->gamma_count = (size_t)(plan->kshape.batch * s->heads * s->dk);
  plan->state_count = plan->gamma_count * (size_t)s->dv;
  plan->staged = plan->dev->kind != WEFT_DEVICE_CPU;
  plan->overlap = true;

  weft_status_t st = WEFT_OK;
  /* Zigzag plans run one step after another (linear_sp.h, "Zigzag"): no units. */
  if (!zigzag) WEFT_CHECK_GOTO(plan_units(plan), st, fail);
  /* Decided once: the MPI thread level cannot change while the plan lives. */
  plan->can_overlap = plan->units > 1 && plan->size > 1 && weft_comm_progress_thread_ok();
  WEFT_CHECK_GOTO(plan_alloc_device(plan, plan->state_count, &plan->d_state), st, fail);
  WEFT_CHECK_GOTO(plan_alloc_device(plan, plan->gamma_count, &plan->d_log_gamma), st, fail);
  WEFT_CHECK_GOTO(plan_alloc_device(plan, plan->state_count, &plan->d_ds_out), st, fail);
  WEFT_CHECK_GOTO(plan_alloc_device(plan, (size_t)s->tokens, &plan->d_ones), st, fail);
  if (plan->staged || zigzag) { /* zigzag: the host copies are piece-major, not aliases */
    WEFT_CHECK_GOTO(plan_alloc_host(plan, plan->state_count, &plan->h_local), st, fail);
    WEFT_CHECK_GOTO(plan_alloc_host(plan, plan->gamma_count, &plan->h_log_gamma), st, fail);
    WEFT_CHECK_GOTO(plan_alloc_host(plan, plan->state_count, &plan->h_result), st, fail);
  } else {
    plan->h_local = plan->d_state;
    plan->h_log_gamma = plan->d_log_gamma;
  }
  WEFT_CHECK_GOTO(plan_alloc_host(plan, plan->gamma_count, &plan->h_gamma), st, fail);
  if (zigzag)
    WEFT_CHECK_GOTO(plan_alloc_host(plan, plan->state_count / 2, &plan->h_carry), st, fail);
  if (algo == WEFT_LINEAR_SP_LASP2) {
    size_t per = plan->state_count + plan->gamma_count;
    WEFT_CHECK_GOTO(plan_alloc_host(plan, per, &plan->h_pack), st, fail);
    WEFT_CHECK_GOTO(plan_alloc_host(plan, per * (size_t)plan->size, &plan->h_all), st, fail);
  }
  if (s->tokens > 0) {
    WEFT_CHECK_GOTO(weft_elementwise_fill(ctx, WEFT_DTYPE_F32, s->tokens, 1.0f, plan->d_ones), st,
                    fail);
    WEFT_CHECK_GOTO(weft_kernel_ctx_synchronize(ctx), st, fail);
  }
  *plan_p = plan;
  return WEFT_OK;
fail:
  weft_linear_sp_plan_destroy(plan);
  return st;
}

weft_status_t weft_linear_sp_plan_create(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                         const weft_gla_shape_t *local_shape,
                                         weft_linear_sp_algo_t algo, size_t scan_blocks,
                                         weft_linear_sp_plan_t **plan_p) {
  return plan_create(sp, ctx, local_shape, algo, scan_blocks, false, plan_p);
}

weft_status_t weft_linear_sp_plan_create_zigzag(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                                const weft_gla_shape_t *local_shape,
                                                weft_linear_sp_algo_t algo, size_t scan_blocks,
                                                weft_linear_sp_plan_t **plan_p) {
  return plan_create(sp, ctx, local_shape, algo, scan_blocks, true, plan_p);
}

/* ---- the state hand-off --------------------------------------------------------------- */

/* The one combine of every algorithm (design.md section 5); dst may alias local, not in. */
void linear_sp_combine_rows(const linear_sp_rows_t *rows, size_t offset, size_t len,
                            const float *in, const float *local, float *dst) {
  for (size_t i = 0; i < len; i++) dst[i] = rows->gamma[(offset + i) / rows->dv] * in[i] + local[i];
}

weft_status_t linear_sp_allscan_combine(void *user, size_t offset, size_t len, const void *incoming,
                                        const void *local, void *result) {
  linear_sp_combine_rows(user, offset, len, incoming, local, result);
  return WEFT_OK;
}

/* The decays of the whole state buffer. */
static linear_sp_rows_t plan_rows(const weft_linear_sp_plan_t *plan) {
  return (linear_sp_rows_t){plan->h_gamma, (size_t)plan->shape.dv};
}

static void exp_into(float *dst, const float *log_gamma, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = expf(log_gamma[i]);
}

/* Hop by hop, whole state, no pipelining: wait for the predecessor's state, combine, send. */
weft_status_t linear_sp_ring_scan(weft_linear_sp_plan_t *plan, bool forward, size_t n,
                                  const linear_sp_rows_t *rows, float *local, float *result) {
  int prev = forward ? plan->rank - 1 : plan->rank + 1;
  int next = forward ? plan->rank + 1 : plan->rank - 1;
  bool first = prev < 0 || prev >= plan->size, last = next < 0 || next >= plan->size;
  weft_comm_req_t req;
  if (!first) {
    WEFT_CHECK(weft_comm_irecv(plan->comm, result, n, WEFT_DTYPE_F32, prev, LINEAR_SP_RING_TAG,
                               WEFT_MEM_HOST, &req));
    WEFT_CHECK(weft_comm_wait(&req));
  }
  if (!last) {
    /* What leaves the first rank is x_p itself. Elsewhere local becomes what leaves this
     * rank; the caller no longer needs x_p on non-last ranks. */
    if (!first) linear_sp_combine_rows(rows, 0, n, result, local, local);
    WEFT_CHECK(weft_comm_isend(plan->comm, local, n, WEFT_DTYPE_F32, next, LINEAR_SP_RING_TAG,
                               WEFT_MEM_HOST, &req));
    WEFT_CHECK(weft_comm_wait(&req));
  }
  /* After the send: the zigzag turn passes result == local on the first rank. */
  if (first) memset(result, 0, n * sizeof(float));
  return WEFT_OK;
}

/* One all-gather of (x_q, log_gamma_q) from every rank, then the prefix (forward: ranks
 * 0..p-1 in order) or suffix (backward: P-1 down to p+1) folded locally. */
static weft_status_t lasp2_scan(weft_linear_sp_plan_t *plan, bool forward, const float *local,
                                float *result) {
  size_t n = plan->state_count, ng = plan->gamma_count, per = n + ng;
  memcpy(plan->h_pack, local, n * sizeof(float));
  memcpy(plan->h_pack + n, plan->h_log_gamma, ng * sizeof(float));
  WEFT_CHECK(weft_comm_allgather(plan->comm, plan->h_pack, plan->h_all, per, WEFT_DTYPE_F32,
                                 WEFT_MEM_HOST));
  memset(result, 0, n * sizeof(float));
  int from = forward ? 0 : plan->size - 1, to = plan->rank, step = forward ? 1 : -1;
  /* h_gamma is this rank's own decay; each folded rank's is recomputed into h_pack's tail
   * (this rank's pack is no longer needed once gathered). */
  float *gamma_q = plan->h_pack + n;
  linear_sp_rows_t rows = {gamma_q, (size_t)plan->shape.dv};
  for (int q = from; q != to; q += step) {
    const float *x_q = plan->h_all + (size_t)q * per;
    exp_into(gamma_q, x_q + n, ng);
    linear_sp_combine_rows(&rows, 0, n, result, x_q, result);
  }
  return WEFT_OK;
}

static weft_status_t hand_off(weft_linear_sp_plan_t *plan, bool forward, float *result);

/* hand_off, timed into the plan's statistics: nothing hides it. */
static weft_status_t hand_off_timed(weft_linear_sp_plan_t *plan, bool forward, float *result) {
  double t0 = weft_time_now();
  weft_status_t st = hand_off(plan, forward, result);
  double dt = weft_time_now() - t0;
  plan->stats.passes++;
  plan->stats.scan_s += dt;
  plan->stats.exposed_s += dt;
  return st;
}

/* Exclusive scan of h_local over the ranks (forward 0 -> P-1 or reverse), decays in h_gamma
 * and h_log_gamma. [out] result [B,H,dk,dv] host memory. May overwrite h_local on ranks other
 * than the last of the scan direction. */
static weft_status_t hand_off(weft_linear_sp_plan_t *plan, bool forward, float *result) {
  switch (plan->algo) {
  case WEFT_LINEAR_SP_ZECO: {
    linear_sp_rows_t rows = plan_rows(plan);
    weft_allscan_op_t op = {WEFT_DTYPE_F32, linear_sp_allscan_combine, &rows};
    return weft_allscan(plan->comm, plan->h_local, result, plan->state_count, &op,
                        forward ? WEFT_ALLSCAN_FORWARD : WEFT_ALLSCAN_REVERSE,
                        WEFT_ALLSCAN_EXCLUSIVE, plan->blocks, WEFT_MEM_HOST);
  }
  case WEFT_LINEAR_SP_LASP2: return lasp2_scan(plan, forward, plan->h_local, result);
  case WEFT_LINEAR_SP_RING: {
    linear_sp_rows_t rows = plan_rows(plan);
    return linear_sp_ring_scan(plan, forward, plan->state_count, &rows, plan->h_local, result);
  }
  }
  return WEFT_ERR_INTERNAL;
}

weft_status_t linear_sp_stage_down(weft_linear_sp_plan_t *plan, float *host, const float *dev,
                                   size_t count) {
  if (host == dev || count == 0) return WEFT_OK;
  return weft_device_copy(plan->dev, host, dev, count * sizeof(float), WEFT_COPY_DEVICE_TO_HOST);
}

weft_status_t linear_sp_stage_up(weft_linear_sp_plan_t *plan, float *dev, const float *host,
                                 size_t count) {
  if (host == dev || count == 0) return WEFT_OK;
  return weft_device_copy(plan->dev, dev, host, count * sizeof(float), WEFT_COPY_HOST_TO_DEVICE);
}

weft_status_t linear_sp_stage_contribution(weft_linear_sp_plan_t *plan, size_t off, size_t count,
                                           size_t goff, size_t gcount) {
  WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx));
  WEFT_CHECK(linear_sp_stage_down(plan, plan->h_local + off, plan->d_state + off, count));
  WEFT_CHECK(
      linear_sp_stage_down(plan, plan->h_log_gamma + goff, plan->d_log_gamma + goff, gcount));
  exp_into(plan->h_gamma + goff, plan->h_log_gamma + goff, gcount);
  return WEFT_OK;
}

/* The whole state and decay buffers. */
static weft_status_t stage_contribution(weft_linear_sp_plan_t *plan) {
  return linear_sp_stage_contribution(plan, 0, plan->state_count, 0, plan->gamma_count);
}

static weft_status_t check_call(const weft_linear_sp_plan_t *plan, const char *what, int nulls) {
  if (!plan) {
    WEFT_ERROR("parallel", "linear_sp %s: NULL plan", what);
    return WEFT_ERR_INVALID_ARG;
  }
  if (nulls && plan->shape.tokens > 0) {
    WEFT_ERROR("parallel", "linear_sp %s: NULL tensor with %lld local tokens", what,
               (long long)plan->shape.tokens);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* ---- forward and backward ------------------------------------------------------------- */

weft_status_t weft_linear_sp_forward(weft_linear_sp_plan_t *plan, const float *q, const float *k,
                                     const float *v, const float *g, float *out, float *s_in,
                                     float *final_state) {
  WEFT_CHECK(check_call(plan, "forward", !q + !k + !v + !g + !out));
  if (!s_in) {
    WEFT_ERROR("parallel", "linear_sp forward: NULL s_in");
    return WEFT_ERR_INVALID_ARG;
  }
  if (plan->zigzag) return linear_sp_zigzag_forward(plan, q, k, v, g, out, s_in, final_state);
  if (linear_sp_use_overlap(plan))
    return linear_sp_forward_overlapped(plan, q, k, v, g, out, s_in, final_state);
  const weft_gla_shape_t *s = &plan->shape;
  size_t n = plan->state_count;
  WEFT_CHECK(
      weft_gla_forward_local(plan->ctx, s, q, k, v, g, out, plan->d_state, plan->d_log_gamma));
  WEFT_CHECK(stage_contribution(plan));

  /* The scan overwrites h_local on every rank but the last, which keeps it for the final
   * state below. */
  float *result = plan->staged ? plan->h_result : s_in;
  WEFT_CHECK(hand_off_timed(plan, true, result));
  WEFT_CHECK(linear_sp_stage_up(plan, s_in, result, n));

  if (final_state && plan->rank == plan->size - 1) {
    /* S_end = diag(Gamma) S_in + S_local, on the host (in place into h_local when staged). */
    float *fs = plan->staged ? plan->h_local : final_state;
    linear_sp_rows_t rows = plan_rows(plan);
    linear_sp_combine_rows(&rows, 0, n, result, plan->h_local, fs);
    WEFT_CHECK(linear_sp_stage_up(plan, final_state, fs, n));
  }
  WEFT_CHECK(weft_gla_forward_correct(plan->ctx, s, q, g, s_in, out));
  return weft_kernel_ctx_synchronize(plan->ctx);
}

/* log_gamma [B,H,dk] = sum over tokens of g [B,n,H,dk]: per batch entry, ones[1,n] x g_b
 * [n, H*dk]. On the kernel shape, so a zigzag plan gets each piece's decay. */
weft_status_t linear_sp_recompute_log_gamma(weft_linear_sp_plan_t *plan, const float *g) {
  const weft_gla_shape_t *s = &plan->kshape;
  int64_t row = s->heads * s->dk;
  if (s->tokens == 0)
    return weft_elementwise_fill(plan->ctx, WEFT_DTYPE_F32, (int64_t)plan->gamma_count, 0.0f,
                                 plan->d_log_gamma);
  return weft_gemm_batched_strided(plan->ctx, false, false, 1, row, s->tokens, 1.0f, WEFT_DTYPE_F32,
                                   plan->d_ones, s->tokens, 0, WEFT_DTYPE_F32, g, row,
                                   s->tokens * row, 0.0f, WEFT_DTYPE_F32, plan->d_log_gamma, row,
                                   row, s->batch);
}

weft_status_t weft_linear_sp_backward(weft_linear_sp_plan_t *plan, const float *q, const float *k,
                                      const float *v, const float *g, const float *dout,
                                      const float *s_in, float *dq, float *dk, float *dv,
                                      float *dg) {
  WEFT_CHECK(check_call(plan, "backward", !q + !k + !v + !g + !dout + !dq + !dk + !dv + !dg));
  if (!s_in) {
    WEFT_ERROR("parallel", "linear_sp backward: NULL s_in");
    return WEFT_ERR_INVALID_ARG;
  }
  if (plan->zigzag) return linear_sp_zigzag_backward(plan, q, k, v, g, dout, s_in, dq, dk, dv, dg);
  if (linear_sp_use_overlap(plan))
    return linear_sp_backward_overlapped(plan, q, k, v, g, dout, s_in, dq, dk, dv, dg);
  const weft_gla_shape_t *s = &plan->shape;
  WEFT_CHECK(linear_sp_recompute_log_gamma(plan, g));
  WEFT_CHECK(weft_gla_backward_state_local(plan->ctx, s, q, g, dout, plan->d_state));
  WEFT_CHECK(stage_contribution(plan));
  /* dS_out(p) = dS_in(p+1): the reverse exclusive scan; zero on the last rank. */
  float *result = plan->staged ? plan->h_result : plan->d_ds_out;
  WEFT_CHECK(hand_off_timed(plan, false, result));
  WEFT_CHECK(linear_sp_stage_up(plan, plan->d_ds_out, result, plan->state_count));
  WEFT_CHECK(
      weft_gla_backward(plan->ctx, s, q, k, v, g, dout, s_in, plan->d_ds_out, dq, dk, dv, dg));
  return weft_kernel_ctx_synchronize(plan->ctx);
}
