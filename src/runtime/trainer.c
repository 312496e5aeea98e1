/* The trainer (see trainer.h). */
#include "trainer.h"
#include "trainer_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "weft/adamw.h"
#include "weft/check.h"
#include "weft/kernel_ctx.h"
#include "weft/log.h"
#include "weft/mesh.h"
#include "weft/timer.h"

static weft_status_t alloc_zero(const weft_device_t *dev, int64_t count, float **p) {
  const size_t bytes = (size_t)(count > 0 ? count : 1) * sizeof(float);
  WEFT_CHECK(weft_device_alloc(dev, bytes, (void **)p));
  return weft_device_memset(dev, *p, 0, bytes);
}

weft_status_t weft_trainer_create(const weft_train_opts_t *opts, const weft_train_plan_t *plan,
                                  weft_comm_t *world, weft_trainer_t **trainer_p) {
  weft_trainer_t *t = calloc(1, sizeof *t);
  if (!t) {
    return WEFT_ERR_NO_MEMORY;
  }
  t->opts = *opts;
  t->plan = *plan;
  t->world = world;
  weft_status_t st = weft_mesh_create(world, plan->mesh, &t->mesh);
  const weft_device_t *dev = weft_comm_device(world);
  if (st == WEFT_OK) {
    st = weft_kernel_ctx_create(dev, NULL, &t->ctx);
  }
  if (st == WEFT_OK) {
    const weft_data_config_t dcfg = {.path = opts->data,
                                     .seq = opts->seq,
                                     .val_fraction = opts->val_fraction,
                                     .seed = (uint64_t)opts->seed};
    st = weft_data_open(&dcfg, &t->data);
  }
  if (st == WEFT_OK) {
    st = weft_model_create(&plan->model, &plan->par, t->mesh, t->ctx, plan->rows, &t->model);
  }
  if (st == WEFT_OK) {
    st = weft_model_init(t->model, (uint64_t)opts->seed);
  }
  if (st == WEFT_OK) {
    st = trainer_freeze(t, opts->freeze);
  }
  /* AdamW moments per trainable parameter; a frozen one has none (no optimizer memory). */
  const int n_params = st == WEFT_OK ? weft_model_param_count(t->model) : 0;
  for (int i = 0; i < n_params && st == WEFT_OK; i++) {
    if (!t->frozen[i]) {
      const int64_t numel = weft_model_param(t->model, i)->numel;
      st = alloc_zero(dev, numel, &t->m[i]);
      if (st == WEFT_OK) st = alloc_zero(dev, numel, &t->v[i]);
    }
  }
  const int64_t T = st == WEFT_OK ? weft_model_local_tokens(t->model) : 0;
  if (st == WEFT_OK) {
    t->windows = malloc((size_t)plan->rows * (size_t)(opts->seq + 1));
    t->ids = malloc((size_t)T * sizeof *t->ids);
    t->targets = malloc((size_t)T * sizeof *t->targets);
    if (opts->deterministic) {
      t->stage = malloc((size_t)BUCKET_FLOATS * sizeof(float));
      t->gather = malloc((size_t)weft_comm_size(world) * BUCKET_FLOATS * sizeof(float));
    }
    if (!t->windows || !t->ids || !t->targets ||
        (opts->deterministic && (!t->gather || !t->stage))) {
      st = WEFT_ERR_NO_MEMORY;
    }
  }
  if (st != WEFT_OK) {
    weft_trainer_destroy(t);
    return st;
  }
  *trainer_p = t;
  return WEFT_OK;
}

void weft_trainer_destroy(weft_trainer_t *t) {
  if (!t) {
    return;
  }
  if (t->ctx) {
    const weft_device_t *dev = weft_kernel_ctx_device(t->ctx);
    for (int i = 0; i < MODEL_MAX_TRAINER_PARAMS; i++) {
      weft_device_free(dev, t->m[i]);
      weft_device_free(dev, t->v[i]);
    }
  }
  weft_ckpt_writer_destroy(t->writer);
  weft_model_destroy(t->model);
  weft_kernel_ctx_destroy(t->ctx);
  weft_data_close(t->data);
  weft_mesh_destroy(t->mesh);
  free(t->windows);
  free(t->ids);
  free(t->targets);
  free(t->stage);
  free(t->gather);
  free(t);
}

