/* Autoregressive generation (generate.h, docs/generation.md): the checkpoint configuration,
 * the parameter table, the forward of a chunk of tokens against the KV caches and recurrent
 * states, and next-token sampling.
 *
 * The forward follows docs/model.md line by line for tokens at absolute positions
 * p0 .. p0 + T - 1 (T = 1 when decoding):
 *   x = Emb[ids]; per layer: a = RMSNorm(x); softmax layer: q, k, v projections, RoPE at the
 *   absolute positions, k and v appended to the cache, attention of the T queries over the
 *   p0 + T cached keys (causal by position, GQA); linear layer: q, k, v, g = logsigmoid(a Wg)/16,
 *   the recurrence S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, o_t = q_t S_t / sqrt(dh), per-head
 *   RMS norm without gain; x += o Wo; b = RMSNorm(x); x += FFN(b) (dense SwiGLU or top-k MoE
 *   over all E experts); logits = RMSNorm(x_last) W_out.
 * Batched prefill gives the same function as feeding one token at a time (up to f32
 * summation order): causality comes from the positions, and the recurrence runs token by
 * token either way.
 *
 * Rejected: reusing weft_model_step with a window per generated token (O(N^2) work per
 * sequence and capped at the training --seq), and the chunked GLA kernels for decoding (see
 * generate.h). */
#include "generate.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "splitmix.h"
#include "weft/attention.h"
#include "weft/bf16.h"
#include "weft/check.h"
#include "weft/elementwise.h"
#include "weft/embedding.h"
#include "weft/gate.h"
#include "weft/gemm.h"
#include "weft/log.h"
#include "weft/moe.h"
#include "weft/rmsnorm.h"
#include "weft/rope.h"

#define NORM_EPS   1e-5f /* docs/model.md: every RMSNorm */
#define ROPE_BASE  10000.0
#define GATE_SCALE (1.0f / 16.0f) /* GLA's gate temperature, docs/model.md */

typedef struct gen_param {
  char name[48]; /* "layers.0.attn.wq" */
  int ndim;
  int64_t shape[3];
  int64_t numel;
  float *data; /* device memory */
} gen_param_t;

typedef struct gen_layer {
  char kind; /* 'S' or 'L' */
  bool moe;
  int64_t kv_heads; /* Hkv on S layers, H on L layers */
  const gen_param_t *attn_norm, *wq, *wk, *wv, *wg, *wo, *ffn_norm, *w1, *w3, *w2, *router;
  float *k_cache, *v_cache; /* S: [capacity, Hkv, dh] device memory, keys after RoPE */
  float *state;             /* L: [H, dh, dh] host memory */
} gen_layer_t;

/* Activations of one chunk of at most C tokens (device memory unless noted). */
typedef struct gen_scratch {
  int32_t *ids;               /* [C] */
  float *x;                   /* [C, d] residual stream */
  float *a;                   /* [C, d] RMSNorm(x) */
  float *rstd;                /* [C H] */
  float *q, *k, *v, *g;       /* [C, H dh] (softmax layers write k, v into the cache) */
  float *o, *o_n;             /* [C, H dh] attention output; after the per-head norm */
  float *lse;                 /* [H, C] */
  float *y;                   /* [C, d] FFN output */
  float *f_a, *f_b, *f_act;   /* [C k, f]: x W1, x W3, silu(x W1) * x W3 */
  float *xe, *ye;             /* [C k, d] MoE rows in expert-major order, in and out */
  float *r_logits, *r_probs;  /* [C, E] router */
  float *r_weights;           /* [C, k] */
  int32_t *r_ids;             /* [C, k] */
  int32_t *perm, *combine;    /* [C k] row -> token; (token, slot) -> row */
  float *ones;                /* [dh] gain of the per-head norm */
  float *xf, *rstd1, *logits; /* [d], [1], [V]: the head of the last token */
  /* host staging */
  float *hq, *hk, *hv, *hg, *ho;       /* [C, H dh] the linear recurrence's operands */
  int32_t *h_ids, *h_perm, *h_combine; /* [C k] */
  int64_t *h_offsets, *h_fill;         /* [E + 1], [E] */
} gen_scratch_t;

struct weft_generator {
  weft_model_config_t cfg;
  weft_kernel_ctx_t *ctx;
  const weft_device_t *dev;
  int64_t dh, capacity, chunk, length;
  int64_t *positions; /* [capacity] 0 .. capacity - 1, device memory */
  gen_param_t params[WEFT_MODEL_MAX_PARAMS];
  int n_params;
  float *weights; /* every parameter, in table order */
  const gen_param_t *embed, *final_norm, *lm_head;
  gen_layer_t layers[WEFT_MODEL_MAX_LAYERS];
  gen_scratch_t s;
  size_t cache_bytes;
  void **dev_allocs, **host_allocs; /* freed at destroy */
  int n_dev, n_host, cap_dev, cap_host;
};

