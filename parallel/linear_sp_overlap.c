/* ZeCO with the All-Scan behind the compute (linear_sp.h, "Overlap").
 *
 * The plan's units (linear_sp_internal.h) are runs of (batch, head) pairs with consecutive
 * states. The main thread runs the communication-free kernel of unit after unit and hands
 * each finished contribution to a progress thread, which runs that unit's All-Scan while the
 * main thread computes the next one; the main thread then finishes the units in order as
 * their scans arrive:
 *
 *   forward:  local(0) local(1) ... local(U-1)   correct(0) correct(1) ...
 *   progress:          scan(0)  scan(1) ...
 *   backward: dS_local(0) ... dS_local(U-1)      grads(0) grads(1) ...
 *   progress:             rscan(0) rscan(1) ...
 *
 * so only the first unit's scan is exposed, and in the backward the reverse scans of later
 * units also hide behind the gradient kernels of earlier ones. Every rank takes the units in
 * the same order, so the u-th scans of all ranks meet (one tag: MPI keeps their order).
 *
 * Threads: between start and finish only the progress thread uses the communicator (MPI
 * grants at least MPI_THREAD_SERIALIZED: linear_sp_use_overlap checks) and only the main
 * thread uses the kernel context. One mutex guards the hand-over counters; taking it also
 * publishes the host slices (state, decay) the progress thread reads and the results it
 * writes. If the main thread fails, the progress thread stops before its next scan; if a scan
 * fails, the main thread stops waiting. Either way the other ranks' scans time out
 * (WEFT_COMM_TIMEOUT_S), as for any collective a rank leaves. */
#include <pthread.h>
#include <string.h>

#include "linear_sp_internal.h"
#include "weft/allscan.h"
#include "weft/check.h"
#include "weft/log.h"
#include "weft/timer.h"

typedef struct pipeline {
  weft_linear_sp_plan_t *plan;
  bool forward;
  float *result; /* host buffer the scans write: what enters (forward) or leaves (backward) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int ready; /* units whose contribution is on the host */
  int done;  /* units whose scan has finished (all of them after a failed scan) */
  bool stop; /* the main thread failed: scan no further */
  weft_status_t scan_status;
  double scan_s;    /* progress thread: time inside the scans */
  double exposed_s; /* main thread: time waiting for them */
  pthread_t thread;
} pipeline_t;

static weft_status_t scan_unit(pipeline_t *pl, const linear_sp_unit_t *u) {
  weft_linear_sp_plan_t *plan = pl->plan;
  linear_sp_rows_t rows = {plan->h_gamma + u->gamma_off, (size_t)plan->shape.dv};
  weft_allscan_op_t op = {WEFT_DTYPE_F32, linear_sp_allscan_combine, &rows};
  return weft_allscan(plan->comm, plan->h_local + u->state_off, pl->result + u->state_off,
                      u->state_count, &op,
                      pl->forward ? WEFT_ALLSCAN_FORWARD : WEFT_ALLSCAN_REVERSE,
                      WEFT_ALLSCAN_EXCLUSIVE, plan->blocks, WEFT_MEM_HOST);
}

static void *progress_main(void *arg) {
  pipeline_t *pl = arg;
  weft_comm_set_thread_backoff(true); /* leave the cores to the compute while waiting */
  for (int u = 0; u < pl->plan->units; u++) {
    pthread_mutex_lock(&pl->mu);
    while (pl->ready <= u && !pl->stop) pthread_cond_wait(&pl->cv, &pl->mu);
    bool stop = pl->stop;
    pthread_mutex_unlock(&pl->mu);
    if (stop) break;
    double t0 = weft_time_now();
    weft_status_t st = scan_unit(pl, &pl->plan->unit[u]);
    double dt = weft_time_now() - t0;
    pthread_mutex_lock(&pl->mu);
    pl->scan_s += dt;
    pl->scan_status = st;
    pl->done = st == WEFT_OK ? u + 1 : pl->plan->units;
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    if (st != WEFT_OK) break;
  }
  return NULL;
}

