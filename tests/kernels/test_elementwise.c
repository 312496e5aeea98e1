/* CPU elementwise tests: add, scale, axpy, fill against reference loops (bitwise, since both
 * compute the same f32 operations), in-place use, argument validation, and the f32 <-> bf16
 * casts: round-to-nearest-even on hand-picked ties, NaN, infinities, denormals and overflow,
 * 2^20 random bit patterns against an independently written rounding, and the round trip of
 * all 65536 bf16 values. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/bf16.h"
#include "weft/device.h"
#include "weft/elementwise.h"
#include "weft/kernel_ctx.h"

static uint32_t f32_bits(float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  return bits;
}

static float f32_from_bits(uint32_t bits) {
  float v;
  memcpy(&v, &bits, sizeof v);
  return v;
}

/* Round to nearest even written from the definition (compare the dropped half with 0x8000),
 * not with the bias trick of weft_f32_to_bf16, so the two implementations check each other. */
static uint16_t ref_f32_to_bf16(uint32_t bits) {
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x0040u);
  uint32_t upper = bits >> 16, dropped = bits & 0xffffu;
  if (dropped > 0x8000u || (dropped == 0x8000u && (upper & 1u))) upper++;
  return (uint16_t)upper;
}

static float ref_round(weft_dtype_t dtype, float v) {
  return dtype == WEFT_DTYPE_BF16 ? weft_bf16_to_f32(ref_f32_to_bf16(f32_bits(v))) : v;
}

/* Values that exercise rounding: random, plus a few exact ties and special values. */
static void random_values(weft_dtype_t dtype, int64_t n, uint64_t *state, void *buf) {
  for (int64_t i = 0; i < n; i++) {
    float v = kt_rand_uniform(state) * 8.0f;
    if (i % 17 == 5) v = f32_from_bits(0x3f808000u); /* exact bf16 tie */
    if (i % 23 == 7) v = -0.0f;
    kt_store(dtype, buf, (size_t)i, v);
  }
}

static void check_equal(weft_dtype_t dtype, int64_t n, const void *got, const float *want,
                        const char *op) {
  int reported = 0;
  for (int64_t i = 0; i < n; i++) {
    float g = kt_load(dtype, got, (size_t)i);
    if (f32_bits(g) != f32_bits(want[i]) && !(isnan(g) && isnan(want[i])) && reported++ < 3)
      weft_test_fail(__FILE__, __LINE__, "%s %s n=%lld: y[%lld] = %.9g (0x%08x), want %.9g", op,
                     weft_dtype_name(dtype), (long long)n, (long long)i, (double)g, f32_bits(g),
                     (double)want[i]);
  }
}

static void test_arith(weft_kernel_ctx_t *ctx, weft_dtype_t dt, int64_t n, uint64_t seed) {
  size_t bytes = (size_t)(n ? n : 1) * weft_dtype_size(dt);
  void *a = malloc(bytes), *b = malloc(bytes), *y = malloc(bytes);
  float *want = malloc((size_t)(n ? n : 1) * sizeof(float));
  if (!a || !b || !y || !want) {
    WT_CHECK(false, "out of memory");
    goto done;
  }
  uint64_t state = seed;
  random_values(dt, n, &state, a);
  random_values(dt, n, &state, b);
  const float alpha = -1.375f;
#define A(i) kt_load(dt, a, (size_t)(i))
#define B(i) kt_load(dt, b, (size_t)(i))
  /* add, then add in place into a and into b */
  for (int64_t i = 0; i < n; i++) want[i] = ref_round(dt, A(i) + B(i));
  WT_CHECK_OK(weft_elementwise_add(ctx, dt, n, a, b, y));
  check_equal(dt, n, y, want, "add");
  memcpy(y, a, bytes);
  WT_CHECK_OK(weft_elementwise_add(ctx, dt, n, y, b, y));
  check_equal(dt, n, y, want, "add in place (y == a)");
  memcpy(y, b, bytes);
  WT_CHECK_OK(weft_elementwise_add(ctx, dt, n, a, y, y));
  check_equal(dt, n, y, want, "add in place (y == b)");
  /* scale, out of place and in place */
  for (int64_t i = 0; i < n; i++) want[i] = ref_round(dt, alpha * A(i));
  WT_CHECK_OK(weft_elementwise_scale(ctx, dt, n, alpha, a, y));
  check_equal(dt, n, y, want, "scale");
  memcpy(y, a, bytes);
  WT_CHECK_OK(weft_elementwise_scale(ctx, dt, n, alpha, y, y));
  check_equal(dt, n, y, want, "scale in place");
  /* axpy: y = b + alpha a, with the product rounded to f32 first */
  for (int64_t i = 0; i < n; i++) {
    float product = alpha * A(i);
    want[i] = ref_round(dt, B(i) + product);
  }
  memcpy(y, b, bytes);
  WT_CHECK_OK(weft_elementwise_axpy(ctx, dt, n, alpha, a, y));
  check_equal(dt, n, y, want, "axpy");
  /* fill with a value that bf16 must round */
  for (int64_t i = 0; i < n; i++) want[i] = ref_round(dt, 1.0f / 3.0f);
  WT_CHECK_OK(weft_elementwise_fill(ctx, dt, n, 1.0f / 3.0f, y));
  check_equal(dt, n, y, want, "fill");
#undef A
#undef B
done:
  free(a);
  free(b);
  free(y);
  free(want);
}

