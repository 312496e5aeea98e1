/* Sequence-parallel softmax attention: plans, the Ulysses stage and the ring core (see
 * attention_sp.h).
 *
 * Ulysses, ring and hybrid are one pipeline over a u x R factorisation of the P ranks
 * (u = P for Ulysses, 1 for ring, given for hybrid):
 *   1. Ulysses stage (u > 1): one all-to-all inside the group of u consecutive ranks turns
 *      [B,n,H,d] sequence shards into [B,L,nq,d] head shards over the group's L = u n tokens
 *      (member order), with the kv heads each member's query heads use.
 *   2. Ring core over the R ranks with the same member index: K,V blocks rotate; each rank
 *      attends its L queries to every block, merging (out, lse) in f32. With R = 1 it is plain
 *      local attention.
 *   3. Ulysses stage back: out and lse return to the ranks that own the tokens.
 * Nothing is reordered into natural token order: the kernel takes the global position of every
 * token, so a causal mask (and its tile skipping) is right for any arrangement of the tokens.
 *
 * Wire format of the all-to-alls: one message per peer holding every tensor of the stage back
 * to back ([q | k | v] forward), counted in units of 2 bytes when the dtype is bf16 (f32 parts
 * are 2 units per element) and of 4 bytes otherwise, so one call moves tensors of two dtypes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_sp_internal.h"
#include "weft/check.h"
#include "weft/elementwise.h"
#include "weft/log.h"

#define SUBSYS "attn_sp"

/* ---- small helpers ------------------------------------------------------------------ */

weft_status_t attn_sp_alloc(weft_attn_sp_plan_t *plan, size_t bytes, void **ptr_p) {
  *ptr_p = NULL;
  if (bytes == 0) return WEFT_OK;
  if (plan->nbuffers == ATTN_SP_MAX_BUFFERS) return WEFT_ERR_NO_MEMORY;
  WEFT_CHECK(weft_device_alloc(plan->dev, bytes, ptr_p));
  plan->buffers[plan->nbuffers++] = *ptr_p;
  return WEFT_OK;
}

uint64_t attn_sp_bytes_sent(const weft_attn_sp_plan_t *plan) {
  const weft_comm_t *comms[3] = {plan->sp, plan->uly_comm, plan->ring_comm};
  uint64_t sum = 0;
  for (int c = 0; c < 3; c++) {
    bool seen = comms[c] == NULL;
    for (int e = 0; e < c && !seen; e++) seen = comms[e] == comms[c];
    if (seen) continue;
    const weft_comm_peer_bytes_t *bytes = weft_comm_total_bytes(comms[c]);
    for (int p = 0; p < weft_comm_size(comms[c]); p++) sum += bytes[p].sent;
  }
  return sum;
}

weft_attn_shape_t attn_sp_shape(const weft_attn_sp_plan_t *plan, int64_t heads, int64_t kv_heads,
                                int64_t nq, int64_t nk) {
  weft_attn_shape_t s = {.batch = plan->cfg.batch,
                         .heads = heads,
                         .kv_heads = kv_heads,
                         .head_dim = plan->cfg.head_dim,
                         .q_len = nq,
                         .kv_len = nk,
                         .scale = plan->cfg.scale,
                         .causal = plan->cfg.causal,
                         .dtype = plan->cfg.dtype};
  return s;
}

weft_status_t attn_sp_copy2d(weft_attn_sp_plan_t *plan, void *dst, size_t dst_pitch,
                             const void *src, size_t src_pitch, size_t width, size_t rows) {
  return weft_device_copy_2d_async(plan->dev, dst, dst_pitch, src, src_pitch, width, rows,
                                   plan->d2d, plan->stream);
}

weft_status_t attn_sp_zero(weft_attn_sp_plan_t *plan, float *x, int64_t count) {
  return weft_elementwise_fill(plan->ctx, WEFT_DTYPE_F32, count, 0.0f, x);
}

static char *at(const void *base, size_t bytes) { return (char *)base + bytes; }

size_t attn_sp_wire_unit(const weft_attn_sp_plan_t *plan) { return plan->esz == 2 ? 2 : 4; }

weft_dtype_t attn_sp_wire_dtype(const weft_attn_sp_plan_t *plan) {
  return plan->esz == 2 ? WEFT_DTYPE_BF16 : WEFT_DTYPE_F32;
}

/* ---- life cycle ------------------------------------------------------------------- */

weft_attn_sp_algo_t weft_attn_sp_plan_algo(const weft_attn_sp_plan_t *plan) {
  return plan->cfg.algo;
}
int weft_attn_sp_plan_ulysses_degree(const weft_attn_sp_plan_t *plan) { return plan->u; }
const weft_attn_sp_layout_t *weft_attn_sp_plan_layout(const weft_attn_sp_plan_t *plan) {
  return &plan->layout;
}
const int64_t *weft_attn_sp_plan_positions(const weft_attn_sp_plan_t *plan) { return plan->h_pos; }
weft_attn_sp_stats_t weft_attn_sp_plan_stats(const weft_attn_sp_plan_t *plan) {
  return plan->stats;
}

void weft_attn_sp_plan_destroy(weft_attn_sp_plan_t *plan) {
  if (!plan) return;
  if (plan->ctx) (void)weft_kernel_ctx_synchronize(plan->ctx);
  for (int i = 0; i < plan->nbuffers; i++) weft_device_free(plan->dev, plan->buffers[i]);
  if (plan->uly_comm && plan->uly_comm != plan->sp) weft_comm_destroy(plan->uly_comm);
  if (plan->ring_comm && plan->ring_comm != plan->sp) weft_comm_destroy(plan->ring_comm);
  free(plan->split);
  free(plan->h_pos);
  free(plan->h_ring_pos);
  free(plan->cnt_send);
  free(plan);
}

