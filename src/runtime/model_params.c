/* The parameter table of docs/model.md, the two flat regions it lives in, and the
 * counter-based initialisation that makes the initial model the same for every mesh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "weft/check.h"
#include "weft/log.h"

/* Adds a parameter to the table; its slice of a region is assigned later. Experts are split
 * along dim 0 over the ep group. */
static weft_param_t *add_param(weft_model_t *m, const char *name, int ndim, int64_t d0, int64_t d1,
                               int64_t d2, bool expert, bool decay, double std) {
  weft_param_t *p = &m->params[m->n_params++];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  p->ndim = ndim;
  const int64_t dims[3] = {d0, d1, d2};
  p->numel = 1;
  for (int i = 0; i < 3; i++) {
    p->shape[i] = i < ndim ? dims[i] : 1;
    p->local_shape[i] = p->shape[i];
  }
  if (expert) {
    const int ep = m->mesh->shape.ep;
    p->local_shape[0] = d0 / ep;
    p->slice_start = (int64_t)m->mesh->ep_index * p->local_shape[0];
  }
  for (int i = 0; i < ndim; i++) {
    p->numel *= p->local_shape[i];
  }
  p->expert = expert;
  p->decay = decay;
  p->init_std = std;
  return p;
}

weft_status_t model_params_build(weft_model_t *m) {
  const weft_model_config_t *c = &m->cfg;
  const int64_t d = c->dim, hd = c->heads * m->head_dim, f = c->ffn, E = c->experts;
  const double std = 0.02, out_std = 0.02 / sqrt(2.0 * c->layers);
  char name[48];
  m->embed = add_param(m, "embed", 2, WEFT_MODEL_VOCAB, d, 1, false, true, std);
  for (int l = 0; l < c->layers; l++) {
    model_layer_t *L = &m->layers[l];
    L->kind = c->pattern[l];
    L->moe = c->moe_pattern[l] == 'M';
    L->kv_heads = L->kind == 'S' ? c->kv_heads : c->heads;
    const int64_t kvd = L->kv_heads * m->head_dim;
#define NAME(suffix) (snprintf(name, sizeof name, "layers.%d.%s", l, suffix), name)
    L->attn_norm = add_param(m, NAME("attn_norm"), 1, d, 1, 1, false, false, 0);
    L->wq = add_param(m, NAME("attn.wq"), 2, d, hd, 1, false, true, std);
    L->wk = add_param(m, NAME("attn.wk"), 2, d, kvd, 1, false, true, std);
    L->wv = add_param(m, NAME("attn.wv"), 2, d, kvd, 1, false, true, std);
    L->wg = L->kind == 'L' ? add_param(m, NAME("attn.wg"), 2, d, hd, 1, false, true, std) : NULL;
    L->wo = add_param(m, NAME("attn.wo"), 2, hd, d, 1, false, true, out_std);
    L->ffn_norm = add_param(m, NAME("ffn_norm"), 1, d, 1, 1, false, false, 0);
    if (L->moe) {
      L->router = add_param(m, NAME("moe.router"), 2, d, E, 1, false, true, std);
      L->w1 = add_param(m, NAME("moe.w1"), 3, E, d, f, true, true, std);
      L->w3 = add_param(m, NAME("moe.w3"), 3, E, d, f, true, true, std);
      L->w2 = add_param(m, NAME("moe.w2"), 3, E, f, d, true, true, out_std);
    } else {
      L->w1 = add_param(m, NAME("ffn.w1"), 2, d, f, 1, false, true, std);
      L->w3 = add_param(m, NAME("ffn.w3"), 2, d, f, 1, false, true, std);
      L->w2 = add_param(m, NAME("ffn.w2"), 2, f, d, 1, false, true, out_std);
    }
#undef NAME
  }
  m->final_norm = add_param(m, "final_norm", 1, d, 1, 1, false, false, 0);
  m->lm_head = add_param(m, "lm_head", 2, d, WEFT_MODEL_VOCAB, 1, false, true, std);

  /* Regions: parameters in table order, replicated and expert ones apart. */
  m->rep_numel = m->exp_numel = 0;
  for (int i = 0; i < m->n_params; i++) {
    int64_t *region = m->params[i].expert ? &m->exp_numel : &m->rep_numel;
    m->params[i].data = (float *)(intptr_t)*region; /* offset for now */
    *region += m->params[i].numel;
  }
  WEFT_CHECK(model_alloc(m, (size_t)m->rep_numel, sizeof(float), (void **)&m->rep_data));
  WEFT_CHECK(model_alloc(m, (size_t)m->rep_numel, sizeof(float), (void **)&m->rep_grad));
  WEFT_CHECK(model_alloc(m, (size_t)m->exp_numel, sizeof(float), (void **)&m->exp_data));
  WEFT_CHECK(model_alloc(m, (size_t)m->exp_numel, sizeof(float), (void **)&m->exp_grad));
  for (int i = 0; i < m->n_params; i++) {
    weft_param_t *p = &m->params[i];
    const int64_t offset = (int64_t)(intptr_t)p->data;
    p->data = (p->expert ? m->exp_data : m->rep_data) + offset;
    p->grad = (p->expert ? m->exp_grad : m->rep_grad) + offset;
  }
  return WEFT_OK;
}

