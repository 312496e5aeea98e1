/* The model of docs/model.md: configuration, parameters, and one micro-batch's forward and
 * backward on one rank of a dp x sp x ep mesh.
 *
 * Tokens: each rank holds `rows` sequences per micro-batch and, of each, the n = N / sp slots
 * of the zigzag layout (rank r of sp holds chunks r and 2P-1-r of 2P). Every layer works on
 * the same [rows * n] tokens: softmax layers through weft/attention_sp.h (RoPE at the
 * tokens' global positions), linear layers through weft/linear_sp.h's zigzag plans (the
 * state travels along the chunk order), MoE FFNs through weft/moe_ep.h.
 *
 * Parameters live in two flat f32 buffers with their gradients: the replicated region (every
 * parameter but the experts, all-reduced over dp x sp) and the expert region (this rank's
 * E / ep experts of every MoE layer, all-reduced over the ranks holding the same experts).
 * Each parameter is a contiguous slice of its region, in table order.
 *
 * Memory: every buffer is in the kernel context's device memory; activations are allocated
 * at creation for `rows` sequences and reused by every micro-batch. */
#ifndef WEFT_RUNTIME_MODEL_H
#define WEFT_RUNTIME_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/attention_sp.h"
#include "weft/kernel_ctx.h"
#include "weft/linear_sp.h"
#include "weft/mesh.h"
#include "weft/status.h"
#include "weft/tensor_file.h"

#define WEFT_MODEL_VOCAB      256
#define WEFT_MODEL_MAX_LAYERS 64

typedef struct weft_model_config {
  int64_t dim;                                 /* d */
  int64_t heads;                               /* H; dh = d / H */
  int64_t kv_heads;                            /* Hkv of softmax layers */
  int64_t ffn;                                 /* f */
  int64_t experts;                             /* E; 0 = every FFN dense */
  int topk;                                    /* k */
  int64_t seq;                                 /* N */
  int layers;                                  /* L = strlen(pattern) */
  char pattern[WEFT_MODEL_MAX_LAYERS + 1];     /* 'S' softmax / 'L' linear, per layer */
  char moe_pattern[WEFT_MODEL_MAX_LAYERS + 1]; /* 'M' MoE / 'D' dense, per layer */
  bool bf16; /* GEMMs (and softmax attention on CUDA) with bf16 operands and f32 accumulation;
               parameters, gradients and optimizer state stay f32 (master weights) */
  double aux_weight; /* LBL weight */
  double z_weight;   /* router z-loss weight */
} weft_model_config_t;

/* How the layers run in parallel. */
typedef struct weft_model_parallel {
  weft_attn_sp_algo_t sp_algo;
  int ulysses_degree; /* HYBRID's u (0 = automatic) */
  weft_linear_sp_algo_t linear_algo;
} weft_model_parallel_t;

/* Sets pattern and layers from `--layers` text: a string over {S, L} or a number n (n softmax
 * layers). Then, when moe_text is NULL, moe_pattern is every layer MoE when experts > 0 and
 * dense otherwise; else moe_text is a string over {M, D} of the same length. */
weft_status_t weft_model_config_set_layers(weft_model_config_t *cfg, const char *layers_text,
                                           const char *moe_text, char *err, size_t err_size);

/* Checks the shape against itself and the mesh (sp and ep degrees): H divides d, dh even,
 * Hkv divides H, E divisible by ep, k in 1..E, N a multiple of 2 sp, ... One line naming the
 * value in `err`; WEFT_ERR_INVALID_ARG. Pure: every rank finds the same answer. */
weft_status_t weft_model_config_check(const weft_model_config_t *cfg, int sp, int ep, char *err,
                                      size_t err_size);

/* What a parameter is in docs/model.md's table. */
typedef enum weft_param_role {
  WEFT_PARAM_EMBED,
  WEFT_PARAM_ATTN_NORM,
  WEFT_PARAM_WQ,
  WEFT_PARAM_WK,
  WEFT_PARAM_WV,
  WEFT_PARAM_WG,
  WEFT_PARAM_WO,
  WEFT_PARAM_FFN_NORM,
  WEFT_PARAM_ROUTER,
  WEFT_PARAM_W1,
  WEFT_PARAM_W3,
  WEFT_PARAM_W2,
  WEFT_PARAM_FINAL_NORM,
  WEFT_PARAM_LM_HEAD,
} weft_param_role_t;