static weft_status_t check_config(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                  const weft_attn_sp_config_t *c) {
  if (!sp || !ctx || !c) {
    WEFT_ERROR(SUBSYS, "attention plan: NULL argument (sp %p, ctx %p, config %p)", (void *)sp,
               (void *)ctx, (const void *)c);
    return WEFT_ERR_INVALID_ARG;
  }
  if (c->batch < 1 || c->heads < 1 || c->kv_heads < 1 || c->head_dim < 1 || c->seq_len < 1) {
    WEFT_ERROR(SUBSYS,
               "attention plan: bad shape B %lld H %lld Hkv %lld d %lld N %lld (all must be "
               ">= 1)",
               (long long)c->batch, (long long)c->heads, (long long)c->kv_heads,
               (long long)c->head_dim, (long long)c->seq_len);
    return WEFT_ERR_INVALID_ARG;
  }
  if (c->heads % c->kv_heads != 0) {
    WEFT_ERROR(SUBSYS, "attention plan: H = %lld is not a multiple of Hkv = %lld",
               (long long)c->heads, (long long)c->kv_heads);
    return WEFT_ERR_INVALID_ARG;
  }
  if ((unsigned)c->algo > WEFT_ATTN_SP_AUTO) {
    WEFT_ERROR(SUBSYS, "attention plan: unknown algorithm %d", (int)c->algo);
    return WEFT_ERR_INVALID_ARG;
  }
  const weft_device_t *kd = weft_kernel_ctx_device(ctx), *cd = weft_comm_device(sp);
  if (cd && kd && cd->kind != kd->kind) {
    WEFT_ERROR(SUBSYS, "attention plan: communicator on %s but kernel context on %s",
               weft_device_kind_name(cd->kind), weft_device_kind_name(kd->kind));
    return WEFT_ERR_INVALID_ARG;
  }
  bool cuda = kd && kd->kind == WEFT_DEVICE_CUDA;
  if (c->dtype != WEFT_DTYPE_F32 && !(cuda && c->dtype == WEFT_DTYPE_BF16)) {
    WEFT_ERROR(SUBSYS, "attention plan: dtype %s is not supported on the %s device (f32%s)",
               weft_dtype_name(c->dtype), weft_device_kind_name(kd->kind),
               cuda ? " or bf16" : " only");
    return WEFT_ERR_INVALID_ARG;
  }
  int P = weft_comm_size(sp);
  if (c->algo == WEFT_ATTN_SP_HYBRID && c->ulysses_degree != 0 &&
      (c->ulysses_degree < 1 || P % c->ulysses_degree != 0)) {
    WEFT_ERROR(SUBSYS, "attention plan: Ulysses degree %d does not divide the %d sp ranks",
               c->ulysses_degree, P);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* AUTO: predicts every candidate with the measured machine and keeps the fastest. */
static weft_status_t pick_algorithm(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                    weft_attn_sp_config_t *cfg) {
  int P = weft_comm_size(sp);
  weft_attn_sp_machine_t m;
  WEFT_CHECK(weft_attn_sp_machine_measure(sp, ctx, cfg, &m));
  /* Candidates: Ulysses, ring, TokenRing, and hybrid with every proper divisor u of P. */
  weft_attn_sp_algo_t algo[3 + 64];
  int degree[3 + 64], count = 0;
  for (int a = WEFT_ATTN_SP_ULYSSES; a <= WEFT_ATTN_SP_TOKENRING; a++) {
    algo[count] = (weft_attn_sp_algo_t)a;
    degree[count++] = 0;
  }
  for (int u = 2; u < P && count < 3 + 64; u++) {
    if (P % u != 0) continue;
    algo[count] = WEFT_ATTN_SP_HYBRID;
    degree[count++] = u;
  }
  weft_attn_sp_cost_t best = {0}, cost;
  char why[512];
  size_t used = 0;
  for (int i = 0; i < count; i++) {
    WEFT_CHECK(weft_attn_sp_cost_predict(cfg, algo[i], P, degree[i], &m, &cost));
    double t = cost.time_fwd_s + cost.time_bwd_s;
    if (used < sizeof why)
      used +=
          (size_t)snprintf(why + used, sizeof why - used, "%s%s(u=%d) %.3g ms", used ? ", " : "",
                           weft_attn_sp_algo_name(cost.algo), cost.ulysses_degree, 1e3 * t);
    if (i == 0 || t < best.time_fwd_s + best.time_bwd_s) best = cost;
  }
  if (weft_comm_rank(sp) == 0)
    WEFT_INFO(SUBSYS,
              "auto picked %s (u=%d) for B %lld N %lld H %lld Hkv %lld d %lld on %d ranks: "
              "predicted fwd+bwd %s; link %.3g GB/s, %.3g us, kernel %.3g GFLOP/s",
              weft_attn_sp_algo_name(best.algo), best.ulysses_degree, (long long)cfg->batch,
              (long long)cfg->seq_len, (long long)cfg->heads, (long long)cfg->kv_heads,
              (long long)cfg->head_dim, P, why, m.bandwidth_Bps / 1e9, m.latency_s * 1e6,
              m.flops_per_s / 1e9);
  cfg->algo = best.algo;
  cfg->ulysses_degree = best.ulysses_degree;
  return WEFT_OK;
}

/* Positions of every ring rank's L tokens: ring rank j is the Ulysses group j, whose tokens
 * are its members' slots in member order. */
static weft_status_t plan_positions(weft_attn_sp_plan_t *plan) {
  int64_t n = plan->n, L = plan->L;
  plan->h_pos = malloc((size_t)n * sizeof(int64_t));
  plan->h_ring_pos = malloc((size_t)(plan->ring_size * L) * sizeof(int64_t));
  if (!plan->h_pos || !plan->h_ring_pos) return WEFT_ERR_NO_MEMORY;
  for (int64_t s = 0; s < n; s++)
    plan->h_pos[s] = weft_attn_sp_layout_position(&plan->layout, plan->rank, s);
  for (int g = 0; g < plan->ring_size; g++)
    for (int m = 0; m < plan->u; m++)
      for (int64_t s = 0; s < n; s++)
        plan->h_ring_pos[g * L + m * n + s] =
            weft_attn_sp_layout_position(&plan->layout, g * plan->u + m, s);
  size_t bytes = (size_t)(plan->ring_size * L) * sizeof(int64_t);
  if (plan->dev->kind == WEFT_DEVICE_CPU) {
    plan->d_ring_pos = plan->h_ring_pos;
    return WEFT_OK;
  }
  WEFT_CHECK(attn_sp_alloc(plan, bytes, (void **)&plan->d_ring_pos));
  return weft_device_copy(plan->dev, plan->d_ring_pos, plan->h_ring_pos, bytes,
                          WEFT_COPY_HOST_TO_DEVICE);
}

static weft_status_t plan_buffers(weft_attn_sp_plan_t *plan) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  int64_t B = c->batch, d = c->head_dim, n = plan->n, L = plan->L;
  int64_t nq = plan->heads.nq, nkv = plan->heads.nkv;
  size_t e = plan->esz, f = sizeof(float);
  if (plan->u > 1) {
    /* Per token and peer i, the sum of what any stage sends to i (or receives from i): the
     * scatters send [q | k | v | dout] (dtype) and [lse | delta] (f32) at most, the gathers
     * [dq | dk | dv] or [out | lse] (f32) at most. The buffers are sized for that sum, which
     * bounds every stage without working out which one is largest for this split. */
    size_t per_tok = 0, recv_tok = 0;
    for (int i = 0; i < plan->u; i++) {
      attn_sp_heads_t s = plan->split[i];
      per_tok += (size_t)((2 * s.nq + 2 * s.nkv) * d) * e + (size_t)(2 * s.nq) * f;
      per_tok += (size_t)((nq + 2 * nkv) * d + nq) * f;
      recv_tok += (size_t)((2 * nq + 2 * nkv) * d) * e + (size_t)(2 * nq) * f;
      recv_tok += (size_t)((s.nq + 2 * s.nkv) * d + s.nq) * f;
    }
    size_t tok = (size_t)(B * n);
    WEFT_CHECK(attn_sp_alloc(plan, tok * per_tok, &plan->u_send));
    WEFT_CHECK(attn_sp_alloc(plan, tok * recv_tok, &plan->u_recv));
    size_t qb = (size_t)(B * L * nq * d), kb = (size_t)(B * L * nkv * d);
    WEFT_CHECK(attn_sp_alloc(plan, qb * e, &plan->hq));
    WEFT_CHECK(attn_sp_alloc(plan, kb * e, &plan->hk));
    WEFT_CHECK(attn_sp_alloc(plan, kb * e, &plan->hv));
    WEFT_CHECK(attn_sp_alloc(plan, qb * e, &plan->hdout));
    WEFT_CHECK(attn_sp_alloc(plan, qb * f, (void **)&plan->hout));
    WEFT_CHECK(attn_sp_alloc(plan, qb * f, (void **)&plan->hdq));
    WEFT_CHECK(attn_sp_alloc(plan, kb * f, (void **)&plan->hdk));
    WEFT_CHECK(attn_sp_alloc(plan, kb * f, (void **)&plan->hdv));
    WEFT_CHECK(attn_sp_alloc(plan, (size_t)(B * nq * L) * f, (void **)&plan->hlse));
    WEFT_CHECK(attn_sp_alloc(plan, (size_t)(B * nq * L) * f, (void **)&plan->hdelta));
    if (plan->kv_replicated)
      WEFT_CHECK(
          attn_sp_alloc(plan, (size_t)(B * n * c->kv_heads * d) * f, (void **)&plan->kv_tmp));
    plan->cnt_send = calloc(4 * (size_t)plan->u, sizeof(size_t));
    if (!plan->cnt_send) return WEFT_ERR_NO_MEMORY;
    plan->dsp_send = plan->cnt_send + plan->u;
    plan->cnt_recv = plan->dsp_send + plan->u;
    plan->dsp_recv = plan->cnt_recv + plan->u;
  }
  WEFT_CHECK(attn_sp_alloc(plan, (size_t)(B * c->heads * n) * f, (void **)&plan->s_delta));
  if (plan->ring_size > 1 && nq > 0) {
    size_t kb = (size_t)(B * L * nkv * d);
    for (int i = 0; i < 2; i++) {
      WEFT_CHECK(attn_sp_alloc(plan, 2 * kb * e, &plan->kv_buf[i]));
      WEFT_CHECK(attn_sp_alloc(plan, 2 * kb * f, (void **)&plan->acc_buf[i]));
    }
    WEFT_CHECK(attn_sp_alloc(plan, (size_t)(B * L * nq * d) * f, (void **)&plan->blk_out));
    WEFT_CHECK(attn_sp_alloc(plan, (size_t)(B * nq * L) * f, (void **)&plan->blk_lse));
  }
  return WEFT_OK;
}

static weft_status_t plan_comms(weft_attn_sp_plan_t *plan, weft_comm_t *sp) {
  int P = plan->size, u = plan->u;
  plan->member = plan->rank % u;
  plan->ring_index = plan->rank / u;
  plan->ring_size = P / u;
  if (u == 1) {
    plan->ring_comm = sp;
  } else if (u == P) {
    plan->uly_comm = sp;
  } else {
    WEFT_CHECK(weft_comm_split(sp, plan->ring_index, plan->rank, "ulysses", &plan->uly_comm));
    WEFT_CHECK(weft_comm_split(sp, plan->member, plan->rank, "ring", &plan->ring_comm));
  }
  return WEFT_OK;
}

weft_status_t weft_attn_sp_plan_create(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                       const weft_attn_sp_config_t *cfg,
                                       weft_attn_sp_plan_t **plan_p) {
  if (!plan_p) return WEFT_ERR_INVALID_ARG;
  *plan_p = NULL;
  WEFT_CHECK(check_config(sp, ctx, cfg));
  weft_attn_sp_plan_t *plan = calloc(1, sizeof *plan);
  if (!plan) return WEFT_ERR_NO_MEMORY;
  weft_status_t st = WEFT_OK;
  plan->sp = sp;
  plan->ctx = ctx;
  plan->dev = weft_kernel_ctx_device(ctx);
  plan->stream = weft_kernel_ctx_stream(ctx);
  plan->d2d =
      plan->dev->kind == WEFT_DEVICE_CPU ? WEFT_COPY_HOST_TO_HOST : WEFT_COPY_DEVICE_TO_DEVICE;
  plan->cfg = *cfg;
  if (plan->cfg.scale == 0.0f) plan->cfg.scale = 1.0f / sqrtf((float)cfg->head_dim);
  plan->rank = weft_comm_rank(sp);
  plan->size = weft_comm_size(sp);
  plan->esz = (size_t)attn_sp_dtype_bytes(cfg->dtype);
  if (plan->cfg.algo == WEFT_ATTN_SP_AUTO) {
    if (plan->size == 1) {
      plan->cfg.algo = WEFT_ATTN_SP_RING; /* one rank: every algorithm is local attention */
    } else {
      WEFT_CHECK_GOTO(pick_algorithm(sp, ctx, &plan->cfg), st, fail);
    }
  }
  switch (plan->cfg.algo) {
  case WEFT_ATTN_SP_ULYSSES: plan->u = plan->size; break;
  case WEFT_ATTN_SP_HYBRID:
    plan->u = plan->cfg.ulysses_degree > 0 ? plan->cfg.ulysses_degree
                                           : attn_sp_default_ulysses(plan->size);
    break;
  default: plan->u = 1; break;
  }
  plan->cfg.ulysses_degree = plan->u;
  WEFT_CHECK_GOTO(
      weft_attn_sp_layout_init(&plan->layout, cfg->seq_len, plan->size, plan->cfg.causal), st,
      fail);
  plan->n = plan->layout.local;
  plan->L = plan->u * plan->n;
  plan->split = calloc((size_t)plan->u, sizeof *plan->split);
  if (!plan->split) {
    st = WEFT_ERR_NO_MEMORY;
    goto fail;
  }
  int64_t kv_total = 0;
  for (int i = 0; i < plan->u; i++) {
    plan->split[i] = attn_sp_heads_of(cfg->heads, cfg->kv_heads, plan->u, i);
    kv_total += plan->split[i].nkv;
  }
  plan->kv_replicated = kv_total > cfg->kv_heads;
  WEFT_CHECK_GOTO(plan_comms(plan, sp), st, fail);
  plan->heads = plan->split[plan->member];
  WEFT_CHECK_GOTO(plan_positions(plan), st, fail);
  WEFT_CHECK_GOTO(plan_buffers(plan), st, fail);
  if (plan->cfg.algo == WEFT_ATTN_SP_TOKENRING)
    WEFT_CHECK_GOTO(attn_sp_tokenring_alloc(plan), st, fail);
  *plan_p = plan;
  return WEFT_OK;
fail:
  weft_attn_sp_plan_destroy(plan);
  return st;
}

/* ---- Ulysses stage -------------------------------------------------------------- */

/* Runs the packed all-to-all of the Ulysses group: per peer i, send_bytes[i] out and
 * recv_bytes[i] in, back to back in u_send / u_recv. */
static weft_status_t ulysses_exchange(weft_attn_sp_plan_t *plan, const size_t *send_bytes,
                                      const size_t *recv_bytes) {
  size_t unit = attn_sp_wire_unit(plan), so = 0, ro = 0;
  for (int i = 0; i < plan->u; i++) {
    plan->cnt_send[i] = send_bytes[i] / unit;
    plan->dsp_send[i] = so;
    plan->cnt_recv[i] = recv_bytes[i] / unit;
    plan->dsp_recv[i] = ro;
    so += plan->cnt_send[i];
    ro += plan->cnt_recv[i];
  }
  WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx)); /* packs done before MPI reads */
  return weft_comm_alltoallv(plan->uly_comm, plan->u_send, plan->cnt_send, plan->dsp_send,
                             plan->u_recv, plan->cnt_recv, plan->dsp_recv, attn_sp_wire_dtype(plan),
                             WEFT_MEM_DEVICE);
}

