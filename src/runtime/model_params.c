/* The parameter table of docs/model.md, the two flat regions it lives in, and the
 * counter-based initialisation that makes the initial model the same for every mesh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "splitmix.h"
#include "weft/check.h"
#include "weft/log.h"

/* The model's parameter from its table entry: experts are split along dim 0 over ep. */
static weft_param_t *add_param(weft_model_t *m, const weft_param_spec_t *spec) {
  weft_param_t *p = &m->params[m->n_params++];
  memset(p, 0, sizeof *p);
  _Static_assert(sizeof p->name == sizeof spec->name, "parameter names have one size");
  memcpy(p->name, spec->name, sizeof p->name);
  p->ndim = spec->ndim;
  p->numel = 1;
  for (int i = 0; i < 3; i++) {
    p->shape[i] = spec->shape[i];
    p->local_shape[i] = spec->shape[i];
  }
  if (spec->expert) {
    p->local_shape[0] = spec->shape[0] / m->mesh->shape.ep;
    p->slice_start = (int64_t)m->mesh->ep_index * p->local_shape[0];
  }
  for (int i = 0; i < p->ndim; i++) {
    p->numel *= p->local_shape[i];
  }
  p->expert = spec->expert;
  p->decay = spec->decay;
  p->init_std = spec->init_std;
  return p;
}

weft_status_t model_params_build(weft_model_t *m) {
  static weft_param_spec_t specs[WEFT_MODEL_MAX_PARAMS];
  const int count = weft_model_param_specs(&m->cfg, specs);
  for (int l = 0; l < m->cfg.layers; l++) {
    model_layer_t *L = &m->layers[l];
    L->kind = m->cfg.pattern[l];
    L->moe = m->cfg.moe_pattern[l] == 'M';
    L->kv_heads = L->kind == 'S' ? m->cfg.kv_heads : m->cfg.heads;
  }
  for (int i = 0; i < count; i++) {
    weft_param_t *p = add_param(m, &specs[i]);
    WEFT_PARAM_BIND(specs[i], m, m->layers, p);
  }

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
  const uint64_t a = weft_splitmix64(key ^ (2 * index));
  const uint64_t b = weft_splitmix64(key ^ (2 * index + 1));
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
