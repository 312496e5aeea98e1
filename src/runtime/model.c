/* The model: creation (parameter table, plans, activation buffers) and one micro-batch's
 * forward and backward (embedding -> layers -> final norm -> LM head -> cross-entropy). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "weft/check.h"
#include "weft/cross_entropy.h"
#include "weft/elementwise.h"
#include "weft/embedding.h"
#include "weft/gemm.h"
#include "weft/log.h"
#include "weft/rmsnorm.h"
#include "weft/timer.h"

#define NORM_EPS 1e-5f

weft_status_t model_alloc(weft_model_t *m, size_t count, size_t elem, void **ptr_p) {
  if (m->n_allocs == m->cap_allocs) {
    const int cap = m->cap_allocs ? 2 * m->cap_allocs : 64;
    void **grown = realloc(m->allocs, (size_t)cap * sizeof *grown);
    if (!grown) {
      return WEFT_ERR_NO_MEMORY;
    }
    m->allocs = grown;
    m->cap_allocs = cap;
  }
  const size_t bytes = (count > 0 ? count : 1) * elem;
  WEFT_CHECK(weft_device_alloc(m->dev, bytes, ptr_p));
  WEFT_CHECK(weft_device_memset(m->dev, *ptr_p, 0, bytes));
  m->allocs[m->n_allocs++] = *ptr_p;
  return WEFT_OK;
}

#define ALLOC_F32(ptr, count) \
  WEFT_CHECK(model_alloc(m, (size_t)(count), sizeof(float), (void **)&(ptr)))
#define ALLOC_BF16(ptr, count) \
  WEFT_CHECK(model_alloc(m, (size_t)(count), sizeof(uint16_t), (void **)&(ptr)))

/* Widest row of any GEMM activation operand: d, H dh, f or V. */
static int64_t widest_operand(const weft_model_t *m) {
  int64_t w = m->cfg.dim;
  w = m->cfg.heads * m->head_dim > w ? m->cfg.heads * m->head_dim : w;
  w = m->cfg.ffn > w ? m->cfg.ffn : w;
  return WEFT_MODEL_VOCAB > w ? WEFT_MODEL_VOCAB : w;
}

/* A GEMM operand in bf16: a weight's rounded copy, or an activation rounded into scratch. */
static weft_status_t bf16_operand(weft_model_t *m, const float *x, const weft_param_t *param,
                                  int64_t count, int slot, const void **out_p) {
  if (param) {
    *out_p = m->rep_bf16 + (param->data - m->rep_data);
    return WEFT_OK;
  }
  if (count > m->tokens * widest_operand(m)) {
    WEFT_ERROR("model", "internal: GEMM operand of %lld elements exceeds the bf16 scratch",
               (long long)count);
    return WEFT_ERR_INTERNAL;
  }
  WEFT_CHECK(
      weft_elementwise_cast(m->ctx, count, WEFT_DTYPE_F32, x, WEFT_DTYPE_BF16, m->cast[slot]));
  *out_p = m->cast[slot];
  return WEFT_OK;
}

weft_status_t model_gemm(weft_model_t *m, bool trans_a, bool trans_b, int64_t M, int64_t N,
                         int64_t K, const float *a, const weft_param_t *a_param, const float *b,
                         const weft_param_t *b_param, float beta, float *c) {
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  if (!m->cfg.bf16) {
    return weft_gemm(m->ctx, trans_a, trans_b, M, N, K, 1.0f, WEFT_DTYPE_F32,
                     a_param ? a_param->data : a, lda, WEFT_DTYPE_F32, b_param ? b_param->data : b,
                     ldb, beta, WEFT_DTYPE_F32, c, N);
  }
  const void *a16 = NULL, *b16 = NULL;
  WEFT_CHECK(bf16_operand(m, a, a_param, M * K, 0, &a16));
  WEFT_CHECK(bf16_operand(m, b, b_param, K * N, 1, &b16));
  return weft_gemm(m->ctx, trans_a, trans_b, M, N, K, 1.0f, WEFT_DTYPE_BF16, a16, lda,
                   WEFT_DTYPE_BF16, b16, ldb, beta, WEFT_DTYPE_F32, c, N);
}