/* Packs the heads [x0, x0 + nx) of a [B,n,Hx,d] tensor (element size es) as [B,n,nx,d]. */
static weft_status_t pack_heads(weft_attn_sp_plan_t *plan, void *dst, const void *src, int64_t Hx,
                                int64_t x0, int64_t nx, size_t es) {
  size_t row = (size_t)plan->cfg.head_dim * es;
  return attn_sp_copy2d(plan, dst, (size_t)nx * row, at(src, (size_t)x0 * row), (size_t)Hx * row,
                        (size_t)nx * row, (size_t)(plan->cfg.batch * plan->n));
}

/* Inverse of pack_heads: a [B,n,nx,d] block into heads [x0, x0 + nx) of [B,n,Hx,d]. */
static weft_status_t unpack_heads(weft_attn_sp_plan_t *plan, void *dst, const void *src, int64_t Hx,
                                  int64_t x0, int64_t nx, size_t es) {
  size_t row = (size_t)plan->cfg.head_dim * es;
  return attn_sp_copy2d(plan, at(dst, (size_t)x0 * row), (size_t)Hx * row, src, (size_t)nx * row,
                        (size_t)nx * row, (size_t)(plan->cfg.batch * plan->n));
}

/* Member j's slots of a head-shard tensor [B,L,nx,d] <-> a [B,n,nx,d] block. */
static weft_status_t shard_tokens(weft_attn_sp_plan_t *plan, void *shard, void *block, int j,
                                  int64_t nx, size_t es, bool to_shard) {
  size_t blk = (size_t)(plan->n * nx * plan->cfg.head_dim) * es;
  size_t pitch = (size_t)plan->u * blk; /* one batch entry of the shard: L tokens */
  void *slot = at(shard, (size_t)j * blk);
  size_t rows = (size_t)plan->cfg.batch;
  return to_shard ? attn_sp_copy2d(plan, slot, pitch, block, blk, blk, rows)
                  : attn_sp_copy2d(plan, block, blk, slot, pitch, blk, rows);
}

