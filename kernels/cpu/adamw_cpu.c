/* CPU back ends of weft/adamw.h (AdamW step, sum of squares) and the row-range threading
 * helper the training-op back ends share (train_ops_internal.h).
 *
 * AdamW is elementwise: every element is updated by one thread with the f32 operations of the
 * header, in its order, none fused. The source is compiled with -ffp-contract=off
 * (kernels/CMakeLists.txt) on top of the ISO C mode that already implies it for GCC, so no
 * compiler may turn a product and a sum into an FMA; cuda/adamw.cu spells the same operations
 * with __fmul_rn/__fadd_rn/__fdiv_rn/__fsqrt_rn, and the two agree bitwise. Rejected: volatile
 * temporaries to block contraction (slow and noisy) and precomputing lr / bias1 as one factor
 * (fewer divisions, but a different rounding from the header's formula).
 *
 * sumsq follows the fixed blocked order of train_ops_internal.h: threads compute chunk sums of
 * one round into a stack array, the calling thread adds them in chunk order. The order depends
 * only on n, never on the thread count.
 * Threads: weft_cpu_parallel_for (cpu/parallel_for_cpu.c), shared by the CPU kernels. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "train_ops_internal.h"

/* Work units (about one float read or written) per thread below which fewer threads are used:
 * starting and joining a thread costs ~20-50 us, 2^17 floats stream in ~30 us. */
/* ---- AdamW ---- */

typedef struct adamw_job {
  weft_adamw_coef_t c;
  float *param, *m, *v;
  const float *grad;
} adamw_job_t;

static void adamw_range(const void *arg, int64_t i0, int64_t i1) {
  const adamw_job_t *j = arg;
  const weft_adamw_coef_t c = j->c; /* locals: no reload through the pointer per element */
  float *restrict param = j->param, *restrict m = j->m, *restrict v = j->v;
  const float *restrict grad = j->grad;
  for (int64_t i = i0; i < i1; i++) {
    float g = c.grad_scale * grad[i];
    float mi = c.beta1 * m[i] + c.one_minus_beta1 * g;
    float vi = c.beta2 * v[i] + c.one_minus_beta2 * (g * g);
    float mh = mi / c.bias1, vh = vi / c.bias2;
    float step = mh / (sqrtf(vh) + c.eps);
    float p = param[i];
    param[i] = p - c.lr * (step + c.weight_decay * p);
    m[i] = mi;
    v[i] = vi;
  }
}

/* An element reads 4 floats and writes 3, with a division pair and a square root: weight 8. */
#define ADAMW_WORK 8

weft_status_t weft_adamw_step_cpu(weft_kernel_ctx_t *ctx, const weft_adamw_coef_t *coef, int64_t n,
                                  float *param, const float *grad, float *m, float *v) {
  (void)ctx;
  adamw_job_t j = {.c = *coef, .param = param, .m = m, .v = v, .grad = grad};
  weft_cpu_parallel_for(&j, adamw_range, n, ADAMW_WORK);
  return WEFT_OK;
}

/* ---- sum of squares ---- */

typedef struct sumsq_job {
  const float *x;
  int64_t n;
  int64_t first_chunk; /* of this round */
  double *chunk_sum;   /* [chunks in the round] */
} sumsq_job_t;

static void sumsq_chunks(const void *arg, int64_t c0, int64_t c1) {
  const sumsq_job_t *j = arg;
  for (int64_t c = c0; c < c1; c++) {
    int64_t begin = (j->first_chunk + c) * WEFT_SUMSQ_CHUNK;
    int64_t end = j->n - begin < WEFT_SUMSQ_CHUNK ? j->n : begin + WEFT_SUMSQ_CHUNK;
    const float *restrict x = j->x;
    double s[WEFT_SUMSQ_LANES] = {0};
    int64_t i = begin;
    for (; i + WEFT_SUMSQ_LANES <= end; i += WEFT_SUMSQ_LANES)
      for (int l = 0; l < WEFT_SUMSQ_LANES; l++) s[l] += (double)x[i + l] * (double)x[i + l];
    for (int l = 0; i + l < end; l++) s[l] += (double)x[i + l] * (double)x[i + l];
    j->chunk_sum[c] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  }
}

weft_status_t weft_sumsq_cpu(weft_kernel_ctx_t *ctx, int64_t n, const float *x, double *sum_p) {
  (void)ctx;
  _Static_assert(WEFT_SUMSQ_LANES == 8, "the chunk's lane tree is written for 8 lanes");
  double chunk_sum[WEFT_SUMSQ_ROUND]; /* 8 KiB */
  const int64_t chunks = (n + WEFT_SUMSQ_CHUNK - 1) / WEFT_SUMSQ_CHUNK;
  double total = 0.0;
  for (int64_t first = 0; first < chunks; first += WEFT_SUMSQ_ROUND) {
    int64_t count = chunks - first < WEFT_SUMSQ_ROUND ? chunks - first : WEFT_SUMSQ_ROUND;
    sumsq_job_t j = {.x = x, .n = n, .first_chunk = first, .chunk_sum = chunk_sum};
    weft_cpu_parallel_for(&j, sumsq_chunks, count, WEFT_SUMSQ_CHUNK);
    double round_sum = 0.0;
    for (int64_t c = 0; c < count; c++) round_sum += chunk_sum[c];
    total += round_sum;
  }
  *sum_p = total;
  return WEFT_OK;
}
