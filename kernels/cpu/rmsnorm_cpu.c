/* CPU back end of RMSNorm (weft/rmsnorm.h), and the range-splitting thread helper shared by the
 * layer-op CPU back ends (layer_ops_internal.h; it lives here, with its first user).
 *
 * Arithmetic, which the CUDA back end (kernels/cuda/rmsnorm.cu) follows:
 *   forward   ss = sum_i x_i^2 in double (8 partial sums, added in lane order: a fixed order
 *             that vectorises); rstd = 1 / sqrt(ss / d + eps) in double, rounded once;
 *             y_i = (x_i * rstd) * w_i in f32.
 *   backward  xhat_i = x_i * rstd and g_i = w_i * dy_i in f32; m = sum_i g_i xhat_i / d in
 *             double (rounded once); dx_i = rstd * (g_i - xhat_i * m) in f32.
 *             dw_c += sum_r dy_rc * xhat_rc: one double accumulator per column, rows added in
 *             increasing order, then added to dw_c and rounded once.
 * Loops are compiled per instruction set (VEC_RANGE_VARIANTS, vec_math_cpu.h) in blocks that
 * vectorise; the operations and their order are the same in every copy.
 * Threads: the forward and dx split rows, the dw reduction splits columns; each output element
 * is computed by one thread in the same order whatever the split, so results are bitwise
 * independent of the thread count. dw runs first: dx may overwrite dy.
 * Rejected: dw from per-thread partial rows added at the end (the sum order, hence the bits,
 * would depend on the thread count; and it needs scratch), and f32 row sums (the double ones
 * cost nothing in a memory-bound loop and keep the error independent of d). */
#include <math.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "layer_ops_internal.h"
#include "vec_math_cpu.h"

/* ---- shared thread helper ---- */

/* Starting and joining a thread costs ~20-50 us; 2^17 floats stream in ~30 us. */

/* ---- RMSNorm ---- */

/* Lanes of the row sums: enough independent adds to hide the FP add latency and vectorise. */
#define RMS_LANES 8
/* Columns of dw reduced together: RMS_DW_COLS double accumulators stay in registers/L1 while
 * the rows stream past. Any width gives the same bits (each column is its own sum). */
#define RMS_DW_COLS 64

typedef struct rms_job {
  int64_t rows, dim;
  float eps;
  const float *x, *w, *rstd_in, *dy;
  float *y, *rstd, *dx, *dw;
} rms_job_t;

static double rms_sum_sq(const float *restrict x, int64_t d) {
  double part[RMS_LANES] = {0};
  int64_t i = 0;
  for (; i + RMS_LANES <= d; i += RMS_LANES)
    for (int l = 0; l < RMS_LANES; l++) part[l] += (double)x[i + l] * (double)x[i + l];
  for (; i < d; i++) part[0] += (double)x[i] * (double)x[i];
  double s = 0.0;
  for (int l = 0; l < RMS_LANES; l++) s += part[l];
  return s;
}

VEC_INLINE void rms_forward_body(const void *arg, int64_t r0, int64_t r1) {
  const rms_job_t *j = arg;
  const int64_t d = j->dim;
  for (int64_t r = r0; r < r1; r++) {
    const float *restrict x = j->x + r * d; /* [d] */
    float *restrict y = j->y + r * d;       /* [d] */
    float rs = (float)(1.0 / sqrt(rms_sum_sq(x, d) / (double)d + (double)j->eps));
    j->rstd[r] = rs;
    const float *restrict w = j->w;
    VEC_LOOP(i, d, y[i] = (x[i] * rs) * w[i];);
  }
}
VEC_RANGE_VARIANTS(rms_forward_rows, rms_forward_body)

