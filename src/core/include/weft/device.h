/* Device abstraction: one interface for the CPU "device" and CUDA GPUs.
 *
 * Every rank owns one device. Code above core never calls the CUDA runtime directly for
 * memory, copies, streams or events; it calls these, so the CPU path has the same semantics
 * and everything can be tested on machines without a GPU. On the CPU device, device memory
 * is host memory, streams execute work immediately (in order, like a stream that is always
 * drained) and events record wall-clock time.
 *
 * Rejected: a vtable per device kind. Two kinds do not justify the indirection; a switch on
 * `kind` in device.c keeps the call path readable. */
#ifndef WEFT_DEVICE_H
#define WEFT_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "weft/status.h"

typedef enum weft_device_kind {
  WEFT_DEVICE_CPU = 0,
  WEFT_DEVICE_CUDA = 1,
} weft_device_kind_t;

typedef struct weft_device {
  weft_device_kind_t kind;
  int ordinal;         /* CUDA device index within CUDA_VISIBLE_DEVICES; 0 on CPU */
  char name[128];      /* "NVIDIA H100 80GB HBM3", or the CPU model name */
  char bus_id[32];     /* PCI bus id of a GPU ("0000:1b:00.0"); "-" on CPU */
  size_t memory_bytes; /* GPU memory, or host RAM for the CPU device */
} weft_device_t;

typedef enum weft_copy_kind {
  WEFT_COPY_HOST_TO_HOST = 0,
  WEFT_COPY_HOST_TO_DEVICE = 1,
  WEFT_COPY_DEVICE_TO_HOST = 2,
  WEFT_COPY_DEVICE_TO_DEVICE = 3,
} weft_copy_kind_t;

typedef struct weft_stream weft_stream_t; /* opaque: cudaStream_t or a CPU placeholder */
typedef struct weft_event weft_event_t;   /* opaque: cudaEvent_t or a CPU timestamp */

/* Number of usable CUDA GPUs: 0 when the build has no CUDA backend, no driver is present, or
 * no GPU is visible (none of these is an error). */
int weft_device_cuda_count(void);

/* Opens a device (CPU: ordinal must be 0). Makes a CUDA device current on this thread. */
weft_status_t weft_device_open(weft_device_kind_t kind, int ordinal, weft_device_t **device_p);
void weft_device_close(weft_device_t *device);
const char *weft_device_kind_name(weft_device_kind_t kind); /* "cpu" | "cuda" */
/* Parses "cpu" or "cuda". */
weft_status_t weft_device_kind_parse(const char *text, weft_device_kind_t *kind_p);

/* Device memory, aligned to at least 256 bytes (the CUDA allocation alignment). */
weft_status_t weft_device_alloc(const weft_device_t *device, size_t bytes, void **ptr_p);
void weft_device_free(const weft_device_t *device, void *ptr);
/* Page-locked host memory for fast and asynchronous transfers (plain aligned memory on CPU). */
weft_status_t weft_host_alloc_pinned(const weft_device_t *device, size_t bytes, void **ptr_p);
void weft_host_free_pinned(const weft_device_t *device, void *ptr);
weft_status_t weft_device_memset(const weft_device_t *device, void *ptr, int value, size_t bytes);

/* Blocking copy of `bytes` bytes. */
weft_status_t weft_device_copy(const weft_device_t *device, void *dst, const void *src,
                               size_t bytes, weft_copy_kind_t kind);
/* Copy ordered on `stream` (NULL = the default stream); returns before it completes on CUDA. */
weft_status_t weft_device_copy_async(const weft_device_t *device, void *dst, const void *src,
                                     size_t bytes, weft_copy_kind_t kind, weft_stream_t *stream);
/* Strided copy ordered on `stream`: `rows` rows of `width` bytes, row i from
 * src + i * src_pitch to dst + i * dst_pitch (cudaMemcpy2DAsync on CUDA, a loop of memcpy on
 * the CPU device). Packs head ranges and sequence slices for communication without a kernel. */
weft_status_t weft_device_copy_2d_async(const weft_device_t *device, void *dst, size_t dst_pitch,
                                        const void *src, size_t src_pitch, size_t width,
                                        size_t rows, weft_copy_kind_t kind, weft_stream_t *stream);
/* Waits until all work on the device is done. */
weft_status_t weft_device_synchronize(const weft_device_t *device);

weft_status_t weft_stream_create(const weft_device_t *device, weft_stream_t **stream_p);
void weft_stream_destroy(weft_stream_t *stream);
weft_status_t weft_stream_synchronize(weft_stream_t *stream);
/* true when all work queued on the stream is done (never blocks). */
weft_status_t weft_stream_query(weft_stream_t *stream, bool *done_p);
/* The native handle (cudaStream_t) for kernels and libraries; NULL on CPU. */
void *weft_stream_native(weft_stream_t *stream);

weft_status_t weft_event_create(const weft_device_t *device, weft_event_t **event_p);
void weft_event_destroy(weft_event_t *event);
weft_status_t weft_event_record(weft_event_t *event, weft_stream_t *stream);
weft_status_t weft_event_synchronize(weft_event_t *event);
/* Makes future work on `stream` wait for `event`. */
weft_status_t weft_stream_wait_event(weft_stream_t *stream, weft_event_t *event);
/* Milliseconds between two recorded events. */
weft_status_t weft_event_elapsed_ms(weft_event_t *start, weft_event_t *end, float *ms_p);

#endif /* WEFT_DEVICE_H */