/* Heads [x0, x0 + nx) of a [B,H,n] row tensor <-> a [B,nx,n] block. */
static weft_status_t rows_heads(weft_attn_sp_plan_t *plan, float *seq, float *block, int64_t x0,
                                int64_t nx, bool to_block) {
  size_t w = (size_t)(nx * plan->n) * sizeof(float);
  size_t pitch = (size_t)(plan->cfg.heads * plan->n) * sizeof(float);
  float *s = seq + x0 * plan->n;
  size_t rows = (size_t)plan->cfg.batch;
  return to_block ? attn_sp_copy2d(plan, block, w, s, pitch, w, rows)
                  : attn_sp_copy2d(plan, s, pitch, block, w, w, rows);
}

/* Member j's columns of a head-shard row tensor [B,nq,L] <-> a [B,nq,n] block. */
static weft_status_t shard_rows(weft_attn_sp_plan_t *plan, float *shard, float *block, int j,
                                bool to_shard) {
  size_t w = (size_t)plan->n * sizeof(float), pitch = (size_t)plan->L * sizeof(float);
  float *s = shard + j * plan->n;
  size_t rows = (size_t)(plan->cfg.batch * plan->heads.nq);
  return to_shard ? attn_sp_copy2d(plan, s, pitch, block, w, w, rows)
                  : attn_sp_copy2d(plan, block, w, s, pitch, w, rows);
}

