/* CPU back end of the decay gate (weft/gate.h): the overflow-free formulas, split over threads
 * by weft_cpu_parallel_for (each element computed the same way whatever the thread count).
 *
 *   forward   y = scale (min(x, 0) - log1p(e)),  e = e^-|x|
 *   backward  dx = dy scale sigmoid(-x),  sigmoid(-x) = e / (1 + e) for x >= 0, 1 / (1 + e) else
 * e, log1p and the sigmoid are evaluated in double with vec_exp and vec_log1p_unit
 * (vec_math_cpu.h, relative error below 1e-10) and rounded to f32 once, so the result is within
 * about half an ulp of the exact one; the loops are compiled per instruction set and vectorise
 * (libm's expf and log1pf were scalar calls, 5% of a training step). Double rather than f32
 * polynomials: the test allows 4 ulps, which an f32 log1p of an f32 exp would use up. */
#include <math.h>

#include "gate_internal.h"
#include "kernel_ctx_internal.h"
#include "vec_math_cpu.h"

typedef struct gate_job {
  float scale;
  const float *x, *dy;
  float *out;
} gate_job_t;

/* Work per element in weft_cpu_parallel_for's units: two double polynomials and a division. */
#define GATE_WORK 10

/* For one block: e[i] = e^-|x[i]| and pos[i] = 1 if x[i] >= 0, else 0. -|x| is clamped to
 * [-700, 0] for vec_exp (e^-700 is far below any f32 result's ulp). The selects are a loop of
 * their own: GCC if-converts them there, but not inside the loop with the polynomial. */
VEC_INLINE void gate_exp_block(int64_t n, const float *restrict x, double *restrict e,
                               double *restrict pos) {
  double z[VEC_BLOCK];
  VEC_LOOP(i, n, double zi = -fabs((double)x[i]); z[i] = __builtin_isless(zi, -700.0) ? -700.0 : zi;
           pos[i] = __builtin_isgreaterequal(x[i], 0.0f) ? 1.0 : 0.0;);
  VEC_LOOP(i, n, e[i] = vec_exp(z[i]););
}

/* Every element reads x[i] (and dy[i]) before writing out[i], and out may be x (or dy): in
 * place. A block is computed into a local first so the loop vectorises without alias checks.
 * min(x, 0) is (x - |x|) / 2, exact in double. */
VEC_INLINE void gate_forward_body(const void *arg, int64_t begin, int64_t end) {
  const gate_job_t *j = arg;
  const double scale = j->scale;
  for (int64_t base = begin; base < end; base += VEC_BLOCK) {
    const int64_t n = end - base < VEC_BLOCK ? end - base : VEC_BLOCK;
    float x[VEC_BLOCK], y[VEC_BLOCK];
    double e[VEC_BLOCK], pos[VEC_BLOCK];
    memcpy(x, j->x + base, (size_t)n * sizeof(float));
    gate_exp_block(n, x, e, pos);
    VEC_LOOP(i, n, double xi = x[i]; double lo = 0.5 * (xi - fabs(xi));
             y[i] = (float)(scale * (lo - vec_log1p_unit(e[i]))););
    memcpy(j->out + base, y, (size_t)n * sizeof(float));
  }
}

/* sigmoid(-x) = num / (1 + e) with num = e for x >= 0 and 1 otherwise: pos e + (1 - pos). */
VEC_INLINE void gate_backward_body(const void *arg, int64_t begin, int64_t end) {
  const gate_job_t *j = arg;
  const double scale = j->scale;
  for (int64_t base = begin; base < end; base += VEC_BLOCK) {
    const int64_t n = end - base < VEC_BLOCK ? end - base : VEC_BLOCK;
    float x[VEC_BLOCK], dy[VEC_BLOCK], dx[VEC_BLOCK];
    double e[VEC_BLOCK], pos[VEC_BLOCK];
    memcpy(x, j->x + base, (size_t)n * sizeof(float));
    memcpy(dy, j->dy + base, (size_t)n * sizeof(float));
    gate_exp_block(n, x, e, pos);
    VEC_LOOP(i, n, double num = pos[i] * e[i] + (1.0 - pos[i]);
             dx[i] = (float)((double)dy[i] * scale * (num / (1.0 + e[i]))););
    memcpy(j->out + base, dx, (size_t)n * sizeof(float));
  }
}

VEC_RANGE_VARIANTS(gate_forward_range, gate_forward_body)
VEC_RANGE_VARIANTS(gate_backward_range, gate_backward_body)

weft_status_t weft_gate_logsigmoid_forward_cpu(weft_kernel_ctx_t *ctx, int64_t n, float scale,
                                               const float *x, float *y) {
  (void)ctx;
  gate_job_t j = {scale, x, NULL, y};
  weft_cpu_parallel_for(&j, gate_forward_range_pick(), n, GATE_WORK);
  return WEFT_OK;
}

weft_status_t weft_gate_logsigmoid_backward_cpu(weft_kernel_ctx_t *ctx, int64_t n, float scale,
                                                const float *x, const float *dy, float *dx) {
  (void)ctx;
  gate_job_t j = {scale, x, dy, dx};
  weft_cpu_parallel_for(&j, gate_backward_range_pick(), n, GATE_WORK);
  return WEFT_OK;
}
