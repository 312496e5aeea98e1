/* CUDA GEMM backend: cuBLAS GemmEx / GemmStridedBatchedEx with CUBLAS_COMPUTE_32F.
 *
 * Row-major onto column-major: cuBLAS reads matrices column-major, and a row-major [r, c]
 * matrix with leading dimension ld is, byte for byte, the column-major [c, r] matrix (its
 * transpose) with the same ld. weft computes C = op(A) op(B) in row-major; transposing both
 * sides gives C^T = op(B)^T op(A)^T, and every ^T here is free because it is just the
 * column-major reading of the same buffer. So cuBLAS is called with the operands swapped
 * (B first, then A), the sizes swapped (n, m, k), and each operand keeping its own transpose
 * flag: trans_b applies to cuBLAS's first operand, trans_a to its second. The leading
 * dimensions pass through unchanged, and weft's row-major minimums (gemm.c) are exactly
 * cuBLAS's column-major ones for the swapped problem.
 *
 * Types: CUDA_R_32F for f32, CUDA_R_16BF for bf16; computation is CUBLAS_COMPUTE_32F (true
 * f32, no TF32) and the handle forbids reduced-precision split-K reductions
 * (kernel_ctx_cuda.c), so bf16 problems accumulate in f32 end to end.
 * Rejected: CUBLAS_COMPUTE_32F_FAST_TF32 for f32 inputs: faster, but f32 would then mean ~10
 * mantissa bits and the CPU comparison tests could no longer hold f32 tolerances. */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "gemm_internal.h"

static cudaDataType gemm_cuda_type(weft_dtype_t dtype) {
  return dtype == WEFT_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

weft_status_t weft_gemm_cuda(weft_kernel_ctx_t *ctx, const weft_gemm_problem_t *p) {
  cublasHandle_t handle = (cublasHandle_t)ctx->cublas;
  cublasOperation_t op_a = p->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_b = p->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cudaDataType type_a = gemm_cuda_type(p->a_dtype), type_b = gemm_cuda_type(p->b_dtype);
  cudaDataType type_c = gemm_cuda_type(p->c_dtype);
  if (!p->batched) {
    WEFT_CUBLAS_CHECK(cublasGemmEx(handle, op_b, op_a, (int)p->n, (int)p->m, (int)p->k, &p->alpha,
                                   p->b, type_b, (int)p->ldb, p->a, type_a, (int)p->lda, &p->beta,
                                   p->c, type_c, (int)p->ldc, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
    return WEFT_OK;
  }
  WEFT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle, op_b, op_a, (int)p->n, (int)p->m, (int)p->k, &p->alpha, p->b, type_b, (int)p->ldb,
      (long long)p->stride_b, p->a, type_a, (int)p->lda, (long long)p->stride_a, &p->beta, p->c,
      type_c, (int)p->ldc, (long long)p->stride_c, (int)p->batch_count, CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
  return WEFT_OK;
}
