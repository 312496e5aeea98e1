/* Process mesh: resolves dp x sp (x ep, ulysses x ring) and builds the sub-communicators.
 * The layout is documented in weft/mesh.h; every group comes from one MPI_Comm_split of the
 * world, with the group's own coordinate as the key so ranks are ordered inside it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft/check.h"
#include "weft/mesh.h"

static weft_status_t mesh_reject(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static weft_status_t mesh_reject(char *err, size_t err_size, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (err && err_size > 0) snprintf(err, err_size, "%s", msg);
  WEFT_DEBUG("mesh", "%s", msg);
  return WEFT_ERR_INVALID_ARG;
}

weft_status_t weft_mesh_shape_resolve(weft_mesh_shape_t *shape, int world_size, char *err,
                                      size_t err_size) {
  if (world_size < 1) return mesh_reject(err, err_size, "world size %d must be >= 1", world_size);
  if (shape->dp < 0 || shape->sp < 0 || shape->ep < 0 || shape->ulysses < 0)
    return mesh_reject(err, err_size, "mesh degrees must be >= 0 (dp=%d sp=%d ep=%d ulysses=%d)",
                       shape->dp, shape->sp, shape->ep, shape->ulysses);
  if (shape->dp == 0 && shape->sp == 0) shape->sp = 1;
  if (shape->dp == 0) {
    if (world_size % shape->sp != 0)
      return mesh_reject(err, err_size, "sp=%d does not divide the world size %d", shape->sp,
                         world_size);
    shape->dp = world_size / shape->sp;
  } else if (shape->sp == 0) {
    if (world_size % shape->dp != 0)
      return mesh_reject(err, err_size, "dp=%d does not divide the world size %d", shape->dp,
                         world_size);
    shape->sp = world_size / shape->dp;
  }
  /* In long long: dp * sp of two large degrees would overflow int (undefined behaviour). */
  if ((long long)shape->dp * shape->sp != world_size)
    return mesh_reject(err, err_size, "dp=%d x sp=%d does not equal the world size %d", shape->dp,
                       shape->sp, world_size);
  if (shape->ep == 0) shape->ep = 1;
  if (world_size % shape->ep != 0)
    return mesh_reject(err, err_size, "ep=%d does not divide the world size %d", shape->ep,
                       world_size);
  if (shape->ulysses == 0) shape->ulysses = 1;
  if (shape->sp % shape->ulysses != 0)
    return mesh_reject(err, err_size, "ulysses=%d does not divide sp=%d", shape->ulysses,
                       shape->sp);
  return WEFT_OK;
}

const char *weft_mesh_describe(const weft_mesh_shape_t *shape, char *buf, size_t size) {
  snprintf(buf, size, "dp=%d sp=%d (ulysses=%d x ring=%d) ep=%d", shape->dp, shape->sp,
           shape->ulysses, shape->ulysses > 0 ? shape->sp / shape->ulysses : 0, shape->ep);
  return buf;
}

weft_status_t weft_mesh_create(weft_comm_t *world, weft_mesh_shape_t shape, weft_mesh_t **mesh_p) {
  char err[256];
  int size = weft_comm_size(world);
  if (weft_mesh_shape_resolve(&shape, size, err, sizeof err) != WEFT_OK) {
    WEFT_ERROR("mesh", "invalid mesh: %s", err);
    return WEFT_ERR_INVALID_ARG;
  }
  weft_mesh_t *mesh = calloc(1, sizeof *mesh);
  if (!mesh) return WEFT_ERR_NO_MEMORY;
  mesh->shape = shape;
  mesh->ring = shape.sp / shape.ulysses;
  mesh->world = world;
  int r = weft_comm_rank(world);
  mesh->world_rank = r;
  mesh->dp_index = r / shape.sp;
  mesh->sp_index = r % shape.sp;
  mesh->ulysses_index = mesh->sp_index % shape.ulysses;
  mesh->ring_index = mesh->sp_index / shape.ulysses;
  mesh->ep_index = r % shape.ep;
  int ep_group = r / shape.ep;
  /* Colors make every group distinct across the world (the sp-block number is the color of
   * the ulysses and ring groups' parent, folded into their color). */
  weft_status_t st;
  WEFT_CHECK_GOTO(weft_comm_split(world, mesh->sp_index, mesh->dp_index, "dp", &mesh->dp), st,
                  fail);
  WEFT_CHECK_GOTO(weft_comm_split(world, mesh->dp_index, mesh->sp_index, "sp", &mesh->sp), st,
                  fail);
  WEFT_CHECK_GOTO(weft_comm_split(world, ep_group, mesh->ep_index, "ep", &mesh->ep), st, fail);
  WEFT_CHECK_GOTO(weft_comm_split(world, mesh->ep_index, ep_group, "ep_replica", &mesh->ep_replica),
                  st, fail);
  WEFT_CHECK_GOTO(weft_comm_split(world, mesh->dp_index * mesh->ring + mesh->ring_index,
                                  mesh->ulysses_index, "ulysses", &mesh->ulysses),
                  st, fail);
  WEFT_CHECK_GOTO(weft_comm_split(world, mesh->dp_index * shape.ulysses + mesh->ulysses_index,
                                  mesh->ring_index, "ring", &mesh->ring_comm),
                  st, fail);
  *mesh_p = mesh;
  return WEFT_OK;
fail:
  weft_mesh_destroy(mesh);
  return st;
}

void weft_mesh_destroy(weft_mesh_t *mesh) {
  if (!mesh) return;
  weft_comm_destroy(mesh->ring_comm);
  weft_comm_destroy(mesh->ulysses);
  weft_comm_destroy(mesh->ep_replica);
  weft_comm_destroy(mesh->ep);
  weft_comm_destroy(mesh->sp);
  weft_comm_destroy(mesh->dp);
  free(mesh);
}
