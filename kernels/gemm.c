/* GEMM front end: argument validation and dispatch on the device kind (see weft/gemm.h).
 *
 * All checks happen here, once, with messages that name the function and the values, so both
 * backends see only well-formed problems and report nothing but their library's failures.
 * The leading-dimension rules are BLAS's own (xerbla would otherwise print to stdout and
 * return without an error code), stated for row-major storage. */
#include <inttypes.h>
#include <limits.h>

#include "gemm_internal.h"
#include "weft/gemm.h"

static bool gemm_dtype_ok(weft_dtype_t dtype) {
  return dtype == WEFT_DTYPE_F32 || dtype == WEFT_DTYPE_BF16;
}

static weft_status_t gemm_check_dtypes(const char *fn, weft_dtype_t a_dtype, weft_dtype_t b_dtype,
                                       weft_dtype_t c_dtype) {
  /* cuBLAS's COMPUTE_32F GemmEx supports exactly these three combinations; the CPU path
   * accepts the same set so code that runs on one device runs on the other. */
  bool ok = gemm_dtype_ok(a_dtype) && a_dtype == b_dtype && gemm_dtype_ok(c_dtype) &&
            !(a_dtype == WEFT_DTYPE_F32 && c_dtype == WEFT_DTYPE_BF16);
  if (!ok) {
    WEFT_ERROR("kernels",
               "%s: unsupported dtypes A=%s B=%s C=%s (supported: f32,f32->f32; "
               "bf16,bf16->f32; bf16,bf16->bf16)",
               fn, weft_dtype_name(a_dtype), weft_dtype_name(b_dtype), weft_dtype_name(c_dtype));
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* ld must be >= max(1, cols), where cols is the row length of the matrix as stored. */
static weft_status_t gemm_check_ld(const char *fn, char matrix, int64_t ld, int64_t rows,
                                   int64_t cols, bool trans) {
  int64_t min_ld = cols > 1 ? cols : 1;
  if (ld < min_ld) {
    WEFT_ERROR("kernels",
               "%s: ld%c=%" PRId64 " is less than %" PRId64 " (%c is stored as [%" PRId64
               ", %" PRId64 "] row-major%s)",
               fn, matrix, ld, min_ld, matrix - 'a' + 'A', rows, cols,
               trans ? " because it is transposed" : "");
    return WEFT_ERR_INVALID_ARG;
  }
  if (ld > INT_MAX) {
    WEFT_ERROR("kernels", "%s: ld%c=%" PRId64 " exceeds INT32_MAX, the BLAS/cuBLAS limit", fn,
               matrix, ld);
    return WEFT_ERR_UNSUPPORTED;
  }
  return WEFT_OK;
}

/* Checks every field of `p`. *empty_p is set when there is nothing to compute. */
static weft_status_t gemm_validate(const char *fn, const weft_kernel_ctx_t *ctx,
                                   const weft_gemm_problem_t *p, bool *empty_p) {
  if (!ctx) {
    WEFT_ERROR("kernels", "%s: kernel context is NULL", fn);
    return WEFT_ERR_INVALID_ARG;
  }
  if (p->m < 0 || p->n < 0 || p->k < 0 || p->batch_count < 0) {
    WEFT_ERROR("kernels",
               "%s: sizes must be >= 0, got m=%" PRId64 " n=%" PRId64 " k=%" PRId64
               " batch_count=%" PRId64,
               fn, p->m, p->n, p->k, p->batch_count);
    return WEFT_ERR_INVALID_ARG;
  }
  if (p->m > INT_MAX || p->n > INT_MAX || p->k > INT_MAX || p->batch_count > INT_MAX) {
    WEFT_ERROR("kernels",
               "%s: m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " batch_count=%" PRId64
               " exceed INT32_MAX, the BLAS/cuBLAS limit; split the problem",
               fn, p->m, p->n, p->k, p->batch_count);
    return WEFT_ERR_UNSUPPORTED;
  }
  WEFT_CHECK(gemm_check_dtypes(fn, p->a_dtype, p->b_dtype, p->c_dtype));
  WEFT_CHECK(gemm_check_ld(fn, 'a', p->lda, p->trans_a ? p->k : p->m, p->trans_a ? p->m : p->k,
                           p->trans_a));
  WEFT_CHECK(gemm_check_ld(fn, 'b', p->ldb, p->trans_b ? p->n : p->k, p->trans_b ? p->k : p->n,
                           p->trans_b));
  WEFT_CHECK(gemm_check_ld(fn, 'c', p->ldc, p->m, p->n, false));
  if (p->stride_a < 0 || p->stride_b < 0 || p->stride_c < 0) {
    WEFT_ERROR("kernels",
               "%s: batch strides must be >= 0, got stride_a=%" PRId64 " stride_b=%" PRId64
               " stride_c=%" PRId64,
               fn, p->stride_a, p->stride_b, p->stride_c);
    return WEFT_ERR_INVALID_ARG;
  }
  /* Elements one C matrix touches; batch entries writing the same element would race. */
  int64_t c_span = p->m > 0 && p->n > 0 ? (p->m - 1) * p->ldc + p->n : 0;
  if (p->batch_count > 1 && p->stride_c < c_span) {
    WEFT_ERROR("kernels",
               "%s: stride_c=%" PRId64 " makes the %" PRId64
               " C matrices overlap (each spans (m-1)*ldc+n = %" PRId64 " elements with m=%" PRId64
               " n=%" PRId64 " ldc=%" PRId64 ")",
               fn, p->stride_c, p->batch_count, c_span, p->m, p->n, p->ldc);
    return WEFT_ERR_INVALID_ARG;
  }
  *empty_p = p->m == 0 || p->n == 0 || p->batch_count == 0;
  /* With k == 0 the result is beta * C and A, B are never read. */
  if (!*empty_p && (!p->c || (p->k > 0 && (!p->a || !p->b)))) {
    WEFT_ERROR("kernels",
               "%s: NULL operand (a=%p b=%p c=%p) for m=%" PRId64 " n=%" PRId64 " k=%" PRId64, fn,
               p->a, p->b, (void *)p->c, p->m, p->n, p->k);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

static weft_status_t gemm_dispatch(weft_kernel_ctx_t *ctx, const weft_gemm_problem_t *p) {
  switch (ctx->device->kind) {
  case WEFT_DEVICE_CPU: return weft_gemm_cpu(ctx, p);
  case WEFT_DEVICE_CUDA:
#if WEFT_HAVE_CUDA
    return weft_gemm_cuda(ctx, p);
#else
    break; /* a CUDA context cannot be created without the backend */
#endif
  }
  WEFT_ERROR("kernels", "GEMM: no backend for device kind %d", (int)ctx->device->kind);
  return WEFT_ERR_INTERNAL;
}

weft_status_t weft_gemm(weft_kernel_ctx_t *ctx, bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, float alpha, weft_dtype_t a_dtype, const void *a, int64_t lda,
                        weft_dtype_t b_dtype, const void *b, int64_t ldb, float beta,
                        weft_dtype_t c_dtype, void *c, int64_t ldc) {
  weft_gemm_problem_t p = {.trans_a = trans_a,
                           .trans_b = trans_b,
                           .m = m,
                           .n = n,
                           .k = k,
                           .lda = lda,
                           .ldb = ldb,
                           .ldc = ldc,
                           .batch_count = 1,
                           .batched = false,
                           .alpha = alpha,
                           .beta = beta,
                           .a_dtype = a_dtype,
                           .b_dtype = b_dtype,
                           .c_dtype = c_dtype,
                           .a = a,
                           .b = b,
                           .c = c};
  bool empty = false;
  WEFT_CHECK(gemm_validate("weft_gemm", ctx, &p, &empty));
  if (empty) return WEFT_OK;
  WEFT_CHECK(gemm_dispatch(ctx, &p));
  return WEFT_OK;
}

weft_status_t weft_gemm_batched_strided(weft_kernel_ctx_t *ctx, bool trans_a, bool trans_b,
                                        int64_t m, int64_t n, int64_t k, float alpha,
                                        weft_dtype_t a_dtype, const void *a, int64_t lda,
                                        int64_t stride_a, weft_dtype_t b_dtype, const void *b,
                                        int64_t ldb, int64_t stride_b, float beta,
                                        weft_dtype_t c_dtype, void *c, int64_t ldc,
                                        int64_t stride_c, int64_t batch_count) {
  weft_gemm_problem_t p = {.trans_a = trans_a,
                           .trans_b = trans_b,
                           .m = m,
                           .n = n,
                           .k = k,
                           .lda = lda,
                           .ldb = ldb,
                           .ldc = ldc,
                           .stride_a = stride_a,
                           .stride_b = stride_b,
                           .stride_c = stride_c,
                           .batch_count = batch_count,
                           .batched = true,
                           .alpha = alpha,
                           .beta = beta,
                           .a_dtype = a_dtype,
                           .b_dtype = b_dtype,
                           .c_dtype = c_dtype,
                           .a = a,
                           .b = b,
                           .c = c};
  bool empty = false;
  WEFT_CHECK(gemm_validate("weft_gemm_batched_strided", ctx, &p, &empty));
  if (empty) return WEFT_OK;
  WEFT_CHECK(gemm_dispatch(ctx, &p));
  return WEFT_OK;
}
