/* Kernel context lifecycle and grow-once workspaces (see weft/kernel_ctx.h and
 * kernel_ctx_internal.h).
 *
 * The device-independent part lives here; the cuBLAS handle is created in
 * kernels/cuda/kernel_ctx_cuda.c so this file needs no CUDA header and builds without CUDA.
 * Workspace slots grow to exactly the requested size rather than geometrically: requests come
 * from a handful of fixed layer shapes, so the largest is reached in the first step and
 * rounding up would only waste memory. */
#include <stdlib.h>

#include "kernel_ctx_internal.h"

weft_status_t weft_kernel_ctx_create(const weft_device_t *device, weft_stream_t *stream,
                                     weft_kernel_ctx_t **ctx_p) {
  if (!device || !ctx_p) {
    WEFT_ERROR("kernels", "weft_kernel_ctx_create: device=%p ctx_p=%p must not be NULL",
               (const void *)device, (void *)ctx_p);
    return WEFT_ERR_INVALID_ARG;
  }
  if (device->kind == WEFT_DEVICE_CUDA && !WEFT_HAVE_CUDA) {
    WEFT_ERROR("kernels",
               "kernel context on CUDA device %d needs the CUDA backend, which this build does "
               "not have (reconfigure with -DWEFT_CUDA=ON)",
               device->ordinal);
    return WEFT_ERR_UNSUPPORTED;
  }
  weft_kernel_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    WEFT_ERROR("kernels", "cannot allocate a kernel context (%zu bytes)", sizeof *ctx);
    return WEFT_ERR_NO_MEMORY;
  }
  ctx->device = device;
  weft_status_t st = WEFT_OK;
  if (stream) {
    ctx->stream = stream;
  } else {
    WEFT_CHECK_GOTO(weft_stream_create(device, &ctx->stream), st, fail);
    ctx->owns_stream = true;
  }
  ctx->cuda_stream = weft_stream_native(ctx->stream);
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) WEFT_CHECK_GOTO(weft_kernel_ctx_cuda_init(ctx), st, fail);
#endif
  WEFT_DEBUG("kernels", "kernel context on %s %d (%s), %s stream",
             weft_device_kind_name(device->kind), device->ordinal, device->name,
             ctx->owns_stream ? "own" : "caller's");
  *ctx_p = ctx;
  return WEFT_OK;
fail:
  if (ctx->owns_stream) weft_stream_destroy(ctx->stream);
  free(ctx);
  return st;
}

void weft_kernel_ctx_destroy(weft_kernel_ctx_t *ctx) {
  if (!ctx) return;
  /* Queued kernels may still use the workspaces and the cuBLAS handle. */
  weft_status_t st = weft_stream_synchronize(ctx->stream);
  if (st != WEFT_OK)
    WEFT_WARN("kernels", "destroying a kernel context whose stream failed (%s); freeing anyway",
              weft_status_str(st));
  for (int slot = 0; slot < WEFT_KERNEL_WS_COUNT; slot++)
    weft_device_free(ctx->device, ctx->workspace[slot].ptr);
#if WEFT_HAVE_CUDA
  if (ctx->device->kind == WEFT_DEVICE_CUDA) weft_kernel_ctx_cuda_cleanup(ctx);
#endif
  if (ctx->owns_stream) weft_stream_destroy(ctx->stream);
  free(ctx);
}

const weft_device_t *weft_kernel_ctx_device(const weft_kernel_ctx_t *ctx) { return ctx->device; }

weft_stream_t *weft_kernel_ctx_stream(const weft_kernel_ctx_t *ctx) { return ctx->stream; }

weft_status_t weft_kernel_ctx_synchronize(weft_kernel_ctx_t *ctx) {
  WEFT_CHECK(weft_stream_synchronize(ctx->stream));
  return WEFT_OK;
}

size_t weft_kernel_ctx_workspace_bytes(const weft_kernel_ctx_t *ctx) {
  size_t total = 0;
  for (int slot = 0; slot < WEFT_KERNEL_WS_COUNT; slot++) total += ctx->workspace[slot].bytes;
  return total;
}

weft_status_t weft_kernel_ctx_workspace(weft_kernel_ctx_t *ctx, weft_kernel_ws_t slot, size_t bytes,
                                        void **ptr_p) {
  if ((int)slot < 0 || slot >= WEFT_KERNEL_WS_COUNT) {
    WEFT_ERROR("kernels", "workspace slot %d out of range [0, %d)", (int)slot,
               (int)WEFT_KERNEL_WS_COUNT);
    return WEFT_ERR_INTERNAL;
  }
  if (bytes == 0) bytes = 1; /* never hand out NULL, so callers can offset the pointer */
  if (bytes > ctx->workspace[slot].bytes) {
    /* The old buffer may still be read by queued kernels: wait before freeing it. */
    WEFT_CHECK(weft_stream_synchronize(ctx->stream));
    weft_device_free(ctx->device, ctx->workspace[slot].ptr);
    ctx->workspace[slot].ptr = NULL;
    ctx->workspace[slot].bytes = 0;
    void *ptr = NULL;
    weft_status_t st = weft_device_alloc(ctx->device, bytes, &ptr);
    if (st != WEFT_OK) {
      WEFT_ERROR("kernels", "cannot grow kernel workspace slot %d to %zu bytes on %s %d", (int)slot,
                 bytes, weft_device_kind_name(ctx->device->kind), ctx->device->ordinal);
      return st;
    }
    WEFT_DEBUG("kernels", "kernel workspace slot %d grown to %zu bytes", (int)slot, bytes);
    ctx->workspace[slot].ptr = ptr;
    ctx->workspace[slot].bytes = bytes;
  }
  *ptr_p = ctx->workspace[slot].ptr;
  return WEFT_OK;
}