static weft_status_t pipeline_start(pipeline_t *pl, weft_linear_sp_plan_t *plan, bool forward,
                                    float *result) {
  memset(pl, 0, sizeof *pl);
  pl->plan = plan;
  pl->forward = forward;
  pl->result = result;
  pthread_mutex_init(&pl->mu, NULL);
  pthread_cond_init(&pl->cv, NULL);
  int rc = pthread_create(&pl->thread, NULL, progress_main, pl);
  if (rc != 0) {
    WEFT_ERROR("parallel", "linear_sp: cannot start the scan progress thread (error %d)", rc);
    pthread_cond_destroy(&pl->cv);
    pthread_mutex_destroy(&pl->mu);
    return WEFT_ERR_INTERNAL;
  }
  return WEFT_OK;
}

/* Unit u's contribution is on the host: the progress thread may scan it. */
static void pipeline_ready(pipeline_t *pl, int u) {
  pthread_mutex_lock(&pl->mu);
  pl->ready = u + 1;
  pthread_cond_broadcast(&pl->cv);
  pthread_mutex_unlock(&pl->mu);
}

/* Waits until unit u's scan is in; a failed scan's status otherwise. */
static weft_status_t pipeline_wait(pipeline_t *pl, int u) {
  double t0 = weft_time_now();
  pthread_mutex_lock(&pl->mu);
  while (pl->done <= u) pthread_cond_wait(&pl->cv, &pl->mu);
  weft_status_t st = pl->scan_status;
  pthread_mutex_unlock(&pl->mu);
  pl->exposed_s += weft_time_now() - t0;
  return st;
}

/* Joins the progress thread (telling it to stop first when the main thread failed). Returns
 * the main thread's status, or else the scans'. */
static weft_status_t pipeline_finish(pipeline_t *pl, weft_status_t st) {
  pthread_mutex_lock(&pl->mu);
  if (st != WEFT_OK) pl->stop = true;
  pthread_cond_broadcast(&pl->cv);
  pthread_mutex_unlock(&pl->mu);
  pthread_join(pl->thread, NULL);
  pthread_cond_destroy(&pl->cv);
  pthread_mutex_destroy(&pl->mu);
  pl->plan->stats.passes++;
  pl->plan->stats.scan_s += pl->scan_s;
  pl->plan->stats.exposed_s += pl->exposed_s;
  return st != WEFT_OK ? st : pl->scan_status;
}

/* The kernel shape of a unit, and its offset into token-major tensors of row width `width`
 * (elements per head: dk or dv). */
static weft_gla_shape_t unit_shape(const weft_linear_sp_plan_t *plan, const linear_sp_unit_t *u) {
  weft_gla_shape_t s = plan->shape;
  s.batch = u->batch;
  s.heads = u->heads;
  s.layout_heads = plan->shape.heads;
  return s;
}

static size_t unit_tok(const weft_linear_sp_plan_t *plan, const linear_sp_unit_t *u,
                       int64_t width) {
  const weft_gla_shape_t *s = &plan->shape;
  return (size_t)((u->b0 * s->tokens * s->heads + u->h0) * width);
}

