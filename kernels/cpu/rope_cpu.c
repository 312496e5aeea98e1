/* CPU back end of RoPE (weft/rope.h), in place on x [n, H, d].
 *
 * Arithmetic, which the CUDA back end (kernels/cuda/rope.cu) repeats expression for expression:
 *   theta_i = pow(base, -(2i) / d) and a = p * theta_i in double; c = (float)cos(a),
 *   s = (float)sin(a) (one rounding each: an f32 angle at p = 1e5 would be off by ~4e-3 rad);
 *   forward  x0' = x0 c - x1 s,  x1' = x0 s + x1 c        (f32, products and sums unfused)
 *   inverse  x0' = x0 c + x1 s,  x1' = x1 c - x0 s        (the same c, s: sin(-a) = -sin(a))
 * A token with p < 0 is skipped. Pairs go ROPE_PAIRS at a time: their theta once per thread,
 * then per token one cos/sin each, applied to all H heads. Tokens are split over threads (one
 * token's rows are written by one thread, same operations), so results do not depend on the thread
 * count. Rejected: a precomputed cos/sin table per call (an allocation, and positions are arbitrary
 * under sequence parallelism so it would not be reused) and f32 sincosf of an f32 angle (the
 * precision problem above). */
#include <math.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "layer_ops_internal.h"

/* Pairs handled at once: their theta, cos and sin sit on the stack (64 x 16 bytes); d <= 128,
 * the usual head size, takes one pass over the tokens. */
#define ROPE_PAIRS 64

typedef struct rope_job {
  int64_t heads, head_dim;
  double base;
  const int64_t *pos;
  bool inverse;
  float *x;
} rope_job_t;

static void rope_tokens(const void *arg, int64_t t0, int64_t t1) {
  const rope_job_t *j = arg;
  const int64_t H = j->heads, d = j->head_dim, half = d / 2;
  double theta[ROPE_PAIRS];
  float cs[ROPE_PAIRS], sn[ROPE_PAIRS];
  for (int64_t i0 = 0; i0 < half; i0 += ROPE_PAIRS) { /* one pass for d <= 128 */
    const int64_t np = half - i0 < ROPE_PAIRS ? half - i0 : ROPE_PAIRS;
    for (int64_t k = 0; k < np; k++) theta[k] = pow(j->base, -(double)(2 * (i0 + k)) / (double)d);
    for (int64_t t = t0; t < t1; t++) {
      const int64_t p = j->pos[t];
      if (p < 0) continue; /* padding: unchanged */
      for (int64_t k = 0; k < np; k++) {
        double a = (double)p * theta[k];
        cs[k] = (float)cos(a);
        sn[k] = (float)sin(a);
      }
      float *xt = j->x + t * H * d + 2 * i0; /* pairs i0.. of head 0 */
      for (int64_t h = 0; h < H; h++) {
        float *v = xt + h * d; /* [2 np] */
        if (j->inverse) {
          for (int64_t k = 0; k < np; k++) {
            float x0 = v[2 * k], x1 = v[2 * k + 1];
            v[2 * k] = x0 * cs[k] + x1 * sn[k];
            v[2 * k + 1] = x1 * cs[k] - x0 * sn[k];
          }
        } else {
          for (int64_t k = 0; k < np; k++) {
            float x0 = v[2 * k], x1 = v[2 * k + 1];
            v[2 * k] = x0 * cs[k] - x1 * sn[k];
            v[2 * k + 1] = x0 * sn[k] + x1 * cs[k];
          }
        }
      }
    }
  }
}

weft_status_t weft_rope_apply_cpu(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t heads,
                                  int64_t head_dim, double base, const int64_t *pos, bool inverse,
                                  float *x) {
  (void)ctx;
  rope_job_t j = {
      .heads = heads, .head_dim = head_dim, .base = base, .pos = pos, .inverse = inverse, .x = x};
  /* per token: H d floats read and written, plus d/2 double pow/cos/sin (~100 flops each) */
  weft_cpu_parallel_for(&j, rope_tokens, tokens, 2 * heads * head_dim + 50 * head_dim);
  return WEFT_OK;
}
