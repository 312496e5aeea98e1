/* One transformer layer of docs/model.md, forward and backward, on this rank's T tokens:
 *   x' = x + Attn(RMSNorm(x)),   x_out = x' + FFN(RMSNorm(x')).
 * Weights are stored [in, out], so a projection is y = x W (GEMM NN), its input gradient
 * dx = dy W^T (NT) and its weight gradient dW += x^T dy (TN, added: gradients accumulate over
 * micro-batches). */
#include <math.h>
#include <string.h>

#include "model_internal.h"
#include "weft/check.h"
#include "weft/elementwise.h"
#include "weft/gate.h"
#include "weft/gemm.h"
#include "weft/moe.h"
#include "weft/rmsnorm.h"
#include "weft/rope.h"

#define NORM_EPS   1e-5f
#define ROPE_BASE  10000.0
#define GATE_SCALE (1.0f / 16.0f)

/* y[T, out] (+)= x[T, in] W[in, out] */
static weft_status_t proj(weft_model_t *m, int64_t t, int64_t in, int64_t out, const float *x,
                          const weft_param_t *w, float beta, float *y) {
  return model_gemm(m, false, false, t, out, in, x, NULL, NULL, w, beta, y);
}

/* dx[T, in] (+)= dy[T, out] W^T, and dW += x^T dy. */
static weft_status_t proj_backward(weft_model_t *m, int64_t t, int64_t in, int64_t out,
                                   const float *x, const weft_param_t *w, const float *dy,
                                   float dx_beta, float *dx) {
  WEFT_CHECK(model_gemm(m, false, true, t, in, out, dy, NULL, NULL, w, dx_beta, dx));
  return model_gemm(m, true, false, in, out, t, x, NULL, dy, NULL, 1.0f, w->grad);
}

static weft_status_t copy_dev(weft_model_t *m, float *dst, const float *src, int64_t count) {
  return weft_device_copy(m->dev, dst, src, (size_t)count * sizeof(float),
                          WEFT_COPY_DEVICE_TO_DEVICE);
}

/* ---- attention ------------------------------------------------------------------------ */

static weft_status_t attention_forward(weft_model_t *m, model_layer_t *L) {
  weft_kernel_ctx_t *ctx = m->ctx;
  model_layer_saved_t *s = &L->s;
  const int64_t T = m->tokens, d = m->cfg.dim, H = m->cfg.heads, dh = m->head_dim;
  const int64_t hd = H * dh, kvd = L->kv_heads * dh;
  WEFT_CHECK(proj(m, T, d, hd, s->a, L->wq, 0.0f, s->q));
  WEFT_CHECK(proj(m, T, d, kvd, s->a, L->wk, 0.0f, s->k));
  WEFT_CHECK(proj(m, T, d, kvd, s->a, L->wv, 0.0f, s->v));
  if (L->kind == 'S') {
    WEFT_CHECK(weft_rope_apply(ctx, T, H, dh, ROPE_BASE, m->pos_tok, false, s->q));
    WEFT_CHECK(weft_rope_apply(ctx, T, L->kv_heads, dh, ROPE_BASE, m->pos_tok, false, s->k));
    if (m->attn_bf16) {
      WEFT_CHECK(weft_elementwise_cast(ctx, T * hd, WEFT_DTYPE_F32, s->q, WEFT_DTYPE_BF16, s->qb));
      WEFT_CHECK(weft_elementwise_cast(ctx, T * kvd, WEFT_DTYPE_F32, s->k, WEFT_DTYPE_BF16, s->kb));
      WEFT_CHECK(weft_elementwise_cast(ctx, T * kvd, WEFT_DTYPE_F32, s->v, WEFT_DTYPE_BF16, s->vb));
      WEFT_CHECK(weft_attn_sp_forward(L->attn, s->qb, s->kb, s->vb, s->o, s->lse));
    } else {
      WEFT_CHECK(weft_attn_sp_forward(L->attn, s->q, s->k, s->v, s->o, s->lse));
    }
    const weft_attn_sp_stats_t st = weft_attn_sp_plan_stats(L->attn);
    m->times.comm_bytes += st.bytes_fwd;
    return WEFT_OK;
  }
  WEFT_CHECK(proj(m, T, d, hd, s->a, L->wg, 0.0f, s->graw));
  WEFT_CHECK(weft_gate_logsigmoid_forward(ctx, T * hd, GATE_SCALE, s->graw, s->g));
  weft_linear_sp_plan_stats_reset(L->linear);
  WEFT_CHECK(weft_linear_sp_forward(L->linear, s->q, s->k, s->v, s->g, s->o, s->lse, NULL));
  m->times.comm_s += weft_linear_sp_plan_stats(L->linear).exposed_s;
  /* Per-head RMS norm without gain: rows of dh values. */
  return weft_rmsnorm_forward(ctx, T * H, dh, NORM_EPS, s->o, m->scratch.ones, s->o_n, s->rstd_o);
}