#define WEFT_MODEL_MAX_PARAMS (16 * WEFT_MODEL_MAX_LAYERS + 8)

/* One entry of the parameter table, from the configuration alone (global shapes). */
typedef struct weft_param_spec {
  char name[48]; /* "layers.0.attn.wq" */
  weft_param_role_t role;
  int layer;        /* 0..L-1, or -1 for embed, final_norm, lm_head */
  int ndim;         /* 1..3 */
  int64_t shape[3]; /* unused dims are 1 */
  bool expert;      /* an MoE expert tensor [E, ...] (sharded over ep) */
  bool decay;       /* weight decay applies (matrices) */
  double init_std;  /* 0: initialised to 1 (norm gains) */
} weft_param_spec_t;

/* docs/model.md's parameter table in its fixed order (embed, per layer attn_norm, wq, wk, wv,
 * [wg], wo, ffn_norm, [router], w1, w3, w2, then final_norm, lm_head). The model, the
 * checkpoints and `weft generate` all use this one list. Returns the count (at most
 * WEFT_MODEL_MAX_PARAMS). cfg must pass weft_model_config_check. */
int weft_model_param_specs(const weft_model_config_t *cfg, weft_param_spec_t *specs);

/* Stores the parameter `p` of table entry `spec` in the field its role names: top->embed,
 * top->final_norm, top->lm_head, or layers[spec.layer].wq and so on. For the model and `weft
 * generate`, whose structs (of different parameter types) share these field names; a macro
 * because the types differ. */
#define WEFT_PARAM_BIND(spec, top, layers, p)                                 \
  do {                                                                        \
    switch ((spec).role) {                                                    \
    case WEFT_PARAM_EMBED: (top)->embed = (p); break;                         \
    case WEFT_PARAM_FINAL_NORM: (top)->final_norm = (p); break;               \
    case WEFT_PARAM_LM_HEAD: (top)->lm_head = (p); break;                     \
    case WEFT_PARAM_ATTN_NORM: (layers)[(spec).layer].attn_norm = (p); break; \
    case WEFT_PARAM_WQ: (layers)[(spec).layer].wq = (p); break;               \
    case WEFT_PARAM_WK: (layers)[(spec).layer].wk = (p); break;               \
    case WEFT_PARAM_WV: (layers)[(spec).layer].wv = (p); break;               \
    case WEFT_PARAM_WG: (layers)[(spec).layer].wg = (p); break;               \
    case WEFT_PARAM_WO: (layers)[(spec).layer].wo = (p); break;               \
    case WEFT_PARAM_FFN_NORM: (layers)[(spec).layer].ffn_norm = (p); break;   \
    case WEFT_PARAM_ROUTER: (layers)[(spec).layer].router = (p); break;       \
    case WEFT_PARAM_W1: (layers)[(spec).layer].w1 = (p); break;               \
    case WEFT_PARAM_W3: (layers)[(spec).layer].w3 = (p); break;               \
    case WEFT_PARAM_W2: (layers)[(spec).layer].w2 = (p); break;               \
    }                                                                         \
  } while (0)

/* One parameter tensor. */
typedef struct weft_param {
  char name[48];          /* "layers.0.attn.wq" */
  int ndim;               /* 1..3 */
  int64_t shape[3];       /* global shape */
  int64_t local_shape[3]; /* this rank's slice: experts split along dim 0 */
  int64_t slice_start;    /* first global index along dim 0 of this rank's slice */
  int64_t numel;          /* local elements */
  bool expert;            /* in the expert region (sharded over ep) */
  bool decay;             /* weight decay applies (matrices) */
  double init_std;        /* 0: initialised to 1 (norm gains) */
  float *data;            /* into the region buffers */
  float *grad;
} weft_param_t;

typedef struct weft_model weft_model_t;

