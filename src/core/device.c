/* Device layer: CPU implementation inline, CUDA calls forwarded to device_cuda.c.
 *
 * The CPU "device" keeps the GPU semantics that callers rely on: memory from
 * weft_device_alloc is only freed by weft_device_free, copies in every direction are memcpy,
 * streams complete work immediately, and events record wall-clock time so timing code is the
 * same on both devices. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device_internal.h"
#include "weft/check.h"
#include "weft/timer.h"

#define WEFT_CPU_ALIGN 256 /* same alignment as cudaMalloc, so layouts match on both devices */

#if !WEFT_HAVE_CUDA
static weft_status_t no_cuda(const char *what) {
  WEFT_ERROR("device",
             "%s needs the CUDA backend, which this build does not have "
             "(reconfigure with -DWEFT_CUDA=ON on a machine with nvcc)",
             what);
  return WEFT_ERR_UNSUPPORTED;
}
#endif

int weft_device_cuda_count(void) {
#if WEFT_HAVE_CUDA
  return weft_cuda_count();
#else
  return 0;
#endif
}

const char *weft_device_kind_name(weft_device_kind_t kind) {
  return kind == WEFT_DEVICE_CUDA ? "cuda" : "cpu";
}

weft_status_t weft_device_kind_parse(const char *text, weft_device_kind_t *kind_p) {
  if (text && strcmp(text, "cpu") == 0) {
    *kind_p = WEFT_DEVICE_CPU;
  } else if (text && strcmp(text, "cuda") == 0) {
    *kind_p = WEFT_DEVICE_CUDA;
  } else {
    WEFT_ERROR("device", "unknown device '%s' (expected cpu or cuda)", text ? text : "(null)");
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

static void cpu_describe(weft_device_t *device) {
  snprintf(device->name, sizeof device->name, "CPU");
  FILE *info = fopen("/proc/cpuinfo", "r");
  if (info) {
    char line[256];
    while (fgets(line, sizeof line, info)) {
      if (strncmp(line, "model name", 10) == 0) {
        const char *value = strchr(line, ':');
        if (value) {
          value += 1 + strspn(value + 1, " \t");
          snprintf(device->name, sizeof device->name, "%.*s", (int)strcspn(value, "\n"), value);
        }
        break;
      }
    }
    fclose(info);
  }
  snprintf(device->bus_id, sizeof device->bus_id, "-");
  long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
  device->memory_bytes = (pages > 0 && page_size > 0) ? (size_t)pages * (size_t)page_size : 0;
}

weft_status_t weft_device_open(weft_device_kind_t kind, int ordinal, weft_device_t **device_p) {
  weft_device_t *device = calloc(1, sizeof *device);
  if (!device) return WEFT_ERR_NO_MEMORY;
  device->kind = kind;
  device->ordinal = ordinal;
  weft_status_t st = WEFT_OK;
  if (kind == WEFT_DEVICE_CPU) {
    if (ordinal != 0) {
      WEFT_ERROR("device", "the CPU device has ordinal 0, not %d", ordinal);
      st = WEFT_ERR_INVALID_ARG;
    } else {
      cpu_describe(device);
    }
  } else {
#if WEFT_HAVE_CUDA
    int count = weft_cuda_count();
    if (ordinal < 0 || ordinal >= count) {
      WEFT_ERROR("device", "CUDA device %d requested but %d visible", ordinal, count);
      st = count == 0 ? WEFT_ERR_UNSUPPORTED : WEFT_ERR_INVALID_ARG;
    } else {
      st = weft_cuda_open(ordinal, device);
    }
#else
    st = no_cuda("opening a CUDA device");
#endif
  }
  if (st != WEFT_OK) {
    free(device);
    return st;
  }
  *device_p = device;
  return WEFT_OK;
}

void weft_device_close(weft_device_t *device) { free(device); }

weft_status_t weft_device_alloc(const weft_device_t *device, size_t bytes, void **ptr_p) {
  if (device->kind == WEFT_DEVICE_CUDA) {
#if WEFT_HAVE_CUDA
    return weft_cuda_alloc(bytes, ptr_p);
#else
    return no_cuda("device allocation");
#endif
  }
  size_t rounded = (bytes + WEFT_CPU_ALIGN - 1) / WEFT_CPU_ALIGN * WEFT_CPU_ALIGN;
  *ptr_p = aligned_alloc(WEFT_CPU_ALIGN, rounded ? rounded : WEFT_CPU_ALIGN);
  if (!*ptr_p) {
    WEFT_ERROR("device", "cannot allocate %zu bytes of CPU device memory", bytes);
    return WEFT_ERR_NO_MEMORY;
  }
  return WEFT_OK;
}

void weft_device_free(const weft_device_t *device, void *ptr) {
  if (!ptr) return;
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) {
    weft_cuda_free(ptr);
    return;
  }
#endif
  (void)device;
  free(ptr);
}

weft_status_t weft_host_alloc_pinned(const weft_device_t *device, size_t bytes, void **ptr_p) {
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) return weft_cuda_host_alloc(bytes, ptr_p);
#endif
  return weft_device_alloc(device, bytes, ptr_p); /* CPU: device memory is host memory */
}

void weft_host_free_pinned(const weft_device_t *device, void *ptr) {
  if (!ptr) return;
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) {
    weft_cuda_host_free(ptr);
    return;
  }
#endif
  weft_device_free(device, ptr);
}