static weft_status_t attention_backward(weft_model_t *m, model_layer_t *L, const float *dy,
                                        float *da) {
  weft_kernel_ctx_t *ctx = m->ctx;
  model_layer_saved_t *s = &L->s;
  model_scratch_t *w = &m->scratch;
  const int64_t T = m->tokens, d = m->cfg.dim, H = m->cfg.heads, dh = m->head_dim;
  const int64_t hd = H * dh, kvd = L->kv_heads * dh;
  const float *o_used = L->kind == 'S' ? s->o : s->o_n;
  WEFT_CHECK(proj_backward(m, T, hd, d, o_used, L->wo, dy, 0.0f, w->dout));
  if (L->kind == 'S') {
    WEFT_CHECK(weft_attn_sp_backward(L->attn, s->q, s->k, s->v, s->o, s->lse, w->dout, w->dq, w->dk,
                                     w->dv));
    m->times.comm_bytes += weft_attn_sp_plan_stats(L->attn).bytes_bwd;
    WEFT_CHECK(weft_rope_apply(ctx, T, H, dh, ROPE_BASE, m->pos_tok, true, w->dq));
    WEFT_CHECK(weft_rope_apply(ctx, T, L->kv_heads, dh, ROPE_BASE, m->pos_tok, true, w->dk));
  } else {
    WEFT_CHECK(weft_device_memset(m->dev, w->dummy, 0, (size_t)dh * sizeof(float)));
    WEFT_CHECK(weft_rmsnorm_backward(ctx, T * H, dh, s->o, w->ones, s->rstd_o, w->dout, w->dout,
                                     w->dummy));
    weft_linear_sp_plan_stats_reset(L->linear);
    WEFT_CHECK(weft_linear_sp_backward(L->linear, s->q, s->k, s->v, s->g, w->dout, s->lse, w->dq,
                                       w->dk, w->dv, w->dg));
    m->times.comm_s += weft_linear_sp_plan_stats(L->linear).exposed_s;
    WEFT_CHECK(weft_gate_logsigmoid_backward(ctx, T * hd, GATE_SCALE, s->graw, w->dg, w->dg));
  }
  /* The input gradient sums the three (four) projections' contributions. */
  WEFT_CHECK(proj_backward(m, T, d, hd, s->a, L->wq, w->dq, 0.0f, da));
  WEFT_CHECK(proj_backward(m, T, d, kvd, s->a, L->wk, w->dk, 1.0f, da));
  WEFT_CHECK(proj_backward(m, T, d, kvd, s->a, L->wv, w->dv, 1.0f, da));
  if (L->kind == 'L') {
    WEFT_CHECK(proj_backward(m, T, d, hd, s->a, L->wg, w->dg, 1.0f, da));
  }
  return WEFT_OK;
}

/* ---- FFN -------------------------------------------------------------------------------- */

static weft_moe_weights_t moe_weights(const model_layer_t *L) {
  return (weft_moe_weights_t){L->router->data, L->w1->data, L->w3->data, L->w2->data};
}

/* y [T, d] = FFN(b) */
static weft_status_t ffn_forward(weft_model_t *m, model_layer_t *L, float *y,
                                 weft_model_losses_t *losses) {
  model_layer_saved_t *s = &L->s;
  const int64_t T = m->tokens;
  if (L->moe) {
    const weft_moe_weights_t weights = moe_weights(L);
    WEFT_CHECK(weft_moe_forward(L->moe_plan, T, s->b, &weights, y));
    const weft_moe_stats_t *st = weft_moe_plan_stats(L->moe_plan);
    losses->lbl_partial += st->aux_loss_partial;
    losses->z_partial += st->z_loss_partial;
    m->times.comm_s += st->fwd_time.exchange_s;
    m->times.wait_s += st->fwd_time.wait_s;
    m->times.comm_bytes += st->fwd.payload + st->fwd.meta;
    return WEFT_OK;
  }
  /* Dense SwiGLU: y = (silu(b W1) * (b W3)) W2, through the model's GEMMs (bf16 or f32). */
  const int64_t d = m->cfg.dim, f = m->cfg.ffn;
  WEFT_CHECK(proj(m, T, d, f, s->b, L->w1, 0.0f, s->f_a));
  WEFT_CHECK(proj(m, T, d, f, s->b, L->w3, 0.0f, s->f_b));
  WEFT_CHECK(weft_moe_swiglu_forward(m->ctx, T * f, s->f_a, s->f_b, s->f_act));
  return proj(m, T, f, d, s->f_act, L->w2, 0.0f, y);
}

