/* Dense matrix multiply (GEMM) in row-major layout, single and strided-batched.
 *
 *   C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C[m,n]
 *
 * All matrices are row-major: element (i, j) of a matrix X with leading dimension ldx is
 * X[i * ldx + j], and ldx counts elements (not bytes) between the starts of consecutive rows.
 * op(X) is X when trans_x is false and X^T when it is true, so the stored matrices are:
 *
 *   A: trans_a false -> stored [m, k], lda >= max(1, k);  true -> stored [k, m], lda >= max(1, m)
 *   B: trans_b false -> stored [k, n], ldb >= max(1, n);  true -> stored [n, k], ldb >= max(1, k)
 *   C: stored [m, n], ldc >= max(1, n)
 *
 * Types: A and B have the same dtype, f32 or bf16; C is f32 or bf16, except that f32 inputs
 * need an f32 C. Products are accumulated in f32 always (never in bf16), and a bf16 C is rounded
 * once, to nearest even, at the end. When beta == 0, C is not read (NaN or garbage in C does not
 * propagate), as in BLAS. Elements of C outside the [m, n] window (the ldc - n padding of each
 * row) are never written. A, B and C must not overlap. Pointers are in the memory of the
 * context's device.
 *
 * CPU: OpenBLAS sgemm; bf16 operands are converted through f32 workspace held by the context.
 * CUDA: cuBLAS GemmEx / GemmStridedBatchedEx with CUBLAS_COMPUTE_32F, on the context's stream.
 * The CPU and CUDA results agree to f32 rounding (the summation order differs); neither is
 * bitwise reproducible against the other, each is reproducible against itself.
 *
 * Rejected: a tensor-descriptor API. Callers (attention, MoE) multiply sub-blocks of larger
 * buffers, which leading dimensions and element strides express directly, BLAS-style.
 *
 * Errors (logged once with the offending values): WEFT_ERR_INVALID_ARG for negative sizes,
 * leading dimensions below the minimum above, an unsupported dtype combination, NULL pointers
 * with a non-empty problem, or a negative or overlapping batch stride; WEFT_ERR_UNSUPPORTED for
 * sizes, leading dimensions or batch counts above INT32_MAX (BLAS and cuBLAS take 32-bit int);
 * WEFT_ERR_NO_MEMORY when workspace cannot grow; WEFT_ERR_DEVICE when cuBLAS fails. */
#ifndef WEFT_GEMM_H
#define WEFT_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"
#include "weft/tensor.h"

/* One GEMM, see the file comment for the exact semantics.
 * [in] ctx: kernel context; the multiply is queued on its stream.
 * [in] trans_a, trans_b: use A^T / B^T.
 * [in] m, n, k: sizes of op(A) [m, k], op(B) [k, n] and C [m, n]; any may be 0 (k == 0 gives
 *      C = beta * C).
 * [in] a: a_dtype elements, [m, k] (or [k, m] when trans_a), row stride lda.
 * [in] b: b_dtype elements, [k, n] (or [n, k] when trans_b), row stride ldb.
 * [in,out] c: c_dtype elements, [m, n], row stride ldc. */
weft_status_t weft_gemm(weft_kernel_ctx_t *ctx, bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, float alpha, weft_dtype_t a_dtype, const void *a, int64_t lda,
                        weft_dtype_t b_dtype, const void *b, int64_t ldb, float beta,
                        weft_dtype_t c_dtype, void *c, int64_t ldc);

/* batch_count independent GEMMs with the same shapes: for p in [0, batch_count),
 *   C_p = alpha * op(A_p) op(B_p) + beta * C_p,  X_p = x + p * stride_x  (in elements).
 * stride_a and stride_b may be 0 (the same A or B for every batch entry, e.g. shared weights)
 * or any value >= 0; stride_c must keep the C matrices apart when batch_count > 1:
 * stride_c >= (m - 1) * ldc + n. batch_count == 0 is a no-op. Other arguments as weft_gemm. */
weft_status_t weft_gemm_batched_strided(weft_kernel_ctx_t *ctx, bool trans_a, bool trans_b,
                                        int64_t m, int64_t n, int64_t k, float alpha,
                                        weft_dtype_t a_dtype, const void *a, int64_t lda,
                                        int64_t stride_a, weft_dtype_t b_dtype, const void *b,
                                        int64_t ldb, int64_t stride_b, float beta,
                                        weft_dtype_t c_dtype, void *c, int64_t ldc,
                                        int64_t stride_c, int64_t batch_count);

#endif /* WEFT_GEMM_H */
