/* Model configuration: the layer patterns and the checks every rank makes before start-up. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define FAIL(...)                           \
  do {                                      \
    if (err) {                              \
      snprintf(err, err_size, __VA_ARGS__); \
    }                                       \
    return WEFT_ERR_INVALID_ARG;            \
  } while (0)

weft_status_t weft_model_config_set_layers(weft_model_config_t *cfg, const char *layers_text,
                                           const char *moe_text, char *err, size_t err_size) {
  if (!layers_text || !*layers_text) {
    FAIL("--layers is empty");
  }
  char *end = NULL;
  const long count = strtol(layers_text, &end, 10);
  if (isdigit((unsigned char)layers_text[0]) && end && *end == '\0') {
    if (count < 1 || count > WEFT_MODEL_MAX_LAYERS) {
      FAIL("--layers %ld: need 1..%d layers", count, WEFT_MODEL_MAX_LAYERS);
    }
    memset(cfg->pattern, 'S', (size_t)count);
    cfg->pattern[count] = '\0';
  } else {
    const size_t len = strlen(layers_text);
    if (len > WEFT_MODEL_MAX_LAYERS) {
      FAIL("--layers '%s': at most %d layers", layers_text, WEFT_MODEL_MAX_LAYERS);
    }
    for (size_t i = 0; i < len; i++) {
      const char c = (char)toupper((unsigned char)layers_text[i]);
      if (c != 'S' && c != 'L') {
        FAIL(
            "--layers '%s': letter %zu is '%c'; use S (softmax) or L (linear attention) or a "
            "number of softmax layers",
            layers_text, i + 1, layers_text[i]);
      }
      cfg->pattern[i] = c;
    }
    cfg->pattern[len] = '\0';
  }
  cfg->layers = (int)strlen(cfg->pattern);
  if (!moe_text || !*moe_text) {
    memset(cfg->moe_pattern, cfg->experts > 0 ? 'M' : 'D', (size_t)cfg->layers);
    cfg->moe_pattern[cfg->layers] = '\0';
    return WEFT_OK;
  }
  if (strlen(moe_text) != (size_t)cfg->layers) {
    FAIL("--moe-layers '%s' has %zu letters for %d layers", moe_text, strlen(moe_text),
         cfg->layers);
  }
  for (int i = 0; i < cfg->layers; i++) {
    const char c = (char)toupper((unsigned char)moe_text[i]);
    if (c != 'M' && c != 'D') {
      FAIL("--moe-layers '%s': letter %d is '%c'; use M (MoE) or D (dense)", moe_text, i + 1,
           moe_text[i]);
    }
    cfg->moe_pattern[i] = c;
  }
  cfg->moe_pattern[cfg->layers] = '\0';
  return WEFT_OK;
}

weft_status_t weft_model_config_check(const weft_model_config_t *cfg, int sp, int ep, char *err,
                                      size_t err_size) {
  if (cfg->dim < 2 || cfg->heads < 1 || cfg->kv_heads < 1 || cfg->ffn < 1) {
    FAIL("--dim %lld, --heads %lld, --kv-heads %lld and --ffn-dim %lld must be positive",
         (long long)cfg->dim, (long long)cfg->heads, (long long)cfg->kv_heads, (long long)cfg->ffn);
  }
  if (cfg->dim % cfg->heads != 0) {
    FAIL("--dim %lld is not divisible by --heads %lld", (long long)cfg->dim, (long long)cfg->heads);
  }
  if ((cfg->dim / cfg->heads) % 2 != 0) {
    FAIL("head width --dim / --heads = %lld must be even (RoPE rotates pairs)",
         (long long)(cfg->dim / cfg->heads));
  }
  if (cfg->heads % cfg->kv_heads != 0) {
    FAIL("--heads %lld is not divisible by --kv-heads %lld", (long long)cfg->heads,
         (long long)cfg->kv_heads);
  }
  if (cfg->layers < 1 || (size_t)cfg->layers != strlen(cfg->pattern)) {
    FAIL("no layers (--layers)");
  }
  bool any_moe = false;
  for (int l = 0; l < cfg->layers; l++) {
    any_moe |= cfg->moe_pattern[l] == 'M';
  }
  if (cfg->experts < 0) {
    FAIL("--experts %lld is negative", (long long)cfg->experts);
  }
  if (any_moe && cfg->experts == 0) {
    FAIL("--moe-layers asks for MoE layers but --experts is 0");
  }
  if (any_moe) {
    if (cfg->topk < 1 || cfg->topk > cfg->experts) {
      FAIL("--topk %d must be in 1..--experts (%lld)", cfg->topk, (long long)cfg->experts);
    }
    if (cfg->experts % ep != 0) {
      FAIL("--experts %lld is not divisible by --ep %d", (long long)cfg->experts, ep);
    }
  }
  if (cfg->seq < 2 * sp || cfg->seq % (2 * sp) != 0) {
    FAIL(
        "--seq %lld must be a positive multiple of 2 x sp = %d (the zigzag layout cuts each "
        "sequence into 2 sp equal chunks)",
        (long long)cfg->seq, 2 * sp);
  }
  if (!(cfg->aux_weight >= 0) || !(cfg->z_weight >= 0)) {
    FAIL("--aux-weight %g and --z-weight %g must be >= 0", cfg->aux_weight, cfg->z_weight);
  }
  return WEFT_OK;
}

static weft_param_spec_t *spec(weft_param_spec_t *specs, int *n, weft_param_role_t role, int layer,
                               const char *suffix, int ndim, int64_t d0, int64_t d1, int64_t d2,
                               double std) {
  weft_param_spec_t *s = &specs[(*n)++];
  memset(s, 0, sizeof *s);
  if (layer < 0) {
    snprintf(s->name, sizeof s->name, "%s", suffix);
  } else {
    snprintf(s->name, sizeof s->name, "layers.%d.%s", layer, suffix);
  }
  s->role = role;
  s->layer = layer;
  s->ndim = ndim;
  const int64_t dims[3] = {d0, d1, d2};
  for (int i = 0; i < 3; i++) {
    s->shape[i] = i < ndim ? dims[i] : 1;
  }
  s->decay = ndim > 1;
  s->init_std = std;
  return s;
}

int weft_model_param_specs(const weft_model_config_t *c, weft_param_spec_t *specs) {
  const int64_t d = c->dim, dh = c->dim / c->heads, hd = c->heads * dh, f = c->ffn;
  const int64_t E = c->experts, V = WEFT_MODEL_VOCAB;
  const double std = 0.02, out_std = 0.02 / sqrt(2.0 * c->layers);
  int n = 0;
  spec(specs, &n, WEFT_PARAM_EMBED, -1, "embed", 2, V, d, 1, std);
  for (int l = 0; l < c->layers; l++) {
    const bool linear = c->pattern[l] == 'L';
    const int64_t kvd = (linear ? c->heads : c->kv_heads) * dh;
    spec(specs, &n, WEFT_PARAM_ATTN_NORM, l, "attn_norm", 1, d, 1, 1, 0);
    spec(specs, &n, WEFT_PARAM_WQ, l, "attn.wq", 2, d, hd, 1, std);
    spec(specs, &n, WEFT_PARAM_WK, l, "attn.wk", 2, d, kvd, 1, std);
    spec(specs, &n, WEFT_PARAM_WV, l, "attn.wv", 2, d, kvd, 1, std);
    if (linear) {
      spec(specs, &n, WEFT_PARAM_WG, l, "attn.wg", 2, d, hd, 1, std);
    }
    spec(specs, &n, WEFT_PARAM_WO, l, "attn.wo", 2, hd, d, 1, out_std);
    spec(specs, &n, WEFT_PARAM_FFN_NORM, l, "ffn_norm", 1, d, 1, 1, 0);
    if (c->moe_pattern[l] == 'M') {
      spec(specs, &n, WEFT_PARAM_ROUTER, l, "moe.router", 2, d, E, 1, std);
      spec(specs, &n, WEFT_PARAM_W1, l, "moe.w1", 3, E, d, f, std)->expert = true;
      spec(specs, &n, WEFT_PARAM_W3, l, "moe.w3", 3, E, d, f, std)->expert = true;
      spec(specs, &n, WEFT_PARAM_W2, l, "moe.w2", 3, E, f, d, out_std)->expert = true;
    } else {
      spec(specs, &n, WEFT_PARAM_W1, l, "ffn.w1", 2, d, f, 1, std);
      spec(specs, &n, WEFT_PARAM_W3, l, "ffn.w3", 2, d, f, 1, std);
      spec(specs, &n, WEFT_PARAM_W2, l, "ffn.w2", 2, f, d, 1, out_std);
    }
  }
  spec(specs, &n, WEFT_PARAM_FINAL_NORM, -1, "final_norm", 1, d, 1, 1, 0);
  spec(specs, &n, WEFT_PARAM_LM_HEAD, -1, "lm_head", 2, d, V, 1, std);
  return n;
}
