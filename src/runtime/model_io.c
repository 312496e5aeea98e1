/* Parameters (or gradients) to and from a tensor file: one dataset per parameter under a group,
 * with its GLOBAL shape, written and read collectively. Replicated tensors are written once
 * (rank 0's copy); experts as hyperslabs along dim 0 by the first rank of each set of ranks
 * holding the same experts. So a file written at one mesh is read at any other.
 * This is the parameter part of a checkpoint; optimizer state, data position and the commit
 * protocol belong to the checkpoint format (design.md section 8). */
#include <stdio.h>
#include <stdlib.h>

#include "model_internal.h"
#include "weft/check.h"
#include "weft/log.h"
#include "weft/tensor_file.h"

static weft_status_t host_buffer(const weft_model_t *m, float **host_p) {
  int64_t largest = 1;
  for (int i = 0; i < m->n_params; i++) {
    largest = m->params[i].numel > largest ? m->params[i].numel : largest;
  }
  *host_p = malloc((size_t)largest * sizeof **host_p);
  return *host_p ? WEFT_OK : WEFT_ERR_NO_MEMORY;
}

weft_status_t weft_model_write(weft_model_t *m, weft_tensor_file_t *file, const char *group,
                               bool grads) {
  float *host = NULL;
  WEFT_CHECK(host_buffer(m, &host));
  const bool expert_writer = weft_comm_rank(m->mesh->ep_replica) == 0;
  weft_status_t st = WEFT_OK;
  for (int i = 0; i < m->n_params && st == WEFT_OK; i++) {
    const weft_param_t *p = &m->params[i];
    char path[96];
    snprintf(path, sizeof path, "/%s/%s", group, p->name);
    st = weft_device_copy(m->dev, host, grads ? p->grad : p->data, (size_t)p->numel * sizeof(float),
                          WEFT_COPY_DEVICE_TO_HOST);
    if (st != WEFT_OK) {
      break;
    }
    if (!p->expert) {
      st = weft_tensor_file_write(file, path, WEFT_DTYPE_F32, p->ndim, p->shape, host);
      continue;
    }
    int64_t start[3] = {p->slice_start, 0, 0};
    int64_t count[3] = {expert_writer ? p->local_shape[0] : 0, p->local_shape[1],
                        p->local_shape[2]};
    st = weft_tensor_file_write_slab(file, path, WEFT_DTYPE_F32, p->ndim, p->shape, start, count,
                                     host);
  }
  free(host);
  return st;
}

weft_status_t weft_model_read(weft_model_t *m, weft_tensor_file_t *file, const char *group) {
  float *host = NULL;
  WEFT_CHECK(host_buffer(m, &host));
  weft_status_t st = WEFT_OK;
  for (int i = 0; i < m->n_params && st == WEFT_OK; i++) {
    const weft_param_t *p = &m->params[i];
    char path[96];
    snprintf(path, sizeof path, "/%s/%s", group, p->name);
    const int64_t start[3] = {p->slice_start, 0, 0};
    st = weft_tensor_file_read_slab(file, path, WEFT_DTYPE_F32, p->ndim, p->shape, start,
                                    p->local_shape, host);
    if (st == WEFT_OK) {
      st = weft_device_copy(m->dev, p->data, host, (size_t)p->numel * sizeof(float),
                            WEFT_COPY_HOST_TO_DEVICE);
    }
  }
  free(host);
  return st;
}
