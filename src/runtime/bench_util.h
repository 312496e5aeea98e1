/* Helpers shared by the `weft bench` drivers: flag-value parsing for choice lists, bandwidth
 * arithmetic, and the local copy bandwidth that communication numbers are compared against.
 *
 * Units: bandwidths are in GB/s with 1 GB = 1e9 bytes (as nccl-tests does), times in
 * seconds unless a name says otherwise. */
#ifndef WEFT_BENCH_UTIL_H
#define WEFT_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "weft/device.h"
#include "weft/status.h"

/* Finds `text` in `names` [count]; *index_p is its position. WEFT_ERR_INVALID_ARG when absent
 * (no message: the caller names the flag). */
weft_status_t weft_bench_parse_choice(const char *text, const char *const *names, int count,
                                      int *index_p);
/* Parses a comma-separated subset of `names` (count <= 32) into a bit mask, bit i = names[i].
 * Empty items and unknown names are WEFT_ERR_INVALID_ARG; *bad_p then points at the item
 * (not NUL-terminated; *bad_len_p characters) for the message. */
weft_status_t weft_bench_parse_list(const char *text, const char *const *names, int count,
                                    uint32_t *mask_p, const char **bad_p, int *bad_len_p);

/* Median of v [n >= 1] (sorts v in place). */
double weft_bench_median(double *v, long n);

/* bytes / seconds in GB/s (1e9 bytes per second); 0 when seconds <= 0. */
double weft_bench_gbps(double bytes, double seconds);

/* Formats a byte count as "8 B", "64 KiB", "16 MiB" (exact powers of 1024 only; otherwise the
 * plain number of bytes). Returns buf. */
const char *weft_bench_format_bytes(size_t bytes, char *buf, size_t size);

/* Seconds per copy of `bytes` from src to dst, averaged over `iters` copies after one
 * untimed copy (which faults the pages in). `device` NULL: plain memcpy of host memory;
 * otherwise weft_device_copy device-to-device (then synchronised). */
weft_status_t weft_bench_copy_seconds(const weft_device_t *device, void *dst, const void *src,
                                      size_t bytes, int iters, double *seconds_p);

/* Send and receive buffers of one benchmark, in host or device memory, plus a host scratch
 * buffer (device memory only) through which inputs are written and results read back. */
typedef struct weft_bench_buffers {
  const weft_device_t *device; /* NULL: host memory (send, recv from aligned_alloc) */
  void *send, *recv;           /* [bytes] each */
  void *host;                  /* [bytes] host scratch when device != NULL, else NULL */
  size_t bytes;                /* rounded up to whole 4 KiB pages */
} weft_bench_buffers_t;

/* Allocates the buffers of `bytes` bytes each; device NULL = host memory. Logs the sizes
 * and returns WEFT_ERR_NO_MEMORY when an allocation fails (nothing stays allocated). */
weft_status_t weft_bench_buffers_init(weft_bench_buffers_t *bufs, const weft_device_t *device,
                                      size_t bytes);
void weft_bench_buffers_cleanup(weft_bench_buffers_t *bufs);
/* Where to write send data: the host scratch for device memory, else the send buffer. */
void *weft_bench_buffers_input(const weft_bench_buffers_t *bufs);
/* Copies the first `bytes` of the host scratch to the send buffer (device memory only). */
weft_status_t weft_bench_buffers_upload(const weft_bench_buffers_t *bufs, size_t bytes);
/* Sets the first `bytes` of the receive buffer to all-ones bits (NaN in f32 and bf16). */
weft_status_t weft_bench_buffers_poison(const weft_bench_buffers_t *bufs, size_t bytes);
/* Makes the first `bytes` of the receive buffer readable on the host; *out_p points at them. */
weft_status_t weft_bench_buffers_download(const weft_bench_buffers_t *bufs, size_t bytes,
                                          const void **out_p);

/* Verification data that each rank can compute by itself (nccl-tests' approach). */
/* A well-mixed 32-bit hash of (a, b, index) (murmur3's finaliser on a linear mix). */
uint32_t weft_bench_hash(uint32_t a, uint32_t b, uint64_t index);
/* Element i of a buffer of `esize`-byte elements (2 or 4) as a raw bit pattern. */
void weft_bench_word_put(void *buf, size_t esize, size_t i, uint32_t word);
uint32_t weft_bench_word_get(const void *buf, size_t esize, size_t i);
/* The bit pattern of `value` as f32 (esize 4) or bf16 (esize 2, rounded to nearest even). */
uint32_t weft_bench_number_word(size_t esize, float value);

#endif /* WEFT_BENCH_UTIL_H */