/* Losses of one micro-batch on this rank. */
typedef struct weft_model_losses {
  double ce_sum;      /* sum over this rank's labelled tokens of lse - z_target (unscaled) */
  int64_t labelled;   /* those tokens */
  double lbl_partial; /* this rank's share of sum over MoE layers of LBL (unweighted) */
  double z_partial;   /* this rank's share of sum over MoE layers of the z-loss */
} weft_model_losses_t;

/* Creates the model and its plans. Collective over the mesh.
 * [in] rows: sequences per rank per micro-batch (>= 1). Everything else is borrowed. */
weft_status_t weft_model_create(const weft_model_config_t *cfg, const weft_model_parallel_t *par,
                                weft_mesh_t *mesh, weft_kernel_ctx_t *ctx, int64_t rows,
                                weft_model_t **model_p);
void weft_model_destroy(weft_model_t *model);

const weft_model_config_t *weft_model_config(const weft_model_t *model);
int weft_model_param_count(const weft_model_t *model);
weft_param_t *weft_model_param(weft_model_t *model, int index);
/* Flat regions: the replicated parameters and this rank's experts. */
float *weft_model_region(weft_model_t *model, bool expert, bool grad, int64_t *numel_p);
/* Global parameter count (experts counted once). */
int64_t weft_model_global_params(const weft_model_t *model);
/* Tokens per rank per micro-batch: rows * N / sp. */
int64_t weft_model_local_tokens(const weft_model_t *model);

/* Draws every parameter from the counter-based generator of docs/model.md (this rank's slice
 * of each global tensor), so the initial model is the same for every mesh. */
weft_status_t weft_model_init(weft_model_t *model, uint64_t seed);

/* This rank's slots of `rows` windows (each N + 1 bytes, host memory): ids and targets
 * [rows * n] in the model's token order (the zigzag slots of this sp rank). */
void weft_model_select_tokens(const weft_model_t *model, const uint8_t *windows, int32_t *ids,
                              int32_t *targets);

/* Opens a step of `micro_batches` micro-batches of `global_tokens` tokens in all (MoE load
 * balancing counts accumulate over them). */
void weft_model_step_begin(weft_model_t *model, int64_t global_tokens);

/* One micro-batch. Collective over the mesh.
 * [in] ids, targets [rows * n] host arrays (weft_model_select_tokens)
 * [in] ce_scale: the cross-entropy gradient's scale (1 / labelled tokens of the global batch)
 * [in] backward: false = forward only (evaluation); true = also add the gradients into the
 *      gradient regions (not zeroed here)
 * [out] losses */
weft_status_t weft_model_step(weft_model_t *model, const int32_t *ids, const int32_t *targets,
                              float ce_scale, bool backward, weft_model_losses_t *losses);

/* Writes every parameter (grads = false) or its gradient (true) as dataset
 * "/<group>/<name>" with its global shape. Collective over the file's communicator, which must
 * be the mesh's world. */
weft_status_t weft_model_write(weft_model_t *model, weft_tensor_file_t *file, const char *group,
                               bool grads);
/* Reads every parameter from "/<group>/<name>" (this rank's slice). A missing dataset or one of
 * another shape or dtype is an error naming it. Collective. */
weft_status_t weft_model_read(weft_model_t *model, weft_tensor_file_t *file, const char *group);

/* Sets both gradient regions to zero. */
weft_status_t weft_model_zero_grads(weft_model_t *model);

/* Wall time of the most recent weft_model_step on this rank, and the parts of it spent
 * waiting for other ranks (wait_s) and in communication that nothing hid (comm_s: the MoE
 * exchanges and the exposed linear-attention state hand-off; softmax SP transfers overlap
 * its attention blocks inside the attention call and are not separated). */
typedef struct weft_model_times {
  double total_s;
  double wait_s; /* MoE layers: waiting for slower ranks before an exchange (imbalance) */
  double comm_s;
  uint64_t comm_bytes; /* bytes this rank sent in those calls */
} weft_model_times_t;
weft_model_times_t weft_model_last_times(const weft_model_t *model);

#endif /* WEFT_RUNTIME_MODEL_H */
