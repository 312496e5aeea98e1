/* Expert-parallel MoE layer: plan, forward, backward (see weft/moe_ep.h for the algorithm).
 *
 * The forward is a fixed sequence of device kernels and four exchanges:
 *   router GEMM + top-k -> ids/weights to the host -> all-gather counts [E] -> host routing
 *   (moe_ep_route.c) -> all-to-all-v metadata (host) -> gather rows -> all-to-all-v rows ->
 *   permute -> grouped experts -> weighted pre-sum per row -> all-to-all-v rows back -> sum.
 * The backward walks it in reverse with the same index lists. Every gather is one
 * weft_moe_gather_sum call, so the order of every floating-point sum is fixed by the lists and
 * a run is bitwise reproducible for a given number of ranks.
 *
 * Device buffers grow to the largest call seen (moe_dev_buf) and are reused; nothing is
 * allocated once the sizes have been seen. On the CPU device the index lists are used where
 * the routing built them; on CUDA they are copied to the device once per forward.
 *
 * Rejected: overlapping the expert GEMMs with the all-to-all-v (chunked pipelines as in
 * DeepEP's low-latency mode or Tutel). On the CPU ranks this runtime tests on, the exchange
 * and the GEMMs compete for the same cores; the per-pass times in the stats show what an
 * overlap could hide before anyone pays for its complexity. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe_ep_internal.h"
#include "weft/check.h"
#include "weft/elementwise.h"
#include "weft/gemm.h"
#include "weft/log.h"
#include "weft/moe.h"
#include "weft/timer.h"

/* Runs `expr` (a status-returning call), adding its wall time to `acc`. */
#define TIMED(acc, expr)                      \
  do {                                        \
    const double timed_t0_ = weft_time_now(); \
    WEFT_CHECK(expr);                         \
    (acc) += weft_time_now() - timed_t0_;     \
  } while (0)

/* ---- buffers -------------------------------------------------------------------------- */

typedef struct moe_dev_buf moe_dev_buf_t;

/* Makes `buf` hold at least `bytes` device bytes (contents not kept). */
static weft_status_t dev_reserve(weft_moe_plan_t *plan, moe_dev_buf_t *buf, size_t bytes) {
  if (bytes <= buf->cap && buf->ptr) {
    return WEFT_OK;
  }
  weft_device_free(plan->dev, buf->ptr);
  buf->ptr = NULL;
  buf->cap = 0;
  WEFT_CHECK(weft_device_alloc(plan->dev, bytes > 0 ? bytes : 1, &buf->ptr));
  buf->cap = bytes;
  return WEFT_OK;
}

#define DEV_RESERVE(buf, count, type) \
  WEFT_CHECK(dev_reserve(plan, &plan->buf, (size_t)(count) * sizeof(type)))

/* A host array as the kernels see it: itself on the CPU device, a device copy on CUDA. */
static weft_status_t dev_upload(weft_moe_plan_t *plan, moe_dev_buf_t *buf, const void *host,
                                size_t bytes, const void **dev_p) {
  if (!plan->on_device) {
    *dev_p = host;
    return WEFT_OK;
  }
  WEFT_CHECK(dev_reserve(plan, buf, bytes));
  if (bytes > 0) {
    WEFT_CHECK(weft_device_copy(plan->dev, buf->ptr, host, bytes, WEFT_COPY_HOST_TO_DEVICE));
  }
  *dev_p = buf->ptr;
  return WEFT_OK;
}

static weft_status_t host_grow(float **p, size_t *cap, size_t count) {
  if (count <= *cap && *p) {
    return WEFT_OK;
  }
  float *fresh = malloc((count > 0 ? count : 1) * sizeof *fresh);
  if (!fresh) {
    WEFT_ERROR("moe", "out of host memory for %zu floats", count);
    return WEFT_ERR_NO_MEMORY;
  }
  free(*p);
  *p = fresh;
  *cap = count;
  return WEFT_OK;
}

/* Bytes this rank sent in the communicator's most recent operation (self excluded). */
static uint64_t last_sent(const weft_comm_t *comm) {
  const weft_comm_peer_bytes_t *b = weft_comm_last_bytes(comm);
  uint64_t sum = 0;
  for (int p = 0; p < weft_comm_size(comm); ++p) {
    sum += b[p].sent;
  }
  return sum;
}

/* Fills the plan's all-to-all-v counts and displacements: `width` elements per unit, units
 * per peer from send_units / recv_units ([P] each). */
