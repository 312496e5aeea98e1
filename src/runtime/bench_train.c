/* `weft bench train`: tokens per second and where a training step's time goes, for the model
 * and mesh the training flags describe (docs/benchmarks.md, "Training").
 *
 * Runs --warmup-iters untimed steps, then --iters timed steps of the real trainer (data,
 * forward, backward, all-reduce, AdamW) and reports medians over the timed steps, measured on
 * every rank and taken from the slowest rank per step:
 *   step_s       wall time of a step
 *   wait_s       time spent waiting for slower ranks (a barrier before each MoE pass's
 *                exchanges and before the gradient all-reduce): load imbalance
 *   comm_s       time in communication that nothing hid: the MoE exchanges, the exposed
 *                part of the linear-attention state hand-off, the gradient all-reduce.
 *                Softmax SP's transfers run inside the attention call, overlapped with its
 *                block computations, and count as compute.
 *   compute_s    step_s - comm_s - wait_s
 * bytes are those the slowest rank sent in a step (every collective above plus softmax SP).
 * bench/torch_train_ref.py times the same model in PyTorch for comparison. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_util.h"
#include "cli.h"
#include "session.h"
#include "train_opts.h"
#include "trainer.h"
#include "weft/check.h"
#include "weft/kernel_ctx.h"

static const weft_cli_command_t k_command = {
    "bench train", "Training throughput and the compute/communication split of a step.",
    "[training flags] [--iters N] [--warmup-iters N] [--json]", NULL};

typedef struct bench_args {
  long iters, warmup_iters;
  bool json;
} bench_args_t;

static weft_status_t run(const weft_train_opts_t *o, const weft_train_plan_t *p,
                         const bench_args_t *a, weft_session_t *s) {
  weft_trainer_t *t = NULL;
  WEFT_CHECK(weft_trainer_create(o, p, s->world, &t));
  double *step = calloc((size_t)a->iters, sizeof *step);
  double *comm = calloc((size_t)a->iters, sizeof *comm);
  double *allreduce = calloc((size_t)a->iters, sizeof *allreduce);
  double *bytes = calloc((size_t)a->iters, sizeof *bytes);
  double *wait = calloc((size_t)a->iters, sizeof *wait);
  weft_status_t st = step && comm && allreduce && bytes && wait ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  for (long i = 0; i < a->warmup_iters + a->iters && st == WEFT_OK; i++) {
    weft_step_metrics_t m;
    st = weft_trainer_step(t, i, &m);
    if (st != WEFT_OK || i < a->warmup_iters) {
      continue;
    }
    /* The slowest rank sets the step time; its split is the one reported. */
    double mine[5] = {m.step_s, m.comm_s, m.allreduce_s, (double)m.comm_bytes, m.wait_s};
    double all[5 * 256];
    const int P = s->boot.world_size;
    if (P > 256) {
      st = WEFT_ERR_UNSUPPORTED;
      break;
    }
    st = weft_comm_allgather(s->world, mine, all, 5, WEFT_DTYPE_I64, WEFT_MEM_HOST);
    int slowest = 0;
    for (int r = 1; r < P; r++) {
      slowest = all[5 * r] > all[5 * slowest] ? r : slowest;
    }
    const long j = i - a->warmup_iters;
    step[j] = all[5 * slowest];
    comm[j] = all[5 * slowest + 1];
    allreduce[j] = all[5 * slowest + 2];
    bytes[j] = all[5 * slowest + 3];
    wait[j] = all[5 * slowest + 4];
  }
  if (st == WEFT_OK && s->boot.world_rank == 0) {
    const double step_s = weft_bench_median(step, a->iters),
                 comm_s = weft_bench_median(comm, a->iters);
    const double wait_s = weft_bench_median(wait, a->iters);
    const double tokens = (double)(o->batch * o->seq);
    const weft_model_config_t *c = &p->model;
    const long long params = (long long)weft_model_global_params(weft_trainer_model(t));
    if (a->json) {
      printf(
          "{\"bench\":\"train\",\"ranks\":%d,\"dp\":%d,\"sp\":%d,\"ep\":%d,\"sp_algo\":\"%s\","
          "\"linear_algo\":\"%s\",\"dim\":%lld,\"layers\":\"%s\",\"moe_layers\":\"%s\","
          "\"heads\":%lld,\"kv_heads\":%lld,\"experts\":%lld,\"topk\":%d,\"ffn_dim\":%lld,"
          "\"seq\":%lld,\"batch\":%ld,\"micro_batches\":%ld,\"params\":%lld,\"threads\":%d,"
          "\"iters\":%ld,\"step_s\":%.6f,\"tokens_per_s\":%.1f,\"compute_s\":%.6f,"
          "\"wait_s\":%.6f,\"comm_s\":%.6f,\"comm_fraction\":%.4f,\"allreduce_s\":%.6f,\"comm_"
          "bytes\":%.0f}\n",
          s->boot.world_size, p->mesh.dp, p->mesh.sp, p->mesh.ep, o->sp_algo, o->linear_algo,
          (long long)c->dim, c->pattern, c->moe_pattern, (long long)c->heads,
          (long long)c->kv_heads, (long long)c->experts, c->topk, (long long)c->ffn,
          (long long)c->seq, o->batch, p->micro_batches, params, weft_kernels_cpu_threads(),
          a->iters, step_s, tokens / step_s, step_s - comm_s - wait_s, wait_s, comm_s,
          comm_s / step_s, weft_bench_median(allreduce, a->iters),
          weft_bench_median(bytes, a->iters));
    } else {
      printf(
          "weft bench train: %d ranks (dp %d, sp %d, ep %d), %lld parameters, %d threads "
          "per rank\n  step %.4f s, %.0f tokens/s; compute %.4f s, waiting for other ranks "
          "%.4f s, exposed communication %.4f s (%.1f%%; gradient all-reduce %.4f s); %.0f "
          "bytes sent by the slowest rank\n",
          s->boot.world_size, p->mesh.dp, p->mesh.sp, p->mesh.ep, params,
          weft_kernels_cpu_threads(), step_s, tokens / step_s, step_s - comm_s - wait_s, wait_s,
          comm_s, 100.0 * comm_s / step_s, weft_bench_median(allreduce, a->iters),
          weft_bench_median(bytes, a->iters));
    }
    fflush(stdout);
  }
  free(step);
  free(comm);
  free(allreduce);
  free(bytes);
  free(wait);
  weft_trainer_destroy(t);
  return st;
}