weft_model_t *weft_trainer_model(weft_trainer_t *t) { return t->model; }

const weft_mesh_t *weft_trainer_mesh(const weft_trainer_t *t) { return t->mesh; }

double weft_trainer_unigram_nats(const weft_trainer_t *t) {
  return weft_data_unigram_nats(t->data);
}

/* ---- reductions ------------------------------------------------------------------------- */

/* Sums `count` doubles over `comm`, adding the ranks' values in rank order (weft_comm reduces
 * no f64: the values travel as their 64-bit patterns), so every rank gets the same bits. */
static weft_status_t sum_doubles(weft_comm_t *comm, double *values, int count) {
  const int P = weft_comm_size(comm);
  double *all = malloc((size_t)P * (size_t)count * sizeof *all);
  if (!all) {
    return WEFT_ERR_NO_MEMORY;
  }
  const weft_status_t st =
      weft_comm_allgather(comm, values, all, (size_t)count, WEFT_DTYPE_I64, WEFT_MEM_HOST);
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    values[i] = 0;
    for (int r = 0; r < P; r++) {
      values[i] += all[r * count + i];
    }
  }
  free(all);
  return st;
}

/* In-place sum of a device f32 buffer over `comm`. Default: MPI's all-reduce per bucket.
 * --deterministic: each bucket is all-gathered and summed in rank order on the host, so the
 * result does not depend on the reduction algorithm MPI picks (at P times the bytes). */
static weft_status_t allreduce_grads(weft_trainer_t *t, weft_comm_t *comm, float *grad,
                                     int64_t count) {
  const int P = weft_comm_size(comm);
  if (P == 1 || count == 0) {
    return WEFT_OK;
  }
  for (int64_t off = 0; off < count; off += BUCKET_FLOATS) {
    const int64_t n = count - off < BUCKET_FLOATS ? count - off : BUCKET_FLOATS;
    if (!t->opts.deterministic) {
      WEFT_CHECK(weft_comm_allreduce(comm, grad + off, grad + off, (size_t)n, WEFT_DTYPE_F32,
                                     WEFT_REDUCE_SUM, WEFT_MEM_DEVICE));
      continue;
    }
    const weft_device_t *dev = weft_kernel_ctx_device(t->ctx);
    WEFT_CHECK(weft_device_copy(dev, t->stage, grad + off, (size_t)n * sizeof(float),
                                WEFT_COPY_DEVICE_TO_HOST));
    WEFT_CHECK(
        weft_comm_allgather(comm, t->stage, t->gather, (size_t)n, WEFT_DTYPE_F32, WEFT_MEM_HOST));
    float *sum = t->gather; /* rank 0's block accumulates the others in order */
    for (int r = 1; r < P; r++) {
      const float *block = t->gather + (int64_t)r * n;
      for (int64_t i = 0; i < n; i++) {
        sum[i] += block[i];
      }
    }
    WEFT_CHECK(weft_device_copy(dev, grad + off, sum, (size_t)n * sizeof(float),
                                WEFT_COPY_HOST_TO_DEVICE));
  }
  return WEFT_OK;
}

static uint64_t bytes_sent(const weft_comm_t *comm) {
  const weft_comm_peer_bytes_t *b = weft_comm_total_bytes(comm);
  uint64_t total = 0;
  for (int r = 0; r < weft_comm_size(comm); r++) {
    total += b[r].sent;
  }
  return total;
}

/* ---- one step ----------------------------------------------------------------------------- */

/* Forward and backward of `micro_batches` micro-batches whose windows `fill` provides, then the
 * gradient all-reduce and the loss and norm reductions. */
typedef weft_status_t (*fill_fn)(weft_trainer_t *t, int64_t step, int micro);

static weft_status_t fill_train(weft_trainer_t *t, int64_t step, int micro) {
  const weft_train_plan_t *p = &t->plan;
  const int64_t stride = t->opts.seq + 1;
  for (int64_t row = 0; row < p->rows; row++) {
    const int64_t j = weft_data_sample_index(step, micro, (int)p->micro_batches, t->mesh->dp_index,
                                             p->mesh.dp, p->rows, row);
    WEFT_CHECK(weft_data_train_sample(t->data, j, t->windows + row * stride));
  }
  return WEFT_OK;
}