/* ---- configuration ---------------------------------------------------------------------- */

#define FAIL(...)                         \
  do {                                    \
    snprintf(err, err_size, __VA_ARGS__); \
    return WEFT_ERR_INVALID_ARG;          \
  } while (0)

/* The item `key` ("kv-heads") or its underscore spelling ("kv_heads"). */
static const cJSON *config_item(const cJSON *root, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
  if (!item) {
    char alt[32];
    snprintf(alt, sizeof alt, "%s", key);
    for (char *c = alt; *c; c++) {
      *c = *c == '-' ? '_' : *c;
    }
    item = cJSON_GetObjectItemCaseSensitive(root, alt);
  }
  return item;
}

/* An integer setting; a missing optional one leaves *value_p. */
static weft_status_t config_int(const cJSON *root, const char *key, bool required, int64_t *value_p,
                                char *err, size_t err_size) {
  const cJSON *item = config_item(root, key);
  if (!item) {
    if (required) {
      FAIL("checkpoint config has no \"%s\"", key);
    }
    return WEFT_OK;
  }
  const double value = cJSON_IsNumber(item) ? item->valuedouble : NAN;
  if (!(value >= 0 && value <= (double)INT32_MAX && value == floor(value))) {
    FAIL("checkpoint config \"%s\" must be a non-negative integer", key);
  }
  *value_p = (int64_t)value;
  return WEFT_OK;
}

weft_status_t weft_generate_config_parse(const char *json, weft_model_config_t *cfg, char *err,
                                         size_t err_size) {
  memset(cfg, 0, sizeof *cfg);
  cJSON *root = cJSON_Parse(json);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    FAIL("checkpoint config is not a JSON object");
  }
  int64_t topk = 0;
  weft_status_t st = config_int(root, "dim", true, &cfg->dim, err, err_size);
  if (st == WEFT_OK) st = config_int(root, "heads", true, &cfg->heads, err, err_size);
  if (st == WEFT_OK) st = config_int(root, "kv-heads", true, &cfg->kv_heads, err, err_size);
  if (st == WEFT_OK) st = config_int(root, "ffn-dim", true, &cfg->ffn, err, err_size);
  if (st == WEFT_OK) st = config_int(root, "experts", true, &cfg->experts, err, err_size);
  if (st == WEFT_OK) st = config_int(root, "topk", cfg->experts > 0, &topk, err, err_size);
  if (st == WEFT_OK) st = config_int(root, "seq", false, &cfg->seq, err, err_size);
  cfg->topk = (int)topk;
  char layers[32];
  const char *layers_text = NULL, *moe_text = NULL;
  const cJSON *item = config_item(root, "layers");
  if (st == WEFT_OK) {
    if (cJSON_IsString(item)) {
      layers_text = item->valuestring;
    } else if (cJSON_IsNumber(item)) {
      snprintf(layers, sizeof layers, "%d", item->valueint);
      layers_text = layers;
    } else {
      snprintf(err, err_size, "checkpoint config has no \"layers\" string");
      st = WEFT_ERR_INVALID_ARG;
    }
  }
  item = config_item(root, "moe-layers");
  if (st == WEFT_OK && item) {
    if (cJSON_IsString(item)) {
      moe_text = item->valuestring;
    } else if (!cJSON_IsNull(item)) {
      snprintf(err, err_size, "checkpoint config \"moe-layers\" must be a string");
      st = WEFT_ERR_INVALID_ARG;
    }
  }
  if (st == WEFT_OK) {
    st = weft_model_config_set_layers(cfg, layers_text, moe_text, err, err_size);
  }
  cJSON_Delete(root);
  WEFT_CHECK(st);
  /* The training sequence length does not limit generation (RoPE extrapolates), so the check
   * runs with a valid stand-in. */
  weft_model_config_t checked = *cfg;
  checked.seq = 2;
  return weft_model_config_check(&checked, 1, 1, err, err_size);
}

#undef FAIL

/* ---- creation ----------------------------------------------------------------------------- */

static weft_status_t track(void ***list, int *count, int *cap, void *ptr) {
  if (*count == *cap) {
    const int grown_cap = *cap ? 2 * *cap : 64;
    void **grown = realloc(*list, (size_t)grown_cap * sizeof *grown);
    if (!grown) {
      return WEFT_ERR_NO_MEMORY;
    }
    *list = grown;
    *cap = grown_cap;
  }
  (*list)[(*count)++] = ptr;
  return WEFT_OK;
}