static void exchange_layout(weft_moe_plan_t *plan, const size_t *send_units,
                            const size_t *recv_units, size_t width) {
  size_t so = 0, ro = 0;
  for (int p = 0; p < plan->dims.ranks; ++p) {
    plan->scount[p] = send_units[p] * width;
    plan->rcount[p] = recv_units[p] * width;
    plan->sdispl[p] = so;
    plan->rdispl[p] = ro;
    so += plan->scount[p];
    ro += plan->rcount[p];
  }
}

/* ---- plan ------------------------------------------------------------------------------ */

static bool config_valid(const weft_moe_config_t *c, int ranks) {
  bool ok = true;
  if (c->hidden < 1 || c->ffn < 1 || c->experts < 1) {
    WEFT_ERROR("moe", "plan: hidden=%lld ffn=%lld experts=%lld must all be >= 1",
               (long long)c->hidden, (long long)c->ffn, (long long)c->experts);
    ok = false;
  } else if (c->experts % ranks != 0) {
    WEFT_ERROR("moe",
               "plan: experts=%lld is not divisible by the expert-parallel size %d (experts are "
               "sharded in equal contiguous blocks)",
               (long long)c->experts, ranks);
    ok = false;
  }
  if (c->topk < 1 || c->topk > c->experts) {
    WEFT_ERROR("moe", "plan: topk=%d must be in 1..experts (%lld)", c->topk, (long long)c->experts);
    ok = false;
  }
  if (!(c->capacity_factor >= 0 && isfinite(c->capacity_factor)) ||
      !(c->aux_weight >= 0 && isfinite(c->aux_weight)) ||
      !(c->z_weight >= 0 && isfinite(c->z_weight))) {
    WEFT_ERROR("moe", "plan: capacity_factor=%g aux_weight=%g z_weight=%g must be finite and >= 0",
               c->capacity_factor, c->aux_weight, c->z_weight);
    ok = false;
  }
  if (c->hidden > INT32_MAX || c->ffn > INT32_MAX || c->experts > INT32_MAX) {
    WEFT_ERROR("moe", "plan: hidden=%lld ffn=%lld experts=%lld exceed the int32 limit",
               (long long)c->hidden, (long long)c->ffn, (long long)c->experts);
    ok = false;
  }
  return ok;
}

/* Every rank's verdict and configuration are compared, so a rank with a bad or different
 * configuration makes every rank fail instead of leaving the others in a collective. */