/* Forward scatter: [q | k | v] of this rank's slots to every member, heads of that member. */
static weft_status_t ulysses_scatter_fwd(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                         const void *v) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  size_t e = plan->esz, tok = (size_t)(c->batch * plan->n * c->head_dim) * e;
  size_t sb[plan->u], rb[plan->u], off = 0;
  for (int i = 0; i < plan->u; i++) {
    attn_sp_heads_t s = plan->split[i];
    char *p = at(plan->u_send, off);
    WEFT_CHECK(pack_heads(plan, p, q, c->heads, s.q0, s.nq, e));
    WEFT_CHECK(pack_heads(plan, p + s.nq * tok, k, c->kv_heads, s.kv0, s.nkv, e));
    WEFT_CHECK(pack_heads(plan, p + (s.nq + s.nkv) * tok, v, c->kv_heads, s.kv0, s.nkv, e));
    sb[i] = (size_t)(s.nq + 2 * s.nkv) * tok;
    rb[i] = (size_t)(plan->heads.nq + 2 * plan->heads.nkv) * tok;
    off += sb[i];
  }
  WEFT_CHECK(ulysses_exchange(plan, sb, rb));
  int64_t nq = plan->heads.nq, nkv = plan->heads.nkv;
  for (int j = 0; j < plan->u; j++) {
    char *p = at(plan->u_recv, plan->dsp_recv[j] * attn_sp_wire_unit(plan));
    WEFT_CHECK(shard_tokens(plan, plan->hq, p, j, nq, e, true));
    WEFT_CHECK(shard_tokens(plan, plan->hk, p + nq * tok, j, nkv, e, true));
    WEFT_CHECK(shard_tokens(plan, plan->hv, p + (nq + nkv) * tok, j, nkv, e, true));
  }
  return WEFT_OK;
}

