/* RMSNorm front end (weft/rmsnorm.h): argument validation and dispatch on the device kind, plus
 * the checks the three layer-op front ends share (layer_ops_internal.h).
 *
 * Each entry point checks the context, the sizes, eps, the pointers and the aliasing the header
 * forbids, once, with one error line naming the function and the values, then calls
 * weft_rmsnorm_<fn>_cpu or _cuda. Aliasing is checked from address ranges: free, and it turns a
 * silent race on the GPU into a clear error on both devices. rows = 0 returns before dispatch.
 * Rejected: per-op copies of the NULL/overlap helpers (moe.c has its own; these three front ends
 * were written together and share one set). */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "layer_ops_internal.h"

#define RMS_NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

weft_status_t weft_layer_ops_check_ctx(const char *fn, const weft_kernel_ctx_t *ctx) {
  if (!ctx) {
    WEFT_ERROR("kernels", "%s: kernel context is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_layer_ops_check_args(const char *fn, const weft_layer_ops_arg_t *args,
                                        int count) {
  for (int i = 0; i < count; i++) {
    if (args[i].ptr || args[i].elems == 0) continue;
    WEFT_ERROR("kernels", "%s: %s is NULL but has %" PRId64 " elements", fn, args[i].name,
               args[i].elems);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_layer_ops_check_overlap(const char *fn, const char *a_name, const void *a,
                                           size_t a_bytes, const char *b_name, const void *b,
                                           size_t b_bytes, bool same_ok) {
  uintptr_t al = (uintptr_t)a, bl = (uintptr_t)b;
  if (!a || !b || a_bytes == 0 || b_bytes == 0 || al >= bl + b_bytes || bl >= al + a_bytes)
    return WEFT_OK;
  if (same_ok && al == bl && a_bytes == b_bytes) return WEFT_OK;
  WEFT_ERROR("kernels", "%s: %s=%p (%zu bytes) and %s=%p (%zu bytes) overlap; they must be %s", fn,
             a_name, a, a_bytes, b_name, b, b_bytes,
             same_ok ? "the same buffer or disjoint" : "disjoint");
  return WEFT_ERR_INVALID_ARG;
}

weft_status_t weft_layer_ops_check_shape(const char *fn, const char *rows_name, int64_t rows,
                                         const char *cols_name, int64_t cols) {
  int64_t bytes = 0;
  if (rows < 0 || cols < 1 || __builtin_mul_overflow(rows, cols, &bytes) ||
      __builtin_mul_overflow(bytes, (int64_t)8, &bytes) || (uint64_t)bytes > SIZE_MAX) {
    WEFT_ERROR("kernels",
               "%s: need %s >= 0, %s >= 1 and %s*%s*8 bytes addressable; got %s=%" PRId64
               " %s=%" PRId64,
               fn, rows_name, cols_name, rows_name, cols_name, rows_name, rows, cols_name, cols);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_layer_ops_no_backend(const char *fn, const weft_kernel_ctx_t *ctx) {
  WEFT_ERROR("kernels", "%s: no backend for device kind %d", fn,
             (int)weft_kernel_ctx_device(ctx)->kind);
  return WEFT_ERR_INTERNAL; /* a CUDA context cannot be created without the backend */
}

/* Context and sizes of both calls; *n_p = rows * dim. */
static weft_status_t rms_check_sizes(const char *fn, const weft_kernel_ctx_t *ctx, int64_t rows,
                                     int64_t dim, int64_t *n_p) {
  WEFT_CHECK(weft_layer_ops_check_ctx(fn, ctx));
  WEFT_CHECK(weft_layer_ops_check_shape(fn, "rows", rows, "dim", dim));
  *n_p = rows * dim;
  return WEFT_OK;
}

weft_status_t weft_rmsnorm_forward(weft_kernel_ctx_t *ctx, int64_t rows, int64_t dim, float eps,
                                   const float *x, const float *w, float *y, float *rstd) {
  static const char fn[] = "weft_rmsnorm_forward";
  int64_t n = 0;
  WEFT_CHECK(rms_check_sizes(fn, ctx, rows, dim, &n));
  if (!isfinite(eps) || eps < 0.0f) {
    WEFT_ERROR("kernels", "%s: eps=%g must be finite and >= 0", fn, (double)eps);
    return WEFT_ERR_INVALID_ARG;
  }
  const weft_layer_ops_arg_t args[] = {
      {"x", x, n}, {"w", w, dim}, {"y", y, n}, {"rstd", rstd, rows}};
  WEFT_CHECK(weft_layer_ops_check_args(fn, args, RMS_NARGS(args)));
  const size_t nb = (size_t)n * sizeof(float), db = (size_t)dim * sizeof(float);
  const size_t rb = (size_t)rows * sizeof(float);
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "x", x, nb, "y", y, nb, false));
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "w", w, db, "y", y, nb, false));
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "x", x, nb, "rstd", rstd, rb, false));
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "w", w, db, "rstd", rstd, rb, false));
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "y", y, nb, "rstd", rstd, rb, false));
  if (rows == 0) return WEFT_OK;
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_rmsnorm_forward_cpu(ctx, rows, dim, eps, x, w, y, rstd);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_rmsnorm_forward_cuda(ctx, rows, dim, eps, x, w, y, rstd);
#else
    break;
#endif
  }
  return weft_layer_ops_no_backend(fn, ctx);
}

weft_status_t weft_rmsnorm_backward(weft_kernel_ctx_t *ctx, int64_t rows, int64_t dim,
                                    const float *x, const float *w, const float *rstd,
                                    const float *dy, float *dx, float *dw) {
  static const char fn[] = "weft_rmsnorm_backward";
  int64_t n = 0;
  WEFT_CHECK(rms_check_sizes(fn, ctx, rows, dim, &n));
  const weft_layer_ops_arg_t args[] = {{"x", x, n},   {"w", w, dim}, {"rstd", rstd, rows},
                                       {"dy", dy, n}, {"dx", dx, n}, {"dw", dw, dim}};
  WEFT_CHECK(weft_layer_ops_check_args(fn, args, RMS_NARGS(args)));
  const size_t nb = (size_t)n * sizeof(float), db = (size_t)dim * sizeof(float);
  const size_t rb = (size_t)rows * sizeof(float);
  /* dx may be dy (dw is computed from dy first); every other output/input pair is disjoint */
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "dy", dy, nb, "dx", dx, nb, true));
  const struct {
    const char *name;
    const float *ptr;
    size_t bytes;
  } ins[] = {{"x", x, nb}, {"w", w, db}, {"rstd", rstd, rb}, {"dy", dy, nb}};
  for (int i = 0; i < RMS_NARGS(ins); i++) {
    if (i < 3)
      WEFT_CHECK(weft_layer_ops_check_overlap(fn, ins[i].name, ins[i].ptr, ins[i].bytes, "dx", dx,
                                              nb, false));
    WEFT_CHECK(weft_layer_ops_check_overlap(fn, ins[i].name, ins[i].ptr, ins[i].bytes, "dw", dw, db,
                                            false));
  }
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "dx", dx, nb, "dw", dw, db, false));
  if (rows == 0) return WEFT_OK;
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_rmsnorm_backward_cpu(ctx, rows, dim, x, w, rstd, dy, dx, dw);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_rmsnorm_backward_cuda(ctx, rows, dim, x, w, rstd, dy, dx, dw);
#else
    break;
#endif
  }
  return weft_layer_ops_no_backend(fn, ctx);
}
