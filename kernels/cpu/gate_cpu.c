/* CPU back end of the decay gate (weft/gate.h): the overflow-free formulas, one element per
 * iteration, split over threads by weft_cpu_parallel_for (each element computed the same way
 * whatever the thread count). */
#include <math.h>

#include "gate_internal.h"

typedef struct gate_job {
  float scale;
  const float *x, *dy;
  float *out;
} gate_job_t;

/* Work per element in weft_cpu_parallel_for's units: an expf and a log1pf cost ~10 loads. */
#define GATE_WORK 10

static void gate_forward_range(const void *arg, int64_t begin, int64_t end) {
  const gate_job_t *j = arg;
  for (int64_t i = begin; i < end; i++) {
    const float x = j->x[i];
    j->out[i] = j->scale * (fminf(x, 0.0f) - log1pf(expf(-fabsf(x))));
  }
}

static void gate_backward_range(const void *arg, int64_t begin, int64_t end) {
  const gate_job_t *j = arg;
  for (int64_t i = begin; i < end; i++) {
    const float x = j->x[i], e = expf(-fabsf(x));
    const float sig_neg = x >= 0.0f ? e / (1.0f + e) : 1.0f / (1.0f + e); /* sigmoid(-x) */
    j->out[i] = j->dy[i] * j->scale * sig_neg;
  }
}

weft_status_t weft_gate_logsigmoid_forward_cpu(weft_kernel_ctx_t *ctx, int64_t n, float scale,
                                               const float *x, float *y) {
  (void)ctx;
  gate_job_t j = {scale, x, NULL, y};
  weft_cpu_parallel_for(&j, gate_forward_range, n, GATE_WORK);
  return WEFT_OK;
}

weft_status_t weft_gate_logsigmoid_backward_cpu(weft_kernel_ctx_t *ctx, int64_t n, float scale,
                                                const float *x, const float *dy, float *dx) {
  (void)ctx;
  gate_job_t j = {scale, x, dy, dx};
  weft_cpu_parallel_for(&j, gate_backward_range, n, GATE_WORK);
  return WEFT_OK;
}
