/* Gated linear attention front end: argument validation and dispatch on the device kind (see
 * weft/linear_attention.h).
 *
 * Every entry point checks the context, the shape and the pointers here, once, with messages
 * that name the function and the values, then calls weft_gla_<fn>_cpu or weft_gla_<fn>_cuda
 * (linear_attention_internal.h). Back ends may therefore assume batch, heads, dk, dv >= 1,
 * tokens >= 0, chunk >= 1 (0 is replaced by the default 64 in a copy of the shape),
 * layout_heads >= heads (0 is replaced by heads in the copy; only the CPU back end sees
 * layout_heads > heads), a finite scale, row widths layout_heads*dk and layout_heads*dv and the
 * chunk that fit in int (what BLAS takes), element counts of the laid-out tensors that fit in
 * int64, and non-NULL pointers for every tensor that has elements. A pointer of
 * an empty tensor (n = 0) may be NULL. Outputs must not overlap inputs (not checked: the
 * tensors are large and the rule is the usual one for BLAS-like kernels). */
#include <inttypes.h>
#include <limits.h>
#include <math.h>

#include "kernel_ctx_internal.h"
#include "linear_attention_internal.h"

/* The contract's default chunk length: 64 tokens keeps the [C, C] score block and the
 * [C, dk] operands in L1/L2 on the CPU and maps to one tile row on the GPU. */
#define GLA_DEFAULT_CHUNK 64

/* Largest chunk accepted: the [C, C] score blocks live in the workspace, and a chunk beyond a
 * few thousand tokens only wastes memory (the cost per token grows linearly with C). */
#define GLA_MAX_CHUNK 65536

/* Checks ctx and every shape field; fills *resolved (chunk 0 -> default, layout_heads 0 ->
 * heads). Also the one place that rejects a head subset on a device whose kernels cannot take
 * one, so every entry point gets the same check before it dispatches. */
