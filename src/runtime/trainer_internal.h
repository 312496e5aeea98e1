/* The trainer's private state, shared by trainer.c (steps) and trainer_ckpt.c (checkpoints,
 * freezing). */
#ifndef WEFT_RUNTIME_TRAINER_INTERNAL_H
#define WEFT_RUNTIME_TRAINER_INTERNAL_H

#include "data.h"
#include "model_internal.h"
#include "trainer.h"
#include "weft/checkpoint.h"

/* Gradients are all-reduced in buckets of this many floats (16 MiB): big enough that each
 * call runs at link bandwidth, small enough that the --deterministic path's gather buffer
 * (P buckets) stays modest. */
#define BUCKET_FLOATS ((int64_t)4 << 20)

#define MODEL_MAX_TRAINER_PARAMS MODEL_MAX_PARAMS

struct weft_trainer {
  weft_train_opts_t opts;
  weft_train_plan_t plan;
  weft_comm_t *world;
  weft_mesh_t *mesh;
  weft_kernel_ctx_t *ctx;
  weft_data_t *data;
  weft_model_t *model;
  /* AdamW moments per parameter (device memory, the parameter's local shape); NULL for a
   * frozen parameter, which is never updated and holds no optimizer memory. */
  float *m[MODEL_MAX_TRAINER_PARAMS], *v[MODEL_MAX_TRAINER_PARAMS];
  bool frozen[MODEL_MAX_TRAINER_PARAMS];
  int64_t adam_base;          /* AdamW's step count before this run's step 0 (loaded moments) */
  int64_t start_step;         /* first step of this run (resume) */
  uint8_t *windows;           /* [rows, N + 1] */
  int32_t *ids, *targets;     /* [T] */
  float *stage, *gather;      /* --deterministic: [bucket], [P * bucket] host */
  const uint8_t *given;       /* weft_trainer_gradients' windows [G, N + 1] */
  weft_ckpt_writer_t *writer; /* background checkpoint saves; created by the first */
};

/* Marks the parameters `spec` names as frozen (trainer_ckpt.c): a comma-separated list of
 * groups: embed, head (lm_head and final_norm), norm (every norm gain), attn, ffn (dense FFNs),
 * moe (routers and experts), experts (experts only), router, layers.A-B or layers.N (whole
 * layers). NULL or "" freezes nothing. An unknown group is WEFT_ERR_INVALID_ARG naming it. */
weft_status_t trainer_freeze(weft_trainer_t *trainer, const char *spec);

#endif /* WEFT_RUNTIME_TRAINER_INTERNAL_H */