static weft_status_t fill_given(weft_trainer_t *t, int64_t step, int micro) {
  (void)step;
  const weft_train_plan_t *p = &t->plan;
  const int64_t stride = t->opts.seq + 1;
  const int64_t first = ((int64_t)micro * p->mesh.dp + t->mesh->dp_index) * p->rows;
  memcpy(t->windows, t->given + first * stride, (size_t)(p->rows * stride));
  return WEFT_OK;
}

static weft_status_t gradients(weft_trainer_t *t, int64_t step, fill_fn fill,
                               weft_step_metrics_t *out) {
  const weft_train_plan_t *p = &t->plan;
  const double t0 = weft_time_now();
  const uint64_t bytes0 = bytes_sent(t->world);
  const int64_t global_tokens = t->opts.batch * t->opts.seq;
  double sums[4] = {0, 0, 0, 0}; /* ce, labelled, lbl, z */
  double comm_s = 0, wait_s = 0;
  uint64_t comm_bytes = 0;
  WEFT_CHECK(weft_model_zero_grads(t->model));
  weft_model_step_begin(t->model, global_tokens);
  for (int micro = 0; micro < p->micro_batches; micro++) {
    WEFT_CHECK(fill(t, step, micro));
    weft_model_select_tokens(t->model, t->windows, t->ids, t->targets);
    weft_model_losses_t l;
    WEFT_CHECK(
        weft_model_step(t->model, t->ids, t->targets, 1.0f / (float)global_tokens, true, &l));
    sums[0] += l.ce_sum;
    sums[1] += (double)l.labelled;
    sums[2] += l.lbl_partial;
    sums[3] += l.z_partial;
    const weft_model_times_t mt = weft_model_last_times(t->model);
    comm_s += mt.comm_s;
    wait_s += mt.wait_s;
    comm_bytes += mt.comm_bytes;
  }
  /* Replicated parameters over dp x sp (= the world); experts over their replicas. The
   * barrier first books the wait for the last rank to finish its backward as imbalance. */
  const double wait0 = weft_time_now();
  WEFT_CHECK(weft_comm_barrier(t->world));
  wait_s += weft_time_now() - wait0;
  const double ar0 = weft_time_now();
  int64_t rep = 0, exp = 0;
  float *rep_grad = weft_model_region(t->model, false, true, &rep);
  float *exp_grad = weft_model_region(t->model, true, true, &exp);
  WEFT_CHECK(allreduce_grads(t, t->world, rep_grad, rep));
  WEFT_CHECK(allreduce_grads(t, t->mesh->ep_replica, exp_grad, exp));
  out->allreduce_s = weft_time_now() - ar0;
  WEFT_CHECK(sum_doubles(t->world, sums, 4));
  /* Global norm: the replicated region is the same everywhere; experts are split over ep. */
  /* Over the trainable parameters only (a frozen one is never updated). */
  double sq_rep = 0, sq_exp = 0;
  for (int i = 0; i < weft_model_param_count(t->model); i++) {
    const weft_param_t *param = weft_model_param(t->model, i);
    double sq = 0;
    if (!t->frozen[i]) {
      WEFT_CHECK(weft_sumsq(t->ctx, param->numel, param->grad, &sq));
    }
    *(param->expert ? &sq_exp : &sq_rep) += sq;
  }
  WEFT_CHECK(sum_doubles(t->mesh->ep, &sq_exp, 1));
  const weft_model_config_t *mc = weft_model_config(t->model);
  out->step = step + 1;
  out->ce = sums[0] / (sums[1] > 0 ? sums[1] : 1);
  out->lbl = sums[2];
  out->zloss = sums[3];
  out->loss = out->ce + mc->aux_weight * out->lbl + mc->z_weight * out->zloss;
  out->grad_norm = sqrt(sq_rep + sq_exp);
  out->nonfinite = !isfinite(out->loss) || !isfinite(out->grad_norm);
  out->comm_s = comm_s + out->allreduce_s;
  out->wait_s = wait_s;
  out->comm_bytes = comm_bytes + (bytes_sent(t->world) - bytes0);
  out->step_s = weft_time_now() - t0;
  return WEFT_OK;
}