static weft_status_t alloc_layer(weft_model_t *m, model_layer_t *L) {
  model_layer_saved_t *s = &L->s;
  const int64_t T = m->tokens, d = m->cfg.dim, H = m->cfg.heads, dh = m->head_dim;
  const int64_t hd = H * dh, kvd = L->kv_heads * dh;
  ALLOC_F32(s->x_in, T * d);
  ALLOC_F32(s->a, T * d);
  ALLOC_F32(s->rstd_a, T);
  ALLOC_F32(s->q, T * hd);
  ALLOC_F32(s->k, T * kvd);
  ALLOC_F32(s->v, T * kvd);
  ALLOC_F32(s->o, T * hd);
  if (L->kind == 'S') {
    ALLOC_F32(s->lse, T * H);
    if (m->attn_bf16) {
      ALLOC_BF16(s->qb, T * hd);
      ALLOC_BF16(s->kb, T * kvd);
      ALLOC_BF16(s->vb, T * kvd);
    }
  } else {
    ALLOC_F32(s->graw, T * hd);
    ALLOC_F32(s->g, T * hd);
    ALLOC_F32(s->lse, m->rows * 2 * H * dh * dh);
    ALLOC_F32(s->o_n, T * hd);
    ALLOC_F32(s->rstd_o, T * H);
  }
  ALLOC_F32(s->x_mid, T * d);
  ALLOC_F32(s->b, T * d);
  ALLOC_F32(s->rstd_b, T);
  if (!L->moe) {
    ALLOC_F32(s->f_a, T * m->cfg.ffn);
    ALLOC_F32(s->f_b, T * m->cfg.ffn);
    ALLOC_F32(s->f_act, T * m->cfg.ffn);
  }
  return WEFT_OK;
}

static weft_status_t alloc_scratch(weft_model_t *m) {
  model_scratch_t *w = &m->scratch;
  const int64_t T = m->tokens, d = m->cfg.dim, hd = m->cfg.heads * m->head_dim;
  ALLOC_F32(w->dx, T * d);
  ALLOC_F32(w->dt, T * d);
  ALLOC_F32(w->da, T * d);
  ALLOC_F32(w->dq, T * hd);
  ALLOC_F32(w->dk, T * hd);
  ALLOC_F32(w->dv, T * hd);
  ALLOC_F32(w->dg, T * hd);
  ALLOC_F32(w->dout, T * hd);
  ALLOC_F32(w->ffn_work, 2 * T * m->cfg.ffn);
  if (m->cfg.bf16) {
    ALLOC_BF16(m->rep_bf16, m->rep_numel);
    ALLOC_BF16(m->cast[0], T * widest_operand(m));
    ALLOC_BF16(m->cast[1], T * widest_operand(m));
  }
  ALLOC_F32(w->ones, m->head_dim);
  ALLOC_F32(w->dummy, m->head_dim);
  ALLOC_F32(w->logits, T * WEFT_MODEL_VOCAB);
  ALLOC_F32(w->ce_loss, T);
  ALLOC_F32(w->ce_lse, T);
  ALLOC_F32(w->x_final, T * d);
  ALLOC_F32(w->xf, T * d);
  ALLOC_F32(w->rstd_f, T);
  float *ones = malloc((size_t)m->head_dim * sizeof *ones);
  if (!ones) {
    return WEFT_ERR_NO_MEMORY;
  }
  for (int64_t i = 0; i < m->head_dim; i++) {
    ones[i] = 1.0f;
  }
  const weft_status_t st = weft_device_copy(
      m->dev, w->ones, ones, (size_t)m->head_dim * sizeof(float), WEFT_COPY_HOST_TO_DEVICE);
  free(ones);
  return st;
}