weft_status_t weft_device_memset(const weft_device_t *device, void *ptr, int value, size_t bytes) {
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) return weft_cuda_memset(ptr, value, bytes);
#endif
  (void)device;
  if (bytes) memset(ptr, value, bytes);
  return WEFT_OK;
}

weft_status_t weft_device_copy(const weft_device_t *device, void *dst, const void *src,
                               size_t bytes, weft_copy_kind_t kind) {
  if (bytes == 0) return WEFT_OK;
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) return weft_cuda_copy(dst, src, bytes, kind, NULL, 0);
#endif
  (void)device;
  (void)kind;
  memmove(dst, src, bytes);
  return WEFT_OK;
}

weft_status_t weft_device_copy_async(const weft_device_t *device, void *dst, const void *src,
                                     size_t bytes, weft_copy_kind_t kind, weft_stream_t *stream) {
  if (bytes == 0) return WEFT_OK;
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA)
    return weft_cuda_copy(dst, src, bytes, kind, stream ? stream->native : NULL, 1);
#endif
  (void)stream;
  return weft_device_copy(device, dst, src, bytes, kind);
}

weft_status_t weft_device_copy_2d_async(const weft_device_t *device, void *dst, size_t dst_pitch,
                                        const void *src, size_t src_pitch, size_t width,
                                        size_t rows, weft_copy_kind_t kind, weft_stream_t *stream) {
  if (width == 0 || rows == 0) return WEFT_OK;
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA)
    return weft_cuda_copy_2d(dst, dst_pitch, src, src_pitch, width, rows, kind,
                             stream ? stream->native : NULL);
#endif
  (void)device;
  (void)kind;
  (void)stream;
  if (width == dst_pitch && width == src_pitch) {
    memcpy(dst, src, width * rows);
    return WEFT_OK;
  }
  for (size_t i = 0; i < rows; i++)
    memcpy((char *)dst + i * dst_pitch, (const char *)src + i * src_pitch, width);
  return WEFT_OK;
}

weft_status_t weft_device_synchronize(const weft_device_t *device) {
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) return weft_cuda_synchronize();
#endif
  (void)device;
  return WEFT_OK;
}

weft_status_t weft_stream_create(const weft_device_t *device, weft_stream_t **stream_p) {
  weft_stream_t *stream = calloc(1, sizeof *stream);
  if (!stream) return WEFT_ERR_NO_MEMORY;
  stream->device = device;
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) {
    weft_status_t st = weft_cuda_stream_create(&stream->native);
    if (st != WEFT_OK) {
      free(stream);
      return st;
    }
  }
#endif
  *stream_p = stream;
  return WEFT_OK;
}

void weft_stream_destroy(weft_stream_t *stream) {
  if (!stream) return;
#if WEFT_HAVE_CUDA
  if (stream->native) weft_cuda_stream_destroy(stream->native);
#endif
  free(stream);
}

weft_status_t weft_stream_synchronize(weft_stream_t *stream) {
#if WEFT_HAVE_CUDA
  if (stream->native) return weft_cuda_stream_synchronize(stream->native);
#endif
  (void)stream;
  return WEFT_OK;
}

weft_status_t weft_stream_query(weft_stream_t *stream, bool *done_p) {
#if WEFT_HAVE_CUDA
  if (stream->native) return weft_cuda_stream_query(stream->native, done_p);
#endif
  (void)stream;
  *done_p = true;
  return WEFT_OK;
}

void *weft_stream_native(weft_stream_t *stream) { return stream ? stream->native : NULL; }

weft_status_t weft_event_create(const weft_device_t *device, weft_event_t **event_p) {
  weft_event_t *event = calloc(1, sizeof *event);
  if (!event) return WEFT_ERR_NO_MEMORY;
  event->device = device;
#if WEFT_HAVE_CUDA
  if (device->kind == WEFT_DEVICE_CUDA) {
    weft_status_t st = weft_cuda_event_create(&event->native);
    if (st != WEFT_OK) {
      free(event);
      return st;
    }
  }
#endif
  *event_p = event;
  return WEFT_OK;
}

void weft_event_destroy(weft_event_t *event) {
  if (!event) return;
#if WEFT_HAVE_CUDA
  if (event->native) weft_cuda_event_destroy(event->native);
#endif
  free(event);
}

weft_status_t weft_event_record(weft_event_t *event, weft_stream_t *stream) {
#if WEFT_HAVE_CUDA
  if (event->native) return weft_cuda_event_record(event->native, stream ? stream->native : NULL);
#endif
  (void)stream;
  event->cpu_time = weft_time_now();
  return WEFT_OK;
}

weft_status_t weft_event_synchronize(weft_event_t *event) {
#if WEFT_HAVE_CUDA
  if (event->native) return weft_cuda_event_synchronize(event->native);
#endif
  (void)event;
  return WEFT_OK;
}

weft_status_t weft_stream_wait_event(weft_stream_t *stream, weft_event_t *event) {
#if WEFT_HAVE_CUDA
  if (stream->native && event->native)
    return weft_cuda_stream_wait_event(stream->native, event->native);
#endif
  (void)stream;
  (void)event;
  return WEFT_OK;
}

weft_status_t weft_event_elapsed_ms(weft_event_t *start, weft_event_t *end, float *ms_p) {
#if WEFT_HAVE_CUDA
  if (start->native && end->native)
    return weft_cuda_event_elapsed_ms(start->native, end->native, ms_p);
#endif
  *ms_p = (float)((end->cpu_time - start->cpu_time) * 1e3);
  return WEFT_OK;
}
