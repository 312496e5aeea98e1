/* MoE kernels front end: argument validation and dispatch on the device kind (see weft/moe.h).
 *
 * Every entry point checks the context, the sizes, the leading dimensions and the pointers
 * here, once, with one error line that names the function and the values, then calls
 * weft_moe_<fn>_cpu or weft_moe_<fn>_cuda (moe_internal.h says what those may assume). The
 * grouped-experts check (host offsets) lives here too, for moe_experts.c.
 *
 * Aliasing is checked from address ranges where the header states a rule (the SwiGLU kernels,
 * the router's probs against its logits and dlogits against probs): free, and it turns a silent
 * race on the GPU into a clear error on both devices. gather_sum's dst against src is not
 * checked: src's extent depends on index values held in device memory.
 *
 * Index values (ids, idx, a_idx, b_idx) are not validated either, for the same reason; the back
 * ends skip negative ones (and router ids >= experts) instead of reading out of bounds.
 * Rejected: copying index lists to the host to check them (a device sync per call). */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "moe_internal.h"

#define MOE_NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static weft_status_t moe_check_ctx(const char *fn, const weft_kernel_ctx_t *ctx) {
  if (!ctx) {
    WEFT_ERROR("kernels", "%s: kernel context is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_moe_check_args(const char *fn, const weft_moe_arg_t *args, int count) {
  for (int i = 0; i < count; i++) {
    if (args[i].ptr || args[i].elems == 0) continue;
    if (args[i].elems > 0)
      WEFT_ERROR("kernels", "%s: %s is NULL but has %" PRId64 " elements", fn, args[i].name,
                 args[i].elems);
    else
      WEFT_ERROR("kernels", "%s: %s is NULL but rows of it are read", fn, args[i].name);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* Leading dimension `ld` of a matrix with rows of `width` elements. */
static weft_status_t moe_check_ld(const char *fn, const char *name, int64_t ld, int64_t width) {
  if (ld < width) {
    WEFT_ERROR("kernels", "%s: %s=%" PRId64 " is less than the row width %" PRId64, fn, name, ld,
               width);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* x and y (both `bytes` long) must be disjoint, or the same buffer when same_ok. */
static weft_status_t moe_check_overlap(const char *fn, const char *xname, const void *x,
                                       const char *yname, const void *y, size_t bytes,
                                       bool same_ok) {
  uintptr_t xl = (uintptr_t)x, yl = (uintptr_t)y;
  if (!x || !y || bytes == 0 || xl >= yl + bytes || yl >= xl + bytes) return WEFT_OK;
  if (same_ok && xl == yl) return WEFT_OK;
  WEFT_ERROR("kernels", "%s: %s=%p and %s=%p overlap (%zu bytes each); they must be %s", fn, xname,
             x, yname, y, bytes, same_ok ? "the same buffer or disjoint" : "disjoint");
  return WEFT_ERR_INVALID_ARG;
}

/* tokens >= 0, 1 <= experts <= INT32_MAX (ids are int32), 1 <= k <= experts; *elems_p gets
 * tokens * experts (checked for overflow). */
static weft_status_t moe_check_router(const char *fn, const weft_kernel_ctx_t *ctx, int64_t tokens,
                                      int64_t experts, int k, int64_t *elems_p) {
  WEFT_CHECK(moe_check_ctx(fn, ctx));
  if (tokens < 0 || experts < 1 || k < 1 || k > experts) {
    WEFT_ERROR("kernels",
               "%s: need tokens >= 0 and 1 <= k <= experts; got tokens=%" PRId64 " experts=%" PRId64
               " k=%d",
               fn, tokens, experts, k);
    return WEFT_ERR_INVALID_ARG;
  }
  if (experts > INT32_MAX) {
    WEFT_ERROR("kernels", "%s: experts=%" PRId64 " exceeds INT32_MAX (expert ids are int32)", fn,
               experts);
    return WEFT_ERR_UNSUPPORTED;
  }
  if (__builtin_mul_overflow(tokens, experts, elems_p)) {
    WEFT_ERROR("kernels", "%s: tokens=%" PRId64 " x experts=%" PRId64 " overflows int64", fn,
               tokens, experts);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

static weft_status_t moe_no_backend(const char *fn, const weft_kernel_ctx_t *ctx) {
  WEFT_ERROR("kernels", "%s: no backend for device kind %d", fn,
             (int)weft_kernel_ctx_device(ctx)->kind);
  return WEFT_ERR_INTERNAL; /* a CUDA context cannot be created without the backend */
}

weft_status_t weft_moe_router_topk(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts, int k,
                                   bool normalize, const float *logits, float *probs, float *lse,
                                   int32_t *ids, float *weights) {
  static const char fn[] = "weft_moe_router_topk";
  int64_t te = 0;
  WEFT_CHECK(moe_check_router(fn, ctx, tokens, experts, k, &te));
  int64_t tk = tokens * k; /* <= te */
  const weft_moe_arg_t args[] = {
      {"logits", logits, te}, {"probs", probs, te}, {"ids", ids, tk}, {"weights", weights, tk}};
  WEFT_CHECK(weft_moe_check_args(fn, args, MOE_NARGS(args)));
  WEFT_CHECK(
      moe_check_overlap(fn, "logits", logits, "probs", probs, (size_t)te * sizeof(float), false));
  if (tokens == 0) return WEFT_OK;
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_moe_router_topk_cpu(ctx, tokens, experts, k, normalize, logits, probs, lse, ids,
                                    weights);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_moe_router_topk_cuda(ctx, tokens, experts, k, normalize, logits, probs, lse, ids,
                                     weights);
#else
    break;
#endif
  }
  return moe_no_backend(fn, ctx);
}

weft_status_t weft_moe_router_backward(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts,
                                       int k, bool normalize, const float *probs, const float *lse,
                                       const int32_t *ids, const float *weights,
                                       const float *dweights, const float *prob_coef, float z_scale,
                                       float *dlogits) {
  static const char fn[] = "weft_moe_router_backward";
  int64_t te = 0;
  WEFT_CHECK(moe_check_router(fn, ctx, tokens, experts, k, &te));
  if (!isfinite(z_scale)) {
    WEFT_ERROR("kernels", "%s: z_scale=%g is not finite", fn, (double)z_scale);
    return WEFT_ERR_INVALID_ARG;
  }
  int64_t tk = tokens * k;
  const weft_moe_arg_t args[] = {
      {"probs", probs, te},       {"lse (z_scale != 0)", lse, z_scale != 0.0f ? tokens : 0},
      {"ids", ids, tk},           {"weights", weights, tk},
      {"dweights", dweights, tk}, {"dlogits", dlogits, te}};
  WEFT_CHECK(weft_moe_check_args(fn, args, MOE_NARGS(args)));
  WEFT_CHECK(
      moe_check_overlap(fn, "probs", probs, "dlogits", dlogits, (size_t)te * sizeof(float), false));
  if (tokens == 0) return WEFT_OK;
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_moe_router_backward_cpu(ctx, tokens, experts, k, normalize, probs, lse, ids,
                                        weights, dweights, prob_coef, z_scale, dlogits);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_moe_router_backward_cuda(ctx, tokens, experts, k, normalize, probs, lse, ids,
                                         weights, dweights, prob_coef, z_scale, dlogits);
#else
    break;
#endif
  }
  return moe_no_backend(fn, ctx);
}

/* rows >= 0, width >= 0, and rows * width fits in int64 (*elems_p). */
static weft_status_t moe_check_rows(const char *fn, int64_t rows, int64_t width, int64_t *elems_p) {
  if (rows < 0 || width < 0 || __builtin_mul_overflow(rows, width, elems_p)) {
    WEFT_ERROR("kernels",
               "%s: need rows, width >= 0 with rows*width in int64; got rows=%" PRId64
               " width=%" PRId64,
               fn, rows, width);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_moe_gather_sum(weft_kernel_ctx_t *ctx, int64_t rows, int64_t width, int fan,
                                  const float *src, int64_t src_ld, const int32_t *idx,
                                  const float *w, float *dst, int64_t dst_ld) {
  static const char fn[] = "weft_moe_gather_sum";
  int64_t elems = 0, links = 0;
  WEFT_CHECK(moe_check_ctx(fn, ctx));
  WEFT_CHECK(moe_check_rows(fn, rows, width, &elems));
  if (fan < 1 || __builtin_mul_overflow(rows, (int64_t)fan, &links)) {
    WEFT_ERROR("kernels", "%s: need fan >= 1 with rows*fan in int64; got fan=%d rows=%" PRId64, fn,
               fan, rows);
    return WEFT_ERR_INVALID_ARG;
  }
  WEFT_CHECK(moe_check_ld(fn, "src_ld", src_ld, width));
  WEFT_CHECK(moe_check_ld(fn, "dst_ld", dst_ld, width));
  if (elems == 0) return WEFT_OK; /* nothing is read or written */
  const weft_moe_arg_t args[] = {{"src", src, -1}, {"idx", idx, links}, {"dst", dst, elems}};
  WEFT_CHECK(weft_moe_check_args(fn, args, MOE_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_moe_gather_sum_cpu(ctx, rows, width, fan, src, src_ld, idx, w, dst, dst_ld);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_moe_gather_sum_cuda(ctx, rows, width, fan, src, src_ld, idx, w, dst, dst_ld);
#else
    break;
#endif
  }
  return moe_no_backend(fn, ctx);
}

weft_status_t weft_moe_row_dot(weft_kernel_ctx_t *ctx, int64_t rows, int64_t width, const float *a,
                               int64_t lda, const int32_t *a_idx, const float *b, int64_t ldb,
                               const int32_t *b_idx, float *out) {
  static const char fn[] = "weft_moe_row_dot";
  int64_t elems = 0;
  WEFT_CHECK(moe_check_ctx(fn, ctx));
  WEFT_CHECK(moe_check_rows(fn, rows, width, &elems));
  WEFT_CHECK(moe_check_ld(fn, "lda", lda, width));
  WEFT_CHECK(moe_check_ld(fn, "ldb", ldb, width));
  if (rows == 0) return WEFT_OK;
  /* width == 0: out = 0 and a, b are never read */
  const weft_moe_arg_t args[] = {
      {"a", a, elems ? -1 : 0}, {"b", b, elems ? -1 : 0}, {"out", out, rows}};
  WEFT_CHECK(weft_moe_check_args(fn, args, MOE_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_moe_row_dot_cpu(ctx, rows, width, a, lda, a_idx, b, ldb, b_idx, out);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_moe_row_dot_cuda(ctx, rows, width, a, lda, a_idx, b, ldb, b_idx, out);
#else
    break;
#endif
  }
  return moe_no_backend(fn, ctx);
}

static weft_status_t moe_check_n(const char *fn, const weft_kernel_ctx_t *ctx, int64_t n) {
  WEFT_CHECK(moe_check_ctx(fn, ctx));
  if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(float)) {
    WEFT_ERROR("kernels", "%s: n=%" PRId64 " must be >= 0 (and addressable)", fn, n);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_moe_swiglu_forward(weft_kernel_ctx_t *ctx, int64_t n, const float *a,
                                      const float *b, float *act) {
  static const char fn[] = "weft_moe_swiglu_forward";
  WEFT_CHECK(moe_check_n(fn, ctx, n));
  if (n == 0) return WEFT_OK;
  const weft_moe_arg_t args[] = {{"a", a, n}, {"b", b, n}, {"act", act, n}};
  WEFT_CHECK(weft_moe_check_args(fn, args, MOE_NARGS(args)));
  size_t bytes = (size_t)n * sizeof(float);
  WEFT_CHECK(moe_check_overlap(fn, "a", a, "act", act, bytes, false));
  WEFT_CHECK(moe_check_overlap(fn, "b", b, "act", act, bytes, false));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_moe_swiglu_forward_cpu(ctx, n, a, b, act);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_moe_swiglu_forward_cuda(ctx, n, a, b, act);
#else
    break;
#endif
  }
  return moe_no_backend(fn, ctx);
}

weft_status_t weft_moe_swiglu_backward(weft_kernel_ctx_t *ctx, int64_t n, const float *a,
                                       const float *b, const float *dact, float *da, float *db) {
  static const char fn[] = "weft_moe_swiglu_backward";
  WEFT_CHECK(moe_check_n(fn, ctx, n));
  if (n == 0) return WEFT_OK;
  const weft_moe_arg_t args[] = {
      {"a", a, n}, {"b", b, n}, {"dact", dact, n}, {"da", da, n}, {"db", db, n}};
  WEFT_CHECK(weft_moe_check_args(fn, args, MOE_NARGS(args)));
  size_t bytes = (size_t)n * sizeof(float);
  WEFT_CHECK(moe_check_overlap(fn, "dact", dact, "da", da, bytes, true));
  WEFT_CHECK(moe_check_overlap(fn, "da", da, "db", db, bytes, false));
  const struct {
    const char *name;
    const float *ptr;
  } ins[] = {{"a", a}, {"b", b}, {"dact", dact}};
  for (int i = 0; i < MOE_NARGS(ins); i++) {
    if (i < 2) WEFT_CHECK(moe_check_overlap(fn, ins[i].name, ins[i].ptr, "da", da, bytes, false));
    WEFT_CHECK(moe_check_overlap(fn, ins[i].name, ins[i].ptr, "db", db, bytes, false));
  }
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_moe_swiglu_backward_cpu(ctx, n, a, b, dact, da, db);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_moe_swiglu_backward_cuda(ctx, n, a, b, dact, da, db);
#else
    break;
#endif
  }
  return moe_no_backend(fn, ctx);
}

weft_status_t weft_moe_experts_check(const char *fn, const weft_kernel_ctx_t *ctx,
                                     const weft_moe_experts_shape_t *shape, const int64_t *offsets,
                                     int64_t *rows_p) {
  WEFT_CHECK(moe_check_ctx(fn, ctx));
  if (!shape || !offsets) {
    WEFT_ERROR("kernels", "%s: shape=%p and offsets=%p must not be NULL", fn, (const void *)shape,
               (const void *)offsets);
    return WEFT_ERR_INVALID_ARG;
  }
  int64_t E = shape->experts, h = shape->hidden, f = shape->ffn;
  if (E < 0 || h < 1 || f < 1) {
    WEFT_ERROR("kernels",
               "%s: need experts >= 0 and hidden, ffn >= 1; got experts=%" PRId64 " hidden=%" PRId64
               " ffn=%" PRId64,
               fn, E, h, f);
    return WEFT_ERR_INVALID_ARG;
  }
  if (h > INT_MAX || f > INT_MAX) {
    WEFT_ERROR("kernels", "%s: hidden=%" PRId64 " or ffn=%" PRId64 " exceeds INT32_MAX (BLAS)", fn,
               h, f);
    return WEFT_ERR_UNSUPPORTED;
  }
  if (offsets[0] != 0) {
    WEFT_ERROR("kernels", "%s: offsets[0]=%" PRId64 " must be 0", fn, offsets[0]);
    return WEFT_ERR_INVALID_ARG;
  }
  for (int64_t e = 0; e < E; e++) {
    int64_t rows = offsets[e + 1] - offsets[e]; /* offsets[e] >= 0 by induction: no overflow */
    if (rows < 0) {
      WEFT_ERROR("kernels",
                 "%s: offsets decrease at expert %" PRId64 ": offsets[%" PRId64 "]=%" PRId64
                 " > offsets[%" PRId64 "]=%" PRId64,
                 fn, e, e, offsets[e], e + 1, offsets[e + 1]);
      return WEFT_ERR_INVALID_ARG;
    }
    if (rows > INT_MAX) {
      WEFT_ERROR("kernels", "%s: expert %" PRId64 " has %" PRId64 " rows, over INT32_MAX (BLAS)",
                 fn, e, rows);
      return WEFT_ERR_UNSUPPORTED;
    }
  }
  int64_t M = offsets[E], tmp;
  if (__builtin_mul_overflow(M, h, &tmp) || __builtin_mul_overflow(M, 2 * f, &tmp) ||
      __builtin_mul_overflow(E, h, &tmp) || __builtin_mul_overflow(tmp, f, &tmp)) {
    WEFT_ERROR("kernels",
               "%s: rows=%" PRId64 " experts=%" PRId64 " hidden=%" PRId64 " ffn=%" PRId64
               ": element count overflows int64",
               fn, M, E, h, f);
    return WEFT_ERR_INVALID_ARG;
  }
  *rows_p = M;
  return WEFT_OK;
}
