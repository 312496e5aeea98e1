/* RoPE front end (weft/rope.h): argument validation and dispatch on the device kind.
 *
 * Checks the context, the sizes (d even and >= 2, the element count addressable), base and the
 * pointers once, with one error line naming the function and the values, then calls
 * weft_rope_apply_cpu or _cuda. tokens = 0 returns before dispatch. Positions live in device
 * memory and are not checked: every int64 value is meaningful (negative = padding, left
 * untouched). Rejected: checking x against pos for overlap (different types; a caller that
 * rotates its own position list has a bug no address test would explain better). */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "layer_ops_internal.h"

weft_status_t weft_rope_apply(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t heads,
                              int64_t head_dim, double base, const int64_t *pos, bool inverse,
                              float *x) {
  static const char fn[] = "weft_rope_apply";
  WEFT_CHECK(weft_layer_ops_check_ctx(fn, ctx));
  if (tokens < 0 || heads < 1 || head_dim < 2 || head_dim % 2 != 0) {
    WEFT_ERROR("kernels",
               "%s: need tokens >= 0, heads >= 1 and an even head_dim >= 2; got tokens=%" PRId64
               " heads=%" PRId64 " head_dim=%" PRId64,
               fn, tokens, heads, head_dim);
    return WEFT_ERR_INVALID_ARG;
  }
  int64_t row = 0;
  if (__builtin_mul_overflow(heads, head_dim, &row)) {
    WEFT_ERROR("kernels", "%s: heads=%" PRId64 " x head_dim=%" PRId64 " overflows int64", fn, heads,
               head_dim);
    return WEFT_ERR_INVALID_ARG;
  }
  WEFT_CHECK(weft_layer_ops_check_shape(fn, "tokens", tokens, "heads*head_dim", row));
  if (!isfinite(base) || !(base > 1.0)) {
    WEFT_ERROR("kernels", "%s: base=%g must be finite and > 1", fn, base);
    return WEFT_ERR_INVALID_ARG;
  }
  const weft_layer_ops_arg_t args[] = {{"pos", pos, tokens}, {"x", x, tokens * row}};
  WEFT_CHECK(weft_layer_ops_check_args(fn, args, (int)(sizeof args / sizeof args[0])));
  if (tokens == 0) return WEFT_OK;
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_rope_apply_cpu(ctx, tokens, heads, head_dim, base, pos, inverse, x);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_rope_apply_cuda(ctx, tokens, heads, head_dim, base, pos, inverse, x);
#else
    break;
#endif
  }
  return weft_layer_ops_no_backend(fn, ctx);
}