/* Zeroed device memory owned by the generator: `count` elements of `elem` bytes. */
static weft_status_t dev_alloc(weft_generator_t *gen, int64_t count, size_t elem, void **ptr_p) {
  const size_t bytes = (size_t)(count > 0 ? count : 1) * elem;
  WEFT_CHECK(weft_device_alloc(gen->dev, bytes, ptr_p));
  const weft_status_t st = track(&gen->dev_allocs, &gen->n_dev, &gen->cap_dev, *ptr_p);
  if (st != WEFT_OK) {
    weft_device_free(gen->dev, *ptr_p);
    return st;
  }
  return weft_device_memset(gen->dev, *ptr_p, 0, bytes);
}

/* Zeroed host memory owned by the generator. */
static weft_status_t host_alloc(weft_generator_t *gen, int64_t count, size_t elem, void **ptr_p) {
  *ptr_p = calloc((size_t)(count > 0 ? count : 1), elem);
  if (!*ptr_p) {
    WEFT_ERROR("generate", "out of host memory (%lld elements of %zu bytes)", (long long)count,
               elem);
    return WEFT_ERR_NO_MEMORY;
  }
  const weft_status_t st = track(&gen->host_allocs, &gen->n_host, &gen->cap_host, *ptr_p);
  if (st != WEFT_OK) {
    free(*ptr_p);
  }
  return st;
}

#define DEV(ptr, count)  WEFT_CHECK(dev_alloc(gen, (count), sizeof *(ptr), (void **)&(ptr)))
#define HOST(ptr, count) WEFT_CHECK(host_alloc(gen, (count), sizeof *(ptr), (void **)&(ptr)))

/* docs/model.md's parameter table (weft_model_param_specs: the names, order and shapes the
 * model and its checkpoints use), every tensor whole, in one device buffer. */
static weft_status_t build_params(weft_generator_t *gen) {
  static weft_param_spec_t specs[WEFT_MODEL_MAX_PARAMS];
  const weft_model_config_t *c = &gen->cfg;
  gen->n_params = weft_model_param_specs(c, specs);
  for (int l = 0; l < c->layers; l++) {
    gen_layer_t *L = &gen->layers[l];
    L->kind = c->pattern[l];
    L->moe = c->moe_pattern[l] == 'M';
    L->kv_heads = L->kind == 'S' ? c->kv_heads : c->heads;
  }
  for (int i = 0; i < gen->n_params; i++) {
    gen_param_t *p = &gen->params[i];
    _Static_assert(sizeof p->name == sizeof specs[i].name, "parameter names have one size");
    memcpy(p->name, specs[i].name, sizeof p->name);
    p->ndim = specs[i].ndim;
    p->numel = 1;
    for (int j = 0; j < 3; j++) {
      p->shape[j] = specs[i].shape[j];
      p->numel *= p->shape[j];
    }
    p->data = NULL;
    WEFT_PARAM_BIND(specs[i], gen, gen->layers, p);
  }
  int64_t total = 0;
  for (int i = 0; i < gen->n_params; i++) {
    total += gen->params[i].numel;
  }
  DEV(gen->weights, total);
  int64_t offset = 0;
  for (int i = 0; i < gen->n_params; i++) {
    gen->params[i].data = gen->weights + offset;
    offset += gen->params[i].numel;
  }
  return WEFT_OK;
}

static weft_status_t alloc_state(weft_generator_t *gen) {
  const weft_model_config_t *c = &gen->cfg;
  const int64_t C = gen->chunk, d = c->dim, H = c->heads, dh = gen->dh, hd = H * dh;
  const int64_t k = c->experts > 0 ? c->topk : 1, E = c->experts > 0 ? c->experts : 1;
  for (int l = 0; l < c->layers; l++) {
    gen_layer_t *L = &gen->layers[l];
    if (L->kind == 'S') {
      const int64_t kvd = L->kv_heads * dh;
      DEV(L->k_cache, gen->capacity * kvd);
      DEV(L->v_cache, gen->capacity * kvd);
      gen->cache_bytes += 2 * (size_t)(gen->capacity * kvd) * sizeof(float);
    } else {
      HOST(L->state, H * dh * dh);
      gen->cache_bytes += (size_t)(H * dh * dh) * sizeof(float);
    }
  }
  gen_scratch_t *s = &gen->s;
  DEV(s->ids, C);
  DEV(s->x, C * d);
  DEV(s->a, C * d);
  DEV(s->rstd, C * H);
  DEV(s->q, C * hd);
  DEV(s->k, C * hd);
  DEV(s->v, C * hd);
  DEV(s->g, C * hd);
  DEV(s->o, C * hd);
  DEV(s->o_n, C * hd);
  DEV(s->lse, C * H);
  DEV(s->y, C * d);
  DEV(s->f_a, C * k * c->ffn);
  DEV(s->f_b, C * k * c->ffn);
  DEV(s->f_act, C * k * c->ffn);
  DEV(s->xe, C * k * d);
  DEV(s->ye, C * k * d);
  DEV(s->r_logits, C * E);
  DEV(s->r_probs, C * E);
  DEV(s->r_weights, C * k);
  DEV(s->r_ids, C * k);
  DEV(s->perm, C * k);
  DEV(s->combine, C * k);
  DEV(s->ones, dh);
  DEV(s->xf, d);
  DEV(s->rstd1, 1);
  DEV(s->logits, WEFT_MODEL_VOCAB);
  HOST(s->hq, C * hd);
  HOST(s->hk, C * hd);
  HOST(s->hv, C * hd);
  HOST(s->hg, C * hd);
  HOST(s->ho, C * hd);
  HOST(s->h_ids, C * k);
  HOST(s->h_perm, C * k);
  HOST(s->h_combine, C * k);
  HOST(s->h_offsets, E + 1);
  HOST(s->h_fill, E);
  WEFT_CHECK(weft_elementwise_fill(gen->ctx, WEFT_DTYPE_F32, dh, 1.0f, s->ones));

  int64_t *positions = malloc((size_t)gen->capacity * sizeof *positions);
  if (!positions) {
    return WEFT_ERR_NO_MEMORY;
  }
  for (int64_t p = 0; p < gen->capacity; p++) {
    positions[p] = p;
  }
  weft_status_t st = dev_alloc(gen, gen->capacity, sizeof(int64_t), (void **)&gen->positions);
  if (st == WEFT_OK) {
    st = weft_device_copy(gen->dev, gen->positions, positions,
                          (size_t)gen->capacity * sizeof(int64_t), WEFT_COPY_HOST_TO_DEVICE);
  }
  free(positions);
  return st;
}

