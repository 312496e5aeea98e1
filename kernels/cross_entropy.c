/* Cross-entropy front end: argument validation and dispatch on the device kind (see
 * weft/cross_entropy.h; the back ends are in cpu/cross_entropy_cpu.c and
 * cuda/cross_entropy.cu).
 *
 * Each entry point checks the context, the sizes, the pointers and the aliasing rule here,
 * once, with one error line naming the function and the values, then calls the back end.
 * Targets are checked against the vocabulary only on the CPU, where they are host memory.
 * Rejected: copying device targets to the host to check them (a sync per call); the CUDA back
 * end writes NaN for an out-of-range row instead, so the bug shows in the loss. */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "train_ops_internal.h"

/* A buffer argument: name (for messages), address and size in bytes. */
typedef struct ce_buf {
  const char *name;
  const void *ptr;
  size_t bytes;
} ce_buf_t;

/* ctx non-NULL, rows >= 0, vocab >= 1, rows * vocab floats addressable (*elems_p). */
static weft_status_t ce_check_sizes(const char *fn, const weft_kernel_ctx_t *ctx, int64_t rows,
                                    int64_t vocab, int64_t *elems_p) {
  if (!ctx) {
    WEFT_ERROR("kernels", "%s: kernel context is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (rows < 0 || vocab < 1 || __builtin_mul_overflow(rows, vocab, elems_p) ||
      (uint64_t)*elems_p > SIZE_MAX / sizeof(float)) {
    WEFT_ERROR("kernels",
               "%s: need rows >= 0, vocab >= 1 and rows*vocab addressable; got rows=%" PRId64
               " vocab=%" PRId64,
               fn, rows, vocab);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* Every buffer non-NULL; a pair overlapping is an error unless it is the pair (same_a, same_b)
 * and the two are the same buffer (indices into bufs; -1 for none). */
static weft_status_t ce_check_bufs(const char *fn, const ce_buf_t *bufs, int count, int same_a,
                                   int same_b) {
  for (int i = 0; i < count; i++) {
    if (!bufs[i].ptr) {
      WEFT_ERROR("kernels", "%s: %s is NULL but has %zu bytes", fn, bufs[i].name, bufs[i].bytes);
      return WEFT_ERR_INVALID_ARG;
    }
  }
  for (int i = 0; i < count; i++) {
    for (int j = i + 1; j < count; j++) {
      uintptr_t a = (uintptr_t)bufs[i].ptr, b = (uintptr_t)bufs[j].ptr;
      if (a >= b + bufs[j].bytes || b >= a + bufs[i].bytes) continue;
      if (i == same_a && j == same_b && a == b && bufs[i].bytes == bufs[j].bytes) continue;
      WEFT_ERROR("kernels", "%s: %s=%p (%zu bytes) and %s=%p (%zu bytes) overlap; they must be %s",
                 fn, bufs[i].name, bufs[i].ptr, bufs[i].bytes, bufs[j].name, bufs[j].ptr,
                 bufs[j].bytes,
                 i == same_a && j == same_b ? "the same buffer or disjoint" : "disjoint");
      return WEFT_ERR_INVALID_ARG;
    }
  }
  return WEFT_OK;
}

/* CPU only: every target < vocab (negative ones mark unlabelled rows). */
static weft_status_t ce_check_targets(const char *fn, int64_t rows, int64_t vocab,
                                      const int32_t *targets) {
  for (int64_t t = 0; t < rows; t++) {
    if (targets[t] >= vocab) {
      WEFT_ERROR("kernels", "%s: targets[%" PRId64 "]=%" PRId32 " is not below vocab=%" PRId64, fn,
                 t, targets[t], vocab);
      return WEFT_ERR_INVALID_ARG;
    }
  }
  return WEFT_OK;
}

static weft_status_t ce_no_backend(const char *fn, const weft_kernel_ctx_t *ctx) {
  WEFT_ERROR("kernels", "%s: no backend for device kind %d in this build", fn,
             (int)weft_kernel_ctx_device(ctx)->kind);
  return WEFT_ERR_INTERNAL; /* a CUDA context cannot be created without the backend */
}

weft_status_t weft_cross_entropy_forward(weft_kernel_ctx_t *ctx, int64_t rows, int64_t vocab,
                                         const float *logits, const int32_t *targets, float *loss,
                                         float *lse) {
  static const char fn[] = "weft_cross_entropy_forward";
  int64_t elems = 0;
  WEFT_CHECK(ce_check_sizes(fn, ctx, rows, vocab, &elems));
  if (rows == 0) return WEFT_OK;
  size_t row_bytes = (size_t)rows * sizeof(float);
  const ce_buf_t bufs[] = {{"logits", logits, (size_t)elems * sizeof(float)},
                           {"targets", targets, (size_t)rows * sizeof(int32_t)},
                           {"loss", loss, row_bytes},
                           {"lse", lse, row_bytes}};
  WEFT_CHECK(ce_check_bufs(fn, bufs, 4, -1, -1));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    WEFT_CHECK(ce_check_targets(fn, rows, vocab, targets));
    return weft_cross_entropy_forward_cpu(ctx, rows, vocab, logits, targets, loss, lse);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_cross_entropy_forward_cuda(ctx, rows, vocab, logits, targets, loss, lse);
#else
    break;
#endif
  }
  return ce_no_backend(fn, ctx);
}

weft_status_t weft_cross_entropy_backward(weft_kernel_ctx_t *ctx, int64_t rows, int64_t vocab,
                                          const float *logits, const int32_t *targets,
                                          const float *lse, float scale, float *dlogits) {
  static const char fn[] = "weft_cross_entropy_backward";
  int64_t elems = 0;
  WEFT_CHECK(ce_check_sizes(fn, ctx, rows, vocab, &elems));
  if (!isfinite(scale)) {
    WEFT_ERROR("kernels", "%s: scale=%g is not finite", fn, (double)scale);
    return WEFT_ERR_INVALID_ARG;
  }
  if (rows == 0) return WEFT_OK;
  size_t bytes = (size_t)elems * sizeof(float);
  const ce_buf_t bufs[] = {{"logits", logits, bytes},
                           {"dlogits", dlogits, bytes},
                           {"targets", targets, (size_t)rows * sizeof(int32_t)},
                           {"lse", lse, (size_t)rows * sizeof(float)}};
  WEFT_CHECK(ce_check_bufs(fn, bufs, 4, 0, 1)); /* dlogits may be logits */
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    WEFT_CHECK(ce_check_targets(fn, rows, vocab, targets));
    return weft_cross_entropy_backward_cpu(ctx, rows, vocab, logits, targets, lse, scale, dlogits);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_cross_entropy_backward_cuda(ctx, rows, vocab, logits, targets, lse, scale, dlogits);
#else
    break;
#endif
  }
  return ce_no_backend(fn, ctx);
}
