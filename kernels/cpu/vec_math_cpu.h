/* Vectorisable elementwise math for the CPU kernels: a blocked loop the compiler vectorises at
 * -O2, exponentials written as polynomials (libm's expf/log1pf are a call per element, which
 * was 10-15% of a training step) and the run-time choice of an x86 instruction set.
 *
 * The functions are static inline and always_inline on purpose (against the usual "no function
 * bodies in headers"): each kernel compiles its loops once per instruction set (VEC_ISA_*
 * below) and the helpers must be compiled inside those copies, for that set, to vectorise.
 *
 * Determinism: C11 mode (-std=c11) turns off contraction of a*b+c, so a vector lane and the
 * scalar tail of VEC_LOOP compute the same IEEE operations and give the same bits; an element's
 * value does not depend on where a thread's range starts, hence not on the thread count, and
 * the three instruction-set copies agree with each other as well.
 * Rejected: intrinsics (three hand-written copies of every loop) and GCC's target_clones (an
 * ifunc resolver, which ThreadSanitizer and musl do not support; see attention_cpu.c). */
#ifndef WEFT_KERNELS_CPU_VEC_MATH_CPU_H
#define WEFT_KERNELS_CPU_VEC_MATH_CPU_H

#include <stdint.h>
#include <string.h>

#define VEC_INLINE static inline __attribute__((always_inline))

/* GCC vectorises a loop at -O2 only when its trip count is a known multiple of the vector width
 * (the "very cheap" cost model), so a plain loop over n stays scalar. VEC_LOOP(i, n, body) runs
 * body for i = 0..n-1 as blocks of VEC_BLOCK iterations with a constant trip count, then a
 * scalar tail; bodies must be independent per i, with restrict pointers (no alias checks). */
#define VEC_BLOCK 16
#define VEC_LOOP(i, n, ...)                                 \
  do {                                                      \
    int64_t i##_0 = 0;                                      \
    for (; i##_0 + VEC_BLOCK <= (n); i##_0 += VEC_BLOCK)    \
      for (int64_t i##_j = 0; i##_j < VEC_BLOCK; i##_j++) { \
        int64_t i = i##_0 + i##_j;                          \
        __VA_ARGS__                                         \
      }                                                     \
    for (int64_t i = i##_0; i < (n); i++) {                 \
      __VA_ARGS__                                           \
    }                                                       \
  } while (0)

/* 1: the kernels are also compiled for x86-64-v3 (AVX2, FMA) and v4 (AVX-512) and picked at run
 * time (vec_isa). Elsewhere (aarch64, clang) only the baseline copy exists. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VEC_X86_VARIANTS 1
#else
#define VEC_X86_VARIANTS 0
#endif

#define VEC_ATTR_AVX2   __attribute__((target("arch=x86-64-v3")))
#define VEC_ATTR_AVX512 __attribute__((target("arch=x86-64-v4")))

typedef enum { VEC_ISA_BASE, VEC_ISA_AVX2, VEC_ISA_AVX512 } vec_isa_t;

/* The widest instruction set this CPU runs (cached by the callers if they care: the check is a
 * few loads once __builtin_cpu_init has run). */
VEC_INLINE vec_isa_t vec_isa(void) {
#if VEC_X86_VARIANTS
  __builtin_cpu_init(); /* idempotent; needed if called before constructors ran */
  if (__builtin_cpu_supports("x86-64-v4")) return VEC_ISA_AVX512;
  if (__builtin_cpu_supports("x86-64-v3")) return VEC_ISA_AVX2;
#endif
  return VEC_ISA_BASE;
}

/* Defines name_base, name_avx2, name_avx512 (a weft_cpu_range_fn each) around the always_inline
 * body(arg, begin, end), and name_pick() returning the one for this CPU. */
#if VEC_X86_VARIANTS
#define VEC_RANGE_VARIANTS(name, body)                                                \
  static void name##_base(const void *arg, int64_t b, int64_t e) { body(arg, b, e); } \
  VEC_ATTR_AVX2 static void name##_avx2(const void *arg, int64_t b, int64_t e) {      \
    body(arg, b, e);                                                                  \
  }                                                                                   \
  VEC_ATTR_AVX512 static void name##_avx512(const void *arg, int64_t b, int64_t e) {  \
    body(arg, b, e);                                                                  \
  }                                                                                   \
  static weft_cpu_range_fn name##_pick(void) {                                        \
    vec_isa_t isa = vec_isa();                                                        \
    return isa == VEC_ISA_AVX512 ? name##_avx512                                      \
           : isa == VEC_ISA_AVX2 ? name##_avx2                                        \
                                 : name##_base;                                       \
  }
