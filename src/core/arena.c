/* Bump-pointer arena over one device (or host) allocation. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "weft/arena.h"
#include "weft/check.h"

#define WEFT_ARENA_DEFAULT_ALIGN 256 /* CUDA allocation alignment; also a cache-line multiple */

struct weft_arena {
  char name[64];
  const weft_device_t *device; /* NULL: host memory from malloc */
  char *base;
  size_t capacity;
  size_t offset;
  size_t peak;
};

weft_status_t weft_arena_create(const char *name, const weft_device_t *device, size_t capacity,
                                weft_arena_t **arena_p) {
  weft_arena_t *arena = calloc(1, sizeof *arena);
  if (!arena) return WEFT_ERR_NO_MEMORY;
  snprintf(arena->name, sizeof arena->name, "%s", name ? name : "arena");
  arena->device = device;
  arena->capacity = capacity;
  weft_status_t st = WEFT_OK;
  if (capacity > 0) {
    if (device) {
      st = weft_device_alloc(device, capacity, (void **)&arena->base);
    } else if (posix_memalign((void **)&arena->base, WEFT_ARENA_DEFAULT_ALIGN, capacity) != 0) {
      WEFT_ERROR("arena", "arena '%s': cannot allocate %zu bytes of host memory", arena->name,
                 capacity);
      st = WEFT_ERR_NO_MEMORY;
    }
  }
  if (st != WEFT_OK) {
    free(arena);
    return st;
  }
  *arena_p = arena;
  return WEFT_OK;
}

void weft_arena_destroy(weft_arena_t *arena) {
  if (!arena) return;
  if (arena->device)
    weft_device_free(arena->device, arena->base);
  else
    free(arena->base);
  free(arena);
}

weft_status_t weft_arena_alloc(weft_arena_t *arena, size_t bytes, size_t align, void **ptr_p) {
  if (align == 0) align = WEFT_ARENA_DEFAULT_ALIGN;
  if ((align & (align - 1)) != 0) {
    WEFT_ERROR("arena", "arena '%s': alignment %zu is not a power of two", arena->name, align);
    return WEFT_ERR_INVALID_ARG;
  }
  /* Align the address, not just the offset: the base is only 256-aligned. */
  uintptr_t start = ((uintptr_t)arena->base + arena->offset + align - 1) & ~(uintptr_t)(align - 1);
  size_t new_offset = (size_t)(start - (uintptr_t)arena->base) + bytes;
  if (new_offset > arena->capacity || new_offset < arena->offset) {
    WEFT_ERROR("arena", "arena '%s' exhausted: %zu bytes requested, %zu of %zu left", arena->name,
               bytes, arena->capacity - arena->offset, arena->capacity);
    return WEFT_ERR_NO_MEMORY;
  }
  arena->offset = new_offset;
  if (arena->offset > arena->peak) arena->peak = arena->offset;
  *ptr_p = (void *)start;
  return WEFT_OK;
}

weft_status_t weft_arena_alloc_tensor(weft_arena_t *arena, const char *name, weft_dtype_t dtype,
                                      int ndim, const int64_t *shape, weft_tensor_t *tensor) {
  WEFT_CHECK(weft_tensor_init(tensor, name, dtype, ndim, shape, arena->device, NULL));
  return weft_arena_alloc(arena, weft_tensor_nbytes(tensor), 0, &tensor->data);
}

size_t weft_arena_mark(const weft_arena_t *arena) { return arena->offset; }
void weft_arena_rewind(weft_arena_t *arena, size_t mark) {
  if (mark <= arena->offset) arena->offset = mark;
}
void weft_arena_reset(weft_arena_t *arena) { arena->offset = 0; }
size_t weft_arena_used(const weft_arena_t *arena) { return arena->offset; }
size_t weft_arena_capacity(const weft_arena_t *arena) { return arena->capacity; }
size_t weft_arena_peak(const weft_arena_t *arena) { return arena->peak; }