static weft_status_t gla_check_shape(const char *fn, const weft_kernel_ctx_t *ctx,
                                     const weft_gla_shape_t *shape, weft_gla_shape_t *resolved) {
  if (!ctx) {
    WEFT_ERROR("kernels", "%s: kernel context is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (!shape) {
    WEFT_ERROR("kernels", "%s: shape is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  const weft_gla_shape_t *s = shape;
  if (s->batch < 1 || s->heads < 1 || s->dk < 1 || s->dv < 1 || s->tokens < 0 || s->chunk < 0) {
    WEFT_ERROR("kernels",
               "%s: need batch, heads, dk, dv >= 1 and tokens, chunk >= 0; got batch=%" PRId64
               " tokens=%" PRId64 " heads=%" PRId64 " dk=%" PRId64 " dv=%" PRId64 " chunk=%" PRId64,
               fn, s->batch, s->tokens, s->heads, s->dk, s->dv, s->chunk);
    return WEFT_ERR_INVALID_ARG;
  }
  if (s->layout_heads < 0 || (s->layout_heads > 0 && s->layout_heads < s->heads)) {
    WEFT_ERROR("kernels",
               "%s: layout_heads=%" PRId64 " must be 0 (= heads) or at least heads=%" PRId64, fn,
               s->layout_heads, s->heads);
    return WEFT_ERR_INVALID_ARG;
  }
  const int64_t layout = s->layout_heads > 0 ? s->layout_heads : s->heads;
  if (layout != s->heads && weft_kernel_ctx_device(ctx)->kind != WEFT_DEVICE_CPU) {
    WEFT_ERROR("kernels",
               "%s: the CUDA GLA kernels take whole heads; layout_heads=%" PRId64 " heads=%" PRId64,
               fn, s->layout_heads, s->heads);
    return WEFT_ERR_UNSUPPORTED;
  }
  if (s->chunk > GLA_MAX_CHUNK) {
    WEFT_ERROR("kernels", "%s: chunk=%" PRId64 " exceeds the limit %d", fn, s->chunk,
               GLA_MAX_CHUNK);
    return WEFT_ERR_INVALID_ARG;
  }
  if (!isfinite(s->scale)) {
    WEFT_ERROR("kernels", "%s: scale=%g is not finite", fn, (double)s->scale);
    return WEFT_ERR_INVALID_ARG;
  }
  /* Row strides H*dk, H*dv (H = layout_heads) go to BLAS as int; element counts must fit in
   * int64. */
  int64_t width = s->dk > s->dv ? s->dk : s->dv;
  if (width > INT_MAX / layout) {
    WEFT_ERROR("kernels",
               "%s: layout_heads*dk=%" PRId64 "*%" PRId64 " or layout_heads*dv=%" PRId64 "*%" PRId64
               " exceeds INT32_MAX, the BLAS limit",
               fn, layout, s->dk, layout, s->dv);
    return WEFT_ERR_UNSUPPORTED;
  }
  int64_t row = layout * width, tok_elems, state_elems; /* row <= INT_MAX */
  if (__builtin_mul_overflow(s->batch, s->tokens, &tok_elems) ||
      __builtin_mul_overflow(tok_elems, row, &tok_elems) ||
      __builtin_mul_overflow(s->batch, layout, &state_elems) ||
      __builtin_mul_overflow(state_elems, s->dk, &state_elems) ||
      __builtin_mul_overflow(state_elems, s->dv, &state_elems)) {
    WEFT_ERROR("kernels",
               "%s: batch=%" PRId64 " tokens=%" PRId64 " layout_heads=%" PRId64 " dk=%" PRId64
               " dv=%" PRId64 ": element count overflows int64",
               fn, s->batch, s->tokens, layout, s->dk, s->dv);
    return WEFT_ERR_INVALID_ARG;
  }
  *resolved = *s;
  if (resolved->chunk == 0) resolved->chunk = GLA_DEFAULT_CHUNK;
  resolved->layout_heads = layout;
  return WEFT_OK;
}

/* A tensor argument for the NULL check: name, pointer, and whether it has elements. */
typedef struct gla_arg {
  const char *name;
  const void *ptr;
  bool nonempty;
} gla_arg_t;

static weft_status_t gla_check_ptrs(const char *fn, const weft_gla_shape_t *s,
                                    const gla_arg_t *args, int count) {
  for (int i = 0; i < count; i++) {
    if (args[i].nonempty && !args[i].ptr) {
      WEFT_ERROR("kernels",
                 "%s: %s is NULL but has elements (batch=%" PRId64 " tokens=%" PRId64
                 " heads=%" PRId64 " dk=%" PRId64 " dv=%" PRId64 ")",
                 fn, args[i].name, s->batch, s->tokens, s->heads, s->dk, s->dv);
      return WEFT_ERR_INVALID_ARG;
    }
  }
  return WEFT_OK;
}

#define GLA_NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static weft_status_t gla_no_backend(const char *fn, const weft_kernel_ctx_t *ctx) {
  WEFT_ERROR("kernels", "%s: no backend for device kind %d", fn,
             (int)weft_kernel_ctx_device(ctx)->kind);
  return WEFT_ERR_INTERNAL;
}

weft_status_t weft_gla_forward_local(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                     const float *q, const float *k, const float *v, const float *g,
                                     float *out, float *s_local, float *log_gamma) {
  static const char fn[] = "weft_gla_forward_local";
  weft_gla_shape_t s;
  WEFT_CHECK(gla_check_shape(fn, ctx, shape, &s));
  bool tok = s.tokens > 0;
  const gla_arg_t args[] = {{"q", q, tok},
                            {"k", k, tok},
                            {"v", v, tok},
                            {"g", g, tok},
                            {"out", out, tok},
                            {"s_local", s_local, true},
                            {"log_gamma", log_gamma, true}};
  WEFT_CHECK(gla_check_ptrs(fn, &s, args, GLA_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_gla_forward_local_cpu(ctx, &s, q, k, v, g, out, s_local, log_gamma);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_gla_forward_local_cuda(ctx, &s, q, k, v, g, out, s_local, log_gamma);
#else
    break; /* a CUDA context cannot be created without the backend */
#endif
  }
  return gla_no_backend(fn, ctx);
}

weft_status_t weft_gla_forward_correct(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                       const float *q, const float *g, const float *s_in,
                                       float *out) {
  static const char fn[] = "weft_gla_forward_correct";
  weft_gla_shape_t s;
  WEFT_CHECK(gla_check_shape(fn, ctx, shape, &s));
  bool tok = s.tokens > 0;
  const gla_arg_t args[] = {{"q", q, tok}, {"g", g, tok}, {"s_in", s_in, true}, {"out", out, tok}};
  WEFT_CHECK(gla_check_ptrs(fn, &s, args, GLA_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_gla_forward_correct_cpu(ctx, &s, q, g, s_in, out);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_gla_forward_correct_cuda(ctx, &s, q, g, s_in, out);
#else
    break;
#endif
  }
  return gla_no_backend(fn, ctx);
}

weft_status_t weft_gla_backward_state_local(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                            const float *q, const float *g, const float *dout,
                                            float *ds_local) {
  static const char fn[] = "weft_gla_backward_state_local";
  weft_gla_shape_t s;
  WEFT_CHECK(gla_check_shape(fn, ctx, shape, &s));
  bool tok = s.tokens > 0;
  const gla_arg_t args[] = {
      {"q", q, tok}, {"g", g, tok}, {"dout", dout, tok}, {"ds_local", ds_local, true}};
  WEFT_CHECK(gla_check_ptrs(fn, &s, args, GLA_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_gla_backward_state_local_cpu(ctx, &s, q, g, dout, ds_local);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_gla_backward_state_local_cuda(ctx, &s, q, g, dout, ds_local);
#else
    break;
#endif
  }
  return gla_no_backend(fn, ctx);
}

weft_status_t weft_gla_backward(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                const float *q, const float *k, const float *v, const float *g,
                                const float *dout, const float *s_in, const float *ds_out,
                                float *dq, float *dk, float *dv, float *dg) {
  static const char fn[] = "weft_gla_backward";
  weft_gla_shape_t s;
  WEFT_CHECK(gla_check_shape(fn, ctx, shape, &s));
  bool tok = s.tokens > 0;
  const gla_arg_t args[] = {{"q", q, tok},
                            {"k", k, tok},
                            {"v", v, tok},
                            {"g", g, tok},
                            {"dout", dout, tok},
                            {"s_in", s_in, true},
                            {"ds_out", ds_out, true},
                            {"dq", dq, tok},
                            {"dk", dk, tok},
                            {"dv", dv, tok},
                            {"dg", dg, tok}};
  WEFT_CHECK(gla_check_ptrs(fn, &s, args, GLA_NARGS(args)));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_gla_backward_cpu(ctx, &s, q, k, v, g, dout, s_in, ds_out, dq, dk, dv, dg);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_gla_backward_cuda(ctx, &s, q, k, v, g, dout, s_in, ds_out, dq, dk, dv, dg);
#else
    break;
#endif
  }
  return gla_no_backend(fn, ctx);
}