static void test_invalid(weft_kernel_ctx_t *ctx) {
  float buf[16] = {0};
  const weft_dtype_t F = WEFT_DTYPE_F32, H = WEFT_DTYPE_BF16;
  WT_CHECK_STATUS(weft_elementwise_add(NULL, F, 4, buf, buf + 4, buf + 8), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_add(ctx, F, -1, buf, buf + 4, buf + 8), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_add(ctx, WEFT_DTYPE_I32, 4, buf, buf + 4, buf + 8),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_add(ctx, F, 4, NULL, buf + 4, buf + 8), WEFT_ERR_INVALID_ARG);
  /* partial overlap: y starts one element into a */
  WT_CHECK_STATUS(weft_elementwise_add(ctx, F, 4, buf, buf + 8, buf + 1), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_scale(ctx, F, 4, 2.0f, buf + 2, buf), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_axpy(ctx, H, 4, 2.0f, buf, (char *)buf + 2),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_fill(ctx, WEFT_DTYPE_I64, 4, 1.0f, buf), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_fill(ctx, F, 4, 1.0f, NULL), WEFT_ERR_INVALID_ARG);
  /* casts: unsupported dtypes, any overlap between different dtypes */
  WT_CHECK_STATUS(weft_elementwise_cast(ctx, 4, F, buf, WEFT_DTYPE_F16, buf + 8),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_cast(ctx, 4, F, buf, H, buf), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_elementwise_cast(ctx, 4, F, buf, F, buf + 2), WEFT_ERR_INVALID_ARG);
  /* n == 0 accepts NULL; adjacent (touching) buffers are disjoint */
  WT_CHECK_OK(weft_elementwise_add(ctx, F, 0, NULL, NULL, NULL));
  WT_CHECK_OK(weft_elementwise_cast(ctx, 0, F, NULL, H, NULL));
  WT_CHECK_OK(weft_elementwise_scale(ctx, F, 4, 2.0f, buf, buf + 4));
  WT_CHECK_OK(weft_elementwise_cast(ctx, 4, F, buf, F, buf)); /* copy onto itself: no-op */
}

static void cast_one(weft_kernel_ctx_t *ctx, uint32_t in, uint16_t want) {
  float x = f32_from_bits(in);
  weft_bf16_t y = 0;
  WT_CHECK_OK(weft_elementwise_cast(ctx, 1, WEFT_DTYPE_F32, &x, WEFT_DTYPE_BF16, &y));
  WT_CHECK(y == want, "cast 0x%08x -> 0x%04x, want 0x%04x", in, y, want);
  WT_CHECK(weft_f32_to_bf16(x) == want, "weft_f32_to_bf16(0x%08x) = 0x%04x, want 0x%04x", in,
           weft_f32_to_bf16(x), want);
}

