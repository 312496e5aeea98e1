/* `weft check model`: one forward and backward of the whole model on one global batch, with
 * the gradients all-reduced as in training, written to a file for an outside oracle
 * (tests/ref/model_ref.py, PyTorch float64):
 *
 *   weft check model [training flags] --output OUT.h5
 *   OUT.h5: /batch/ids, /batch/targets [G, N] i32 (the --batch sequences: random bytes from
 *           --seed, the same at every mesh), /params/<name> and /grads/<name> f32 with global
 *           shapes (the initial parameters and d loss / d parameter); root attributes dim,
 *           heads, kv_heads, experts, topk, ffn_dim, seq, vocab (int64), pattern, moe_pattern
 *           (strings), aux_weight, z_weight, rope_base, norm_eps, gate_scale, and the results
 *           loss, ce, lbl, zloss (doubles); for the record ranks, dp, sp, ep, sp_algo,
 *           linear_algo,
 *           micro_batches.
 *
 * The batch is one micro-batch unless --micro-batch splits it (then the gradients accumulate
 * over micro-batches exactly as in training, and the load-balancing loss of micro-batch m
 * uses the expert counts of micro-batches 1..m, docs/expert-parallel.md, which the oracle does
 * not model: compare with one micro-batch). The attribute micro_batches records it. */
#include <stdio.h>
#include <stdlib.h>

#include "checks.h"
#include "cli.h"
#include "session.h"
#include "splitmix.h"
#include "train_opts.h"
#include "trainer.h"
#include "weft/check.h"
#include "weft/tensor_file.h"

static const weft_cli_command_t k_command = {
    "check model",
    "One training step's loss and gradients (no update) of the model of docs/model.md on a "
    "random batch, written for comparison with tests/ref/model_ref.py.",
    "[training flags] --output OUT.h5", NULL};

static weft_status_t write_batch(weft_tensor_file_t *f, const uint8_t *windows, long count,
                                 int64_t seq) {
  int32_t *ids = malloc((size_t)(count * seq) * sizeof *ids);
  int32_t *targets = malloc((size_t)(count * seq) * sizeof *targets);
  weft_status_t st = ids && targets ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  for (int64_t b = 0; b < count && st == WEFT_OK; b++) {
    for (int64_t t = 0; t < seq; t++) {
      ids[b * seq + t] = windows[b * (seq + 1) + t];
      targets[b * seq + t] = windows[b * (seq + 1) + t + 1];
    }
  }
  const int64_t shape[2] = {count, seq};
  if (st == WEFT_OK) st = weft_tensor_file_write(f, "/batch/ids", WEFT_DTYPE_I32, 2, shape, ids);
  if (st == WEFT_OK)
    st = weft_tensor_file_write(f, "/batch/targets", WEFT_DTYPE_I32, 2, shape, targets);
  free(ids);
  free(targets);
  return st;
}

static weft_status_t write_attrs(weft_tensor_file_t *f, const weft_train_opts_t *o,
                                 const weft_train_plan_t *p, const weft_step_metrics_t *m,
                                 int ranks) {
  const weft_model_config_t *c = &p->model;
  const struct {
    const char *name;
    int64_t value;
  } ints[] = {{"dim", c->dim},           {"heads", c->heads},
              {"kv_heads", c->kv_heads}, {"experts", c->experts},
              {"topk", c->topk},         {"ffn_dim", c->ffn},
              {"seq", c->seq},           {"vocab", WEFT_MODEL_VOCAB},
              {"ranks", ranks},          {"micro_batches", p->micro_batches},
              {"dp", p->mesh.dp},        {"sp", p->mesh.sp},
              {"ep", p->mesh.ep}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    WEFT_CHECK(weft_tensor_file_attr_write_i64(f, NULL, ints[i].name, ints[i].value));
  }
  const struct {
    const char *name;
    double value;
  } reals[] = {{"aux_weight", c->aux_weight},
               {"z_weight", c->z_weight},
               {"rope_base", 10000.0},
               {"norm_eps", 1e-5},
               {"gate_scale", 1.0 / 16},
               {"loss", m->loss},
               {"ce", m->ce},
               {"lbl", m->lbl},
               {"zloss", m->zloss}};
  for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
    WEFT_CHECK(weft_tensor_file_attr_write_f64(f, NULL, reals[i].name, reals[i].value));
  }
  WEFT_CHECK(weft_tensor_file_attr_write_str(f, NULL, "pattern", c->pattern));
  WEFT_CHECK(weft_tensor_file_attr_write_str(f, NULL, "moe_pattern", c->moe_pattern));
  WEFT_CHECK(weft_tensor_file_attr_write_str(f, NULL, "sp_algo", o->sp_algo));
  WEFT_CHECK(weft_tensor_file_attr_write_str(f, NULL, "precision", o->precision));
  return weft_tensor_file_attr_write_str(f, NULL, "linear_algo", o->linear_algo);
}

static weft_status_t run(const weft_train_opts_t *o, const weft_train_plan_t *p, weft_session_t *s,
                         const char *output) {
  const int64_t stride = o->seq + 1;
  uint8_t *windows = malloc((size_t)(o->batch * stride));
  if (!windows) {
    return WEFT_ERR_NO_MEMORY;
  }
  for (int64_t i = 0; i < o->batch * stride; i++) {
    windows[i] = (uint8_t)(weft_splitmix64((uint64_t)o->seed * 0x1000193u + (uint64_t)i) >> 56);
  }
  weft_trainer_t *t = NULL;
  weft_status_t st = weft_trainer_create(o, p, s->world, &t);
  weft_step_metrics_t m;
  if (st == WEFT_OK) st = weft_trainer_gradients(t, windows, o->batch, &m);
  weft_tensor_file_t *f = NULL;
  if (st == WEFT_OK) st = weft_tensor_file_create(output, s->world, &f);
  if (st == WEFT_OK) st = write_batch(f, windows, o->batch, o->seq);
  if (st == WEFT_OK) st = weft_model_write(weft_trainer_model(t), f, "params", false);
  if (st == WEFT_OK) st = weft_model_write(weft_trainer_model(t), f, "grads", true);
  if (st == WEFT_OK) st = write_attrs(f, o, p, &m, s->boot.world_size);
  if (f) {
    const weft_status_t close_st = weft_tensor_file_close(f);
    st = st == WEFT_OK ? close_st : st;
  }
  if (st == WEFT_OK && s->boot.world_rank == 0) {
    printf("weft check model: loss %.6f (ce %.6f lbl %.6f zloss %.6f) -> %s\n", m.loss, m.ce, m.lbl,
           m.zloss, output);
  }
  weft_trainer_destroy(t);
  free(windows);
  return st;
}

int weft_check_model(int argc, char **argv) {
  const char *output = NULL;
  const weft_cli_flag_t extra[] = {
      {"output", 'o', WEFT_CLI_STRING, &output, "OUT.h5", "output file (required)"}};
  weft_train_opts_t o;
  int rc = weft_train_opts_load(&k_command, &o, extra, 1, argc, argv);
  if (rc >= 0) {
    return rc;
  }
  if (!output || !*output) {
    fprintf(stderr, "weft check model: --output OUT.h5 is required\n");
    return WEFT_EXIT_USAGE;
  }
  weft_session_t session;
  weft_session_start(&session, "check model", &argc, &argv, o.device);
  weft_train_plan_t plan;
  rc = weft_train_resolve_or_exit(&k_command, &o, &session, &plan);
  if (rc >= 0) {
    weft_session_end(&session, WEFT_OK);
    return rc;
  }
  return weft_session_end(&session, run(&o, &plan, &session, output));
}