/* Learning rate at step s (0-based): linear warmup from 0 over `warmup` steps, then cosine
 * from lr to 0.1 lr at `steps` (docs/model.md). */
static double schedule(const weft_train_opts_t *o, int64_t s) {
  if (s < o->warmup) {
    return o->lr * (double)(s + 1) / (double)o->warmup;
  }
  const double span = (double)(o->steps - o->warmup);
  const double progress = span > 0 ? fmin(1.0, (double)(s - o->warmup) / span) : 1.0;
  const double min_lr = 0.1 * o->lr;
  return min_lr + 0.5 * (o->lr - min_lr) * (1.0 + cos(M_PI * progress));
}

weft_status_t weft_trainer_step(weft_trainer_t *t, int64_t step, weft_step_metrics_t *out) {
  memset(out, 0, sizeof *out);
  const double t0 = weft_time_now();
  WEFT_CHECK(gradients(t, step, fill_train, out));
  out->lr = schedule(&t->opts, step);
  if (out->nonfinite) {
    return WEFT_OK;
  }
  const float clip = t->opts.clip > 0 && out->grad_norm > t->opts.clip
                         ? (float)(t->opts.clip / out->grad_norm)
                         : 1.0f;
  weft_model_t *m = t->model;
  for (int i = 0; i < weft_model_param_count(m); i++) {
    if (t->frozen[i]) {
      continue;
    }
    weft_param_t *p = weft_model_param(m, i);
    const weft_adamw_params_t hp = {.lr = (float)out->lr,
                                    .beta1 = 0.9f,
                                    .beta2 = 0.95f,
                                    .eps = 1e-8f,
                                    .weight_decay = p->decay ? (float)t->opts.weight_decay : 0.0f,
                                    .step = t->adam_base + step + 1,
                                    .grad_scale = clip};
    WEFT_CHECK(weft_adamw_step(t->ctx, &hp, p->numel, p->data, p->grad, t->m[i], t->v[i]));
  }
  WEFT_CHECK(weft_kernel_ctx_synchronize(t->ctx));
  out->step_s = weft_time_now() - t0;
  out->tokens_per_s = (double)(t->opts.batch * t->opts.seq) / out->step_s;
  return WEFT_OK;
}

weft_status_t weft_trainer_gradients(weft_trainer_t *t, const uint8_t *windows, long count,
                                     weft_step_metrics_t *out) {
  memset(out, 0, sizeof *out);
  if (count != t->opts.batch) {
    WEFT_ERROR("trainer", "gradients of %ld windows asked, the batch is %ld", count, t->opts.batch);
    return WEFT_ERR_INVALID_ARG;
  }
  t->given = windows;
  const weft_status_t st = gradients(t, 0, fill_given, out);
  t->given = NULL;
  return st;
}

weft_status_t weft_trainer_evaluate(weft_trainer_t *t, long batches, double *loss_p) {
  const weft_train_plan_t *p = &t->plan;
  const int64_t stride = t->opts.seq + 1;
  const int64_t per_batch = p->rows * p->mesh.dp; /* sequences of one global micro-batch */
  const int64_t available = weft_data_val_windows(t->data) / per_batch;
  const int64_t count = batches < available ? batches : available;
  double sums[2] = {0, 0};
  for (int64_t b = 0; b < count; b++) {
    for (int64_t row = 0; row < p->rows; row++) {
      const int64_t i = b * per_batch + t->mesh->dp_index * p->rows + row;
      WEFT_CHECK(weft_data_val_sample(t->data, i, t->windows + row * stride));
    }
    weft_model_select_tokens(t->model, t->windows, t->ids, t->targets);
    weft_model_step_begin(t->model, 0);
    weft_model_losses_t l;
    WEFT_CHECK(weft_model_step(t->model, t->ids, t->targets, 0.0f, false, &l));
    sums[0] += l.ce_sum;
    sums[1] += (double)l.labelled;
  }
  WEFT_CHECK(sum_doubles(t->world, sums, 2));
  *loss_p = sums[1] > 0 ? sums[0] / sums[1] : NAN;
  return WEFT_OK;
}
