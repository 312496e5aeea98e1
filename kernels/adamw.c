/* AdamW and sumsq front end: argument validation, the step's f32 constants, and dispatch on
 * the device kind (see weft/adamw.h; back ends in cpu/adamw_cpu.c and cuda/adamw.cu).
 *
 * The constants (1 - beta, the bias corrections 1 - beta^t) are computed here on the host,
 * once per call, and handed to either back end, so CPU and CUDA start every element from the
 * same bits (train_ops_internal.h). beta^t is pow() in double, rounded once to f32: exact
 * enough for any t, and 1 - beta^t > 0 for beta in [0, 1) and t >= 1 (it tends to 1).
 * The four buffers must be pairwise disjoint, checked from their address ranges: free, and an
 * in-place update through overlapping buffers would differ between devices. */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "train_ops_internal.h"

static weft_status_t adamw_check_n(const char *fn, const weft_kernel_ctx_t *ctx, int64_t n) {
  if (!ctx) {
    WEFT_ERROR("kernels", "%s: kernel context is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(float)) {
    WEFT_ERROR("kernels", "%s: n=%" PRId64 " must be >= 0 (and addressable)", fn, n);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

static weft_status_t adamw_no_backend(const char *fn, const weft_kernel_ctx_t *ctx) {
  WEFT_ERROR("kernels", "%s: no backend for device kind %d in this build", fn,
             (int)weft_kernel_ctx_device(ctx)->kind);
  return WEFT_ERR_INTERNAL; /* a CUDA context cannot be created without the backend */
}

/* The hyper-parameters' ranges (weft/adamw.h), then the constants. */
static weft_status_t adamw_coef(const char *fn, const weft_adamw_params_t *p,
                                weft_adamw_coef_t *coef) {
  if (!p) {
    WEFT_ERROR("kernels", "%s: params is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  /* comparisons written so that NaN fails them */
  if (p->step < 1 || !(p->beta1 >= 0.0f && p->beta1 < 1.0f) ||
      !(p->beta2 >= 0.0f && p->beta2 < 1.0f) || !(p->eps > 0.0f && isfinite(p->eps)) ||
      !(p->lr >= 0.0f && isfinite(p->lr)) ||
      !(p->weight_decay >= 0.0f && isfinite(p->weight_decay)) ||
      !(p->grad_scale >= 0.0f && isfinite(p->grad_scale))) {
    WEFT_ERROR("kernels",
               "%s: need step >= 1, betas in [0, 1), eps > 0, lr, weight_decay, grad_scale >= 0, "
               "all finite; got step=%" PRId64
               " beta1=%g beta2=%g eps=%g lr=%g weight_decay=%g grad_scale=%g",
               fn, p->step, (double)p->beta1, (double)p->beta2, (double)p->eps, (double)p->lr,
               (double)p->weight_decay, (double)p->grad_scale);
    return WEFT_ERR_INVALID_ARG;
  }
  *coef = (weft_adamw_coef_t){
      .lr = p->lr,
      .weight_decay = p->weight_decay,
      .eps = p->eps,
      .grad_scale = p->grad_scale,
      .beta1 = p->beta1,
      .one_minus_beta1 = 1.0f - p->beta1,
      .beta2 = p->beta2,
      .one_minus_beta2 = 1.0f - p->beta2,
      .bias1 = (float)(1.0 - pow((double)p->beta1, (double)p->step)),
      .bias2 = (float)(1.0 - pow((double)p->beta2, (double)p->step)),
  };
  return WEFT_OK;
}

weft_status_t weft_adamw_step(weft_kernel_ctx_t *ctx, const weft_adamw_params_t *params, int64_t n,
                              float *param, const float *grad, float *m, float *v) {
  static const char fn[] = "weft_adamw_step";
  weft_adamw_coef_t coef;
  WEFT_CHECK(adamw_check_n(fn, ctx, n));
  WEFT_CHECK(adamw_coef(fn, params, &coef));
  if (n == 0) return WEFT_OK;
  const struct {
    const char *name;
    const void *ptr;
  } bufs[] = {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}};
  const size_t bytes = (size_t)n * sizeof(float);
  for (int i = 0; i < 4; i++) {
    if (!bufs[i].ptr) {
      WEFT_ERROR("kernels", "%s: %s is NULL but n=%" PRId64, fn, bufs[i].name, n);
      return WEFT_ERR_INVALID_ARG;
    }
    for (int j = 0; j < i; j++) {
      uintptr_t a = (uintptr_t)bufs[i].ptr, b = (uintptr_t)bufs[j].ptr;
      if (a < b + bytes && b < a + bytes) {
        WEFT_ERROR("kernels", "%s: %s=%p and %s=%p overlap (%zu bytes each); they must be disjoint",
                   fn, bufs[j].name, bufs[j].ptr, bufs[i].name, bufs[i].ptr, bytes);
        return WEFT_ERR_INVALID_ARG;
      }
    }
  }
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_adamw_step_cpu(ctx, &coef, n, param, grad, m, v);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_adamw_step_cuda(ctx, &coef, n, param, grad, m, v);
#else
    break;
#endif
  }
  return adamw_no_backend(fn, ctx);
}

weft_status_t weft_sumsq(weft_kernel_ctx_t *ctx, int64_t n, const float *x, double *sum_p) {
  static const char fn[] = "weft_sumsq";
  WEFT_CHECK(adamw_check_n(fn, ctx, n));
  if (!sum_p || (n > 0 && !x)) {
    WEFT_ERROR("kernels", "%s: sum_p=%p and x=%p (n=%" PRId64 ") must not be NULL", fn,
               (void *)sum_p, (const void *)x, n);
    return WEFT_ERR_INVALID_ARG;
  }
  *sum_p = 0.0;
  if (n == 0) return weft_kernel_ctx_synchronize(ctx); /* still the documented sync point */
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_sumsq_cpu(ctx, n, x, sum_p);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_sumsq_cuda(ctx, n, x, sum_p);
#else
    break;
#endif
  }
  return adamw_no_backend(fn, ctx);
}
