/* Private to src/core: the stream/event structs and the CUDA half of the device layer.
 * device.c switches on the device kind; device_cuda.c (built only with the CUDA backend)
 * implements the weft_cuda_* functions below. */
#ifndef WEFT_DEVICE_INTERNAL_H
#define WEFT_DEVICE_INTERNAL_H

#include "weft/device.h"

struct weft_stream {
  const weft_device_t *device;
  void *native; /* cudaStream_t; NULL on CPU */
};

struct weft_event {
  const weft_device_t *device;
  void *native;    /* cudaEvent_t; NULL on CPU */
  double cpu_time; /* CPU device: weft_time_now() at record */
};

#if WEFT_HAVE_CUDA
int weft_cuda_count(void);
weft_status_t weft_cuda_open(int ordinal, weft_device_t *device);
weft_status_t weft_cuda_alloc(size_t bytes, void **ptr_p);
void weft_cuda_free(void *ptr);
weft_status_t weft_cuda_host_alloc(size_t bytes, void **ptr_p);
void weft_cuda_host_free(void *ptr);
weft_status_t weft_cuda_memset(void *ptr, int value, size_t bytes);
weft_status_t weft_cuda_copy(void *dst, const void *src, size_t bytes, weft_copy_kind_t kind,
                             void *stream, int async);
weft_status_t weft_cuda_copy_2d(void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                                size_t width, size_t rows, weft_copy_kind_t kind, void *stream);
weft_status_t weft_cuda_synchronize(void);
weft_status_t weft_cuda_stream_create(void **native_p);
void weft_cuda_stream_destroy(void *native);
weft_status_t weft_cuda_stream_synchronize(void *native);
weft_status_t weft_cuda_stream_query(void *native, bool *done_p);
weft_status_t weft_cuda_event_create(void **native_p);
void weft_cuda_event_destroy(void *native);
weft_status_t weft_cuda_event_record(void *event, void *stream);
weft_status_t weft_cuda_event_synchronize(void *event);
weft_status_t weft_cuda_stream_wait_event(void *stream, void *event);
weft_status_t weft_cuda_event_elapsed_ms(void *start, void *end, float *ms_p);
#endif

#endif /* WEFT_DEVICE_INTERNAL_H */
