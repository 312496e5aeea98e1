/* Helpers shared by the kernel tests: a deterministic random generator, typed element access,
 * and GEMM problems with their double-precision reference and error bound.
 *
 * A GEMM test problem is generated once in host memory (A, B, C in their dtypes, plus f32
 * mirrors holding exactly the values the kernel sees, i.e. already rounded to bf16 where the
 * dtype is bf16) and checked against a naive triple loop in double on those mirrors, so input
 * rounding never enters the tolerance. */
#ifndef WEFT_KERNEL_TEST_COMMON_H
#define WEFT_KERNEL_TEST_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/device.h"
#include "weft/tensor.h"

/* xorshift64*: deterministic across platforms, good enough for test data. */
uint64_t kt_rand_u64(uint64_t *state);
float kt_rand_uniform(uint64_t *state); /* in [-1, 1) */

float kt_load(weft_dtype_t dtype, const void *base, size_t index);
void kt_store(weft_dtype_t dtype, void *base, size_t index, float value);

typedef struct kt_gemm_spec {
  bool trans_a, trans_b;
  int64_t m, n, k;
  int64_t lda, ldb, ldc;
  int64_t stride_a, stride_b, stride_c; /* elements; 0 for a single GEMM */
  int64_t batch;                        /* 1 for weft_gemm */
  float alpha, beta;
  weft_dtype_t ab_dtype, c_dtype;
} kt_gemm_spec_t;

/* Minimal leading dimensions plus `pad`, and (batch > 1) strides one matrix span plus 5
 * elements apart, so strides are never the dense value. alpha = 1, beta = 0, all f32. */
kt_gemm_spec_t kt_gemm_spec(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                            int64_t pad, int64_t batch);
/* "TN m=7 n=33 k=1 bf16->f32 alpha=.. beta=.. batch=.." for failure messages. */
const char *kt_gemm_describe(const kt_gemm_spec_t *spec, char *buf, size_t size);

typedef struct kt_gemm_data {
  void *a, *b, *c;        /* host buffers in their dtypes; c holds the initial C */
  float *a32, *b32, *c32; /* the same values as f32 */
  size_t a_elems, b_elems, c_elems;
} kt_gemm_data_t;

/* Random A, B in [-1, 1); C random, or all NaN when beta == 0 (to prove C is not read);
 * padding and gaps are random too. Returns false when out of memory. */
bool kt_gemm_data_create(const kt_gemm_spec_t *spec, uint64_t seed, kt_gemm_data_t *data);
void kt_gemm_data_destroy(kt_gemm_data_t *data);

/* Checks a result C buffer (c_dtype, c_elems elements) against the double reference:
 * inside each [m, n] window |c - ref| <= scale * bound, where
 *   bound = 2 (k + 3) 2^-24 (|alpha| sum_l |a_il b_lj| + |beta c0_ij|)  [+ 2^-8 |ref| for bf16 C]
 * (f32 accumulation error, Higham's gamma_k with a factor 2 for the alpha/beta roundings; a
 * bf16 C adds its final rounding, half an ulp = 2^-9 relative, doubled for the f32 error that
 * can move the value across a rounding boundary). Outside the windows C must be bitwise
 * unchanged. Records failures via weft_test_fail; returns the number of bad elements. */
size_t kt_gemm_check(const kt_gemm_spec_t *spec, const kt_gemm_data_t *data, const void *c,
                     double scale, const char *label);

/* Compares two result buffers (CPU vs CUDA) of the same problem: inside the windows
 * |x - y| <= scale * bound (scale 2 when each is within `bound` of the reference); outside,
 * bitwise equal. */
size_t kt_gemm_compare(const kt_gemm_spec_t *spec, const kt_gemm_data_t *data, const void *x,
                       const void *y, double scale, const char *label);

/* Host and device buffers for the CUDA-vs-CPU tests. kt_xalloc aborts when memory runs out
 * (a test cannot go on without its data). kt_to_gpu copies `bytes` from host to a new device
 * buffer, or fills it with NaN bytes (0xff) when host is NULL, so an element a kernel forgets to
 * write shows up. kt_from_gpu waits for the device (every stream), then copies back into a new
 * host buffer. Failures are recorded as test failures. */
void *kt_xalloc(size_t bytes);
float *kt_rand_floats(uint64_t *state, size_t n, float scale); /* n values in [-scale, scale) */
void *kt_to_gpu(const weft_device_t *gpu, const void *host, size_t bytes);
void *kt_from_gpu(const weft_device_t *gpu, const void *dev, size_t bytes);

#endif /* WEFT_KERNEL_TEST_COMMON_H */