#else
#define VEC_RANGE_VARIANTS(name, body)                                                \
  static void name##_base(const void *arg, int64_t b, int64_t e) { body(arg, b, e); } \
  static weft_cpu_range_fn name##_pick(void) { return name##_base; }
#endif

/* e^x in f32 for x in [VEC_EXPF_MIN, VEC_EXPF_MAX] (callers clamp; the result is then a normal
 * float or just below FLT_MIN): x = n ln2 + r with n the nearest integer to x log2(e), ln2 split
 * in two (Cody-Waite) so that r is exact to f32, |r| <= ln2/2; e^r by Cephes' degree-7 minimax
 * polynomial (about 1 ulp without FMA); 2^n put into the exponent bits. Adding 1.5 * 2^23
 * rounds x log2(e) to an integer held in the low mantissa bits, so no float-to-int conversion
 * (which would not vectorise in the baseline ISA) is needed. */
#define VEC_EXPF_MIN -87.0f /* e^-87 = 1.6e-38 > FLT_MIN: 2^n stays a normal number */
#define VEC_EXPF_MAX 88.0f  /* e^88 = 1.65e38 < FLT_MAX */
VEC_INLINE float vec_expf(float x) {
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  float t = x * 1.44269504088896341f + magic, n = t - magic;
  float r = x - n * 0.693359375f; /* ln2's first 9 bits: n * it is exact */
  r = r - n * -2.12194440e-4f;    /* the rest of ln2 */
  uint32_t tb;
  memcpy(&tb, &t, sizeof tb);
  uint32_t eb = (tb - 0x4B400000u + 127u) << 23; /* biased exponent of 2^n */
  float pow2n;
  memcpy(&pow2n, &eb, sizeof pow2n);
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r;
  return (p + 1.0f) * pow2n;
}

/* x clamped to [lo, hi]; NaN stays NaN. isless/isgreater are quiet comparisons, which GCC
 * if-converts into vector blends under -ftrapping-math (ordinary < does not). */
VEC_INLINE float vec_clampf(float x, float lo, float hi) {
  x = __builtin_isless(x, lo) ? lo : x;
  return __builtin_isgreater(x, hi) ? hi : x;
}

VEC_INLINE double vec_clamp(double x, double lo, double hi) {
  x = __builtin_isless(x, lo) ? lo : x;
  return __builtin_isgreater(x, hi) ? hi : x;
}

/* e^x in double for |x| <= 700 (callers clamp; NaN stays NaN), relative error below 1e-11: the
 * same reduction as vec_expf with 1.5 * 2^52, e^f by its Taylor polynomial of degree 9
 * (remainder (ln2/2)^10/10! < 1e-11). Rounded to f32 it is as good as a correctly rounded expf
 * up to 1e-4 ulp. Libm's exp was a call per element: a quarter of the linear-attention kernels'
 * time before they used this. */
VEC_INLINE double vec_exp(double x) {
  const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
  double t = x * 1.4426950408889634 + magic, n = t - magic;
  double f = x - n * 0.6931471805599453;
  uint64_t tb;
  memcpy(&tb, &t, sizeof tb);
  uint64_t eb = (tb - 0x4338000000000000u + 1023u) << 52; /* biased exponent of 2^n */
  double pow2n;
  memcpy(&pow2n, &eb, sizeof pow2n);
  double p = 1.0 / 362880.0;
  p = p * f + 1.0 / 40320.0;
  p = p * f + 1.0 / 5040.0;
  p = p * f + 1.0 / 720.0;
  p = p * f + 1.0 / 120.0;
  p = p * f + 1.0 / 24.0;
  p = p * f + 1.0 / 6.0;
  p = p * f + 0.5;
  p = p * f + 1.0;
  p = p * f + 1.0;
  return p * pow2n;
}

/* log(1 + e) in double for e in [0, 1], relative error below 1e-10: with s = e / (2 + e) in
 * (0, 1/3], log(1 + e) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), summed to s^19 (the rest is
 * below (1/9)^10 / 21 < 2e-11 relative). Needs no exponent split: e is bounded. */
VEC_INLINE double vec_log1p_unit(double e) {
  double s = e / (2.0 + e), s2 = s * s;
  double p = 1.0 / 19.0;
  p = p * s2 + 1.0 / 17.0;
  p = p * s2 + 1.0 / 15.0;
  p = p * s2 + 1.0 / 13.0;
  p = p * s2 + 1.0 / 11.0;
  p = p * s2 + 1.0 / 9.0;
  p = p * s2 + 1.0 / 7.0;
  p = p * s2 + 1.0 / 5.0;
  p = p * s2 + 1.0 / 3.0;
  p = p * s2 + 1.0;
  return 2.0 * s * p;
}

#endif /* WEFT_KERNELS_CPU_VEC_MATH_CPU_H */
