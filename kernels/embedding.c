/* Embedding front end (weft/embedding.h): argument validation and dispatch on the device kind.
 *
 * Checks the context, the sizes, the pointers and the aliasing once, with one error line naming
 * the function and the values. On the CPU device the ids are host memory, so they are checked
 * here too, all of them before anything is written: a bad id leaves y / dtable untouched and
 * the error names the first bad token, its id and the vocabulary size. On CUDA the ids live in
 * device memory and are the caller's to keep in range (the CUDA kernels still never access
 * memory out of bounds for a bad id). tokens = 0 returns before dispatch.
 * Rejected: copying CUDA ids to the host to check them (a device sync per call). */
#include <inttypes.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "layer_ops_internal.h"

#define EMB_NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Sizes, the always-present table and, on the CPU, the id range. */
static weft_status_t emb_check(const char *fn, const weft_kernel_ctx_t *ctx, int64_t tokens,
                               int64_t vocab, int64_t dim) {
  WEFT_CHECK(weft_layer_ops_check_ctx(fn, ctx));
  if (vocab < 1) {
    WEFT_ERROR("kernels", "%s: vocab=%" PRId64 " must be >= 1", fn, vocab);
    return WEFT_ERR_INVALID_ARG;
  }
  WEFT_CHECK(weft_layer_ops_check_shape(fn, "tokens", tokens, "dim", dim));
  WEFT_CHECK(weft_layer_ops_check_shape(fn, "vocab", vocab, "dim", dim));
  return WEFT_OK;
}

static weft_status_t emb_check_ids(const char *fn, const weft_kernel_ctx_t *ctx, int64_t tokens,
                                   int64_t vocab, const int32_t *ids) {
  if (weft_kernel_ctx_device(ctx)->kind != WEFT_DEVICE_CPU) return WEFT_OK;
  for (int64_t t = 0; t < tokens; t++) {
    if (ids[t] >= 0 && ids[t] < vocab) continue;
    WEFT_ERROR("kernels",
               "%s: ids[%" PRId64 "]=%" PRId32 " is outside 0..%" PRId64 " (vocab=%" PRId64 ")", fn,
               t, ids[t], vocab - 1, vocab);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_embedding_forward(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t vocab,
                                     int64_t dim, const float *table, const int32_t *ids,
                                     float *y) {
  static const char fn[] = "weft_embedding_forward";
  WEFT_CHECK(emb_check(fn, ctx, tokens, vocab, dim));
  const weft_layer_ops_arg_t args[] = {
      {"table", table, vocab * dim}, {"ids", ids, tokens}, {"y", y, tokens * dim}};
  WEFT_CHECK(weft_layer_ops_check_args(fn, args, EMB_NARGS(args)));
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "table", table, (size_t)(vocab * dim) * sizeof(float),
                                          "y", y, (size_t)(tokens * dim) * sizeof(float), false));
  if (tokens == 0) return WEFT_OK;
  WEFT_CHECK(emb_check_ids(fn, ctx, tokens, vocab, ids));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU: return weft_embedding_forward_cpu(ctx, tokens, vocab, dim, table, ids, y);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_embedding_forward_cuda(ctx, tokens, vocab, dim, table, ids, y);
#else
    break;
#endif
  }
  return weft_layer_ops_no_backend(fn, ctx);
}

weft_status_t weft_embedding_backward(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t vocab,
                                      int64_t dim, const int32_t *ids, const float *dy,
                                      float *dtable) {
  static const char fn[] = "weft_embedding_backward";
  WEFT_CHECK(emb_check(fn, ctx, tokens, vocab, dim));
  const weft_layer_ops_arg_t args[] = {
      {"ids", ids, tokens}, {"dy", dy, tokens * dim}, {"dtable", dtable, vocab * dim}};
  WEFT_CHECK(weft_layer_ops_check_args(fn, args, EMB_NARGS(args)));
  WEFT_CHECK(weft_layer_ops_check_overlap(fn, "dy", dy, (size_t)(tokens * dim) * sizeof(float),
                                          "dtable", dtable, (size_t)(vocab * dim) * sizeof(float),
                                          false));
  if (tokens == 0) return WEFT_OK;
  WEFT_CHECK(emb_check_ids(fn, ctx, tokens, vocab, ids));
  switch (weft_kernel_ctx_device(ctx)->kind) {
  case WEFT_DEVICE_CPU:
    return weft_embedding_backward_cpu(ctx, tokens, vocab, dim, ids, dy, dtable);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_embedding_backward_cuda(ctx, tokens, vocab, dim, ids, dy, dtable);
#else
    break;
#endif
  }
  return weft_layer_ops_no_backend(fn, ctx);
}
