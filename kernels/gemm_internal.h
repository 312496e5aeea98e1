/* Private to kernels/: a GEMM problem and the two backends that run it.
 *
 * gemm.c fills the struct from the public arguments and checks it once, including that every
 * size fits in int (what BLAS and cuBLAS take), so the backends only translate and may cast
 * sizes to int. A single GEMM is a batch of one. */
#ifndef WEFT_GEMM_INTERNAL_H
#define WEFT_GEMM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"
#include "weft/tensor.h"

typedef struct weft_gemm_problem {
  bool trans_a, trans_b;
  int64_t m, n, k;       /* C [m, n] = op(A) [m, k] op(B) [k, n]; m, n > 0 in backends */
  int64_t lda, ldb, ldc; /* row-major leading dimensions, in elements */
  int64_t stride_a;      /* elements between batch entries; 0 allowed for A and B */
  int64_t stride_b;
  int64_t stride_c;
  int64_t batch_count; /* > 0 in backends */
  bool batched;        /* called through weft_gemm_batched_strided */
  float alpha, beta;
  weft_dtype_t a_dtype, b_dtype, c_dtype; /* a_dtype == b_dtype */
  const void *a, *b;
  void *c;
} weft_gemm_problem_t;

weft_status_t weft_gemm_cpu(weft_kernel_ctx_t *ctx, const weft_gemm_problem_t *p);
#if WEFT_HAVE_CUDA
weft_status_t weft_gemm_cuda(weft_kernel_ctx_t *ctx, const weft_gemm_problem_t *p);
#endif

#endif /* WEFT_GEMM_INTERNAL_H */
