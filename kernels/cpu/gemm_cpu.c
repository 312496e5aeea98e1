/* CPU GEMM backend: OpenBLAS sgemm in row-major mode.
 *
 * f32 problems go straight to cblas_sgemm (CblasRowMajor matches weft's layout, so there is no
 * operand swapping here, unlike the cuBLAS path). bf16 operands are widened to dense f32
 * copies in the context's GEMM workspace, multiplied in f32, and a bf16 C is rounded back to
 * nearest even once; only the [m, n] window of C is written, never its ldc padding. A batch
 * entry whose A (or B) is the same as the previous one (stride 0) is widened once.
 *
 * Rejected: OpenBLAS's cblas_sbgemm (bf16 inputs): its speed depends on the CPU's bf16
 * instructions and the OpenBLAS version, its C is f32 so a bf16 C needs the same narrowing,
 * and one sgemm path for both dtypes keeps CPU results consistent; widening costs
 * O(mk + kn) against the O(mnk) multiply. Rejected: a batched CBLAS entry point: not part of
 * standard CBLAS, and a loop over sgemm calls is what it would do for equal shapes. */
#include <cblas.h>
#include <string.h>

#include "gemm_internal.h"
#include "weft/bf16.h"

/* dst [rows, cols] f32 dense  <-  src [rows, cols] bf16 with row stride ld. */
static void gemm_widen(const weft_bf16_t *src, int64_t ld, int64_t rows, int64_t cols, float *dst) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < cols; j++) dst[r * cols + j] = weft_bf16_to_f32(src[r * ld + j]);
}

/* dst [rows, cols] bf16 with row stride ld  <-  src [rows, cols] f32 dense. */
static void gemm_narrow(const float *src, int64_t rows, int64_t cols, weft_bf16_t *dst,
                        int64_t ld) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < cols; j++) dst[r * ld + j] = weft_f32_to_bf16(src[r * cols + j]);
}

/* Address of batch entry `index`; a NULL base (allowed when k == 0) stays NULL. */
static const char *gemm_entry(const void *base, int64_t index, int64_t stride, size_t esize) {
  return base ? (const char *)base + (size_t)(index * stride) * esize : NULL;
}

static weft_status_t gemm_cpu_bf16(weft_kernel_ctx_t *ctx, const weft_gemm_problem_t *p,
                                   enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb) {
  int64_t rows_a = p->trans_a ? p->k : p->m, cols_a = p->trans_a ? p->m : p->k;
  int64_t rows_b = p->trans_b ? p->n : p->k, cols_b = p->trans_b ? p->k : p->n;
  bool c_bf16 = p->c_dtype == WEFT_DTYPE_BF16;
  size_t a_elems = (size_t)(rows_a * cols_a), b_elems = (size_t)(rows_b * cols_b);
  size_t c_elems = c_bf16 ? (size_t)(p->m * p->n) : 0;
  void *ws = NULL;
  WEFT_CHECK(weft_kernel_ctx_workspace(ctx, WEFT_KERNEL_WS_GEMM,
                                       (a_elems + b_elems + c_elems) * sizeof(float), &ws));
  float *a32 = ws, *b32 = a32 + a_elems, *c32 = b32 + b_elems;
  /* BLAS wants ld >= 1 even for an empty dimension. */
  int lda32 = cols_a > 1 ? (int)cols_a : 1, ldb32 = cols_b > 1 ? (int)cols_b : 1;
  size_t csize = weft_dtype_size(p->c_dtype);
  for (int64_t i = 0; i < p->batch_count; i++) {
    if (i == 0 || p->stride_a != 0)
      gemm_widen((const weft_bf16_t *)gemm_entry(p->a, i, p->stride_a, sizeof(weft_bf16_t)), p->lda,
                 rows_a, cols_a, a32);
    if (i == 0 || p->stride_b != 0)
      gemm_widen((const weft_bf16_t *)gemm_entry(p->b, i, p->stride_b, sizeof(weft_bf16_t)), p->ldb,
                 rows_b, cols_b, b32);
    char *c = (char *)p->c + (size_t)(i * p->stride_c) * csize;
    if (!c_bf16) {
      cblas_sgemm(CblasRowMajor, ta, tb, (int)p->m, (int)p->n, (int)p->k, p->alpha, a32, lda32, b32,
                  ldb32, p->beta, (float *)c, (int)p->ldc);
      continue;
    }
    if (p->beta != 0.0f)
      gemm_widen((const weft_bf16_t *)c, p->ldc, p->m, p->n, c32);
    else /* beta == 0: C is not read, so NaN or garbage in it must not reach the result */
      memset(c32, 0, c_elems * sizeof(float));
    cblas_sgemm(CblasRowMajor, ta, tb, (int)p->m, (int)p->n, (int)p->k, p->alpha, a32, lda32, b32,
                ldb32, p->beta, c32, (int)p->n);
    gemm_narrow(c32, p->m, p->n, (weft_bf16_t *)c, p->ldc);
  }
  return WEFT_OK;
}

weft_status_t weft_gemm_cpu(weft_kernel_ctx_t *ctx, const weft_gemm_problem_t *p) {
  enum CBLAS_TRANSPOSE ta = p->trans_a ? CblasTrans : CblasNoTrans;
  enum CBLAS_TRANSPOSE tb = p->trans_b ? CblasTrans : CblasNoTrans;
  if (p->a_dtype == WEFT_DTYPE_BF16) return gemm_cpu_bf16(ctx, p, ta, tb);
  /* f32 x f32 -> f32 (validation allows no other f32 combination). */
  for (int64_t i = 0; i < p->batch_count; i++) {
    const float *a = (const float *)gemm_entry(p->a, i, p->stride_a, sizeof(float));
    const float *b = (const float *)gemm_entry(p->b, i, p->stride_b, sizeof(float));
    float *c = (float *)p->c + i * p->stride_c;
    cblas_sgemm(CblasRowMajor, ta, tb, (int)p->m, (int)p->n, (int)p->k, p->alpha, a, (int)p->lda, b,
                (int)p->ldb, p->beta, c, (int)p->ldc);
  }
  return WEFT_OK;
}