int weft_bench_train(int argc, char **argv) {
  bench_args_t a = {.iters = 5, .warmup_iters = 2, .json = false};
  const weft_cli_flag_t extra[] = {
      {"iters", 'n', WEFT_CLI_INT, &a.iters, "N", "timed steps (5)"},
      {"warmup-iters", 'w', WEFT_CLI_INT, &a.warmup_iters, "N", "untimed steps first (2)"},
      {"json", 0, WEFT_CLI_BOOL, &a.json, NULL, "one JSON object on stdout"},
  };
  weft_train_opts_t o;
  int rc = weft_train_opts_load(&k_command, &o, extra, sizeof extra / sizeof extra[0], argc, argv);
  if (rc >= 0) {
    return rc;
  }
  if (a.iters < 1 || a.warmup_iters < 0) {
    fprintf(stderr, "weft bench train: --iters %ld must be >= 1 and --warmup-iters %ld >= 0\n",
            a.iters, a.warmup_iters);
    return WEFT_EXIT_USAGE;
  }
  /* The schedule must cover the benchmark's steps (a zero-length run would skip them). */
  if (o.steps < a.iters + a.warmup_iters) {
    o.steps = a.iters + a.warmup_iters;
  }
  weft_session_t session;
  weft_session_start(&session, "bench train", &argc, &argv, o.device);
  weft_train_plan_t plan;
  rc = weft_train_resolve_or_exit(&k_command, &o, &session, &plan);
  if (rc >= 0) {
    weft_session_end(&session, WEFT_OK);
    return rc;
  }
  return weft_session_end(&session, run(&o, &plan, &a, &session));
}