weft_status_t weft_generator_create(const weft_model_config_t *cfg, weft_kernel_ctx_t *ctx,
                                    int64_t capacity, int64_t chunk, weft_generator_t **gen_p) {
  if (capacity < 1 || chunk < 1) {
    WEFT_ERROR("generate", "capacity %lld and chunk %lld must be >= 1", (long long)capacity,
               (long long)chunk);
    return WEFT_ERR_INVALID_ARG;
  }
  weft_generator_t *gen = calloc(1, sizeof *gen);
  if (!gen) {
    return WEFT_ERR_NO_MEMORY;
  }
  gen->cfg = *cfg;
  gen->ctx = ctx;
  gen->dev = weft_kernel_ctx_device(ctx);
  gen->dh = cfg->dim / cfg->heads;
  gen->capacity = capacity;
  gen->chunk = chunk < capacity ? chunk : capacity;
  weft_status_t st = build_params(gen);
  if (st == WEFT_OK) {
    st = alloc_state(gen);
  }
  if (st != WEFT_OK) {
    weft_generator_destroy(gen);
    return st;
  }
  *gen_p = gen;
  return WEFT_OK;
}

void weft_generator_destroy(weft_generator_t *gen) {
  if (!gen) {
    return;
  }
  if (gen->n_dev > 0) {
    weft_kernel_ctx_synchronize(gen->ctx);
  }
  for (int i = 0; i < gen->n_dev; i++) {
    weft_device_free(gen->dev, gen->dev_allocs[i]);
  }
  for (int i = 0; i < gen->n_host; i++) {
    free(gen->host_allocs[i]);
  }
  free(gen->dev_allocs);
  free(gen->host_allocs);
  free(gen);
}

int64_t weft_generator_length(const weft_generator_t *gen) { return gen->length; }

size_t weft_generator_cache_bytes(const weft_generator_t *gen) { return gen->cache_bytes; }

void weft_generator_reset(weft_generator_t *gen) {
  const int64_t dh = gen->dh;
  for (int l = 0; l < gen->cfg.layers; l++) {
    if (gen->layers[l].state) {
      memset(gen->layers[l].state, 0, (size_t)(gen->cfg.heads * dh * dh) * sizeof(float));
    }
  }
  gen->length = 0; /* cache rows past the length are never read */
}

/* ---- loading ---------------------------------------------------------------------------- */

static void format_shape(const int64_t *shape, int ndim, char *buf, size_t size) {
  size_t used = (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < ndim && used < size; i++) {
    used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
  }
  if (used < size) {
    snprintf(buf + used, size - used, "]");
  }
}