static weft_status_t config_agree(weft_comm_t *comm, const weft_moe_config_t *c, bool ok) {
  if (!comm) {
    return WEFT_OK;
  }
  int64_t v[9] = {ok ? 0 : 1, c->hidden, c->ffn, c->experts, c->topk, c->normalize};
  memcpy(&v[6], &c->capacity_factor, sizeof(double));
  memcpy(&v[7], &c->aux_weight, sizeof(double));
  memcpy(&v[8], &c->z_weight, sizeof(double));
  int64_t lo[9], hi[9];
  WEFT_CHECK(weft_comm_allreduce(comm, v, lo, 9, WEFT_DTYPE_I64, WEFT_REDUCE_MIN, WEFT_MEM_HOST));
  WEFT_CHECK(weft_comm_allreduce(comm, v, hi, 9, WEFT_DTYPE_I64, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  if (hi[0] != 0) {
    if (ok) {
      WEFT_ERROR("moe", "plan: another rank of '%s' rejected its configuration",
                 weft_comm_name(comm));
    }
    return WEFT_ERR_INVALID_ARG;
  }
  if (memcmp(lo, hi, sizeof lo) != 0) {
    WEFT_ERROR("moe", "plan: the ranks of '%s' were given different MoE configurations",
               weft_comm_name(comm));
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_moe_plan_create(weft_comm_t *ep, weft_comm_t *replicas, weft_kernel_ctx_t *ctx,
                                   const weft_moe_config_t *config, weft_moe_plan_t **plan_p) {
  if (!ep || !ctx || !config || !plan_p) {
    WEFT_ERROR("moe", "plan: NULL argument (ep %p, ctx %p, config %p, plan_p %p)", (void *)ep,
               (void *)ctx, (const void *)config, (void *)plan_p);
    return WEFT_ERR_INVALID_ARG;
  }
  *plan_p = NULL;
  bool ok = config_valid(config, weft_comm_size(ep));
  const weft_device_t *cd = weft_comm_device(ep), *kd = weft_kernel_ctx_device(ctx);
  if (cd && kd && cd->kind != kd->kind) {
    WEFT_ERROR("moe", "plan: communicator on %s but kernel context on %s",
               weft_device_kind_name(cd->kind), weft_device_kind_name(kd->kind));
    ok = false;
  }
  WEFT_CHECK(config_agree(ep, config, ok));
  WEFT_CHECK(config_agree(replicas, config, ok));

  weft_moe_plan_t *plan = calloc(1, sizeof *plan);
  if (!plan) {
    return WEFT_ERR_NO_MEMORY;
  }
  plan->ep = ep;
  plan->replicas = replicas;
  plan->ctx = ctx;
  plan->dev = kd;
  plan->cfg = *config;
  plan->on_device = kd->kind != WEFT_DEVICE_CPU;
  plan->dims.experts = config->experts;
  plan->dims.ranks = weft_comm_size(ep);
  plan->dims.rank = weft_comm_rank(ep);
  plan->dims.local_experts = config->experts / plan->dims.ranks;
  plan->dims.k = config->topk;
  const size_t E = (size_t)config->experts;
  plan->counts_micro = calloc(E, sizeof *plan->counts_micro);
  plan->counts_step = calloc(E, sizeof *plan->counts_step);
  plan->psum_host = calloc(E, sizeof *plan->psum_host);
  plan->coef_host = calloc(E, sizeof *plan->coef_host);
  const size_t P = (size_t)plan->dims.ranks;
  plan->scount = calloc(4 * P, sizeof *plan->scount);
  if (!plan->counts_micro || !plan->counts_step || !plan->psum_host || !plan->coef_host ||
      !plan->scount) {
    weft_moe_plan_destroy(plan);
    return WEFT_ERR_NO_MEMORY;
  }
  plan->sdispl = plan->scount + P;
  plan->rcount = plan->scount + 2 * P;
  plan->rdispl = plan->scount + 3 * P;
  plan->stats.counts = plan->counts_micro;
  plan->stats.counts_step = plan->counts_step;
  *plan_p = plan;
  return WEFT_OK;
}

void weft_moe_plan_destroy(weft_moe_plan_t *plan) {
  if (!plan) {
    return;
  }
  moe_dev_buf_t *bufs[] = {
      &plan->logits,   &plan->probs,     &plan->lse,       &plan->ids,       &plan->weights,
      &plan->ones,     &plan->psum,      &plan->scalar,    &plan->coef,      &plan->dweights,
      &plan->dlogits,  &plan->send_rows, &plan->back_rows, &plan->recv_rows, &plan->out_rows,
      &plan->x_perm,   &plan->a,         &plan->b,         &plan->act,       &plan->y_perm,
      &plan->dy_perm,  &plan->dx_perm,   &plan->work,      &plan->dw_perm,   &plan->send_tok,
      &plan->tok_rows, &plan->perm_rows, &plan->perm_w,    &plan->comb_idx,  &plan->comb_w};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; ++i) {
    weft_device_free(plan->dev, bufs[i]->ptr);
  }
  moe_route_cleanup(&plan->route);
  free(plan->counts_micro);
  free(plan->counts_step);
  free(plan->psum_host);
  free(plan->coef_host);
  free(plan->scount);
  free(plan->dw_host);
  free(plan->dw_slots_recv);
  free(plan->dw_slots_sent);
  free(plan->dweights_host);
  free(plan);
}

const weft_moe_config_t *weft_moe_plan_config(const weft_moe_plan_t *plan) { return &plan->cfg; }
int64_t weft_moe_plan_local_experts(const weft_moe_plan_t *plan) {
  return plan->dims.local_experts;
}
int64_t weft_moe_plan_first_expert(const weft_moe_plan_t *plan) {
  return (int64_t)plan->dims.rank * plan->dims.local_experts;
}
const weft_moe_stats_t *weft_moe_plan_stats(const weft_moe_plan_t *plan) { return &plan->stats; }

void weft_moe_step_begin(weft_moe_plan_t *plan, int64_t global_tokens) {
  plan->step_open = true;
  plan->step_global_tokens = global_tokens > 0 ? global_tokens : 0;
  memset(plan->counts_step, 0, (size_t)plan->cfg.experts * sizeof *plan->counts_step);
  plan->stats.tokens_step = 0;
}

/* ---- forward --------------------------------------------------------------------------- */

/* Router on the rank's tokens, then ids and weights to the host routing. */
static weft_status_t forward_router(weft_moe_plan_t *plan, int64_t T, const float *x,
                                    const float *w_router) {
  const int64_t E = plan->cfg.experts, h = plan->cfg.hidden;
  const int k = plan->cfg.topk;
  DEV_RESERVE(logits, T * E, float);
  DEV_RESERVE(probs, T * E, float);
  DEV_RESERVE(lse, T, float);
  DEV_RESERVE(ids, T * k, int32_t);
  DEV_RESERVE(weights, T * k, float);
  weft_kernel_ctx_t *ctx = plan->ctx;
  /* logits [T,E] = x [T,h] W_r [h,E] */
  WEFT_CHECK(weft_gemm(ctx, false, false, T, E, h, 1.0f, WEFT_DTYPE_F32, x, h, WEFT_DTYPE_F32,
                       w_router, E, 0.0f, WEFT_DTYPE_F32, plan->logits.ptr, E));
  WEFT_CHECK(weft_moe_router_topk(ctx, T, E, k, plan->cfg.normalize, plan->logits.ptr,
                                  plan->probs.ptr, plan->lse.ptr, plan->ids.ptr,
                                  plan->weights.ptr));
  WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
  const size_t slots = (size_t)(T * k);
  WEFT_CHECK(weft_device_copy(plan->dev, plan->route.ids, plan->ids.ptr, slots * sizeof(int32_t),
                              WEFT_COPY_DEVICE_TO_HOST));
  WEFT_CHECK(weft_device_copy(plan->dev, plan->route.weights, plan->weights.ptr,
                              slots * sizeof(float), WEFT_COPY_DEVICE_TO_HOST));
  return WEFT_OK;
}

/* A barrier over ep (and the replicas) before a pass's first exchange, timed into *wait_s:
 * the time a rank waits there is other ranks still computing, which would otherwise be
 * booked as communication time by the first collective. */
static weft_status_t wait_for_ranks(weft_moe_plan_t *plan, double *wait_s) {
  TIMED(*wait_s, weft_comm_barrier(plan->ep));
  if (plan->replicas) {
    TIMED(*wait_s, weft_comm_barrier(plan->replicas));
  }
  return WEFT_OK;
}

/* A barrier over ep before the rows go back to their tokens' owners, timed into *wait_s: the
 * ranks' experts get different numbers of rows, and a rank whose experts finished first would
 * otherwise book its wait for the others' experts as communication time in the return
 * exchange. */
static weft_status_t wait_for_experts(weft_moe_plan_t *plan, double *wait_s) {
  TIMED(*wait_s, weft_comm_barrier(plan->ep));
  return WEFT_OK;
}

/* Counts: all-gather over ep, sum over the replicas, accumulate into the step. */
static weft_status_t forward_counts(weft_moe_plan_t *plan) {
  moe_route_t *r = &plan->route;
  const int64_t E = plan->cfg.experts;
  double *exchange_s = &plan->stats.fwd_time.exchange_s;
  moe_route_count(r, &plan->dims);
  WEFT_CHECK(wait_for_ranks(plan, &plan->stats.fwd_time.wait_s));
  TIMED(*exchange_s, weft_comm_allgather(plan->ep, r->counts_mine, r->counts_all, (size_t)E,
                                         WEFT_DTYPE_I64, WEFT_MEM_HOST));
  plan->stats.fwd.meta += last_sent(plan->ep);
  memset(plan->counts_micro, 0, (size_t)E * sizeof *plan->counts_micro);
  for (int s = 0; s < plan->dims.ranks; ++s) {
    for (int64_t e = 0; e < E; ++e) {
      plan->counts_micro[e] += r->counts_all[(int64_t)s * E + e];
    }
  }
  if (plan->replicas) {
    TIMED(*exchange_s,
          weft_comm_allreduce(plan->replicas, plan->counts_micro, plan->counts_micro, (size_t)E,
                              WEFT_DTYPE_I64, WEFT_REDUCE_SUM, WEFT_MEM_HOST));
  }
  if (!plan->step_open) { /* no explicit step: this forward is the whole step */
    memset(plan->counts_step, 0, (size_t)E * sizeof *plan->counts_step);
    plan->stats.tokens_step = 0;
  }
  int64_t slots = 0;
  for (int64_t e = 0; e < E; ++e) {
    plan->counts_step[e] += plan->counts_micro[e];
    slots += plan->counts_micro[e];
  }
  plan->stats.tokens_micro = slots / plan->cfg.topk;
  plan->stats.tokens_step += plan->stats.tokens_micro;
  plan->stats.global_tokens = plan->step_open && plan->step_global_tokens > 0
                                  ? plan->step_global_tokens
                                  : plan->stats.tokens_step;
  return WEFT_OK;
}

/* The two losses' shares and the per-expert LBL gradient coefficient. */
static weft_status_t forward_losses(weft_moe_plan_t *plan, int64_t T) {
  const int64_t E = plan->cfg.experts;
  const int k = plan->cfg.topk;
  weft_kernel_ctx_t *ctx = plan->ctx;
  DEV_RESERVE(ones, T, float);
  DEV_RESERVE(psum, E, float);
  DEV_RESERVE(scalar, 1, float);
  float zsum = 0.0f;
  if (T > 0) {
    /* psum [1,E] = ones [1,T] probs [T,E];  zsum = lse . lse */
    WEFT_CHECK(weft_elementwise_fill(ctx, WEFT_DTYPE_F32, T, 1.0f, plan->ones.ptr));
    WEFT_CHECK(weft_gemm(ctx, false, false, 1, E, T, 1.0f, WEFT_DTYPE_F32, plan->ones.ptr, T,
                         WEFT_DTYPE_F32, plan->probs.ptr, E, 0.0f, WEFT_DTYPE_F32, plan->psum.ptr,
                         E));
    WEFT_CHECK(weft_moe_row_dot(ctx, 1, T, plan->lse.ptr, T, NULL, plan->lse.ptr, T, NULL,
                                plan->scalar.ptr));
    WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
    WEFT_CHECK(weft_device_copy(plan->dev, plan->psum_host, plan->psum.ptr,
                                (size_t)E * sizeof(float), WEFT_COPY_DEVICE_TO_HOST));
    WEFT_CHECK(weft_device_copy(plan->dev, &zsum, plan->scalar.ptr, sizeof zsum,
                                WEFT_COPY_DEVICE_TO_HOST));
  } else {
    memset(plan->psum_host, 0, (size_t)E * sizeof *plan->psum_host);
  }
  const double Tg = (double)(plan->stats.global_tokens > 0 ? plan->stats.global_tokens : 1);
  const double slots_step = (double)(plan->stats.tokens_step > 0 ? plan->stats.tokens_step : 1) * k;
  double aux = 0.0;
  for (int64_t e = 0; e < E; ++e) {
    const double f = (double)plan->counts_step[e] / slots_step;
    aux += (double)E * f * (double)plan->psum_host[e] / Tg;
    plan->coef_host[e] = (float)(plan->cfg.aux_weight * (double)E * f / Tg);
  }
  plan->stats.aux_loss_partial = aux;
  plan->stats.z_loss_partial = (double)zsum / Tg;
  return WEFT_OK;
}

weft_status_t weft_moe_forward(weft_moe_plan_t *plan, int64_t tokens, const float *x,
                               const weft_moe_weights_t *w, float *y) {
  if (!plan || !w || tokens < 0 || (tokens > 0 && (!x || !y || !w->router))) {
    WEFT_ERROR("moe", "forward: bad arguments (plan %p, tokens %lld, x %p, y %p, weights %p)",
               (void *)plan, (long long)tokens, (const void *)x, (void *)y, (const void *)w);
    return WEFT_ERR_INVALID_ARG;
  }
  if (tokens > INT32_MAX / plan->cfg.topk / plan->dims.ranks) {
    WEFT_ERROR("moe", "forward: %lld tokens x topk %d x %d ranks exceed the int32 row index",
               (long long)tokens, plan->cfg.topk, plan->dims.ranks);
    return WEFT_ERR_UNSUPPORTED;
  }
  const int64_t h = plan->cfg.hidden, f = plan->cfg.ffn;
  const size_t hs = (size_t)h;
  moe_route_t *r = &plan->route;
  weft_kernel_ctx_t *ctx = plan->ctx;
  weft_moe_stats_t *st = &plan->stats;
  plan->have_forward = false;
  st->tokens = tokens;
  st->fwd = (weft_moe_pass_bytes_t){0};
  st->bwd = (weft_moe_pass_bytes_t){0};
  st->fwd_time = (weft_moe_pass_time_t){0};
  st->bwd_time = (weft_moe_pass_time_t){0};
  const double t_start = weft_time_now();

  WEFT_CHECK(moe_route_begin(r, &plan->dims, tokens));
  WEFT_CHECK(forward_router(plan, tokens, x, w->router));
  WEFT_CHECK(forward_counts(plan));
  WEFT_CHECK(moe_route_plan_send(r, &plan->dims, plan->cfg.capacity_factor));

  /* Routing metadata: three int32 per kept slot. */
  exchange_layout(plan, r->slots_to, r->slots_from, MOE_META_INTS);
  TIMED(st->fwd_time.exchange_s,
        weft_comm_alltoallv(plan->ep, r->send_meta, plan->scount, plan->sdispl, r->recv_meta,
                            plan->rcount, plan->rdispl, WEFT_DTYPE_I32, WEFT_MEM_HOST));
  st->fwd.meta += last_sent(plan->ep);
  WEFT_CHECK(moe_route_plan_recv(r, &plan->dims));

  const int64_t S = r->rows_sent, R = r->rows_recv, M = r->slots_recv;
  if (R > INT32_MAX || M > INT32_MAX) {
    WEFT_ERROR("moe", "forward: %lld received rows / %lld expert rows exceed the int32 index",
               (long long)R, (long long)M);
    return WEFT_ERR_UNSUPPORTED;
  }
  DEV_RESERVE(send_rows, S * h, float);
  DEV_RESERVE(back_rows, S * h, float);
  DEV_RESERVE(recv_rows, R * h, float);
  DEV_RESERVE(out_rows, R * h, float);
  DEV_RESERVE(x_perm, M * h, float);
  DEV_RESERVE(y_perm, M * h, float);
  DEV_RESERVE(a, M * f, float);
  DEV_RESERVE(b, M * f, float);
  DEV_RESERVE(act, M * f, float);
  struct moe_index_views *v = &plan->view; /* kept for the backward */
  WEFT_CHECK(
      dev_upload(plan, &plan->send_tok, r->send_tok, (size_t)S * sizeof(int32_t), &v->send_tok));
  WEFT_CHECK(dev_upload(plan, &plan->tok_rows, r->tok_rows,
                        (size_t)(tokens * r->fan_tok) * sizeof(int32_t), &v->tok_rows));
  WEFT_CHECK(
      dev_upload(plan, &plan->perm_rows, r->perm_rows, (size_t)M * sizeof(int32_t), &v->perm_rows));
  WEFT_CHECK(dev_upload(plan, &plan->perm_w, r->perm_w, (size_t)M * sizeof(float), &v->perm_w));
  WEFT_CHECK(dev_upload(plan, &plan->comb_idx, r->comb_idx,
                        (size_t)(R * r->fan_comb) * sizeof(int32_t), &v->comb_idx));
  WEFT_CHECK(dev_upload(plan, &plan->comb_w, r->comb_w, (size_t)(R * r->fan_comb) * sizeof(float),
                        &v->comb_w));

  /* Dispatch: one row per (token, destination rank). */
  WEFT_CHECK(weft_moe_gather_sum(ctx, S, h, 1, x, h, v->send_tok, NULL, plan->send_rows.ptr, h));
  WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
  exchange_layout(plan, r->rows_to, r->rows_from, hs);
  TIMED(st->fwd_time.payload_s, weft_comm_alltoallv(plan->ep, plan->send_rows.ptr, plan->scount,
                                                    plan->sdispl, plan->recv_rows.ptr, plan->rcount,
                                                    plan->rdispl, WEFT_DTYPE_F32, WEFT_MEM_DEVICE));
  st->fwd.payload += last_sent(plan->ep);

  /* Experts, expert-major, then the weighted pre-sum of each received row. */
  WEFT_CHECK(weft_moe_gather_sum(ctx, M, h, 1, plan->recv_rows.ptr, h, v->perm_rows, NULL,
                                 plan->x_perm.ptr, h));
  const weft_moe_experts_shape_t shape = {plan->dims.local_experts, h, f};
  const double t_experts = weft_time_now();
  WEFT_CHECK(weft_moe_experts_forward(ctx, &shape, r->expert_off, plan->x_perm.ptr, w->w1, w->w3,
                                      w->w2, plan->a.ptr, plan->b.ptr, plan->act.ptr,
                                      plan->y_perm.ptr));
  if (plan->on_device) WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
  st->fwd_time.experts_s = weft_time_now() - t_experts;
  WEFT_CHECK(weft_moe_gather_sum(ctx, R, h, r->fan_comb, plan->y_perm.ptr, h, v->comb_idx,
                                 v->comb_w, plan->out_rows.ptr, h));
  WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));

  /* Combine: the same counts in reverse, then each token sums the rows it gets back. */
  WEFT_CHECK(wait_for_experts(plan, &st->fwd_time.wait_s));
  TIMED(st->fwd_time.payload_s, weft_comm_alltoallv(plan->ep, plan->out_rows.ptr, plan->rcount,
                                                    plan->rdispl, plan->back_rows.ptr, plan->scount,
                                                    plan->sdispl, WEFT_DTYPE_F32, WEFT_MEM_DEVICE));
  st->fwd.payload += last_sent(plan->ep);
  WEFT_CHECK(weft_moe_gather_sum(ctx, tokens, h, r->fan_tok, plan->back_rows.ptr, h, v->tok_rows,
                                 NULL, y, h));
  WEFT_CHECK(forward_losses(plan, tokens));
  WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));

  st->fwd.minimum = (uint64_t)(r->min_rows_out + r->min_rows_in) * hs * sizeof(float);
  st->fwd_time.exchange_s += st->fwd_time.payload_s;
  st->fwd_time.total_s = weft_time_now() - t_start;
  st->capacity = r->capacity;
  st->dropped = r->dropped;
  st->expert_rows = r->expert_rows;
  st->rows_sent = S;
  st->rows_received = R;
  plan->have_forward = true;
  return WEFT_OK;
}