/* ---- initialisation --------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* FNV-1a, 64 bit. */
static uint64_t hash_name(const char *name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const unsigned char *s = (const unsigned char *)name; *s; s++) {
    h = (h ^ *s) * 0x100000001b3ull;
  }
  return h;
}

/* Element `index` of the standard normal tensor named by `key` (docs/model.md):
 * u1 in (0, 1] and u2 in [0, 1) from two counters, z = sqrt(-2 ln u1) cos(2 pi u2). */
static double counter_normal(uint64_t key, uint64_t index) {
  const uint64_t a = splitmix64(key ^ (2 * index));
  const uint64_t b = splitmix64(key ^ (2 * index + 1));
  const double u1 = (double)((a >> 11) + 1) * 0x1.0p-53;
  const double u2 = (double)(b >> 11) * 0x1.0p-53;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

weft_status_t weft_model_init(weft_model_t *m, uint64_t seed) {
  int64_t largest = 0;
  for (int i = 0; i < m->n_params; i++) {
    largest = m->params[i].numel > largest ? m->params[i].numel : largest;
  }
  float *host = malloc((size_t)(largest > 0 ? largest : 1) * sizeof *host);
  if (!host) {
    WEFT_ERROR("model", "out of host memory initialising %lld parameters", (long long)largest);
    return WEFT_ERR_NO_MEMORY;
  }
  weft_status_t st = WEFT_OK;
  for (int i = 0; i < m->n_params && st == WEFT_OK; i++) {
    const weft_param_t *p = &m->params[i];
    const uint64_t key = seed ^ hash_name(p->name);
    const int64_t first = p->slice_start * (p->numel / p->local_shape[0]);
    for (int64_t e = 0; e < p->numel; e++) {
      host[e] = p->init_std == 0
                    ? 1.0f
                    : (float)(p->init_std * counter_normal(key, (uint64_t)(first + e)));
    }
    st = weft_device_copy(m->dev, p->data, host, (size_t)p->numel * sizeof(float),
                          WEFT_COPY_HOST_TO_DEVICE);
  }
  free(host);
  return st;
}

int weft_model_param_count(const weft_model_t *m) { return m->n_params; }

weft_param_t *weft_model_param(weft_model_t *m, int index) { return &m->params[index]; }

float *weft_model_region(weft_model_t *m, bool expert, bool grad, int64_t *numel_p) {
  if (numel_p) {
    *numel_p = expert ? m->exp_numel : m->rep_numel;
  }
  if (expert) {
    return grad ? m->exp_grad : m->exp_data;
  }
  return grad ? m->rep_grad : m->rep_data;
}

int64_t weft_model_global_params(const weft_model_t *m) {
  int64_t total = 0;
  for (int i = 0; i < m->n_params; i++) {
    total += m->params[i].shape[0] * m->params[i].shape[1] * m->params[i].shape[2];
  }
  return total;
}

weft_status_t weft_model_zero_grads(weft_model_t *m) {
  WEFT_CHECK(weft_device_memset(m->dev, m->rep_grad, 0, (size_t)m->rep_numel * sizeof(float)));
  WEFT_CHECK(weft_device_memset(m->dev, m->exp_grad, 0, (size_t)m->exp_numel * sizeof(float)));
  return WEFT_OK;
}