/* One parameter into `host` (f32, numel elements); bf16 files are widened. */
static weft_status_t load_param(weft_tensor_file_t *file, const char *path, const gen_param_t *p,
                                float *host, char *err, size_t err_size) {
  char want[64], got[64];
  format_shape(p->shape, p->ndim, want, sizeof want);
  bool exists = false;
  WEFT_CHECK(weft_tensor_file_exists(file, path, &exists));
  if (!exists) {
    snprintf(err, err_size, "dataset %s is missing (expected f32 %s)", path, want);
    return WEFT_ERR_INVALID_ARG;
  }
  weft_tensor_file_info_t info;
  WEFT_CHECK(weft_tensor_file_query(file, path, &info));
  bool same = info.ndim == p->ndim;
  for (int i = 0; i < p->ndim && same; i++) {
    same = info.shape[i] == p->shape[i];
  }
  if (!same || (info.dtype != WEFT_DTYPE_F32 && info.dtype != WEFT_DTYPE_BF16)) {
    format_shape(info.shape, info.ndim, got, sizeof got);
    snprintf(err, err_size, "dataset %s is %s %s, expected f32 %s (a checkpoint of another model?)",
             path, weft_dtype_name(info.dtype), got, want);
    return WEFT_ERR_INVALID_ARG;
  }
  if (info.dtype == WEFT_DTYPE_F32) {
    return weft_tensor_file_read(file, path, WEFT_DTYPE_F32, p->ndim, p->shape, host);
  }
  /* bf16: read into the upper half of the buffer, widen from the front (no overlap: element
   * i is written at byte 4i and read from byte 2 numel + 2i >= 4i). */
  weft_bf16_t *half = (weft_bf16_t *)host + p->numel;
  WEFT_CHECK(weft_tensor_file_read(file, path, WEFT_DTYPE_BF16, p->ndim, p->shape, half));
  for (int64_t i = 0; i < p->numel; i++) {
    host[i] = weft_bf16_to_f32(half[i]);
  }
  return WEFT_OK;
}

weft_status_t weft_generator_load(weft_generator_t *gen, weft_tensor_file_t *file,
                                  const char *group, char *err, size_t err_size) {
  int64_t largest = 1;
  for (int i = 0; i < gen->n_params; i++) {
    largest = gen->params[i].numel > largest ? gen->params[i].numel : largest;
  }
  float *host = malloc((size_t)largest * sizeof *host);
  if (!host) {
    return WEFT_ERR_NO_MEMORY;
  }
  snprintf(err, err_size, "reading the parameters failed (the log line above names the cause)");
  weft_status_t st = WEFT_OK;
  for (int i = 0; i < gen->n_params && st == WEFT_OK; i++) {
    const gen_param_t *p = &gen->params[i];
    char path[96];
    snprintf(path, sizeof path, "/%s/%s", group, p->name);
    st = load_param(file, path, p, host, err, err_size);
    if (st == WEFT_OK) {
      st = weft_device_copy(gen->dev, p->data, host, (size_t)p->numel * sizeof(float),
                            WEFT_COPY_HOST_TO_DEVICE);
    }
  }
  free(host);
  if (st == WEFT_OK) {
    err[0] = '\0';
  }
  return st;
}

/* ---- forward ------------------------------------------------------------------------------ */

/* y[T, out] (row stride ldy) (+)= x[T, in] W[in, out] */
static weft_status_t proj(weft_generator_t *gen, int64_t t, int64_t in, int64_t out, const float *x,
                          const float *w, float beta, float *y, int64_t ldy) {
  return weft_gemm(gen->ctx, false, false, t, out, in, 1.0f, WEFT_DTYPE_F32, x, in, WEFT_DTYPE_F32,
                   w, out, beta, WEFT_DTYPE_F32, y, ldy);
}

static weft_status_t to_host(weft_generator_t *gen, void *dst, const void *src, size_t bytes) {
  return weft_device_copy(gen->dev, dst, src, bytes, WEFT_COPY_DEVICE_TO_HOST);
}

static weft_status_t to_device(weft_generator_t *gen, void *dst, const void *src, size_t bytes) {
  return weft_device_copy(gen->dev, dst, src, bytes, WEFT_COPY_HOST_TO_DEVICE);
}

/* Softmax attention of T new tokens at positions p0.. over the cache: s->o [T, H dh]. */
static weft_status_t softmax_attention(weft_generator_t *gen, gen_layer_t *L, int64_t T,
                                       int64_t p0) {
  gen_scratch_t *s = &gen->s;
  const int64_t d = gen->cfg.dim, H = gen->cfg.heads, dh = gen->dh;
  const int64_t hd = H * dh, kvd = L->kv_heads * dh;
  const int64_t *pos = gen->positions + p0;
  float *k_new = L->k_cache + p0 * kvd, *v_new = L->v_cache + p0 * kvd; /* [T, Hkv, dh] */
  WEFT_CHECK(proj(gen, T, d, hd, s->a, L->wq->data, 0.0f, s->q, hd));
  WEFT_CHECK(proj(gen, T, d, kvd, s->a, L->wk->data, 0.0f, k_new, kvd));
  WEFT_CHECK(proj(gen, T, d, kvd, s->a, L->wv->data, 0.0f, v_new, kvd));
  WEFT_CHECK(weft_rope_apply(gen->ctx, T, H, dh, ROPE_BASE, pos, false, s->q));
  WEFT_CHECK(weft_rope_apply(gen->ctx, T, L->kv_heads, dh, ROPE_BASE, pos, false, k_new));
  const weft_attn_shape_t shape = {.batch = 1,
                                   .heads = H,
                                   .kv_heads = L->kv_heads,
                                   .head_dim = dh,
                                   .q_len = T,
                                   .kv_len = p0 + T,
                                   .scale = (float)(1.0 / sqrt((double)dh)),
                                   .causal = true,
                                   .dtype = WEFT_DTYPE_F32};
  return weft_attn_block_forward(gen->ctx, &shape, s->q, L->k_cache, L->v_cache, pos,
                                 gen->positions, s->o, s->lse);
}