weft_status_t weft_rmsnorm_forward_cpu(weft_kernel_ctx_t *ctx, int64_t rows, int64_t dim, float eps,
                                       const float *x, const float *w, float *y, float *rstd) {
  (void)ctx;
  rms_job_t j = {.rows = rows, .dim = dim, .eps = eps, .x = x, .w = w, .y = y, .rstd = rstd};
  weft_cpu_parallel_for(&j, rms_forward_rows_pick(), rows, 2 * dim);
  return WEFT_OK;
}

/* dw[c0..c1) += column sums over all rows, in increasing row order. */
VEC_INLINE void rms_dw_body(const void *arg, int64_t c0, int64_t c1) {
  const rms_job_t *j = arg;
  const int64_t d = j->dim;
  for (int64_t cb = c0; cb < c1; cb += RMS_DW_COLS) {
    const int64_t nc = c1 - cb < RMS_DW_COLS ? c1 - cb : RMS_DW_COLS;
    double acc[RMS_DW_COLS] = {0};
    for (int64_t r = 0; r < j->rows; r++) {
      const float *restrict x = j->x + r * d + cb, *restrict dy = j->dy + r * d + cb;
      const float rs = j->rstd_in[r];
      VEC_LOOP(c, nc, acc[c] += (double)dy[c] * (double)(x[c] * rs););
    }
    for (int64_t c = 0; c < nc; c++) j->dw[cb + c] = (float)((double)j->dw[cb + c] + acc[c]);
  }
}
VEC_RANGE_VARIANTS(rms_dw_cols, rms_dw_body)

/* dy may be dx (in place): each block of the output is computed into a local and then stored,
 * so the loops can take restrict pointers and vectorise. */
VEC_INLINE void rms_dx_body(const void *arg, int64_t r0, int64_t r1) {
  const rms_job_t *j = arg;
  const int64_t d = j->dim;
  const float *restrict w = j->w;
  for (int64_t r = r0; r < r1; r++) {
    const float *restrict x = j->x + r * d, *dy = j->dy + r * d; /* [d]; dy may be dx */
    float *dx = j->dx + r * d;
    const float rs = j->rstd_in[r];
    double part[RMS_LANES] = {0};
    int64_t i = 0;
    for (; i + RMS_LANES <= d; i += RMS_LANES)
      for (int l = 0; l < RMS_LANES; l++)
        part[l] += (double)(w[i + l] * dy[i + l]) * (double)(x[i + l] * rs);
    for (; i < d; i++) part[0] += (double)(w[i] * dy[i]) * (double)(x[i] * rs);
    double s = 0.0;
    for (int l = 0; l < RMS_LANES; l++) s += part[l];
    const float m = (float)(s / (double)d);
    for (int64_t base = 0; base < d; base += VEC_BLOCK) {
      const int64_t n = d - base < VEC_BLOCK ? d - base : VEC_BLOCK;
      const float *restrict xb = x + base, *restrict wb = w + base;
      float g[VEC_BLOCK], out[VEC_BLOCK];
      memcpy(g, dy + base, (size_t)n * sizeof(float));
      VEC_LOOP(c, n, out[c] = rs * (wb[c] * g[c] - (xb[c] * rs) * m););
      memcpy(dx + base, out, (size_t)n * sizeof(float));
    }
  }
}
VEC_RANGE_VARIANTS(rms_dx_rows, rms_dx_body)

weft_status_t weft_rmsnorm_backward_cpu(weft_kernel_ctx_t *ctx, int64_t rows, int64_t dim,
                                        const float *x, const float *w, const float *rstd,
                                        const float *dy, float *dx, float *dw) {
  (void)ctx;
  rms_job_t j = {
      .rows = rows, .dim = dim, .x = x, .w = w, .rstd_in = rstd, .dy = dy, .dx = dx, .dw = dw};
  weft_cpu_parallel_for(&j, rms_dw_cols_pick(), dim, 2 * rows); /* first: reads dy */
  weft_cpu_parallel_for(&j, rms_dx_rows_pick(), rows, 3 * dim);
  return WEFT_OK;
}
