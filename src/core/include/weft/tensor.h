/* Tensor descriptor: dtype, up to 4 dims, byte strides, device, data pointer and a name.
 *
 * A descriptor never owns its data; storage comes from an arena or from the caller, so
 * copying a descriptor is free and no code frees through it. Shapes are int64 because
 * long-context activations pass 2^31 elements. */
#ifndef WEFT_TENSOR_H
#define WEFT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/device.h"
#include "weft/status.h"

#define WEFT_TENSOR_MAX_DIMS 4
#define WEFT_TENSOR_NAME_MAX 64

typedef enum weft_dtype {
  WEFT_DTYPE_F32 = 0,
  WEFT_DTYPE_BF16 = 1,
  WEFT_DTYPE_F16 = 2,
  WEFT_DTYPE_I32 = 3,
  WEFT_DTYPE_I64 = 4,
} weft_dtype_t;

size_t weft_dtype_size(weft_dtype_t dtype);      /* bytes per element */
const char *weft_dtype_name(weft_dtype_t dtype); /* "f32", "bf16", ... */
weft_status_t weft_dtype_parse(const char *text, weft_dtype_t *dtype_p);

typedef struct weft_tensor {
  weft_dtype_t dtype;
  int ndim;
  int64_t shape[WEFT_TENSOR_MAX_DIMS];   /* elements per dim; unused dims are 1 */
  int64_t strides[WEFT_TENSOR_MAX_DIMS]; /* bytes between consecutive indices of each dim */
  const weft_device_t *device;           /* where data lives; NULL means host memory */
  void *data;
  char name[WEFT_TENSOR_NAME_MAX];
} weft_tensor_t;

/* Fills a contiguous row-major descriptor. ndim in 0..4 (0 = scalar); shape entries >= 0. */
weft_status_t weft_tensor_init(weft_tensor_t *tensor, const char *name, weft_dtype_t dtype,
                               int ndim, const int64_t *shape, const weft_device_t *device,
                               void *data);
int64_t weft_tensor_numel(const weft_tensor_t *tensor);
size_t weft_tensor_nbytes(const weft_tensor_t *tensor); /* numel * dtype size */
bool weft_tensor_is_contiguous(const weft_tensor_t *tensor);
bool weft_tensor_same_shape(const weft_tensor_t *a, const weft_tensor_t *b);
/* Formats "name f32[2,3,4]" into buf; returns buf. */
const char *weft_tensor_describe(const weft_tensor_t *tensor, char *buf, size_t size);

#endif /* WEFT_TENSOR_H */
