/* Decay-gate front end (weft/gate.h): validation, then dispatch on the device kind. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>

#include "gate_internal.h"
#include "weft/gate.h"

/* true when [a, a + n) and [b, b + n) share memory without being the same buffer. */
static bool partial_overlap(const float *a, const float *b, int64_t n) {
  return a != b && a < b + n && b < a + n;
}

static weft_status_t gate_check(const char *fn, const weft_kernel_ctx_t *ctx, int64_t n,
                                float scale, const void *a, const void *b, const void *out) {
  if (!ctx || n < 0 || (n > 0 && (!a || !b || !out)) || !isfinite(scale)) {
    WEFT_ERROR("kernels", "%s: bad arguments (ctx %p, n %" PRId64 ", scale %g, pointers %p %p %p)",
               fn, (const void *)ctx, n, (double)scale, a, b, out);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

static weft_status_t gate_no_backend(const char *fn, const weft_kernel_ctx_t *ctx) {
  WEFT_ERROR("kernels", "%s: no back end for device kind %s in this build", fn,
             weft_device_kind_name(weft_kernel_ctx_device(ctx)->kind));
  return WEFT_ERR_UNSUPPORTED;
}

weft_status_t weft_gate_logsigmoid_forward(weft_kernel_ctx_t *ctx, int64_t n, float scale,
                                           const float *x, float *y) {
  static const char fn[] = "weft_gate_logsigmoid_forward";
  WEFT_CHECK(gate_check(fn, ctx, n, scale, x, x, y));
  if (n > 0 && partial_overlap(x, y, n)) {
    WEFT_ERROR("kernels", "%s: y partially overlaps x (in place needs y == x)", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (n == 0) return WEFT_OK;
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_gate_logsigmoid_forward_cpu(ctx, n, scale, x, y);
#if WEFT_HAVE_CUDA
  case WEFT_DEVICE_CUDA: return weft_gate_logsigmoid_forward_cuda(ctx, n, scale, x, y);
#endif
  default: return gate_no_backend(fn, ctx);
  }
}

weft_status_t weft_gate_logsigmoid_backward(weft_kernel_ctx_t *ctx, int64_t n, float scale,
                                            const float *x, const float *dy, float *dx) {
  static const char fn[] = "weft_gate_logsigmoid_backward";
  WEFT_CHECK(gate_check(fn, ctx, n, scale, x, dy, dx));
  if (n > 0 && (partial_overlap(dy, dx, n) || (x != dx && partial_overlap(x, dx, n)) || x == dx)) {
    WEFT_ERROR("kernels", "%s: dx may be dy (in place) but must not overlap x", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (n == 0) return WEFT_OK;
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_gate_logsigmoid_backward_cpu(ctx, n, scale, x, dy, dx);
#if WEFT_HAVE_CUDA
  case WEFT_DEVICE_CUDA: return weft_gate_logsigmoid_backward_cuda(ctx, n, scale, x, dy, dx);
#endif
  default: return gate_no_backend(fn, ctx);
  }
}