/* The GLA recurrence over T tokens, on the host, per head h:
 *   S <- diag(exp(g_t)) S + k_t^T v_t,   o_t = q_t S / sqrt(dh)
 * q, k, v, g, o: [T, H, dh]; state [H, dh, dh] (row i is the key index). */
static void linear_recurrence(int64_t T, int64_t H, int64_t dh, const float *q, const float *k,
                              const float *v, const float *g, float *state, float *o) {
  const float scale = (float)(1.0 / sqrt((double)dh));
  for (int64_t t = 0; t < T; t++) {
    for (int64_t h = 0; h < H; h++) {
      const int64_t row = (t * H + h) * dh;
      float *S = state + h * dh * dh;
      for (int64_t i = 0; i < dh; i++) {
        const float decay = expf(g[row + i]), ki = k[row + i];
        float *Si = S + i * dh;
        for (int64_t j = 0; j < dh; j++) {
          Si[j] = decay * Si[j] + ki * v[row + j];
        }
      }
      float *ot = o + row;
      for (int64_t j = 0; j < dh; j++) {
        ot[j] = 0.0f;
      }
      for (int64_t i = 0; i < dh; i++) {
        const float qi = q[row + i];
        const float *Si = S + i * dh;
        for (int64_t j = 0; j < dh; j++) {
          ot[j] += qi * Si[j];
        }
      }
      for (int64_t j = 0; j < dh; j++) {
        ot[j] *= scale;
      }
    }
  }
}

/* Gated linear attention of T new tokens: s->o_n [T, H dh] (after the per-head norm). */
static weft_status_t linear_attention(weft_generator_t *gen, gen_layer_t *L, int64_t T) {
  gen_scratch_t *s = &gen->s;
  const int64_t d = gen->cfg.dim, H = gen->cfg.heads, dh = gen->dh, hd = H * dh;
  const size_t bytes = (size_t)(T * hd) * sizeof(float);
  WEFT_CHECK(proj(gen, T, d, hd, s->a, L->wq->data, 0.0f, s->q, hd));
  WEFT_CHECK(proj(gen, T, d, hd, s->a, L->wk->data, 0.0f, s->k, hd));
  WEFT_CHECK(proj(gen, T, d, hd, s->a, L->wv->data, 0.0f, s->v, hd));
  WEFT_CHECK(proj(gen, T, d, hd, s->a, L->wg->data, 0.0f, s->g, hd));
  WEFT_CHECK(weft_gate_logsigmoid_forward(gen->ctx, T * hd, GATE_SCALE, s->g, s->g));
  WEFT_CHECK(weft_kernel_ctx_synchronize(gen->ctx));
  WEFT_CHECK(to_host(gen, s->hq, s->q, bytes));
  WEFT_CHECK(to_host(gen, s->hk, s->k, bytes));
  WEFT_CHECK(to_host(gen, s->hv, s->v, bytes));
  WEFT_CHECK(to_host(gen, s->hg, s->g, bytes));
  linear_recurrence(T, H, dh, s->hq, s->hk, s->hv, s->hg, L->state, s->ho);
  WEFT_CHECK(to_device(gen, s->o, s->ho, bytes));
  /* Per-head RMS norm without gain: T H rows of dh values. */
  return weft_rmsnorm_forward(gen->ctx, T * H, dh, NORM_EPS, s->o, s->ones, s->o_n, s->rstd);
}

/* Top-k MoE over all E experts: s->y [T, d] = sum_j w_tj SwiGLU_{e_tj}(s->a_t). The rows of
 * the T k (token, slot) pairs are gathered expert-major (tokens in order within an expert),
 * run through the grouped SwiGLU, and summed back with the routing weights in slot order. */
