/* Private to kernels/: the kernel context's layout, its grow-once workspaces, and the CUDA
 * half of context setup (kernels/cuda/kernel_ctx_cuda.c, built only with the CUDA backend).
 *
 * Workspaces come in slots, one per kernel family, instead of one shared buffer: a kernel
 * that holds its own scratch while calling another kernel (attention calling GEMM) must not
 * have its scratch reused underneath it. Each slot grows to the largest request it has seen
 * and then stays, so steady-state calls do not allocate. A slot's memory is reused by the
 * next call on the same context, which is safe because the context's work is ordered on one
 * stream; growing a slot first waits for that stream so no queued kernel still reads the old
 * buffer.
 *
 * C++ sources (the .cu files in kernels/cuda) include this header; src/core's headers have no C++
 * guards, so they are included inside this header's extern "C" block. */
#ifndef WEFT_KERNEL_CTX_INTERNAL_H
#define WEFT_KERNEL_CTX_INTERNAL_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stdbool.h>
#include <stddef.h>

#include "weft/check.h"
#include "weft/device.h"
#include "weft/kernel_ctx.h"
#include "weft/log.h"
#include "weft/status.h"
#include "weft/tensor.h"

/* One slot per kernel family that needs scratch; add a value for each new family. */
typedef enum weft_kernel_ws {
  WEFT_KERNEL_WS_GEMM = 0, /* CPU: bf16 operands of weft_gemm widened to f32 */
  WEFT_KERNEL_WS_GLA,      /* gated linear attention: chunk cumsums, states, scores */
  WEFT_KERNEL_WS_ATTN,     /* block softmax attention: per-thread tiles, bf16 staging */
  WEFT_KERNEL_WS_COUNT
} weft_kernel_ws_t;

struct weft_kernel_ctx {
  const weft_device_t *device; /* borrowed */
  weft_stream_t *stream;       /* borrowed, or owned when owns_stream */
  bool owns_stream;
  void *cuda_stream;      /* cudaStream_t of `stream`; NULL on CPU */
  void *cublas;           /* cublasHandle_t; NULL on CPU */
  void *cublas_workspace; /* device memory handed to cuBLAS; NULL on CPU */
  int cuda_sm_count;      /* multiprocessors, for sizing grid-stride launches; 0 on CPU */
  struct {
    void *ptr; /* device memory of `device` (host memory on the CPU device) */
    size_t bytes;
  } workspace[WEFT_KERNEL_WS_COUNT];
};

/* Returns at least `bytes` bytes of the slot's scratch (never NULL, even for 0 bytes),
 * 256-byte aligned, growing the slot if needed. Valid until the next call for the same slot
 * on this context. */
weft_status_t weft_kernel_ctx_workspace(weft_kernel_ctx_t *ctx, weft_kernel_ws_t slot, size_t bytes,
                                        void **ptr_p);

/* CPU kernels' threading (cpu/parallel_for_cpu.c): runs fn over items [0, n) split into
 * contiguous ranges, one per thread: at most weft_kernels_cpu_threads(), and fewer so that each
 * gets at least 2^17 units of work (`work` units per item, about one float moved). The split
 * only decides which thread computes an item, never how, so results do not depend on the
 * thread count. A thread that fails to start has its range run by the caller. */
typedef void (*weft_cpu_range_fn)(const void *job, int64_t begin, int64_t end);
void weft_cpu_parallel_for(const void *job, weft_cpu_range_fn fn, int64_t n, int64_t work);

#if WEFT_HAVE_CUDA
/* Creates the cuBLAS handle and its workspace for ctx->device and binds them to
 * ctx->cuda_stream; fills cuda_sm_count. On failure releases what it created. */
weft_status_t weft_kernel_ctx_cuda_init(weft_kernel_ctx_t *ctx);
/* Releases what weft_kernel_ctx_cuda_init created (fields may be NULL). */
void weft_kernel_ctx_cuda_cleanup(weft_kernel_ctx_t *ctx);
#endif

#ifdef __cplusplus
}
#endif

#endif /* WEFT_KERNEL_CTX_INTERNAL_H */