/* Token positions of this sp rank in the zigzag layout, per slot and per token. */
static weft_status_t build_positions(weft_model_t *m) {
  weft_attn_sp_layout_t layout;
  WEFT_CHECK(weft_attn_sp_layout_init(&layout, m->cfg.seq, m->mesh->shape.sp, true));
  m->positions = malloc((size_t)m->n * sizeof *m->positions);
  int64_t *per_token = malloc((size_t)m->tokens * sizeof *per_token);
  m->ce_host = malloc((size_t)m->tokens * sizeof *m->ce_host);
  if (!m->positions || !per_token || !m->ce_host) {
    free(per_token);
    return WEFT_ERR_NO_MEMORY;
  }
  for (int64_t s = 0; s < m->n; s++) {
    m->positions[s] = weft_attn_sp_layout_position(&layout, m->mesh->sp_index, s);
  }
  for (int64_t t = 0; t < m->tokens; t++) {
    per_token[t] = m->positions[t % m->n];
  }
  weft_status_t st = model_alloc(m, (size_t)m->tokens, sizeof(int64_t), (void **)&m->pos_tok);
  if (st == WEFT_OK) {
    st = weft_device_copy(m->dev, m->pos_tok, per_token, (size_t)m->tokens * sizeof(int64_t),
                          WEFT_COPY_HOST_TO_DEVICE);
  }
  free(per_token);
  WEFT_CHECK(st);
  WEFT_CHECK(model_alloc(m, (size_t)m->tokens, sizeof(int32_t), (void **)&m->ids_dev));
  WEFT_CHECK(model_alloc(m, (size_t)m->tokens, sizeof(int32_t), (void **)&m->targets_dev));
  return WEFT_OK;
}

/* One plan per softmax layer shape is enough (plans keep no state between calls); linear
 * plans likewise; MoE plans keep the routing from forward to backward, so one per layer. */
static weft_status_t create_plans(weft_model_t *m) {
  const weft_model_config_t *c = &m->cfg;
  weft_attn_sp_plan_t *attn = NULL;
  weft_linear_sp_plan_t *linear = NULL;
  for (int l = 0; l < c->layers; l++) {
    model_layer_t *L = &m->layers[l];
    if (L->kind == 'S') {
      if (!attn) {
        const weft_attn_sp_config_t acfg = {
            .batch = m->rows,
            .heads = c->heads,
            .kv_heads = c->kv_heads,
            .head_dim = m->head_dim,
            .seq_len = c->seq,
            .scale = 0.0f,
            .causal = true,
            .dtype = m->attn_bf16 ? WEFT_DTYPE_BF16 : WEFT_DTYPE_F32,
            .algo = m->par.sp_algo,
            .ulysses_degree = m->par.ulysses_degree};
        WEFT_CHECK(weft_attn_sp_plan_create(m->mesh->sp, m->ctx, &acfg, &attn));
      }
      L->attn = attn;
    } else {
      if (!linear) {
        const weft_gla_shape_t shape = {.batch = m->rows,
                                        .tokens = m->n,
                                        .heads = c->heads,
                                        .dk = m->head_dim,
                                        .dv = m->head_dim,
                                        .chunk = 0,
                                        .scale = (float)(1.0 / sqrt((double)m->head_dim))};
        WEFT_CHECK(weft_linear_sp_plan_create_zigzag(m->mesh->sp, m->ctx, &shape,
                                                     m->par.linear_algo, 0, &linear));
      }
      L->linear = linear;
    }
    if (L->moe) {
      const weft_moe_config_t mcfg = {.hidden = c->dim,
                                      .ffn = c->ffn,
                                      .experts = c->experts,
                                      .topk = c->topk,
                                      .normalize = true,
                                      .capacity_factor = 0.0,
                                      .aux_weight = c->aux_weight,
                                      .z_weight = c->z_weight};
      weft_comm_t *replicas = weft_comm_size(m->mesh->ep_replica) > 1 ? m->mesh->ep_replica : NULL;
      WEFT_CHECK(weft_moe_plan_create(m->mesh->ep, replicas, m->ctx, &mcfg, &L->moe_plan));
    }
  }
  return WEFT_OK;
}

