/* Process mesh: world = dp x sp for tokens, ep folded over the same ranks, and the
 * ulysses x ring split of sp used by the hybrid attention algorithm (design.md section 3).
 *
 * Rank layout, innermost first: world rank r = dp_index * sp + sp_index, and
 * sp_index = ring_index * ulysses + ulysses_index. Ulysses is innermost so its all-to-all
 * stays on a node when ranks are packed by node; sp is inside dp so sequence-parallel
 * traffic (every layer) stays closer than gradient all-reduce (once per step).
 * Expert-parallel groups are blocks of ep consecutive ranks (ep_index = r % ep); the
 * ranks holding the same experts (same ep_index) form the ep_replica group over which
 * expert gradients are all-reduced. */
#ifndef WEFT_MESH_H
#define WEFT_MESH_H

#include <stddef.h>

#include "weft/comm.h"
#include "weft/status.h"

typedef struct weft_mesh_shape {
  int dp;      /* data-parallel degree; 0 = world / sp */
  int sp;      /* sequence-parallel degree; 0 = world / dp (1 when both are 0) */
  int ep;      /* expert-parallel degree, must divide world; 0 = 1 */
  int ulysses; /* Ulysses degree inside sp, must divide sp; 0 = 1 (ring = sp / ulysses) */
} weft_mesh_shape_t;

typedef struct weft_mesh {
  weft_mesh_shape_t shape; /* resolved: no zeros */
  int ring;                /* ring degree: sp / ulysses */
  int world_rank;
  int dp_index, sp_index, ep_index, ulysses_index, ring_index;
  weft_comm_t *world;      /* borrowed */
  weft_comm_t *dp;         /* same sp_index: the ranks holding other sequences */
  weft_comm_t *sp;         /* one sequence's ranks */
  weft_comm_t *ep;         /* one block of ep consecutive ranks */
  weft_comm_t *ep_replica; /* same ep_index */
  weft_comm_t *ulysses;    /* inside sp: same ring_index */
  weft_comm_t *ring_comm;  /* inside sp: same ulysses_index */
} weft_mesh_t;

/* Fills zeros and checks the shape against `world_size`. On failure writes a one-line
 * reason naming the values into `err` (when not NULL) and returns WEFT_ERR_INVALID_ARG.
 * Pure: no MPI, so it can be tested and used before start-up. */
weft_status_t weft_mesh_shape_resolve(weft_mesh_shape_t *shape, int world_size, char *err,
                                      size_t err_size);
/* Resolves the shape and builds every sub-communicator. Collective over `world`. */
weft_status_t weft_mesh_create(weft_comm_t *world, weft_mesh_shape_t shape, weft_mesh_t **mesh_p);
void weft_mesh_destroy(weft_mesh_t *mesh);
/* "dp=2 sp=2 (ulysses=1 x ring=2) ep=4"; returns buf. */
const char *weft_mesh_describe(const weft_mesh_shape_t *shape, char *buf, size_t size);

#endif /* WEFT_MESH_H */
