/* Elementwise front end: validation and dispatch on the device kind (see weft/elementwise.h).
 *
 * Every entry point checks its arguments here, once, then calls the CPU loop or the CUDA
 * launcher of the same name. The aliasing rule (identical or disjoint buffers only) is checked
 * from the address ranges, which costs nothing and turns a silent data race on the GPU into a
 * clear error on both devices. */
#include <inttypes.h>
#include <stdint.h>

#include "elementwise_internal.h"
#include "weft/elementwise.h"

static bool ew_dtype_ok(weft_dtype_t dtype) {
  return dtype == WEFT_DTYPE_F32 || dtype == WEFT_DTYPE_BF16;
}

/* Checks the context, the count and the dtype. */
static weft_status_t ew_check(const char *fn, const weft_kernel_ctx_t *ctx, weft_dtype_t dtype,
                              int64_t n) {
  if (!ctx) {
    WEFT_ERROR("kernels", "%s: kernel context is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (n < 0) {
    WEFT_ERROR("kernels", "%s: n=%" PRId64 " must be >= 0", fn, n);
    return WEFT_ERR_INVALID_ARG;
  }
  if (!ew_dtype_ok(dtype)) {
    WEFT_ERROR("kernels", "%s: dtype %s is not supported (f32 or bf16)", fn,
               weft_dtype_name(dtype));
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* A buffer argument: its name (for messages), address and size in bytes. */
typedef struct ew_buf {
  const char *name;
  const void *ptr;
  size_t bytes;
} ew_buf_t;

/* Rejects NULL buffers, and an input/output pair that overlaps without being identical
 * (identical is allowed only when `same_ok`). */
static weft_status_t ew_check_pair(const char *fn, ew_buf_t in, ew_buf_t out, bool same_ok) {
  if (!in.ptr || !out.ptr) {
    WEFT_ERROR("kernels", "%s: %s=%p and %s=%p must not be NULL", fn, in.name, in.ptr, out.name,
               out.ptr);
    return WEFT_ERR_INVALID_ARG;
  }
  uintptr_t in_lo = (uintptr_t)in.ptr, out_lo = (uintptr_t)out.ptr;
  bool overlap = in_lo < out_lo + out.bytes && out_lo < in_lo + in.bytes;
  if (overlap && !(same_ok && in_lo == out_lo && in.bytes == out.bytes)) {
    WEFT_ERROR("kernels", "%s: %s=%p (%zu bytes) and %s=%p (%zu bytes) overlap; they must be %s",
               fn, in.name, in.ptr, in.bytes, out.name, out.ptr, out.bytes,
               same_ok ? "the same buffer or disjoint" : "disjoint");
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

#if !WEFT_HAVE_CUDA
static weft_status_t ew_no_backend(const weft_kernel_ctx_t *ctx) {
  WEFT_ERROR("kernels", "elementwise kernels: no backend for device kind %d in this build",
             (int)ctx->device->kind);
  return WEFT_ERR_INTERNAL; /* a CUDA context cannot be created without the backend */
}
#endif

weft_status_t weft_elementwise_add(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                   const void *a, const void *b, void *y) {
  const char *fn = "weft_elementwise_add";
  WEFT_CHECK(ew_check(fn, ctx, dtype, n));
  if (n == 0) return WEFT_OK;
  size_t bytes = (size_t)n * weft_dtype_size(dtype);
  ew_buf_t out = {"y", y, bytes};
  WEFT_CHECK(ew_check_pair(fn, (ew_buf_t){"a", a, bytes}, out, true));
  WEFT_CHECK(ew_check_pair(fn, (ew_buf_t){"b", b, bytes}, out, true));
  if (ctx->device->kind == WEFT_DEVICE_CPU) {
    weft_elementwise_add_cpu(dtype, n, a, b, y);
    return WEFT_OK;
  }
#if WEFT_HAVE_CUDA
  return weft_elementwise_add_cuda(ctx, dtype, n, a, b, y);
#else
  return ew_no_backend(ctx);
#endif
}

weft_status_t weft_elementwise_scale(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                     float alpha, const void *x, void *y) {
  const char *fn = "weft_elementwise_scale";
  WEFT_CHECK(ew_check(fn, ctx, dtype, n));
  if (n == 0) return WEFT_OK;
  size_t bytes = (size_t)n * weft_dtype_size(dtype);
  WEFT_CHECK(ew_check_pair(fn, (ew_buf_t){"x", x, bytes}, (ew_buf_t){"y", y, bytes}, true));
  if (ctx->device->kind == WEFT_DEVICE_CPU) {
    weft_elementwise_scale_cpu(dtype, n, alpha, x, y);
    return WEFT_OK;
  }
#if WEFT_HAVE_CUDA
  return weft_elementwise_scale_cuda(ctx, dtype, n, alpha, x, y);
#else
  return ew_no_backend(ctx);
#endif
}

weft_status_t weft_elementwise_axpy(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                    float alpha, const void *x, void *y) {
  const char *fn = "weft_elementwise_axpy";
  WEFT_CHECK(ew_check(fn, ctx, dtype, n));
  if (n == 0) return WEFT_OK;
  size_t bytes = (size_t)n * weft_dtype_size(dtype);
  WEFT_CHECK(ew_check_pair(fn, (ew_buf_t){"x", x, bytes}, (ew_buf_t){"y", y, bytes}, true));
  if (ctx->device->kind == WEFT_DEVICE_CPU) {
    weft_elementwise_axpy_cpu(dtype, n, alpha, x, y);
    return WEFT_OK;
  }
#if WEFT_HAVE_CUDA
  return weft_elementwise_axpy_cuda(ctx, dtype, n, alpha, x, y);
#else
  return ew_no_backend(ctx);
#endif
}

weft_status_t weft_elementwise_fill(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                    float value, void *y) {
  const char *fn = "weft_elementwise_fill";
  WEFT_CHECK(ew_check(fn, ctx, dtype, n));
  if (n == 0) return WEFT_OK;
  if (!y) {
    WEFT_ERROR("kernels", "%s: y is NULL for n=%" PRId64, fn, n);
    return WEFT_ERR_INVALID_ARG;
  }
  if (ctx->device->kind == WEFT_DEVICE_CPU) {
    weft_elementwise_fill_cpu(dtype, n, value, y);
    return WEFT_OK;
  }
#if WEFT_HAVE_CUDA
  return weft_elementwise_fill_cuda(ctx, dtype, n, value, y);
#else
  return ew_no_backend(ctx);
#endif
}

weft_status_t weft_elementwise_cast(weft_kernel_ctx_t *ctx, int64_t n, weft_dtype_t x_dtype,
                                    const void *x, weft_dtype_t y_dtype, void *y) {
  const char *fn = "weft_elementwise_cast";
  WEFT_CHECK(ew_check(fn, ctx, x_dtype, n));
  WEFT_CHECK(ew_check(fn, ctx, y_dtype, n));
  if (n == 0) return WEFT_OK;
  bool same = x_dtype == y_dtype;
  WEFT_CHECK(ew_check_pair(fn, (ew_buf_t){"x", x, (size_t)n * weft_dtype_size(x_dtype)},
                           (ew_buf_t){"y", y, (size_t)n * weft_dtype_size(y_dtype)}, same));
  if (same && x == y) return WEFT_OK; /* a copy onto itself */
  if (ctx->device->kind == WEFT_DEVICE_CPU) {
    weft_elementwise_cast_cpu(n, x_dtype, x, y_dtype, y);
    return WEFT_OK;
  }
#if WEFT_HAVE_CUDA
  return weft_elementwise_cast_cuda(ctx, n, x_dtype, x, y_dtype, y);
#else
  return ew_no_backend(ctx);
#endif
}
