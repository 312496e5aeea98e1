/* CPU back ends of weft/cross_entropy.h: softmax cross-entropy forward (per-row loss and
 * log-sum-exp) and backward, f32 data, plain loops over rows split across threads by
 * weft_cpu_parallel_for (each row is done by one thread: results do not depend on the count).
 *
 * Arithmetic, which cuda/cross_entropy.cu follows (to rounding; no bitwise promise here):
 *   forward   m = max_v z_v; e_v = expf(z_v - m) in f32; s = sum_v e_v in double (V up to
 *             ~10^5 terms without an f32 sum's drift); lse = m + log(s) and
 *             loss = (m - z_y) + log(s), both in double and rounded once. Subtracting the
 *             max keeps every e_v in (0, 1] and s in [1, V], so logits of any size give finite
 *             results; loss is computed from m rather than from the rounded lse so it keeps
 *             its relative accuracy when |lse| is large (lse = 1e4 has an ulp of 1e-3).
 *   backward  dz_v = s * (expf(z_v - lse) - [v == y]) in f32, element by element, so dlogits
 *             may be logits. A row with y < 0 is zeroed without reading its logits.
 * Rejected: an online (single pass) max-and-sum: two passes over a row of V floats stay in L1
 * or L2 for the vocabularies used here, and the two-pass form is simpler to mirror on CUDA. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernel_ctx_internal.h"
#include "train_ops_internal.h"

typedef struct ce_job {
  int64_t V;
  const float *logits, *lse_in;
  const int32_t *targets;
  float *loss, *lse, *dlogits;
  float scale;
} ce_job_t;

static void ce_forward_rows(const void *arg, int64_t t0, int64_t t1) {
  const ce_job_t *j = arg;
  const int64_t V = j->V;
  for (int64_t t = t0; t < t1; t++) {
    const float *z = j->logits + t * V; /* [V] */
    float m = -INFINITY;
    for (int64_t v = 0; v < V; v++) m = fmaxf(m, z[v]);
    double s = 0.0;
    for (int64_t v = 0; v < V; v++) s += expf(z[v] - m);
    double log_s = log(s);
    j->lse[t] = (float)((double)m + log_s);
    int32_t y = j->targets[t];
    j->loss[t] = y < 0 ? 0.0f : (float)(((double)m - (double)z[y]) + log_s);
  }
}

weft_status_t weft_cross_entropy_forward_cpu(weft_kernel_ctx_t *ctx, int64_t rows, int64_t vocab,
                                             const float *logits, const int32_t *targets,
                                             float *loss, float *lse) {
  (void)ctx;
  ce_job_t j = {.V = vocab, .logits = logits, .targets = targets, .loss = loss, .lse = lse};
  weft_cpu_parallel_for(&j, ce_forward_rows, rows, 4 * vocab); /* an expf ~ a few units */
  return WEFT_OK;
}

static void ce_backward_rows(const void *arg, int64_t t0, int64_t t1) {
  const ce_job_t *j = arg;
  const int64_t V = j->V;
  const float s = j->scale;
  for (int64_t t = t0; t < t1; t++) {
    const float *z = j->logits + t * V; /* [V] */
    float *dz = j->dlogits + t * V;     /* [V], may be z */
    int32_t y = j->targets[t];
    if (y < 0) {
      memset(dz, 0, (size_t)V * sizeof(float));
      continue;
    }
    const float l = j->lse_in[t];
    /* each element reads its own logit before writing it: safe in place */
    for (int64_t v = 0; v < V; v++) dz[v] = s * (expf(z[v] - l) - (v == y ? 1.0f : 0.0f));
  }
}

weft_status_t weft_cross_entropy_backward_cpu(weft_kernel_ctx_t *ctx, int64_t rows, int64_t vocab,
                                              const float *logits, const int32_t *targets,
                                              const float *lse, float scale, float *dlogits) {
  (void)ctx;
  ce_job_t j = {.V = vocab,
                .logits = logits,
                .targets = targets,
                .lse_in = lse,
                .scale = scale,
                .dlogits = dlogits};
  weft_cpu_parallel_for(&j, ce_backward_rows, rows, 4 * vocab);
  return WEFT_OK;
}
