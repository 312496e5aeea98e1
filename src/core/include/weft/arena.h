/* Arena allocator: one block of device (or host) memory carved by a bump pointer.
 *
 * Long-lived buffers (weights, workspaces, staging) come from arenas so hot loops never
 * allocate and memory use is known up front (ggml's model). Allocation is O(1); memory is
 * returned all at once by reset or destroy, or back to a mark (stack discipline) for
 * temporary workspaces. Exhaustion is WEFT_ERR_NO_MEMORY naming the arena, the request and
 * the space left, so a user can size it. */
#ifndef WEFT_ARENA_H
#define WEFT_ARENA_H

#include <stddef.h>

#include "weft/device.h"
#include "weft/status.h"
#include "weft/tensor.h"

typedef struct weft_arena weft_arena_t;

/* Allocates `capacity` bytes on `device` (NULL = plain host memory). */
weft_status_t weft_arena_create(const char *name, const weft_device_t *device, size_t capacity,
                                weft_arena_t **arena_p);
void weft_arena_destroy(weft_arena_t *arena);

/* `align` must be a power of two (0 means 256, the CUDA allocation alignment). */
weft_status_t weft_arena_alloc(weft_arena_t *arena, size_t bytes, size_t align, void **ptr_p);
/* Allocates storage for a contiguous tensor and fills its descriptor. */
weft_status_t weft_arena_alloc_tensor(weft_arena_t *arena, const char *name, weft_dtype_t dtype,
                                      int ndim, const int64_t *shape, weft_tensor_t *tensor);

size_t weft_arena_mark(const weft_arena_t *arena); /* current offset, for rewind */
void weft_arena_rewind(weft_arena_t *arena, size_t mark);
void weft_arena_reset(weft_arena_t *arena);
size_t weft_arena_used(const weft_arena_t *arena);
size_t weft_arena_capacity(const weft_arena_t *arena);
size_t weft_arena_peak(const weft_arena_t *arena); /* high-water mark since creation */

#endif /* WEFT_ARENA_H */
