/* splitmix64 (Steele, Lea, Flood 2014): the one mixing function behind weft's counter-based
 * random numbers (initialisation, the data order, `weft check model`'s batches). A pure
 * function of its input, so every rank computes the same values without communication. */
#ifndef WEFT_RUNTIME_SPLITMIX_H
#define WEFT_RUNTIME_SPLITMIX_H

#include <stdint.h>

static inline uint64_t weft_splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

#endif /* WEFT_RUNTIME_SPLITMIX_H */