static weft_status_t moe_ffn(weft_generator_t *gen, gen_layer_t *L, int64_t T) {
  gen_scratch_t *s = &gen->s;
  const weft_model_config_t *c = &gen->cfg;
  const int64_t d = c->dim, E = c->experts;
  const int k = c->topk;
  const int64_t rows = T * k;
  WEFT_CHECK(proj(gen, T, d, E, s->a, L->router->data, 0.0f, s->r_logits, E));
  WEFT_CHECK(weft_moe_router_topk(gen->ctx, T, E, k, true, s->r_logits, s->r_probs, NULL, s->r_ids,
                                  s->r_weights));
  WEFT_CHECK(weft_kernel_ctx_synchronize(gen->ctx));
  WEFT_CHECK(to_host(gen, s->h_ids, s->r_ids, (size_t)rows * sizeof(int32_t)));
  memset(s->h_fill, 0, (size_t)E * sizeof(int64_t));
  for (int64_t r = 0; r < rows; r++) {
    if (s->h_ids[r] < 0 || s->h_ids[r] >= E) {
      WEFT_ERROR("generate", "internal: router chose expert %d of %lld", s->h_ids[r], (long long)E);
      return WEFT_ERR_INTERNAL;
    }
    s->h_fill[s->h_ids[r]]++;
  }
  s->h_offsets[0] = 0;
  for (int64_t e = 0; e < E; e++) {
    s->h_offsets[e + 1] = s->h_offsets[e] + s->h_fill[e];
    s->h_fill[e] = 0;
  }
  for (int64_t r = 0; r < rows; r++) { /* r = t k + j, in token order */
    const int32_t e = s->h_ids[r];
    const int64_t row = s->h_offsets[e] + s->h_fill[e]++;
    s->h_perm[row] = (int32_t)(r / k);
    s->h_combine[r] = (int32_t)row;
  }
  WEFT_CHECK(to_device(gen, s->perm, s->h_perm, (size_t)rows * sizeof(int32_t)));
  WEFT_CHECK(to_device(gen, s->combine, s->h_combine, (size_t)rows * sizeof(int32_t)));
  WEFT_CHECK(weft_moe_gather_sum(gen->ctx, rows, d, 1, s->a, d, s->perm, NULL, s->xe, d));
  const weft_moe_experts_shape_t shape = {.experts = E, .hidden = d, .ffn = c->ffn};
  WEFT_CHECK(weft_moe_experts_forward(gen->ctx, &shape, s->h_offsets, s->xe, L->w1->data,
                                      L->w3->data, L->w2->data, s->f_a, s->f_b, s->f_act, s->ye));
  return weft_moe_gather_sum(gen->ctx, T, d, k, s->ye, d, s->combine, s->r_weights, s->y, d);
}

/* Dense SwiGLU: s->y [T, d] = (silu(a W1) * (a W3)) W2. */
static weft_status_t dense_ffn(weft_generator_t *gen, gen_layer_t *L, int64_t T) {
  gen_scratch_t *s = &gen->s;
  const int64_t d = gen->cfg.dim, f = gen->cfg.ffn;
  WEFT_CHECK(proj(gen, T, d, f, s->a, L->w1->data, 0.0f, s->f_a, f));
  WEFT_CHECK(proj(gen, T, d, f, s->a, L->w3->data, 0.0f, s->f_b, f));
  WEFT_CHECK(weft_moe_swiglu_forward(gen->ctx, T * f, s->f_a, s->f_b, s->f_act));
  return proj(gen, T, f, d, s->f_act, L->w2->data, 0.0f, s->y, d);
}

/* One layer on s->x [T, d] in place. */
static weft_status_t layer_forward(weft_generator_t *gen, int index, int64_t T, int64_t p0) {
  gen_layer_t *L = &gen->layers[index];
  gen_scratch_t *s = &gen->s;
  const int64_t d = gen->cfg.dim, hd = gen->cfg.heads * gen->dh;
  WEFT_CHECK(
      weft_rmsnorm_forward(gen->ctx, T, d, NORM_EPS, s->x, L->attn_norm->data, s->a, s->rstd));
  if (L->kind == 'S') {
    WEFT_CHECK(softmax_attention(gen, L, T, p0));
  } else {
    WEFT_CHECK(linear_attention(gen, L, T));
  }
  WEFT_CHECK(proj(gen, T, hd, d, L->kind == 'S' ? s->o : s->o_n, L->wo->data, 1.0f, s->x, d));
  WEFT_CHECK(
      weft_rmsnorm_forward(gen->ctx, T, d, NORM_EPS, s->x, L->ffn_norm->data, s->a, s->rstd));
  WEFT_CHECK(L->moe ? moe_ffn(gen, L, T) : dense_ffn(gen, L, T));
  return weft_elementwise_add(gen->ctx, WEFT_DTYPE_F32, T * d, s->x, s->y, s->x);
}

