/* Block softmax attention front end: argument validation and dispatch on the device kind (see
 * weft/attention.h).
 *
 * Every entry point checks the context, the shape and the pointers here, once, with messages
 * that name the function and the values, then calls weft_attn_<fn>_cpu or weft_attn_<fn>_cuda
 * (attention_internal.h). Back ends may therefore assume:
 *   forward, backward: batch, heads, kv_heads, head_dim >= 1, q_len, kv_len >= 0,
 *     heads % kv_heads == 0, a finite scale, dtype F32 (or BF16 on a CUDA context);
 *   merge: batch, heads, head_dim >= 1, q_len >= 0 (kv_heads, kv_len, scale, causal and dtype
 *     are not read: out, lse and their partners are f32 whatever the dtype);
 *   delta: as merge, plus a supported dtype (dout is of `dtype`);
 *   element counts of every tensor the function touches fit in int64, and every tensor that
 *   has elements has a non-NULL pointer (a pointer of an empty tensor may be NULL).
 * Positions are not checked: they may live in device memory, and any int64 is meaningful
 * (negative = padding). Outputs must not overlap inputs (not checked, as for BLAS). */
#include <inttypes.h>
#include <math.h>

#include "attention_internal.h"
#include "kernel_ctx_internal.h"

/* Which shape fields an entry point reads, so each validates exactly those. */
typedef enum {
  ATTN_USES_Q = 0,       /* merge: B, H, nq, d */
  ATTN_USES_Q_DTYPE = 1, /* delta: the above and dtype */
  ATTN_USES_ALL = 2,     /* forward, backward: every field */
} attn_uses_t;

static weft_status_t attn_check_dtype(const char *fn, const weft_kernel_ctx_t *ctx,
                                      weft_dtype_t dtype) {
  weft_device_kind_t kind = weft_kernel_ctx_device(ctx)->kind;
  if (dtype == WEFT_DTYPE_F32) return WEFT_OK;
  if (dtype == WEFT_DTYPE_BF16 && kind == WEFT_DEVICE_CUDA) return WEFT_OK;
  WEFT_ERROR("kernels", "%s: dtype %s (%d) is not supported on %s (f32%s)", fn,
             weft_dtype_name(dtype), (int)dtype, weft_device_kind_name(kind),
             kind == WEFT_DEVICE_CUDA ? " or bf16" : " only; bf16 needs a CUDA context");
  return WEFT_ERR_UNSUPPORTED;
}

/* a * b * c * d without int64 overflow (all >= 0); false on overflow. */
static bool attn_count(int64_t a, int64_t b, int64_t c, int64_t d, int64_t *n_p) {
  return !__builtin_mul_overflow(a, b, n_p) && !__builtin_mul_overflow(*n_p, c, n_p) &&
         !__builtin_mul_overflow(*n_p, d, n_p);
}

