/* The trainer: mesh, model, data and optimizer for `weft train` and `weft eval`
 * (docs/training.md). One step = zero gradients, the micro-batches' forward and backward,
 * gradient all-reduce (replicated parameters over dp x sp, experts over their replicas),
 * global-norm clipping, AdamW with warmup + cosine. */
#ifndef WEFT_RUNTIME_TRAINER_H
#define WEFT_RUNTIME_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "train_opts.h"
#include "weft/comm.h"

typedef struct weft_trainer weft_trainer_t;

/* What one step measured: losses and norms are the same on every rank; times and bytes are
 * this rank's. */
typedef struct weft_step_metrics {
  int64_t step;      /* 1-based */
  double loss;       /* ce + aux_weight lbl + z_weight z */
  double ce;         /* mean cross-entropy, nats per token */
  double lbl, zloss; /* summed over MoE layers, unweighted */
  double lr;
  double grad_norm; /* before clipping */
  double step_s;    /* this rank: wall time of the step */
  double wait_s;    /* this rank: waiting for slower ranks before the MoE exchanges and the
                       gradient all-reduce (load imbalance) */
  double comm_s;    /* this rank: MoE exchanges, exposed linear scans, gradient all-reduce */
  double allreduce_s;
  uint64_t comm_bytes; /* bytes this rank sent in the step */
  double tokens_per_s; /* global tokens / step_s */
  bool nonfinite;      /* the loss or the gradient norm is NaN or infinite: stop */
} weft_step_metrics_t;

/* ---- checkpoints (trainer_ckpt.c; docs/checkpoint-format.md) ---- */

/* Saves parameters, AdamW moments (trainable parameters) and the run state after
 * `steps_done` steps into `dir` (commit protocol of weft/checkpoint.h), keeping `keep`.
 * Collective. background: copy the state to host memory, create the file and return while a
 * thread writes it (weft/checkpoint.h, "Background saves"); weft_trainer_save_poll commits
 * it. Otherwise return once it is committed. [out] path: the file (committed unless
 * background). */
weft_status_t weft_trainer_save(weft_trainer_t *trainer, const char *dir, int64_t steps_done,
                                int keep, bool background, char *path, size_t path_size);
/* Commits the background save in flight once every rank has written it (wait: waits for
 * them); nothing when none is in flight. Collective: every rank calls it at the same points.
 * [out] committed_p: whether a save was committed; path (may be NULL): its file. */
weft_status_t weft_trainer_save_poll(weft_trainer_t *trainer, bool wait, bool *committed_p,
                                     char *path, size_t path_size);

typedef enum weft_trainer_load_mode {
  WEFT_LOAD_RESUME = 0,   /* parameters, moments, step: continue the same run */
  WEFT_LOAD_FINETUNE = 1, /* parameters and moments; the new run starts at step 0 */
  WEFT_LOAD_PARAMS = 2,   /* parameters only (fine-tuning with fresh optimizer state, eval) */
} weft_trainer_load_mode_t;

/* Loads the checkpoint at `path` at this run's mesh (any mesh can read any checkpoint),
 * checking the model configuration, every shape and every checksum before use. Collective.
 * [out] step_p (may be NULL): the checkpoint's step. */
weft_status_t weft_trainer_load(weft_trainer_t *trainer, const char *path,
                                weft_trainer_load_mode_t mode, int64_t *step_p);

/* First step of this run: 0, or the step a resumed checkpoint was saved at. */
int64_t weft_trainer_start_step(const weft_trainer_t *trainer);

/* The model's shape-defining configuration as JSON (malloc'd). */
char *weft_trainer_model_json(const weft_trainer_t *trainer);

/* Builds everything. Collective over `world`. */
weft_status_t weft_trainer_create(const weft_train_opts_t *opts, const weft_train_plan_t *plan,
                                  weft_comm_t *world, weft_trainer_t **trainer_p);
void weft_trainer_destroy(weft_trainer_t *trainer);

weft_model_t *weft_trainer_model(weft_trainer_t *trainer);
const weft_mesh_t *weft_trainer_mesh(const weft_trainer_t *trainer);
double weft_trainer_unigram_nats(const weft_trainer_t *trainer);

/* Runs step `step` (0-based). A non-finite loss or gradient norm sets out->nonfinite on every
 * rank (the values are reduced, so every rank sees the same) and skips the update: the caller
 * reports it and stops cleanly. */
weft_status_t weft_trainer_step(weft_trainer_t *trainer, int64_t step, weft_step_metrics_t *out);

/* Mean cross-entropy over the first `batches` validation micro-batches (fewer when the split is
 * smaller). Collective. */
weft_status_t weft_trainer_evaluate(weft_trainer_t *trainer, long batches, double *loss_p);

/* Forward and backward of one global batch made of the given windows ([G, N + 1] bytes, the
 * same on every rank), gradients all-reduced, no optimizer step: for `weft check model`. */
weft_status_t weft_trainer_gradients(weft_trainer_t *trainer, const uint8_t *windows, long count,
                                     weft_step_metrics_t *out);

#endif /* WEFT_RUNTIME_TRAINER_H */
