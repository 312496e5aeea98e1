/* Benchmark helpers (see bench_util.h): choice parsing, bandwidth arithmetic, the local copy
 * ceiling, benchmark buffers in host or device memory, and self-computable check data. */
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft/bf16.h"
#include "weft/check.h"
#include "weft/timer.h"

weft_status_t weft_bench_parse_choice(const char *text, const char *const *names, int count,
                                      int *index_p) {
  for (int i = 0; i < count; i++) {
    if (text && strcmp(text, names[i]) == 0) {
      *index_p = i;
      return WEFT_OK;
    }
  }
  return WEFT_ERR_INVALID_ARG;
}

weft_status_t weft_bench_parse_list(const char *text, const char *const *names, int count,
                                    uint32_t *mask_p, const char **bad_p, int *bad_len_p) {
  uint32_t mask = 0;
  const char *item = text;
  for (;;) {
    size_t len = strcspn(item, ",");
    int found = -1;
    for (int i = 0; i < count && found < 0; i++)
      if (len > 0 && strlen(names[i]) == len && strncmp(item, names[i], len) == 0) found = i;
    if (found < 0) {
      *bad_p = item;
      *bad_len_p = (int)len;
      return WEFT_ERR_INVALID_ARG;
    }
    mask |= 1u << found;
    if (item[len] == '\0') break;
    item += len + 1;
  }
  *mask_p = mask;
  return WEFT_OK;
}

double weft_bench_gbps(double bytes, double seconds) {
  return seconds > 0 ? bytes / seconds / 1e9 : 0.0;
}

const char *weft_bench_format_bytes(size_t bytes, char *buf, size_t size) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  size_t value = bytes;
  int unit = 0;
  while (value >= 1024 && value % 1024 == 0 && unit < 4) {
    value /= 1024;
    unit++;
  }
  snprintf(buf, size, "%zu %s", value, units[unit]);
  return buf;
}

weft_status_t weft_bench_copy_seconds(const weft_device_t *device, void *dst, const void *src,
                                      size_t bytes, int iters, double *seconds_p) {
  double t0 = 0;
  for (int i = -1; i < iters; i++) { /* i = -1: the untimed first copy */
    if (i == 0) t0 = weft_time_now();
    if (device) {
      WEFT_CHECK(weft_device_copy(device, dst, src, bytes, WEFT_COPY_DEVICE_TO_DEVICE));
    } else {
      memcpy(dst, src, bytes);
    }
  }
  if (device) WEFT_CHECK(weft_device_synchronize(device));
  *seconds_p = (weft_time_now() - t0) / (iters > 0 ? iters : 1);
  return WEFT_OK;
}

weft_status_t weft_bench_buffers_init(weft_bench_buffers_t *bufs, const weft_device_t *device,
                                      size_t bytes) {
  memset(bufs, 0, sizeof *bufs);
  bufs->device = device;
  bufs->bytes = (bytes + 4095) / 4096 * 4096; /* aligned_alloc wants a multiple of 4 KiB */
  weft_status_t st = WEFT_OK;
  if (device) {
    st = weft_device_alloc(device, bufs->bytes, &bufs->send);
    if (st == WEFT_OK) st = weft_device_alloc(device, bufs->bytes, &bufs->recv);
    bufs->host = st == WEFT_OK ? aligned_alloc(4096, bufs->bytes) : NULL;
  } else {
    bufs->send = aligned_alloc(4096, bufs->bytes);
    bufs->recv = aligned_alloc(4096, bufs->bytes);
  }
  if (st == WEFT_OK && (!bufs->send || !bufs->recv || (device && !bufs->host))) {
    WEFT_ERROR("bench", "cannot allocate 2 x %zu bytes of %s memory%s", bufs->bytes,
               device ? "device" : "host", device ? " and as much host scratch" : "");
    st = WEFT_ERR_NO_MEMORY;
  }
  if (st != WEFT_OK) weft_bench_buffers_cleanup(bufs);
  return st;
}

void weft_bench_buffers_cleanup(weft_bench_buffers_t *bufs) {
  if (bufs->device) {
    if (bufs->recv) weft_device_free(bufs->device, bufs->recv);
    if (bufs->send) weft_device_free(bufs->device, bufs->send);
  } else {
    free(bufs->recv);
    free(bufs->send);
  }
  free(bufs->host);
  memset(bufs, 0, sizeof *bufs);
}

void *weft_bench_buffers_input(const weft_bench_buffers_t *bufs) {
  return bufs->device ? bufs->host : bufs->send;
}

weft_status_t weft_bench_buffers_upload(const weft_bench_buffers_t *bufs, size_t bytes) {
  if (!bufs->device) return WEFT_OK;
  return weft_device_copy(bufs->device, bufs->send, bufs->host, bytes, WEFT_COPY_HOST_TO_DEVICE);
}

weft_status_t weft_bench_buffers_poison(const weft_bench_buffers_t *bufs, size_t bytes) {
  if (bufs->device) return weft_device_memset(bufs->device, bufs->recv, 0xff, bytes);
  memset(bufs->recv, 0xff, bytes);
  return WEFT_OK;
}

weft_status_t weft_bench_buffers_download(const weft_bench_buffers_t *bufs, size_t bytes,
                                          const void **out_p) {
  *out_p = bufs->device ? bufs->host : bufs->recv;
  if (!bufs->device) return WEFT_OK;
  return weft_device_copy(bufs->device, bufs->host, bufs->recv, bytes, WEFT_COPY_DEVICE_TO_HOST);
}

uint32_t weft_bench_hash(uint32_t a, uint32_t b, uint64_t index) {
  uint32_t h = a * 0x9e3779b1u ^ (b + 0x7f4a7c15u) * 0x85ebca77u ^
               ((uint32_t)index + 0x165667b1u) * 0xc2b2ae3du ^ (uint32_t)(index >> 32);
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

void weft_bench_word_put(void *buf, size_t esize, size_t i, uint32_t word) {
  if (esize == 4)
    ((uint32_t *)buf)[i] = word;
  else
    ((uint16_t *)buf)[i] = (uint16_t)word;
}

uint32_t weft_bench_word_get(const void *buf, size_t esize, size_t i) {
  return esize == 4 ? ((const uint32_t *)buf)[i] : ((const uint16_t *)buf)[i];
}

uint32_t weft_bench_number_word(size_t esize, float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return esize == 4 ? bits : weft_f32_to_bf16(value);
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double weft_bench_median(double *v, long n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