weft_status_t linear_sp_forward_overlapped(weft_linear_sp_plan_t *plan, const float *q,
                                           const float *k, const float *v, const float *g,
                                           float *out, float *s_in, float *final_state) {
  const int64_t dk = plan->shape.dk, dv = plan->shape.dv;
  float *result = plan->staged ? plan->h_result : s_in;
  pipeline_t pl;
  WEFT_CHECK(pipeline_start(&pl, plan, true, result));
  weft_status_t st = WEFT_OK;
  for (int i = 0; i < plan->units && st == WEFT_OK; i++) {
    const linear_sp_unit_t *u = &plan->unit[i];
    weft_gla_shape_t us = unit_shape(plan, u);
    size_t ok = unit_tok(plan, u, dk), ov = unit_tok(plan, u, dv);
    size_t gcount = (size_t)(u->batch * u->heads * dk);
    st = weft_gla_forward_local(plan->ctx, &us, q + ok, k + ok, v + ov, g + ok, out + ov,
                                plan->d_state + u->state_off, plan->d_log_gamma + u->gamma_off);
    if (st == WEFT_OK)
      st = linear_sp_stage_contribution(plan, u->state_off, u->state_count, u->gamma_off, gcount);
    if (st == WEFT_OK) pipeline_ready(&pl, i);
  }
  const bool last = plan->rank == plan->size - 1;
  for (int i = 0; i < plan->units && st == WEFT_OK; i++) {
    const linear_sp_unit_t *u = &plan->unit[i];
    weft_gla_shape_t us = unit_shape(plan, u);
    size_t ok = unit_tok(plan, u, dk), ov = unit_tok(plan, u, dv);
    size_t so = u->state_off, n = u->state_count;
    st = pipeline_wait(&pl, i);
    if (st == WEFT_OK) st = linear_sp_stage_up(plan, s_in + so, result + so, n);
    if (st == WEFT_OK && final_state && last) {
      /* S_end = diag(Gamma) S_in + S_local (in place into h_local when staged: this unit's
       * scan, which only received on the last rank, is done with it). */
      linear_sp_rows_t rows = {plan->h_gamma + u->gamma_off, (size_t)dv};
      float *fs = plan->staged ? plan->h_local : final_state;
      linear_sp_combine_rows(&rows, 0, n, result + so, plan->h_local + so, fs + so);
      st = linear_sp_stage_up(plan, final_state + so, fs + so, n);
    }
    if (st == WEFT_OK)
      st = weft_gla_forward_correct(plan->ctx, &us, q + ok, g + ok, s_in + so, out + ov);
  }
  st = pipeline_finish(&pl, st);
  if (st != WEFT_OK) return st;
  return weft_kernel_ctx_synchronize(plan->ctx);
}

weft_status_t linear_sp_backward_overlapped(weft_linear_sp_plan_t *plan, const float *q,
                                            const float *k, const float *v, const float *g,
                                            const float *dout, const float *s_in, float *dq,
                                            float *dk, float *dv, float *dg) {
  const int64_t wk = plan->shape.dk, wv = plan->shape.dv;
  WEFT_CHECK(linear_sp_recompute_log_gamma(plan, g));
  /* dS_out(p) = dS_in(p+1): the reverse exclusive scan; zero on the last rank. */
  float *result = plan->staged ? plan->h_result : plan->d_ds_out;
  pipeline_t pl;
  WEFT_CHECK(pipeline_start(&pl, plan, false, result));
  weft_status_t st = WEFT_OK;
  for (int i = 0; i < plan->units && st == WEFT_OK; i++) {
    const linear_sp_unit_t *u = &plan->unit[i];
    weft_gla_shape_t us = unit_shape(plan, u);
    size_t ok = unit_tok(plan, u, wk), ov = unit_tok(plan, u, wv);
    st = weft_gla_backward_state_local(plan->ctx, &us, q + ok, g + ok, dout + ov,
                                       plan->d_state + u->state_off);
    if (st == WEFT_OK)
      st = linear_sp_stage_contribution(plan, u->state_off, u->state_count, u->gamma_off,
                                        (size_t)(u->batch * u->heads * wk));
    if (st == WEFT_OK) pipeline_ready(&pl, i);
  }
  for (int i = 0; i < plan->units && st == WEFT_OK; i++) {
    const linear_sp_unit_t *u = &plan->unit[i];
    weft_gla_shape_t us = unit_shape(plan, u);
    size_t ok = unit_tok(plan, u, wk), ov = unit_tok(plan, u, wv), so = u->state_off;
    st = pipeline_wait(&pl, i);
    if (st == WEFT_OK)
      st = linear_sp_stage_up(plan, plan->d_ds_out + so, result + so, u->state_count);
    if (st == WEFT_OK)
      st = weft_gla_backward(plan->ctx, &us, q + ok, k + ok, v + ov, g + ok, dout + ov, s_in + so,
                             plan->d_ds_out + so, dq + ok, dk + ok, dv + ov, dg + ok);
  }
  st = pipeline_finish(&pl, st);
  if (st != WEFT_OK) return st;
  return weft_kernel_ctx_synchronize(plan->ctx);
}
