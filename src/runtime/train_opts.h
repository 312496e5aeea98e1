/* Options of `weft train`, `weft eval`, `weft check model` and `weft bench train`: one flag
 * table, an optional JSON configuration file with the same keys, and the checks that turn
 * them into a model configuration, a mesh and a batch split (docs/training.md).
 *
 * Precedence: defaults, then the --config file, then flags on the command line. Every check
 * here is pure (no MPI), so every rank finds the same problem and exits 2 before start-up. */
#ifndef WEFT_RUNTIME_TRAIN_OPTS_H
#define WEFT_RUNTIME_TRAIN_OPTS_H

#include <stdbool.h>
#include <stddef.h>

#include "cli.h"
#include "model.h"
#include "session.h"
#include "weft/mesh.h"

typedef struct weft_train_opts {
  /* model */
  long dim, heads, kv_heads, experts, topk, ffn_dim;
  const char *layers, *moe_layers;
  double aux_weight, z_weight;
  /* data and batch */
  const char *data;
  long seq, batch, micro_batch;
  double val_fraction;
  /* optimisation */
  long steps, warmup;
  double lr, weight_decay, clip;
  /* mesh and algorithms */
  long dp, sp, ep, ulysses_degree;
  const char *sp_algo, *linear_algo;
  /* run */
  const char *device, *precision, *metrics, *config, *save, *params;
  long seed, eval_every, eval_batches, log_every;
  bool deterministic;
  /* checkpoints and fine-tuning */
  const char *ckpt_dir, *resume, *from, *freeze;
  long ckpt_every, keep, stop_at;
  bool sync_save; /* wait for each checkpoint to be on disk instead of writing it in the
                     background */
  bool reset_optimizer;
} weft_train_opts_t;

/* What the options resolve to for a world of `world_size` ranks. */
typedef struct weft_train_plan {
  weft_model_config_t model;
  weft_model_parallel_t par;
  weft_mesh_shape_t mesh;
  long rows;          /* sequences per rank per micro-batch: micro_batch / dp */
  long micro_batches; /* per step: batch / micro_batch */
} weft_train_plan_t;

void weft_train_opts_defaults(weft_train_opts_t *opts);

/* Parses argv (after applying --config when given) against the training flags plus a
 * command's own `extra` flags. Returns a process exit code to stop with (help printed:
 * WEFT_EXIT_OK; bad flag or file: WEFT_EXIT_USAGE, message printed), or -1 to go on. */
int weft_train_opts_parse(const weft_cli_command_t *command, weft_train_opts_t *opts,
                          const weft_cli_flag_t *extra, size_t extra_count, int argc, char **argv);

/* Defaults, then weft_train_opts_parse, then the checks that need no MPI (the --data and
 * --params paths exist). Same return convention as weft_train_opts_parse. */
int weft_train_opts_load(const weft_cli_command_t *command, weft_train_opts_t *opts,
                         const weft_cli_flag_t *extra, size_t extra_count, int argc, char **argv);

/* Checks the options for `world_size` ranks and fills `plan`. On failure writes one line
 * naming the flag and value into `err` and returns WEFT_ERR_INVALID_ARG. */
weft_status_t weft_train_opts_resolve(const weft_train_opts_t *opts, int world_size,
                                      weft_train_plan_t *plan, char *err, size_t err_size);

/* weft_train_opts_resolve for the session's world. On failure every rank prints the problem, and
 * the caller ends the session with WEFT_OK and returns the exit code given; -1 = go on. */
int weft_train_resolve_or_exit(const weft_cli_command_t *command, const weft_train_opts_t *opts,
                               const weft_session_t *session, weft_train_plan_t *plan);

/* Whether `group` is a --freeze group for a model of `layers` layers: embed, head, norm,
 * attn, ffn, moe, router, experts, layers.N or layers.A-B. */
bool weft_train_freeze_group_valid(const char *group, int layers);

/* The options as one JSON object (the keys of --config), for metrics and file attributes.
 * Returns a malloc'd string (NULL when out of memory). */
char *weft_train_opts_json(const weft_train_opts_t *opts);

#endif /* WEFT_RUNTIME_TRAIN_OPTS_H */