/* Forward gather: [out | lse] of member j's slots back to j. */
static weft_status_t ulysses_gather_fwd(weft_attn_sp_plan_t *plan, float *out, float *lse) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  size_t f = sizeof(float), tok = (size_t)(c->batch * plan->n * c->head_dim) * f;
  size_t row = (size_t)(c->batch * plan->n) * f;
  int64_t nq = plan->heads.nq;
  size_t sb[plan->u], rb[plan->u], off = 0;
  for (int j = 0; j < plan->u; j++) {
    char *p = at(plan->u_send, off);
    WEFT_CHECK(shard_tokens(plan, plan->hout, p, j, nq, f, false));
    WEFT_CHECK(shard_rows(plan, plan->hlse, (float *)(p + nq * tok), j, false));
    sb[j] = (size_t)nq * (tok + row);
    rb[j] = (size_t)plan->split[j].nq * (tok + row);
    off += sb[j];
  }
  WEFT_CHECK(ulysses_exchange(plan, sb, rb));
  for (int i = 0; i < plan->u; i++) {
    attn_sp_heads_t s = plan->split[i];
    char *p = at(plan->u_recv, plan->dsp_recv[i] * attn_sp_wire_unit(plan));
    WEFT_CHECK(unpack_heads(plan, out, p, c->heads, s.q0, s.nq, f));
    WEFT_CHECK(rows_heads(plan, lse, (float *)(p + s.nq * tok), s.q0, s.nq, false));
  }
  return WEFT_OK;
}

/* Backward scatter: [q | k | v | dout | lse | delta]. */
static weft_status_t ulysses_scatter_bwd(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                         const void *v, const void *dout, const float *lse) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  size_t e = plan->esz, f = sizeof(float);
  size_t tok = (size_t)(c->batch * plan->n * c->head_dim) * e;
  size_t row = (size_t)(c->batch * plan->n) * f;
  size_t sb[plan->u], rb[plan->u], off = 0;
  int64_t nq = plan->heads.nq, nkv = plan->heads.nkv;
  for (int i = 0; i < plan->u; i++) {
    attn_sp_heads_t s = plan->split[i];
    char *p = at(plan->u_send, off);
    WEFT_CHECK(pack_heads(plan, p, q, c->heads, s.q0, s.nq, e));
    p += s.nq * tok;
    WEFT_CHECK(pack_heads(plan, p, k, c->kv_heads, s.kv0, s.nkv, e));
    p += s.nkv * tok;
    WEFT_CHECK(pack_heads(plan, p, v, c->kv_heads, s.kv0, s.nkv, e));
    p += s.nkv * tok;
    WEFT_CHECK(pack_heads(plan, p, dout, c->heads, s.q0, s.nq, e));
    p += s.nq * tok;
    WEFT_CHECK(rows_heads(plan, (float *)lse, (float *)p, s.q0, s.nq, true));
    WEFT_CHECK(rows_heads(plan, plan->s_delta, (float *)(p + s.nq * row), s.q0, s.nq, true));
    sb[i] = (size_t)(2 * s.nq + 2 * s.nkv) * tok + (size_t)(2 * s.nq) * row;
    rb[i] = (size_t)(2 * nq + 2 * nkv) * tok + (size_t)(2 * nq) * row;
    off += sb[i];
  }
  WEFT_CHECK(ulysses_exchange(plan, sb, rb));
  for (int j = 0; j < plan->u; j++) {
    char *p = at(plan->u_recv, plan->dsp_recv[j] * attn_sp_wire_unit(plan));
    WEFT_CHECK(shard_tokens(plan, plan->hq, p, j, nq, e, true));
    p += nq * tok;
    WEFT_CHECK(shard_tokens(plan, plan->hk, p, j, nkv, e, true));
    p += nkv * tok;
    WEFT_CHECK(shard_tokens(plan, plan->hv, p, j, nkv, e, true));
    p += nkv * tok;
    WEFT_CHECK(shard_tokens(plan, plan->hdout, p, j, nq, e, true));
    p += nq * tok;
    WEFT_CHECK(shard_rows(plan, plan->hlse, (float *)p, j, true));
    WEFT_CHECK(shard_rows(plan, plan->hdelta, (float *)(p + nq * row), j, true));
  }
  return WEFT_OK;
}

/* Backward gather: [dq | dk | dv] of member j's slots back to j; the kv gradients of a head
 * held by several members are summed at the owner. */
static weft_status_t ulysses_gather_bwd(weft_attn_sp_plan_t *plan, float *dq, float *dk,
                                        float *dv) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  size_t f = sizeof(float), tok = (size_t)(c->batch * plan->n * c->head_dim) * f;
  int64_t nq = plan->heads.nq, nkv = plan->heads.nkv;
  size_t sb[plan->u], rb[plan->u], off = 0;
  for (int j = 0; j < plan->u; j++) {
    char *p = at(plan->u_send, off);
    WEFT_CHECK(shard_tokens(plan, plan->hdq, p, j, nq, f, false));
    WEFT_CHECK(shard_tokens(plan, plan->hdk, p + nq * tok, j, nkv, f, false));
    WEFT_CHECK(shard_tokens(plan, plan->hdv, p + (nq + nkv) * tok, j, nkv, f, false));
    sb[j] = (size_t)(nq + 2 * nkv) * tok;
    rb[j] = (size_t)(plan->split[j].nq + 2 * plan->split[j].nkv) * tok;
    off += sb[j];
  }
  WEFT_CHECK(ulysses_exchange(plan, sb, rb));
  int64_t kv_count = c->batch * plan->n * c->kv_heads * c->head_dim;
  if (plan->kv_replicated) {
    WEFT_CHECK(attn_sp_zero(plan, dk, kv_count));
    WEFT_CHECK(attn_sp_zero(plan, dv, kv_count));
  }
  for (int i = 0; i < plan->u; i++) {
    attn_sp_heads_t s = plan->split[i];
    char *p = at(plan->u_recv, plan->dsp_recv[i] * attn_sp_wire_unit(plan));
    WEFT_CHECK(unpack_heads(plan, dq, p, c->heads, s.q0, s.nq, f));
    for (int t = 0; t < 2; t++) {
      float *grad = t == 0 ? dk : dv;
      const char *blk = p + (s.nq + t * s.nkv) * tok;
      if (!plan->kv_replicated) {
        WEFT_CHECK(unpack_heads(plan, grad, blk, c->kv_heads, s.kv0, s.nkv, f));
        continue;
      }
      WEFT_CHECK(attn_sp_zero(plan, plan->kv_tmp, kv_count));
      WEFT_CHECK(unpack_heads(plan, plan->kv_tmp, blk, c->kv_heads, s.kv0, s.nkv, f));
      WEFT_CHECK(
          weft_elementwise_add(plan->ctx, WEFT_DTYPE_F32, kv_count, grad, plan->kv_tmp, grad));
    }
  }
  return WEFT_OK;
}