/* T tokens at positions length.. through every layer; with `head`, the logits of the last. */
static weft_status_t forward_chunk(weft_generator_t *gen, const int32_t *ids, int64_t T, bool head,
                                   float *logits) {
  gen_scratch_t *s = &gen->s;
  const int64_t d = gen->cfg.dim, p0 = gen->length;
  /* A blocking copy is not ordered after the context's stream on CUDA: the previous chunk's
   * kernels may still read s->ids. */
  WEFT_CHECK(weft_kernel_ctx_synchronize(gen->ctx));
  WEFT_CHECK(to_device(gen, s->ids, ids, (size_t)T * sizeof(int32_t)));
  WEFT_CHECK(
      weft_embedding_forward(gen->ctx, T, WEFT_MODEL_VOCAB, d, gen->embed->data, s->ids, s->x));
  for (int l = 0; l < gen->cfg.layers; l++) {
    WEFT_CHECK(layer_forward(gen, l, T, p0));
  }
  gen->length += T;
  if (!head) {
    return WEFT_OK;
  }
  WEFT_CHECK(weft_rmsnorm_forward(gen->ctx, 1, d, NORM_EPS, s->x + (T - 1) * d,
                                  gen->final_norm->data, s->xf, s->rstd1));
  WEFT_CHECK(proj(gen, 1, d, WEFT_MODEL_VOCAB, s->xf, gen->lm_head->data, 0.0f, s->logits,
                  WEFT_MODEL_VOCAB));
  WEFT_CHECK(weft_kernel_ctx_synchronize(gen->ctx));
  return to_host(gen, logits, s->logits, WEFT_MODEL_VOCAB * sizeof(float));
}

weft_status_t weft_generator_feed(weft_generator_t *gen, const int32_t *ids, int64_t count,
                                  float *logits) {
  if (count < 1 || gen->length + count > gen->capacity) {
    WEFT_ERROR("generate", "%lld token(s) after %lld do not fit the cache of %lld positions",
               (long long)count, (long long)gen->length, (long long)gen->capacity);
    return WEFT_ERR_INVALID_ARG;
  }
  for (int64_t t = 0; t < count; t++) {
    if (ids[t] < 0 || ids[t] >= WEFT_MODEL_VOCAB) {
      WEFT_ERROR("generate", "token %lld is %d, outside 0..%d", (long long)t, ids[t],
                 WEFT_MODEL_VOCAB - 1);
      return WEFT_ERR_INVALID_ARG;
    }
  }
  for (int64_t done = 0; done < count;) {
    const int64_t T = count - done < gen->chunk ? count - done : gen->chunk;
    WEFT_CHECK(forward_chunk(gen, ids + done, T, done + T == count, logits));
    done += T;
  }
  return WEFT_OK;
}

/* ---- sampling ------------------------------------------------------------------------------ */

/* The next number of the sampler's splitmix64 sequence. */
static uint64_t splitmix64_next(uint64_t *state) {
  const uint64_t z = weft_splitmix64(*state);
  *state += 0x9E3779B97F4A7C15ull;
  return z;
}

void weft_sampler_init(weft_sampler_t *sampler, double temperature, int top_k, uint64_t seed) {
  sampler->temperature = temperature;
  sampler->top_k = top_k;
  sampler->state = seed;
}

/* Logit order: larger first, then the lower byte; NaN ranks last. */
static bool ranks_before(const float *logits, int a, int b) {
  const float la = logits[a] == logits[a] ? logits[a] : -INFINITY;
  const float lb = logits[b] == logits[b] ? logits[b] : -INFINITY;
  return la > lb || (la == lb && a < b);
}

int weft_sampler_draw(weft_sampler_t *sampler, const float *logits) {
  enum { V = WEFT_MODEL_VOCAB };
  const int k = sampler->top_k <= 0 || sampler->top_k > V ? V : sampler->top_k;
  int best = 0;
  for (int i = 1; i < V; i++) {
    best = ranks_before(logits, i, best) ? i : best;
  }
  if (sampler->temperature <= 0 || k == 1) {
    return best;
  }
  /* The candidates: all bytes in byte order, or the k best in logit order (insertion into a
   * sorted list of k: O(V k), cheaper than sorting all 256 for the usual small k). */
  int order[V], kept = 0;
  for (int i = 0; i < V; i++) {
    if (k == V) {
      order[kept++] = i;
      continue;
    }
    if (kept == k && !ranks_before(logits, i, order[k - 1])) {
      continue;
    }
    int j = kept < k ? kept++ : k - 1;
    while (j > 0 && ranks_before(logits, i, order[j - 1])) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = i;
  }
  double p[V], total = 0;
  const double top = logits[best];
  for (int i = 0; i < kept; i++) {
    const double z = (double)logits[order[i]];
    p[i] = z == z ? exp((z - top) / sampler->temperature) : 0.0;
    total += p[i];
  }
  const double u = (double)(splitmix64_next(&sampler->state) >> 11) * 0x1.0p-53 * total;
  double cumulative = 0;
  for (int i = 0; i < kept; i++) {
    cumulative += p[i];
    if (u < cumulative) {
      return order[i];
    }
  }
  return best; /* total is 0 or NaN (every logit NaN or -inf) */
}
