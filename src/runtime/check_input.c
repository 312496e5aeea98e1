/* Input-file validation shared by the `weft check` drivers (check_input.h). */
#include "check_input.h"

#include <stdarg.h>
#include <stdio.h>

#include "weft/check.h"

void weft_check_input_error(weft_check_input_t *in, const char *fmt, ...) {
  in->error = true;
  if (in->rank != 0) return;
  fprintf(stderr, "%s: %s: ", in->command, in->path);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  fflush(stderr);
}

void weft_check_format_shape(const weft_tensor_file_info_t *info, char *buf, size_t size) {
  size_t used = (size_t)snprintf(buf, size, "[");
  for (int d = 0; d < info->ndim && used < size; d++)
    used += (size_t)snprintf(buf + used, size - used, "%s%lld", d ? "," : "",
                             (long long)info->shape[d]);
  if (used < size) snprintf(buf + used, size - used, "]");
}

weft_status_t weft_check_query(weft_check_input_t *in, weft_tensor_file_t *file, const char *name,
                               int ndim, const char *dims, weft_tensor_file_info_t *info_p) {
  bool exists = false;
  WEFT_CHECK(weft_tensor_file_exists(file, name, &exists));
  if (!exists) {
    weft_check_input_error(in, "dataset '%s' is missing", name);
    return WEFT_OK;
  }
  weft_status_t st = weft_tensor_file_query(file, name, info_p);
  if (st == WEFT_ERR_CORRUPT) { /* an HDF5 type none of weft's dtypes (float64, ...) */
    weft_check_input_error(in, "dataset '%s' has an unsupported element type, expected float32",
                           name);
    return WEFT_OK;
  }
  WEFT_CHECK(st);
  char shape[96];
  weft_check_format_shape(info_p, shape, sizeof shape);
  if (info_p->dtype != WEFT_DTYPE_F32 || info_p->ndim != ndim) {
    weft_check_input_error(in, "dataset '%s' is %s %s, expected a %d-D float32 array %s", name,
                           weft_dtype_name(info_p->dtype), shape, ndim, dims);
    return WEFT_OK;
  }
  for (int d = 0; d < ndim; d++) {
    if (info_p->shape[d] < 1) {
      weft_check_input_error(in, "dataset '%s' has shape %s; every dimension must be at least 1",
                             name, shape);
      return WEFT_OK;
    }
  }
  return WEFT_OK;
}

weft_status_t weft_check_query4(weft_check_input_t *in, weft_tensor_file_t *file, const char *name,
                                const char *dims, weft_tensor_file_info_t *info_p) {
  return weft_check_query(in, file, name, 4, dims, info_p);
}
