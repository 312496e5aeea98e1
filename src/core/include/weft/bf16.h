/* bfloat16 <-> float32 scalar conversion, shared by kernels, comm checks and tensor files.
 *
 * bf16 is the top 16 bits of an IEEE f32. Rounding is to nearest, ties to even; NaN stays a
 * (quiet) NaN instead of rounding to infinity. Inline because they sit in inner loops. */
#ifndef WEFT_BF16_H
#define WEFT_BF16_H

#include <stdint.h>
#include <string.h>

typedef uint16_t weft_bf16_t;

static inline weft_bf16_t weft_f32_to_bf16(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) /* NaN: keep the sign, force a quiet mantissa */
    return (weft_bf16_t)((bits >> 16) | 0x0040u);
  uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u); /* ties go to the even result */
  return (weft_bf16_t)((bits + rounding_bias) >> 16);
}

static inline float weft_bf16_to_f32(weft_bf16_t value) {
  uint32_t bits = (uint32_t)value << 16;
  float out;
  memcpy(&out, &bits, sizeof out);
  return out;
}

#endif /* WEFT_BF16_H */
