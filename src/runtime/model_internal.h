/* The model's private state, shared by model.c (create, step), model_params.c (the parameter
 * table and its initialisation) and model_layers.c (the per-layer forward and backward). */
#ifndef WEFT_RUNTIME_MODEL_INTERNAL_H
#define WEFT_RUNTIME_MODEL_INTERNAL_H

#include "model.h"
#include "weft/moe_ep.h"

#define MODEL_MAX_PARAMS WEFT_MODEL_MAX_PARAMS

/* Activations one layer keeps from its forward for its backward ([T, ...], T tokens). */
typedef struct model_layer_saved {
  float *x_in;            /* [T, d] residual stream entering the layer */
  float *a;               /* [T, d] RMSNorm(x_in) */
  float *rstd_a;          /* [T] */
  float *q;               /* [T, H dh] (after RoPE on S layers) */
  float *k;               /* [T, Hk dh] */
  float *v;               /* [T, Hk dh] */
  float *graw;            /* [T, H dh] a Wg (L layers) */
  float *g;               /* [T, H dh] log decay (L layers) */
  float *o;               /* [T, H dh] attention output (before the head norm on L layers) */
  float *lse;             /* S: [B, H, n] log-sum-exp;  L: s_in [B, 2, H, dh, dh] */
  uint16_t *qb, *kb, *vb; /* bf16 attention on CUDA: q, k, v as the attention plan reads them */
  float *o_n;             /* [T, H dh] L layers: o after the per-head RMS norm */
  float *rstd_o;          /* [T H] */
  float *x_mid;           /* [T, d] x' = x_in + Attn */
  float *b;               /* [T, d] RMSNorm(x') */
  float *rstd_b;          /* [T] */
  float *f_a;             /* dense FFN: [T, f] b W1 */
  float *f_b;             /* [T, f] b W3 */
  float *f_act;           /* [T, f] silu(f_a) * f_b */
} model_layer_saved_t;

typedef struct model_layer {
  char kind; /* 'S' or 'L' */
  bool moe;
  int64_t kv_heads; /* Hkv on S layers, H on L layers */
  weft_param_t *attn_norm, *wq, *wk, *wv, *wg, *wo, *ffn_norm;
  weft_param_t *w1, *w3, *w2, *router; /* dense FFN or the MoE's router and local experts */
  weft_attn_sp_plan_t *attn;
  weft_linear_sp_plan_t *linear;
  weft_moe_plan_t *moe_plan;
  model_layer_saved_t s;
} model_layer_t;

/* Gradient scratch shared by every layer's backward. */
typedef struct model_scratch {
  float *dx;       /* [T, d] gradient of the residual stream */
  float *dt;       /* [T, d] */
  float *da;       /* [T, d] */
  float *dq;       /* [T, H dh] */
  float *dk;       /* [T, H dh] */
  float *dv;       /* [T, H dh] */
  float *dg;       /* [T, H dh] */
  float *dout;     /* [T, H dh] */
  float *ffn_work; /* [2 T f]: d(b W1) and d(b W3) of the dense FFN's backward */
  float *ones;     /* [dh] gain of the per-head norm */
  float *dummy;    /* [dh] its (discarded) gain gradient */
  float *logits;   /* [T, V] (the CE backward overwrites it with dlogits) */
  float *ce_loss;  /* [T] */
  float *ce_lse;   /* [T] */
  float *x_final;  /* [T, d] x_L */
  float *xf;       /* [T, d] RMSNorm(x_L) */
  float *rstd_f;   /* [T] */
} model_scratch_t;

struct weft_model {
  weft_model_config_t cfg;
  weft_model_parallel_t par;
  weft_mesh_t *mesh;
  weft_kernel_ctx_t *ctx;
  const weft_device_t *dev;
  bool on_device; /* CUDA: host arrays need uploading */
  int64_t rows;   /* B: sequences per rank per micro-batch */
  int64_t n;      /* slots per sequence on this rank: N / sp */
  int64_t tokens; /* T = B n */
  int64_t head_dim;
  int64_t *positions;             /* [n] global positions of this rank's slots (host) */
  int64_t *pos_tok;               /* [T] per token (device memory) */
  int32_t *ids_dev, *targets_dev; /* [T] (device copies; host arrays on the CPU) */
  float *ce_host;                 /* [T] */

  weft_param_t params[MODEL_MAX_PARAMS];
  int n_params;
  weft_param_t *embed, *final_norm, *lm_head;
  float *rep_data, *rep_grad; /* replicated region */
  uint16_t *rep_bf16;         /* --precision bf16: the replicated weights rounded, per step */
  uint16_t *cast[2];          /* bf16 copies of a GEMM's activation operands [T, widest] */
  bool attn_bf16;             /* softmax attention in bf16 (CUDA only) */
  int64_t rep_numel;
  float *exp_data, *exp_grad; /* expert region */
  int64_t exp_numel;

  model_layer_t layers[WEFT_MODEL_MAX_LAYERS];
  model_scratch_t scratch;
  weft_model_times_t times;

  void **allocs; /* every device allocation, freed at destroy */
  int n_allocs, cap_allocs;
};

/* Allocates `count` floats (or bytes when elem is 1) of device memory owned by the model. */
weft_status_t model_alloc(weft_model_t *model, size_t count, size_t elem, void **ptr_p);

/* C[M, N] = op(A) op(B) + beta C in the model's compute precision (model.c). A weight operand
 * is passed as its parameter (a_param / b_param, the matching pointer NULL): in bf16 its
 * rounded copy is used; an activation operand (stored packed: [M, K] or [K, M] for A, [K, N]
 * or [N, K] for B) is rounded into a scratch copy first. C is f32. */
weft_status_t model_gemm(weft_model_t *model, bool trans_a, bool trans_b, int64_t M, int64_t N,
                         int64_t K, const float *a, const weft_param_t *a_param, const float *b,
                         const weft_param_t *b_param, float beta, float *c);

/* Builds the parameter table and carves the regions (model_params.c). */
weft_status_t model_params_build(weft_model_t *model);

/* One layer (model_layers.c). x: [T, d] residual stream in/out (x_in saved first). */
weft_status_t model_layer_forward(weft_model_t *model, int index, float *x,
                                  weft_model_losses_t *losses);
/* dx: [T, d] gradient of the stream leaving the layer in, entering it out. */
weft_status_t model_layer_backward(weft_model_t *model, int index, float *dx);

#endif /* WEFT_RUNTIME_MODEL_INTERNAL_H */
