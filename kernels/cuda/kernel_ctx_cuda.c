/* CUDA half of the kernel context: the cuBLAS handle, bound to the context's stream, with a
 * workspace the context owns.
 *
 * Plain C against the CUDA runtime and cuBLAS (both have C APIs); no kernels here.
 * Why an explicit cuBLAS workspace: it makes cuBLAS's scratch memory part of the context
 * instead of a hidden library pool, which NVIDIA recommends for reproducible results and for
 * CUDA graph capture, and the memory shows up where weft accounts for it. Order matters:
 * cublasSetStream resets the workspace to the default pool, so the stream is set first, then
 * the workspace.
 * Math mode: CUBLAS_DEFAULT_MATH keeps f32 GEMMs in true f32 (no TF32), and
 * CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION keeps split-K reductions of bf16-output
 * GEMMs in f32 instead of bf16: weft promises f32 accumulation always (design.md section 2).
 * Rejected: one cuBLAS handle per process (handles are cheap, and sharing one between streams
 * and threads needs locking and stream switching on every call). */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernel_ctx_internal.h"

/* NVIDIA's recommended cuBLAS workspace for Hopper (cublasSetWorkspace documentation); it also
 * covers the 4 MiB recommended for older architectures. */
#define WEFT_CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)

static weft_status_t cuda_ctx_setup(weft_kernel_ctx_t *ctx) {
  WEFT_CUDA_CHECK(cudaSetDevice(ctx->device->ordinal));
  WEFT_CUDA_CHECK(cudaDeviceGetAttribute(&ctx->cuda_sm_count, cudaDevAttrMultiProcessorCount,
                                         ctx->device->ordinal));
  cublasHandle_t handle = NULL;
  WEFT_CUBLAS_CHECK(cublasCreate(&handle));
  ctx->cublas = handle;
  WEFT_CHECK(weft_device_alloc(ctx->device, WEFT_CUBLAS_WORKSPACE_BYTES, &ctx->cublas_workspace));
  WEFT_CUBLAS_CHECK(cublasSetStream(handle, (cudaStream_t)ctx->cuda_stream));
  WEFT_CUBLAS_CHECK(cublasSetWorkspace(handle, ctx->cublas_workspace, WEFT_CUBLAS_WORKSPACE_BYTES));
  WEFT_CUBLAS_CHECK(cublasSetMathMode(
      handle,
      (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  /* alpha and beta are host floats in weft's API. */
  WEFT_CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
  return WEFT_OK;
}

weft_status_t weft_kernel_ctx_cuda_init(weft_kernel_ctx_t *ctx) {
  weft_status_t st = cuda_ctx_setup(ctx); /* logs the failing call itself */
  if (st != WEFT_OK) weft_kernel_ctx_cuda_cleanup(ctx);
  return st;
}

void weft_kernel_ctx_cuda_cleanup(weft_kernel_ctx_t *ctx) {
  if (ctx->cublas) (void)cublasDestroy((cublasHandle_t)ctx->cublas);
  ctx->cublas = NULL;
  weft_device_free(ctx->device, ctx->cublas_workspace);
  ctx->cublas_workspace = NULL;
}
