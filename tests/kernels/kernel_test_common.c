/* Shared kernel-test helpers (see kernel_test_common.h). */
#include "kernel_test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "weft/bf16.h"

uint64_t kt_rand_u64(uint64_t *state) {
  uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dull;
}

float kt_rand_uniform(uint64_t *state) {
  /* 24 random bits: every value is exact in f32. */
  return (float)(kt_rand_u64(state) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

float kt_load(weft_dtype_t dtype, const void *base, size_t index) {
  if (dtype == WEFT_DTYPE_BF16) return weft_bf16_to_f32(((const weft_bf16_t *)base)[index]);
  return ((const float *)base)[index];
}

void kt_store(weft_dtype_t dtype, void *base, size_t index, float value) {
  if (dtype == WEFT_DTYPE_BF16)
    ((weft_bf16_t *)base)[index] = weft_f32_to_bf16(value);
  else
    ((float *)base)[index] = value;
}

static int64_t max1(int64_t v) { return v > 1 ? v : 1; }

kt_gemm_spec_t kt_gemm_spec(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                            int64_t pad, int64_t batch) {
  kt_gemm_spec_t s = {.trans_a = trans_a,
                      .trans_b = trans_b,
                      .m = m,
                      .n = n,
                      .k = k,
                      .batch = batch,
                      .alpha = 1.0f,
                      .beta = 0.0f,
                      .ab_dtype = WEFT_DTYPE_F32,
                      .c_dtype = WEFT_DTYPE_F32};
  s.lda = max1(trans_a ? m : k) + pad;
  s.ldb = max1(trans_b ? k : n) + pad;
  s.ldc = max1(n) + pad;
  if (batch > 1) {
    s.stride_a = (trans_a ? k : m) * s.lda + 5;
    s.stride_b = (trans_b ? n : k) * s.ldb + 5;
    s.stride_c = m * s.ldc + 5;
  }
  return s;
}

const char *kt_gemm_describe(const kt_gemm_spec_t *s, char *buf, size_t size) {
  snprintf(buf, size,
           "%c%c m=%lld n=%lld k=%lld lda=%lld ldb=%lld ldc=%lld %s->%s alpha=%g beta=%g "
           "batch=%lld strides=%lld,%lld,%lld",
           s->trans_a ? 'T' : 'N', s->trans_b ? 'T' : 'N', (long long)s->m, (long long)s->n,
           (long long)s->k, (long long)s->lda, (long long)s->ldb, (long long)s->ldc,
           weft_dtype_name(s->ab_dtype), weft_dtype_name(s->c_dtype), (double)s->alpha,
           (double)s->beta, (long long)s->batch, (long long)s->stride_a, (long long)s->stride_b,
           (long long)s->stride_c);
  return buf;
}

/* Fills `count` elements of `dtype` with random values (or NaN) and their f32 mirror. */
static bool kt_random_buffer(weft_dtype_t dtype, size_t count, bool nan, uint64_t *state,
                             void **buf_p, float **mirror_p) {
  size_t esize = weft_dtype_size(dtype);
  *buf_p = malloc(count ? count * esize : 1);
  *mirror_p = malloc(count ? count * sizeof(float) : 1);
  if (!*buf_p || !*mirror_p) return false;
  for (size_t i = 0; i < count; i++) {
    kt_store(dtype, *buf_p, i, nan ? NAN : kt_rand_uniform(state));
    (*mirror_p)[i] = kt_load(dtype, *buf_p, i);
  }
  return true;
}

bool kt_gemm_data_create(const kt_gemm_spec_t *s, uint64_t seed, kt_gemm_data_t *d) {
  memset(d, 0, sizeof *d);
  int64_t last = s->batch > 0 ? s->batch - 1 : 0;
  d->a_elems = (size_t)(last * s->stride_a + (s->trans_a ? s->k : s->m) * s->lda);
  d->b_elems = (size_t)(last * s->stride_b + (s->trans_b ? s->n : s->k) * s->ldb);
  d->c_elems = (size_t)(last * s->stride_c + s->m * s->ldc);
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  return kt_random_buffer(s->ab_dtype, d->a_elems, false, &state, &d->a, &d->a32) &&
         kt_random_buffer(s->ab_dtype, d->b_elems, false, &state, &d->b, &d->b32) &&
         kt_random_buffer(s->c_dtype, d->c_elems, s->beta == 0.0f, &state, &d->c, &d->c32);
}

void kt_gemm_data_destroy(kt_gemm_data_t *d) {
  free(d->a);
  free(d->b);
  free(d->c);
  free(d->a32);
  free(d->b32);
  free(d->c32);
  memset(d, 0, sizeof *d);
}

/* Maps a C buffer index to (batch, row, col); false when it lies outside every window. */
static bool kt_c_window(const kt_gemm_spec_t *s, size_t index, int64_t *p_p, int64_t *i_p,
                        int64_t *j_p) {
  int64_t idx = (int64_t)index, p = 0;
  if (s->batch > 1 && s->stride_c > 0) {
    p = idx / s->stride_c;
    if (p >= s->batch) p = s->batch - 1;
    idx -= p * s->stride_c;
  }
  int64_t i = idx / s->ldc, j = idx % s->ldc;
  *p_p = p;
  *i_p = i;
  *j_p = j;
  return i < s->m && j < s->n;
}

/* Double-precision reference of one C element and its tolerance (see the header). */
static void kt_gemm_ref(const kt_gemm_spec_t *s, const kt_gemm_data_t *d, int64_t p, int64_t i,
                        int64_t j, double *ref_p, double *bound_p) {
  const float *a = d->a32 + p * s->stride_a, *b = d->b32 + p * s->stride_b;
  double sum = 0.0, abs_sum = 0.0;
  for (int64_t l = 0; l < s->k; l++) {
    double av = s->trans_a ? a[l * s->lda + i] : a[i * s->lda + l];
    double bv = s->trans_b ? b[j * s->ldb + l] : b[l * s->ldb + j];
    sum += av * bv;
    abs_sum += fabs(av * bv);
  }
  double ref = (double)s->alpha * sum, mag = fabs((double)s->alpha) * abs_sum;
  if (s->beta != 0.0f) { /* beta == 0: C is not read (it holds NaN) */
    double c0 = d->c32[p * s->stride_c + i * s->ldc + j];
    ref += (double)s->beta * c0;
    mag += fabs((double)s->beta * c0);
  }
  double bound = 2.0 * (double)(s->k + 3) * ldexp(1.0, -24) * mag;
  if (s->c_dtype == WEFT_DTYPE_BF16) bound += ldexp(1.0, -8) * fabs(ref);
  *ref_p = ref;
  *bound_p = bound;
}

static bool kt_same_bits(weft_dtype_t dtype, const void *x, const void *y, size_t index) {
  size_t esize = weft_dtype_size(dtype);
  return memcmp((const char *)x + index * esize, (const char *)y + index * esize, esize) == 0;
}

size_t kt_gemm_check(const kt_gemm_spec_t *s, const kt_gemm_data_t *d, const void *c, double scale,
                     const char *label) {
  size_t bad = 0;
  char desc[256];
  for (size_t idx = 0; idx < d->c_elems; idx++) {
    int64_t p, i, j;
    bool inside = kt_c_window(s, idx, &p, &i, &j);
    if (!inside) {
      if (!kt_same_bits(s->c_dtype, c, d->c, idx) && bad++ < 3)
        weft_test_fail(__FILE__, __LINE__, "%s %s: padding element %zu was written", label,
                       kt_gemm_describe(s, desc, sizeof desc), idx);
      continue;
    }
    double ref, bound;
    kt_gemm_ref(s, d, p, i, j, &ref, &bound);
    double got = kt_load(s->c_dtype, c, idx);
    if (!(fabs(got - ref) <= scale * bound) && bad++ < 3)
      weft_test_fail(__FILE__, __LINE__,
                     "%s %s: C[%lld][%lld,%lld] = %.9g, reference %.9g, "
                     "error %.3g > bound %.3g",
                     label, kt_gemm_describe(s, desc, sizeof desc), (long long)p, (long long)i,
                     (long long)j, got, ref, fabs(got - ref), scale * bound);
  }
  return bad;
}

size_t kt_gemm_compare(const kt_gemm_spec_t *s, const kt_gemm_data_t *d, const void *x,
                       const void *y, double scale, const char *label) {
  size_t bad = 0;
  char desc[256];
  for (size_t idx = 0; idx < d->c_elems; idx++) {
    int64_t p, i, j;
    if (!kt_c_window(s, idx, &p, &i, &j)) {
      if (!kt_same_bits(s->c_dtype, x, y, idx) && bad++ < 3)
        weft_test_fail(__FILE__, __LINE__, "%s %s: padding element %zu differs", label,
                       kt_gemm_describe(s, desc, sizeof desc), idx);
      continue;
    }
    double ref, bound;
    kt_gemm_ref(s, d, p, i, j, &ref, &bound);
    double xv = kt_load(s->c_dtype, x, idx), yv = kt_load(s->c_dtype, y, idx);
    if (!(fabs(xv - yv) <= scale * bound) && bad++ < 3)
      weft_test_fail(__FILE__, __LINE__,
                     "%s %s: C[%lld][%lld,%lld] = %.9g vs %.9g "
                     "(reference %.9g), difference %.3g > %.3g",
                     label, kt_gemm_describe(s, desc, sizeof desc), (long long)p, (long long)i,
                     (long long)j, xv, yv, ref, fabs(xv - yv), scale * bound);
  }
  return bad;
}

void *kt_xalloc(size_t bytes) {
  void *p = calloc(bytes ? bytes : 1, 1);
  if (!p) abort();
  return p;
}

float *kt_rand_floats(uint64_t *state, size_t n, float scale) {
  float *p = kt_xalloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = scale * kt_rand_uniform(state);
  return p;
}

void *kt_to_gpu(const weft_device_t *gpu, const void *host, size_t bytes) {
  void *dev = NULL;
  WT_CHECK_OK(weft_device_alloc(gpu, bytes ? bytes : 1, &dev));
  if (!dev || !bytes) return dev;
  void *init = (void *)host;
  if (!host) memset(init = kt_xalloc(bytes), 0xff, bytes);
  WT_CHECK_OK(weft_device_copy(gpu, dev, init, bytes, WEFT_COPY_HOST_TO_DEVICE));
  if (!host) free(init);
  return dev;
}

void *kt_from_gpu(const weft_device_t *gpu, const void *dev, size_t bytes) {
  void *host = kt_xalloc(bytes);
  WT_CHECK_OK(weft_device_synchronize(gpu));
  if (bytes) WT_CHECK_OK(weft_device_copy(gpu, host, dev, bytes, WEFT_COPY_DEVICE_TO_HOST));
  return host;
}