/* ---- ring core ------------------------------------------------------------------ */

/* Posts the transfer of a K,V block (k then v, each kv_bytes) to the next ring rank and the
 * receipt of the previous rank's into `dst`. */
static weft_status_t ring_post_kv(weft_attn_sp_plan_t *plan, const void *k, const void *v,
                                  void *dst, weft_comm_req_t req[4]) {
  int R = plan->ring_size, me = plan->ring_index;
  int next = (me + 1) % R, prev = (me + R - 1) % R;
  size_t count = (size_t)(plan->cfg.batch * plan->L * plan->heads.nkv * plan->cfg.head_dim);
  weft_comm_t *comm = plan->ring_comm;
  weft_dtype_t dt = plan->cfg.dtype;
  WEFT_CHECK(weft_comm_irecv(comm, dst, count, dt, prev, ATTN_SP_TAG_K, WEFT_MEM_DEVICE, &req[0]));
  WEFT_CHECK(weft_comm_irecv(comm, at(dst, count * plan->esz), count, dt, prev, ATTN_SP_TAG_V,
                             WEFT_MEM_DEVICE, &req[1]));
  WEFT_CHECK(weft_comm_isend(comm, k, count, dt, next, ATTN_SP_TAG_K, WEFT_MEM_DEVICE, &req[2]));
  WEFT_CHECK(weft_comm_isend(comm, v, count, dt, next, ATTN_SP_TAG_V, WEFT_MEM_DEVICE, &req[3]));
  return WEFT_OK;
}

static const int64_t *ring_pos(const weft_attn_sp_plan_t *plan, int ring_rank) {
  return plan->d_ring_pos + (int64_t)ring_rank * plan->L;
}

/* out, lse of the local L queries (nq heads) against every ring rank's K,V. */
static weft_status_t ring_forward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                  const void *v, float *out, float *lse) {
  int R = plan->ring_size, me = plan->ring_index;
  int64_t nq = plan->heads.nq, nkv = plan->heads.nkv;
  if (nq == 0) return WEFT_OK; /* every rank of this ring has no heads (same member index) */
  weft_attn_shape_t shape = attn_sp_shape(plan, nq, nkv, plan->L, plan->L);
  size_t kv_bytes = (size_t)(plan->cfg.batch * plan->L * nkv * plan->cfg.head_dim) * plan->esz;
  weft_comm_req_t req[4];
  if (R > 1) WEFT_CHECK(ring_post_kv(plan, k, v, plan->kv_buf[0], req));
  const int64_t *qpos = ring_pos(plan, me);
  WEFT_CHECK(weft_attn_block_forward(plan->ctx, &shape, q, k, v, qpos, qpos, out, lse));
  for (int s = 1; s < R; s++) {
    void *held = plan->kv_buf[(s - 1) % 2];
    WEFT_CHECK(weft_comm_waitall(req, 4)); /* block s is in; block s-1's send is done */
    if (s < R - 1)
      WEFT_CHECK(ring_post_kv(plan, held, at(held, kv_bytes), plan->kv_buf[s % 2], req));
    int src = (me + R - s) % R;
    WEFT_CHECK(weft_attn_block_forward(plan->ctx, &shape, q, held, at(held, kv_bytes), qpos,
                                       ring_pos(plan, src), plan->blk_out, plan->blk_lse));
    WEFT_CHECK(weft_attn_merge(plan->ctx, &shape, out, lse, plan->blk_out, plan->blk_lse));
  }
  return WEFT_OK;
}

/* dq, dk, dv of the local block: K,V rotate as in the forward; the [dk | dv] accumulator of
 * the block held at step s >= 1 starts at zero on step 1, hops with its block and makes its
 * last hop (after step R-1) home to the block's owner. */