static weft_status_t attn_check_shape(const char *fn, const weft_kernel_ctx_t *ctx,
                                      const weft_attn_shape_t *s, attn_uses_t uses) {
  if (!ctx) {
    WEFT_ERROR("kernels", "%s: kernel context is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (!s) {
    WEFT_ERROR("kernels", "%s: shape is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (s->batch < 1 || s->heads < 1 || s->head_dim < 1 || s->q_len < 0) {
    WEFT_ERROR("kernels",
               "%s: need batch, heads, head_dim >= 1 and q_len >= 0; got batch=%" PRId64
               " heads=%" PRId64 " head_dim=%" PRId64 " q_len=%" PRId64,
               fn, s->batch, s->heads, s->head_dim, s->q_len);
    return WEFT_ERR_INVALID_ARG;
  }
  int64_t n;
  if (!attn_count(s->batch, s->q_len, s->heads, s->head_dim, &n)) {
    WEFT_ERROR("kernels",
               "%s: batch=%" PRId64 " q_len=%" PRId64 " heads=%" PRId64 " head_dim=%" PRId64
               ": element count of q overflows int64",
               fn, s->batch, s->q_len, s->heads, s->head_dim);
    return WEFT_ERR_INVALID_ARG;
  }
  if (uses == ATTN_USES_ALL) {
    if (s->kv_heads < 1 || s->kv_len < 0 || s->heads % s->kv_heads != 0) {
      WEFT_ERROR("kernels",
                 "%s: need kv_heads >= 1 dividing heads and kv_len >= 0; got heads=%" PRId64
                 " kv_heads=%" PRId64 " kv_len=%" PRId64,
                 fn, s->heads, s->kv_heads, s->kv_len);
      return WEFT_ERR_INVALID_ARG;
    }
    if (!attn_count(s->batch, s->kv_len, s->kv_heads, s->head_dim, &n)) {
      WEFT_ERROR("kernels",
                 "%s: batch=%" PRId64 " kv_len=%" PRId64 " kv_heads=%" PRId64 " head_dim=%" PRId64
                 ": element count of k overflows int64",
                 fn, s->batch, s->kv_len, s->kv_heads, s->head_dim);
      return WEFT_ERR_INVALID_ARG;
    }
    if (!isfinite(s->scale)) {
      WEFT_ERROR("kernels", "%s: scale=%g is not finite", fn, (double)s->scale);
      return WEFT_ERR_INVALID_ARG;
    }
  }
  if (uses != ATTN_USES_Q) WEFT_CHECK(attn_check_dtype(fn, ctx, s->dtype));
  return WEFT_OK;
}

/* A tensor argument for the NULL check: name, pointer, and whether it has elements. */
typedef struct attn_arg {
  const char *name;
  const void *ptr;
  bool nonempty;
} attn_arg_t;

static weft_status_t attn_check_ptrs(const char *fn, const weft_attn_shape_t *s,
                                     const attn_arg_t *args, int count) {
  for (int i = 0; i < count; i++) {
    if (args[i].nonempty && !args[i].ptr) {
      WEFT_ERROR("kernels",
                 "%s: %s is NULL but has elements (batch=%" PRId64 " heads=%" PRId64
                 " kv_heads=%" PRId64 " head_dim=%" PRId64 " q_len=%" PRId64 " kv_len=%" PRId64 ")",
                 fn, args[i].name, s->batch, s->heads, s->kv_heads, s->head_dim, s->q_len,
                 s->kv_len);
      return WEFT_ERR_INVALID_ARG;
    }
  }
  return WEFT_OK;
}

#define ATTN_NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static weft_status_t attn_no_backend(const char *fn, const weft_kernel_ctx_t *ctx) {
  WEFT_ERROR("kernels", "%s: no backend for device kind %d", fn,
             (int)weft_kernel_ctx_device(ctx)->kind);
  return WEFT_ERR_INTERNAL;
}

weft_status_t weft_attn_block_forward(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                      const void *q, const void *k, const void *v,
                                      const int64_t *q_pos, const int64_t *kv_pos, float *out,
                                      float *lse) {
  static const char fn[] = "weft_attn_block_forward";
  WEFT_CHECK(attn_check_shape(fn, ctx, shape, ATTN_USES_ALL));
  bool nq = shape->q_len > 0, nk = shape->kv_len > 0;
  const attn_arg_t args[] = {{"q", q, nq},         {"k", k, nk},           {"v", v, nk},
                             {"q_pos", q_pos, nq}, {"kv_pos", kv_pos, nk}, {"out", out, nq},
                             {"lse", lse, nq}};
  WEFT_CHECK(attn_check_ptrs(fn, shape, args, ATTN_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_attn_block_forward_cpu(ctx, shape, q, k, v, q_pos, kv_pos, out, lse);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_attn_block_forward_cuda(ctx, shape, q, k, v, q_pos, kv_pos, out, lse);
#else
    break; /* a CUDA context cannot be created without the backend */
#endif
  }
  return attn_no_backend(fn, ctx);
}

weft_status_t weft_attn_merge(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape, float *out,
                              float *lse, const float *out_b, const float *lse_b) {
  static const char fn[] = "weft_attn_merge";
  WEFT_CHECK(attn_check_shape(fn, ctx, shape, ATTN_USES_Q));
  bool nq = shape->q_len > 0;
  const attn_arg_t args[] = {
      {"out", out, nq}, {"lse", lse, nq}, {"out_b", out_b, nq}, {"lse_b", lse_b, nq}};
  WEFT_CHECK(attn_check_ptrs(fn, shape, args, ATTN_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_attn_merge_cpu(ctx, shape, out, lse, out_b, lse_b);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_attn_merge_cuda(ctx, shape, out, lse, out_b, lse_b);
#else
    break;
#endif
  }
  return attn_no_backend(fn, ctx);
}

weft_status_t weft_attn_backward_delta(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                       const float *out, const void *dout, float *delta) {
  static const char fn[] = "weft_attn_backward_delta";
  WEFT_CHECK(attn_check_shape(fn, ctx, shape, ATTN_USES_Q_DTYPE));
  bool nq = shape->q_len > 0;
  const attn_arg_t args[] = {{"out", out, nq}, {"dout", dout, nq}, {"delta", delta, nq}};
  WEFT_CHECK(attn_check_ptrs(fn, shape, args, ATTN_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_attn_backward_delta_cpu(ctx, shape, out, dout, delta);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_attn_backward_delta_cuda(ctx, shape, out, dout, delta);
#else
    break;
#endif
  }
  return attn_no_backend(fn, ctx);
}

weft_status_t weft_attn_block_backward(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                       const void *q, const void *k, const void *v,
                                       const int64_t *q_pos, const int64_t *kv_pos,
                                       const void *dout, const float *lse, const float *delta,
                                       float *dq, float *dk, float *dv) {
  static const char fn[] = "weft_attn_block_backward";
  WEFT_CHECK(attn_check_shape(fn, ctx, shape, ATTN_USES_ALL));
  bool nq = shape->q_len > 0, nk = shape->kv_len > 0;
  const attn_arg_t args[] = {{"q", q, nq},         {"k", k, nk},           {"v", v, nk},
                             {"q_pos", q_pos, nq}, {"kv_pos", kv_pos, nk}, {"dout", dout, nq},
                             {"lse", lse, nq},     {"delta", delta, nq},   {"dq", dq, nq},
                             {"dk", dk, nk},       {"dv", dv, nk}};
  WEFT_CHECK(attn_check_ptrs(fn, shape, args, ATTN_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_attn_block_backward_cpu(ctx, shape, q, k, v, q_pos, kv_pos, dout, lse, delta, dq,
                                        dk, dv);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_attn_block_backward_cuda(ctx, shape, q, k, v, q_pos, kv_pos, dout, lse, delta, dq,
                                         dk, dv);
#else
    break;
#endif
  }
  return attn_no_backend(fn, ctx);
}
