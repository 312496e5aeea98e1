/* Tensor descriptors and dtypes. */
#include <stdio.h>
#include <string.h>

#include "weft/log.h"
#include "weft/tensor.h"

static const struct {
  const char *name;
  size_t size;
} k_dtypes[] = {
    [WEFT_DTYPE_F32] = {"f32", 4}, [WEFT_DTYPE_BF16] = {"bf16", 2}, [WEFT_DTYPE_F16] = {"f16", 2},
    [WEFT_DTYPE_I32] = {"i32", 4}, [WEFT_DTYPE_I64] = {"i64", 8},
};
#define WEFT_DTYPE_COUNT (int)(sizeof k_dtypes / sizeof k_dtypes[0])

static bool dtype_valid(weft_dtype_t dtype) {
  return (int)dtype >= 0 && (int)dtype < WEFT_DTYPE_COUNT;
}

size_t weft_dtype_size(weft_dtype_t dtype) { return dtype_valid(dtype) ? k_dtypes[dtype].size : 0; }

const char *weft_dtype_name(weft_dtype_t dtype) {
  return dtype_valid(dtype) ? k_dtypes[dtype].name : "invalid";
}

weft_status_t weft_dtype_parse(const char *text, weft_dtype_t *dtype_p) {
  for (int i = 0; i < WEFT_DTYPE_COUNT; i++) {
    if (text && strcmp(text, k_dtypes[i].name) == 0) {
      *dtype_p = (weft_dtype_t)i;
      return WEFT_OK;
    }
  }
  WEFT_ERROR("tensor", "unknown dtype '%s' (expected f32, bf16, f16, i32 or i64)",
             text ? text : "(null)");
  return WEFT_ERR_INVALID_ARG;
}

weft_status_t weft_tensor_init(weft_tensor_t *tensor, const char *name, weft_dtype_t dtype,
                               int ndim, const int64_t *shape, const weft_device_t *device,
                               void *data) {
  if (!dtype_valid(dtype) || ndim < 0 || ndim > WEFT_TENSOR_MAX_DIMS) {
    WEFT_ERROR("tensor", "tensor '%s': invalid dtype %d or ndim %d (max %d)", name ? name : "",
               (int)dtype, ndim, WEFT_TENSOR_MAX_DIMS);
    return WEFT_ERR_INVALID_ARG;
  }
  memset(tensor, 0, sizeof *tensor);
  snprintf(tensor->name, sizeof tensor->name, "%s", name ? name : "");
  tensor->dtype = dtype;
  tensor->ndim = ndim;
  tensor->device = device;
  tensor->data = data;
  for (int i = 0; i < WEFT_TENSOR_MAX_DIMS; i++) tensor->shape[i] = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) {
      WEFT_ERROR("tensor", "tensor '%s': dim %d has negative size %lld", tensor->name, i,
                 (long long)shape[i]);
      return WEFT_ERR_INVALID_ARG;
    }
    tensor->shape[i] = shape[i];
  }
  int64_t stride = (int64_t)weft_dtype_size(dtype);
  for (int i = WEFT_TENSOR_MAX_DIMS - 1; i >= 0; i--) {
    tensor->strides[i] = stride;
    stride *= tensor->shape[i];
  }
  return WEFT_OK;
}

int64_t weft_tensor_numel(const weft_tensor_t *tensor) {
  int64_t n = 1;
  for (int i = 0; i < tensor->ndim; i++) n *= tensor->shape[i];
  return n;
}

size_t weft_tensor_nbytes(const weft_tensor_t *tensor) {
  return (size_t)weft_tensor_numel(tensor) * weft_dtype_size(tensor->dtype);
}

bool weft_tensor_is_contiguous(const weft_tensor_t *tensor) {
  int64_t stride = (int64_t)weft_dtype_size(tensor->dtype);
  for (int i = tensor->ndim - 1; i >= 0; i--) {
    if (tensor->shape[i] != 1 && tensor->strides[i] != stride) return false;
    stride *= tensor->shape[i];
  }
  return true;
}

bool weft_tensor_same_shape(const weft_tensor_t *a, const weft_tensor_t *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

const char *weft_tensor_describe(const weft_tensor_t *tensor, char *buf, size_t size) {
  int len = snprintf(buf, size, "%s %s[", tensor->name, weft_dtype_name(tensor->dtype));
  for (int i = 0; i < tensor->ndim && len >= 0 && (size_t)len < size; i++)
    len +=
        snprintf(buf + len, size - (size_t)len, i ? ",%lld" : "%lld", (long long)tensor->shape[i]);
  if (len >= 0 && (size_t)len < size) snprintf(buf + len, size - (size_t)len, "]");
  return buf;
}