static weft_status_t ring_backward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                   const void *v, const void *dout, const float *lse,
                                   const float *delta, float *dq, float *dk, float *dv) {
  int R = plan->ring_size, me = plan->ring_index;
  int64_t nq = plan->heads.nq, nkv = plan->heads.nkv;
  if (nq == 0) return WEFT_OK;
  weft_attn_shape_t shape = attn_sp_shape(plan, nq, nkv, plan->L, plan->L);
  int64_t kv_count = plan->cfg.batch * plan->L * nkv * plan->cfg.head_dim;
  size_t kv_bytes = (size_t)kv_count * plan->esz;
  WEFT_CHECK(attn_sp_zero(plan, dq, plan->cfg.batch * plan->L * nq * plan->cfg.head_dim));
  WEFT_CHECK(attn_sp_zero(plan, dk, kv_count));
  WEFT_CHECK(attn_sp_zero(plan, dv, kv_count));
  weft_comm_req_t req[4], acc_send, acc_recv;
  int next = (me + 1) % R, prev = (me + R - 1) % R;
  weft_comm_t *comm = plan->ring_comm;
  size_t acc_count = 2 * (size_t)kv_count;
  if (R > 1) WEFT_CHECK(ring_post_kv(plan, k, v, plan->kv_buf[0], req));
  const int64_t *qpos = ring_pos(plan, me);
  WEFT_CHECK(weft_attn_block_backward(plan->ctx, &shape, q, k, v, qpos, qpos, dout, lse, delta, dq,
                                      dk, dv));
  for (int s = 1; s < R; s++) {
    void *held = plan->kv_buf[(s - 1) % 2];
    float *acc = plan->acc_buf[s % 2];
    WEFT_CHECK(weft_comm_waitall(req, 4));
    if (s < R - 1)
      WEFT_CHECK(ring_post_kv(plan, held, at(held, kv_bytes), plan->kv_buf[s % 2], req));
    if (s == 1) {
      WEFT_CHECK(attn_sp_zero(plan, acc, (int64_t)acc_count));
    } else {
      WEFT_CHECK(weft_comm_wait(&acc_recv)); /* what prev accumulated on this block */
      WEFT_CHECK(weft_comm_wait(&acc_send)); /* the other buffer is free again */
    }
    int src = (me + R - s) % R;
    WEFT_CHECK(weft_attn_block_backward(plan->ctx, &shape, q, held, at(held, kv_bytes), qpos,
                                        ring_pos(plan, src), dout, lse, delta, dq, acc,
                                        acc + kv_count));
    WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx));
    WEFT_CHECK(weft_comm_isend(comm, acc, acc_count, WEFT_DTYPE_F32, next, ATTN_SP_TAG_ACC,
                               WEFT_MEM_DEVICE, &acc_send));
    /* Step s+1's accumulator, or (after the last step) this rank's own coming home. */
    WEFT_CHECK(weft_comm_irecv(comm, plan->acc_buf[(s + 1) % 2], acc_count, WEFT_DTYPE_F32, prev,
                               ATTN_SP_TAG_ACC, WEFT_MEM_DEVICE, &acc_recv));
  }
  if (R > 1) {
    WEFT_CHECK(weft_comm_wait(&acc_recv));
    WEFT_CHECK(weft_comm_wait(&acc_send));
    const float *home = plan->acc_buf[R % 2];
    WEFT_CHECK(weft_elementwise_add(plan->ctx, WEFT_DTYPE_F32, kv_count, dk, home, dk));
    WEFT_CHECK(weft_elementwise_add(plan->ctx, WEFT_DTYPE_F32, kv_count, dv, home + kv_count, dv));
  }
  return WEFT_OK;
}

/* ---- forward and backward -------------------------------------------------------- */

weft_status_t weft_attn_sp_forward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                   const void *v, float *out, float *lse) {
  if (!plan || !q || !k || !v || !out || !lse) {
    WEFT_ERROR(SUBSYS, "attention forward: NULL argument");
    return WEFT_ERR_INVALID_ARG;
  }
  uint64_t before = attn_sp_bytes_sent(plan);
  WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx));
  if (plan->cfg.algo == WEFT_ATTN_SP_TOKENRING) {
    WEFT_CHECK(attn_sp_tokenring_forward(plan, q, k, v, out, lse));
  } else if (plan->u == 1) {
    WEFT_CHECK(ring_forward(plan, q, k, v, out, lse));
  } else {
    WEFT_CHECK(ulysses_scatter_fwd(plan, q, k, v));
    WEFT_CHECK(ring_forward(plan, plan->hq, plan->hk, plan->hv, plan->hout, plan->hlse));
    WEFT_CHECK(ulysses_gather_fwd(plan, out, lse));
  }
  WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx));
  plan->stats.bytes_fwd = attn_sp_bytes_sent(plan) - before;
  return WEFT_OK;
}

weft_status_t weft_attn_sp_backward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                    const void *v, const float *out, const float *lse,
                                    const void *dout, float *dq, float *dk, float *dv) {
  if (!plan || !q || !k || !v || !out || !lse || !dout || !dq || !dk || !dv) {
    WEFT_ERROR(SUBSYS, "attention backward: NULL argument");
    return WEFT_ERR_INVALID_ARG;
  }
  uint64_t before = attn_sp_bytes_sent(plan);
  WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx));
  /* delta = rowsum(dout * out) needs only this rank's rows: computed before anything moves, so
   * the final out never travels. */
  weft_attn_shape_t local = attn_sp_shape(plan, plan->cfg.heads, plan->cfg.kv_heads, plan->n, 0);
  WEFT_CHECK(weft_attn_backward_delta(plan->ctx, &local, out, dout, plan->s_delta));
  if (plan->cfg.algo == WEFT_ATTN_SP_TOKENRING) {
    WEFT_CHECK(attn_sp_tokenring_backward(plan, q, k, v, lse, plan->s_delta, dout, dq, dk, dv));
  } else if (plan->u == 1) {
    WEFT_CHECK(ring_backward(plan, q, k, v, dout, lse, plan->s_delta, dq, dk, dv));
  } else {
    WEFT_CHECK(ulysses_scatter_bwd(plan, q, k, v, dout, lse));
    WEFT_CHECK(ring_backward(plan, plan->hq, plan->hk, plan->hv, plan->hdout, plan->hlse,
                             plan->hdelta, plan->hdq, plan->hdk, plan->hdv));
    WEFT_CHECK(ulysses_gather_bwd(plan, dq, dk, dv));
  }
  WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx));
  plan->stats.bytes_bwd = attn_sp_bytes_sent(plan) - before;
  return WEFT_OK;
}