/* db [T, d] = dFFN/db given dy */
static weft_status_t ffn_backward(weft_model_t *m, model_layer_t *L, const float *dy, float *db) {
  model_layer_saved_t *s = &L->s;
  if (L->moe) {
    const weft_moe_weights_t weights = moe_weights(L);
    const weft_moe_grads_t grads = {L->router->grad, L->w1->grad, L->w3->grad, L->w2->grad};
    WEFT_CHECK(weft_moe_backward(L->moe_plan, s->b, &weights, dy, db, &grads));
    const weft_moe_stats_t *st = weft_moe_plan_stats(L->moe_plan);
    m->times.comm_s += st->bwd_time.exchange_s;
    m->times.wait_s += st->bwd_time.wait_s;
    m->times.comm_bytes += st->bwd.payload + st->bwd.meta;
    return WEFT_OK;
  }
  const int64_t T = m->tokens, d = m->cfg.dim, f = m->cfg.ffn;
  float *dact = m->scratch.ffn_work, *dgate = m->scratch.ffn_work + T * f;
  WEFT_CHECK(proj_backward(m, T, f, d, s->f_act, L->w2, dy, 0.0f, dact));
  /* dact becomes d(b W1) in place; dgate = d(b W3) */
  WEFT_CHECK(weft_moe_swiglu_backward(m->ctx, T * f, s->f_a, s->f_b, dact, dact, dgate));
  WEFT_CHECK(proj_backward(m, T, d, f, s->b, L->w1, dact, 0.0f, db));
  return proj_backward(m, T, d, f, s->b, L->w3, dgate, 1.0f, db);
}

/* ---- layer ------------------------------------------------------------------------------ */

weft_status_t model_layer_forward(weft_model_t *m, int index, float *x,
                                  weft_model_losses_t *losses) {
  model_layer_t *L = &m->layers[index];
  model_layer_saved_t *s = &L->s;
  weft_kernel_ctx_t *ctx = m->ctx;
  const int64_t T = m->tokens, d = m->cfg.dim, hd = m->cfg.heads * m->head_dim;
  WEFT_CHECK(copy_dev(m, s->x_in, x, T * d));
  WEFT_CHECK(weft_rmsnorm_forward(ctx, T, d, NORM_EPS, x, L->attn_norm->data, s->a, s->rstd_a));
  WEFT_CHECK(attention_forward(m, L));
  WEFT_CHECK(proj(m, T, hd, d, L->kind == 'S' ? s->o : s->o_n, L->wo, 1.0f, x));
  WEFT_CHECK(copy_dev(m, s->x_mid, x, T * d));
  WEFT_CHECK(weft_rmsnorm_forward(ctx, T, d, NORM_EPS, x, L->ffn_norm->data, s->b, s->rstd_b));
  float *y = m->scratch.dt;
  WEFT_CHECK(ffn_forward(m, L, y, losses));
  return weft_elementwise_add(ctx, WEFT_DTYPE_F32, T * d, x, y, x);
}

weft_status_t model_layer_backward(weft_model_t *m, int index, float *dx) {
  model_layer_t *L = &m->layers[index];
  model_layer_saved_t *s = &L->s;
  model_scratch_t *w = &m->scratch;
  weft_kernel_ctx_t *ctx = m->ctx;
  const int64_t T = m->tokens, d = m->cfg.dim;
  /* x_out = x' + FFN(RMSNorm(x')): dx' = dx + RMSNorm'(FFN'(dx)). */
  WEFT_CHECK(ffn_backward(m, L, dx, w->da));
  WEFT_CHECK(weft_rmsnorm_backward(ctx, T, d, s->x_mid, L->ffn_norm->data, s->rstd_b, w->da, w->dt,
                                   L->ffn_norm->grad));
  WEFT_CHECK(weft_elementwise_add(ctx, WEFT_DTYPE_F32, T * d, dx, w->dt, dx));
  /* x' = x + Attn(RMSNorm(x)). */
  WEFT_CHECK(attention_backward(m, L, dx, w->da));
  WEFT_CHECK(weft_rmsnorm_backward(ctx, T, d, s->x_in, L->attn_norm->data, s->rstd_a, w->da, w->dt,
                                   L->attn_norm->grad));
  return weft_elementwise_add(ctx, WEFT_DTYPE_F32, T * d, dx, w->dt, dx);
}