weft_status_t weft_model_create(const weft_model_config_t *cfg, const weft_model_parallel_t *par,
                                weft_mesh_t *mesh, weft_kernel_ctx_t *ctx, int64_t rows,
                                weft_model_t **model_p) {
  char err[256];
  if (weft_model_config_check(cfg, mesh->shape.sp, mesh->shape.ep, err, sizeof err) != WEFT_OK) {
    WEFT_ERROR("model", "%s", err);
    return WEFT_ERR_INVALID_ARG;
  }
  if (rows < 1) {
    WEFT_ERROR("model", "sequences per rank per micro-batch must be >= 1, got %lld",
               (long long)rows);
    return WEFT_ERR_INVALID_ARG;
  }
  weft_model_t *m = calloc(1, sizeof *m);
  if (!m) {
    return WEFT_ERR_NO_MEMORY;
  }
  m->cfg = *cfg;
  m->par = *par;
  m->mesh = mesh;
  m->ctx = ctx;
  m->dev = weft_kernel_ctx_device(ctx);
  m->on_device = m->dev->kind != WEFT_DEVICE_CPU;
  m->rows = rows;
  m->n = cfg->seq / mesh->shape.sp;
  m->tokens = rows * m->n;
  m->head_dim = cfg->dim / cfg->heads;
  /* The CPU attention kernels take f32 only; there bf16 covers the GEMMs. */
  m->attn_bf16 = cfg->bf16 && m->on_device;
  weft_status_t st = model_params_build(m);
  if (st == WEFT_OK) {
    st = build_positions(m);
  }
  for (int l = 0; l < cfg->layers && st == WEFT_OK; l++) {
    st = alloc_layer(m, &m->layers[l]);
  }
  if (st == WEFT_OK) {
    st = alloc_scratch(m);
  }
  if (st == WEFT_OK) {
    st = create_plans(m);
  }
  if (st != WEFT_OK) {
    weft_model_destroy(m);
    return st;
  }
  *model_p = m;
  return WEFT_OK;
}

void weft_model_destroy(weft_model_t *m) {
  if (!m) {
    return;
  }
  weft_attn_sp_plan_t *attn = NULL;
  weft_linear_sp_plan_t *linear = NULL;
  for (int l = 0; l < m->cfg.layers; l++) {
    attn = m->layers[l].attn ? m->layers[l].attn : attn;
    linear = m->layers[l].linear ? m->layers[l].linear : linear;
    weft_moe_plan_destroy(m->layers[l].moe_plan);
  }
  weft_attn_sp_plan_destroy(attn);
  weft_linear_sp_plan_destroy(linear);
  for (int i = 0; i < m->n_allocs; i++) {
    weft_device_free(m->dev, m->allocs[i]);
  }
  free(m->allocs);
  free(m->positions);
  free(m->ce_host);
  free(m);
}

const weft_model_config_t *weft_model_config(const weft_model_t *m) { return &m->cfg; }

int64_t weft_model_local_tokens(const weft_model_t *m) { return m->tokens; }

weft_model_times_t weft_model_last_times(const weft_model_t *m) { return m->times; }

void weft_model_select_tokens(const weft_model_t *m, const uint8_t *windows, int32_t *ids,
                              int32_t *targets) {
  const int64_t stride = m->cfg.seq + 1;
  for (int64_t b = 0; b < m->rows; b++) {
    for (int64_t s = 0; s < m->n; s++) {
      const int64_t p = m->positions[s];
      ids[b * m->n + s] = windows[b * stride + p];
      targets[b * m->n + s] = windows[b * stride + p + 1];
    }
  }
}

void weft_model_step_begin(weft_model_t *m, int64_t global_tokens) {
  for (int l = 0; l < m->cfg.layers; l++) {
    if (m->layers[l].moe_plan) {
      weft_moe_step_begin(m->layers[l].moe_plan, global_tokens);
    }
  }
}

/* LM head and loss: logits = RMSNorm(x) W_out; CE per token. */
static weft_status_t head_forward(weft_model_t *m, const float *x, weft_model_losses_t *losses,
                                  const int32_t *targets) {
  model_scratch_t *w = &m->scratch;
  const int64_t T = m->tokens, d = m->cfg.dim, V = WEFT_MODEL_VOCAB;
  WEFT_CHECK(
      weft_rmsnorm_forward(m->ctx, T, d, NORM_EPS, x, m->final_norm->data, w->xf, w->rstd_f));
  WEFT_CHECK(model_gemm(m, false, false, T, V, d, w->xf, NULL, NULL, m->lm_head, 0.0f, w->logits));
  WEFT_CHECK(
      weft_cross_entropy_forward(m->ctx, T, V, w->logits, m->targets_dev, w->ce_loss, w->ce_lse));
  WEFT_CHECK(weft_kernel_ctx_synchronize(m->ctx));
  WEFT_CHECK(weft_device_copy(m->dev, m->ce_host, w->ce_loss, (size_t)T * sizeof(float),
                              WEFT_COPY_DEVICE_TO_HOST));
  for (int64_t t = 0; t < T; t++) {
    if (targets[t] >= 0) {
      losses->ce_sum += m->ce_host[t];
      losses->labelled++;
    }
  }
  return WEFT_OK;
}