static void test_cast_cases(weft_kernel_ctx_t *ctx) {
  static const struct {
    uint32_t in;
    uint16_t want;
  } cases[] = {
      {0x3f800000u, 0x3f80u}, /* 1.0 exact */
      {0x3f808000u, 0x3f80u}, /* tie, even below: stays */
      {0x3f818000u, 0x3f82u}, /* tie, odd below: rounds up to even */
      {0x3f808001u, 0x3f81u}, /* just above the tie: up */
      {0x3f807fffu, 0x3f80u}, /* just below the tie: down */
      {0xbf818000u, 0xbf82u}, /* negative tie: magnitude rounds to even */
      {0x00000000u, 0x0000u}, /* +0 */
      {0x80000000u, 0x8000u}, /* -0 */
      {0x7f800000u, 0x7f80u}, /* +inf */
      {0xff800000u, 0xff80u}, /* -inf */
      {0x7f7fffffu, 0x7f80u}, /* FLT_MAX rounds to inf (correct RNE overflow) */
      {0x7f7f8000u, 0x7f80u}, /* tie above the largest odd bf16: to inf (even) */
      {0x7f7f7fffu, 0x7f7fu}, /* below that tie: largest finite bf16 */
      {0x7fc00000u, 0x7fc0u}, /* quiet NaN */
      {0xffc00001u, 0xffc0u}, /* negative NaN keeps its sign */
      {0x7f800001u, 0x7fc0u}, /* signalling NaN with low payload: stays NaN, not inf */
      {0x7fa00000u, 0x7fe0u}, /* signalling NaN: payload kept, made quiet */
      {0x00000001u, 0x0000u}, /* smallest denormal rounds to 0 */
      {0x00008000u, 0x0000u}, /* denormal tie, even below */
      {0x00018000u, 0x0002u}, /* denormal tie, odd below */
      {0x0000ffffu, 0x0001u}, /* denormal above the tie */
      {0x807fffffu, 0x8080u}, /* largest negative denormal rounds to -FLT_MIN */
      {0x00400000u, 0x0040u}, /* denormal exactly representable */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    cast_one(ctx, cases[i].in, cases[i].want);
}

static void test_cast_bulk(weft_kernel_ctx_t *ctx) {
  enum { N = 1 << 20 };
  float *x = malloc(N * sizeof(float)), *back = malloc(65536 * sizeof(float));
  weft_bf16_t *y = malloc(N * sizeof(weft_bf16_t)), *all = malloc(65536 * sizeof(weft_bf16_t));
  weft_bf16_t *again = malloc(65536 * sizeof(weft_bf16_t));
  if (!x || !back || !y || !all || !again) {
    WT_CHECK(false, "out of memory");
    goto done;
  }
  /* random bit patterns: every exponent (NaN, inf, denormals included), biased to ties */
  uint64_t state = 42;
  for (int i = 0; i < N; i++) {
    uint32_t bits = (uint32_t)kt_rand_u64(&state);
    if (i % 4 == 0) bits = (bits & 0xffff0000u) | 0x8000u;
    x[i] = f32_from_bits(bits);
  }
  WT_CHECK_OK(weft_elementwise_cast(ctx, N, WEFT_DTYPE_F32, x, WEFT_DTYPE_BF16, y));
  int bad = 0;
  for (int i = 0; i < N; i++)
    if (y[i] != ref_f32_to_bf16(f32_bits(x[i])) && bad++ < 3)
      WT_CHECK(false, "cast 0x%08x -> 0x%04x, want 0x%04x", f32_bits(x[i]), y[i],
               ref_f32_to_bf16(f32_bits(x[i])));
  /* all bf16 values: widen exactly, narrow back to the same bits (NaNs become quiet NaNs) */
  for (uint32_t v = 0; v < 65536; v++) all[v] = (weft_bf16_t)v;
  WT_CHECK_OK(weft_elementwise_cast(ctx, 65536, WEFT_DTYPE_BF16, all, WEFT_DTYPE_F32, back));
  WT_CHECK_OK(weft_elementwise_cast(ctx, 65536, WEFT_DTYPE_F32, back, WEFT_DTYPE_BF16, again));
  bad = 0;
  for (uint32_t v = 0; v < 65536; v++) {
    bool nan = (v & 0x7fffu) > 0x7f80u;
    uint16_t want = nan ? (uint16_t)(v | 0x0040u) : (uint16_t)v;
    if ((f32_bits(back[v]) != v << 16 || again[v] != want) && bad++ < 3)
      WT_CHECK(false, "bf16 0x%04x -> f32 0x%08x -> bf16 0x%04x", v, f32_bits(back[v]), again[v]);
  }
  /* same-dtype casts copy */
  WT_CHECK_OK(weft_elementwise_cast(ctx, 65536, WEFT_DTYPE_BF16, all, WEFT_DTYPE_BF16, again));
  WT_CHECK(memcmp(all, again, 65536 * sizeof(weft_bf16_t)) == 0, "bf16 -> bf16 copy");
  WT_CHECK_OK(weft_elementwise_cast(ctx, 65536, WEFT_DTYPE_F32, x, WEFT_DTYPE_F32, back));
  WT_CHECK(memcmp(x, back, 65536 * sizeof(float)) == 0, "f32 -> f32 copy");
done:
  free(x);
  free(back);
  free(y);
  free(all);
  free(again);
}

int main(void) {
  weft_device_t *device = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &device));
  if (device) WT_CHECK_OK(weft_kernel_ctx_create(device, NULL, &ctx));
  if (ctx) {
    static const int64_t sizes[] = {0, 1, 7, 33, 1000, 4099};
    for (int d = 0; d < 2; d++)
      for (int s = 0; s < 6; s++)
        test_arith(ctx, d ? WEFT_DTYPE_BF16 : WEFT_DTYPE_F32, sizes[s], 1 + (uint64_t)s);
    test_invalid(ctx);
    test_cast_cases(ctx);
    test_cast_bulk(ctx);
  }
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(device);
  return weft_test_exit_code("test_elementwise");
}
