/* CUDA half of the device layer: thin wrappers that translate cudaError_t into weft statuses.
 * Plain C against the CUDA runtime API; no kernels here (those live in kernels/cuda). */
#include <cuda_runtime.h>
#include <stdio.h>

#include "device_internal.h"
#include "weft/check.h"

int weft_cuda_count(void) {
  int count = 0;
  /* No driver or no visible GPU is not an error: the rank uses its CPU device. */
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

weft_status_t weft_cuda_open(int ordinal, weft_device_t *device) {
  WEFT_CUDA_CHECK(cudaSetDevice(ordinal));
  struct cudaDeviceProp prop;
  WEFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
  snprintf(device->name, sizeof device->name, "%.*s", (int)sizeof device->name - 1, prop.name);
  snprintf(device->bus_id, sizeof device->bus_id, "%04x:%02x:%02x.0", prop.pciDomainID,
           prop.pciBusID, prop.pciDeviceID);
  device->memory_bytes = prop.totalGlobalMem;
  return WEFT_OK;
}

weft_status_t weft_cuda_alloc(size_t bytes, void **ptr_p) {
  cudaError_t rc = cudaMalloc(ptr_p, bytes);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    WEFT_ERROR("device", "cudaMalloc of %zu bytes failed: %s", bytes, cudaGetErrorString(rc));
    return WEFT_ERR_NO_MEMORY;
  }
  return WEFT_OK;
}

void weft_cuda_free(void *ptr) { (void)cudaFree(ptr); }

weft_status_t weft_cuda_host_alloc(size_t bytes, void **ptr_p) {
  cudaError_t rc = cudaMallocHost(ptr_p, bytes);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    WEFT_ERROR("device", "cudaMallocHost of %zu bytes failed: %s", bytes, cudaGetErrorString(rc));
    return WEFT_ERR_NO_MEMORY;
  }
  return WEFT_OK;
}

void weft_cuda_host_free(void *ptr) { (void)cudaFreeHost(ptr); }

weft_status_t weft_cuda_memset(void *ptr, int value, size_t bytes) {
  WEFT_CUDA_CHECK(cudaMemset(ptr, value, bytes));
  return WEFT_OK;
}

static enum cudaMemcpyKind cuda_copy_kind(weft_copy_kind_t kind) {
  switch (kind) {
  case WEFT_COPY_HOST_TO_HOST: return cudaMemcpyHostToHost;
  case WEFT_COPY_HOST_TO_DEVICE: return cudaMemcpyHostToDevice;
  case WEFT_COPY_DEVICE_TO_HOST: return cudaMemcpyDeviceToHost;
  case WEFT_COPY_DEVICE_TO_DEVICE: return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

weft_status_t weft_cuda_copy(void *dst, const void *src, size_t bytes, weft_copy_kind_t kind,
                             void *stream, int async) {
  if (async)
    WEFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cuda_copy_kind(kind), (cudaStream_t)stream));
  else
    WEFT_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cuda_copy_kind(kind)));
  return WEFT_OK;
}

weft_status_t weft_cuda_copy_2d(void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                                size_t width, size_t rows, weft_copy_kind_t kind, void *stream) {
  WEFT_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows,
                                    cuda_copy_kind(kind), (cudaStream_t)stream));
  return WEFT_OK;
}

weft_status_t weft_cuda_synchronize(void) {
  WEFT_CUDA_CHECK(cudaDeviceSynchronize());
  return WEFT_OK;
}

weft_status_t weft_cuda_stream_create(void **native_p) {
  cudaStream_t stream;
  WEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  *native_p = stream;
  return WEFT_OK;
}

void weft_cuda_stream_destroy(void *native) { (void)cudaStreamDestroy((cudaStream_t)native); }

weft_status_t weft_cuda_stream_synchronize(void *native) {
  WEFT_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)native));
  return WEFT_OK;
}

weft_status_t weft_cuda_stream_query(void *native, bool *done_p) {
  cudaError_t rc = cudaStreamQuery((cudaStream_t)native);
  if (rc == cudaErrorNotReady) {
    *done_p = false;
    return WEFT_OK;
  }
  WEFT_CUDA_CHECK(rc);
  *done_p = true;
  return WEFT_OK;
}

weft_status_t weft_cuda_event_create(void **native_p) {
  cudaEvent_t event;
  WEFT_CUDA_CHECK(cudaEventCreate(&event));
  *native_p = event;
  return WEFT_OK;
}

void weft_cuda_event_destroy(void *native) { (void)cudaEventDestroy((cudaEvent_t)native); }

weft_status_t weft_cuda_event_record(void *event, void *stream) {
  WEFT_CUDA_CHECK(cudaEventRecord((cudaEvent_t)event, (cudaStream_t)stream));
  return WEFT_OK;
}

weft_status_t weft_cuda_event_synchronize(void *event) {
  WEFT_CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)event));
  return WEFT_OK;
}

weft_status_t weft_cuda_stream_wait_event(void *stream, void *event) {
  WEFT_CUDA_CHECK(cudaStreamWaitEvent((cudaStream_t)stream, (cudaEvent_t)event, 0));
  return WEFT_OK;
}

weft_status_t weft_cuda_event_elapsed_ms(void *start, void *end, float *ms_p) {
  WEFT_CUDA_CHECK(cudaEventElapsedTime(ms_p, (cudaEvent_t)start, (cudaEvent_t)end));
  return WEFT_OK;
}