static weft_status_t head_backward(weft_model_t *m, const float *x, float ce_scale, float *dx) {
  model_scratch_t *w = &m->scratch;
  const int64_t T = m->tokens, d = m->cfg.dim, V = WEFT_MODEL_VOCAB;
  WEFT_CHECK(weft_cross_entropy_backward(m->ctx, T, V, w->logits, m->targets_dev, w->ce_lse,
                                         ce_scale, w->logits));
  WEFT_CHECK(
      model_gemm(m, true, false, d, V, T, w->xf, NULL, w->logits, NULL, 1.0f, m->lm_head->grad));
  WEFT_CHECK(model_gemm(m, false, true, T, d, V, w->logits, NULL, NULL, m->lm_head, 0.0f, w->dt));
  return weft_rmsnorm_backward(m->ctx, T, d, x, m->final_norm->data, w->rstd_f, w->dt, dx,
                               m->final_norm->grad);
}

weft_status_t weft_model_step(weft_model_t *m, const int32_t *ids, const int32_t *targets,
                              float ce_scale, bool backward, weft_model_losses_t *losses) {
  const double t0 = weft_time_now();
  memset(&m->times, 0, sizeof m->times);
  memset(losses, 0, sizeof *losses);
  const int64_t T = m->tokens, d = m->cfg.dim;
  for (int64_t t = 0; t < T; t++) {
    if (ids[t] < 0 || ids[t] >= WEFT_MODEL_VOCAB || targets[t] >= WEFT_MODEL_VOCAB) {
      WEFT_ERROR("model", "token %lld: id %d or target %d outside 0..%d", (long long)t, ids[t],
                 targets[t], WEFT_MODEL_VOCAB - 1);
      return WEFT_ERR_INVALID_ARG;
    }
  }
  WEFT_CHECK(weft_device_copy(m->dev, m->ids_dev, ids, (size_t)T * sizeof(int32_t),
                              WEFT_COPY_HOST_TO_DEVICE));
  WEFT_CHECK(weft_device_copy(m->dev, m->targets_dev, targets, (size_t)T * sizeof(int32_t),
                              WEFT_COPY_HOST_TO_DEVICE));
  if (m->cfg.bf16) { /* this step's weights, rounded once for every GEMM that reads them */
    WEFT_CHECK(weft_elementwise_cast(m->ctx, m->rep_numel, WEFT_DTYPE_F32, m->rep_data,
                                     WEFT_DTYPE_BF16, m->rep_bf16));
  }
  model_scratch_t *w = &m->scratch;
  float *x = w->x_final;
  WEFT_CHECK(weft_embedding_forward(m->ctx, T, WEFT_MODEL_VOCAB, d, m->embed->data, m->ids_dev, x));
  for (int l = 0; l < m->cfg.layers; l++) {
    WEFT_CHECK(model_layer_forward(m, l, x, losses));
  }
  WEFT_CHECK(head_forward(m, x, losses, targets));
  if (backward) {
    WEFT_CHECK(head_backward(m, x, ce_scale, w->dx));
    for (int l = m->cfg.layers - 1; l >= 0; l--) {
      WEFT_CHECK(model_layer_backward(m, l, w->dx));
    }
    WEFT_CHECK(
        weft_embedding_backward(m->ctx, T, WEFT_MODEL_VOCAB, d, m->ids_dev, w->dx, m->embed->grad));
  }
  WEFT_CHECK(weft_kernel_ctx_synchronize(m->ctx));
  m->times.total_s = weft_time_now() - t0;
  return WEFT_OK;
}