/* ---- backward -------------------------------------------------------------------------- */

/* Routing-weight gradients back to the tokens' owners, into dweights [T, k] on the device. */
static weft_status_t backward_weight_grads(weft_moe_plan_t *plan, const void **d_dweights) {
  moe_route_t *r = &plan->route;
  const int64_t M = r->slots_recv, Qs = r->slots_sent, T = r->tokens;
  const int k = plan->cfg.topk;
  WEFT_CHECK(host_grow(&plan->dw_host, &plan->cap_dw_host, (size_t)M));
  WEFT_CHECK(host_grow(&plan->dw_slots_recv, &plan->cap_dw_recv, (size_t)M));
  WEFT_CHECK(host_grow(&plan->dw_slots_sent, &plan->cap_dw_sent, (size_t)Qs));
  WEFT_CHECK(host_grow(&plan->dweights_host, &plan->cap_dweights, (size_t)(T * k)));
  WEFT_CHECK(weft_device_copy(plan->dev, plan->dw_host, plan->dw_perm.ptr,
                              (size_t)M * sizeof(float), WEFT_COPY_DEVICE_TO_HOST));
  for (int64_t q = 0; q < M; ++q) { /* back to message order */
    plan->dw_slots_recv[q] = plan->dw_host[r->slot_perm[q]];
  }
  /* the metadata exchange reversed: one float per kept slot */
  exchange_layout(plan, r->slots_from, r->slots_to, 1);
  TIMED(plan->stats.bwd_time.exchange_s,
        weft_comm_alltoallv(plan->ep, plan->dw_slots_recv, plan->scount, plan->sdispl,
                            plan->dw_slots_sent, plan->rcount, plan->rdispl, WEFT_DTYPE_F32,
                            WEFT_MEM_HOST));
  plan->stats.bwd.meta += last_sent(plan->ep);
  memset(plan->dweights_host, 0, (size_t)(T * k) * sizeof(float)); /* dropped slots: 0 */
  for (int64_t q = 0; q < Qs; ++q) {
    plan->dweights_host[r->send_slot[q]] = plan->dw_slots_sent[q];
  }
  return dev_upload(plan, &plan->dweights, plan->dweights_host, (size_t)(T * k) * sizeof(float),
                    d_dweights);
}

weft_status_t weft_moe_backward(weft_moe_plan_t *plan, const float *x, const weft_moe_weights_t *w,
                                const float *dy, float *dx, const weft_moe_grads_t *g) {
  if (!plan || !w || !g || !plan->have_forward) {
    WEFT_ERROR("moe", "backward: %s",
               plan && !plan->have_forward ? "no successful forward to differentiate"
                                           : "NULL plan, weights or gradients");
    return WEFT_ERR_INVALID_ARG;
  }
  moe_route_t *r = &plan->route;
  const int64_t T = r->tokens, h = plan->cfg.hidden, f = plan->cfg.ffn, E = plan->cfg.experts;
  const int64_t S = r->rows_sent, R = r->rows_recv, M = r->slots_recv;
  const int k = plan->cfg.topk;
  if (T > 0 && (!x || !dy || !dx || !g->router)) {
    WEFT_ERROR("moe", "backward: NULL x, dy, dx or router gradient for %lld tokens", (long long)T);
    return WEFT_ERR_INVALID_ARG;
  }
  weft_kernel_ctx_t *ctx = plan->ctx;
  weft_moe_stats_t *st = &plan->stats;
  st->bwd = (weft_moe_pass_bytes_t){0};
  st->bwd_time = (weft_moe_pass_time_t){0};
  const double t_start = weft_time_now();
  const size_t hs = (size_t)h;
  DEV_RESERVE(dy_perm, M * h, float);
  DEV_RESERVE(dx_perm, M * h, float);
  DEV_RESERVE(dw_perm, M, float);
  DEV_RESERVE(work, 2 * M * f, float);
  DEV_RESERVE(dlogits, T * E, float);
  const struct moe_index_views *v = &plan->view;

  /* Output gradients travel like the token rows did. */
  WEFT_CHECK(weft_moe_gather_sum(ctx, S, h, 1, dy, h, v->send_tok, NULL, plan->send_rows.ptr, h));
  WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
  exchange_layout(plan, r->rows_to, r->rows_from, hs);
  WEFT_CHECK(wait_for_ranks(plan, &st->bwd_time.wait_s));
  TIMED(st->bwd_time.payload_s, weft_comm_alltoallv(plan->ep, plan->send_rows.ptr, plan->scount,
                                                    plan->sdispl, plan->recv_rows.ptr, plan->rcount,
                                                    plan->rdispl, WEFT_DTYPE_F32, WEFT_MEM_DEVICE));
  st->bwd.payload += last_sent(plan->ep);

  /* Expert side: dY_e = w * dy, dw = <y_e, dy>, expert backward, pre-sum dx per row. */
  WEFT_CHECK(weft_moe_gather_sum(ctx, M, h, 1, plan->recv_rows.ptr, h, v->perm_rows, v->perm_w,
                                 plan->dy_perm.ptr, h));
  WEFT_CHECK(weft_moe_row_dot(ctx, M, h, plan->y_perm.ptr, h, NULL, plan->recv_rows.ptr, h,
                              v->perm_rows, plan->dw_perm.ptr));
  const weft_moe_experts_shape_t shape = {plan->dims.local_experts, h, f};
  const double t_experts = weft_time_now();
  WEFT_CHECK(weft_moe_experts_backward(
      ctx, &shape, r->expert_off, plan->x_perm.ptr, w->w1, w->w3, w->w2, plan->a.ptr, plan->b.ptr,
      plan->act.ptr, plan->dy_perm.ptr, plan->dx_perm.ptr, g->w1, g->w3, g->w2, plan->work.ptr));
  if (plan->on_device) WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
  st->bwd_time.experts_s = weft_time_now() - t_experts;
  WEFT_CHECK(weft_moe_gather_sum(ctx, R, h, r->fan_comb, plan->dx_perm.ptr, h, v->comb_idx, NULL,
                                 plan->out_rows.ptr, h));
  WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
  WEFT_CHECK(wait_for_experts(plan, &st->bwd_time.wait_s));
  TIMED(st->bwd_time.payload_s, weft_comm_alltoallv(plan->ep, plan->out_rows.ptr, plan->rcount,
                                                    plan->rdispl, plan->back_rows.ptr, plan->scount,
                                                    plan->sdispl, WEFT_DTYPE_F32, WEFT_MEM_DEVICE));
  st->bwd.payload += last_sent(plan->ep);
  const void *d_dweights;
  WEFT_CHECK(backward_weight_grads(plan, &d_dweights));

  /* Token side: dx = sum of returned rows + dlogits W_r^T;  dW_r += x^T dlogits. */
  WEFT_CHECK(
      weft_moe_gather_sum(ctx, T, h, r->fan_tok, plan->back_rows.ptr, h, v->tok_rows, NULL, dx, h));
  const void *d_coef;
  WEFT_CHECK(dev_upload(plan, &plan->coef, plan->coef_host, (size_t)E * sizeof(float), &d_coef));
  const double Tg = (double)(st->global_tokens > 0 ? st->global_tokens : 1);
  const float z_scale = (float)(2.0 * plan->cfg.z_weight / Tg);
  WEFT_CHECK(weft_moe_router_backward(ctx, T, E, k, plan->cfg.normalize, plan->probs.ptr,
                                      plan->lse.ptr, plan->ids.ptr, plan->weights.ptr, d_dweights,
                                      d_coef, z_scale, plan->dlogits.ptr));
  /* dx [T,h] += dlogits [T,E] W_r^T  (W_r stored [h,E]) */
  WEFT_CHECK(weft_gemm(ctx, false, true, T, h, E, 1.0f, WEFT_DTYPE_F32, plan->dlogits.ptr, E,
                       WEFT_DTYPE_F32, w->router, E, 1.0f, WEFT_DTYPE_F32, dx, h));
  /* dW_r [h,E] += x^T [h,T] dlogits [T,E] */
  WEFT_CHECK(weft_gemm(ctx, true, false, h, E, T, 1.0f, WEFT_DTYPE_F32, x, h, WEFT_DTYPE_F32,
                       plan->dlogits.ptr, E, 1.0f, WEFT_DTYPE_F32, g->router, E));
  WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
  st->bwd.minimum = st->fwd.minimum;
  st->bwd_time.exchange_s += st->bwd_time.payload_s;
  st->bwd_time.total_s = weft_time_now() - t_start;
  return WEFT_OK;
}
