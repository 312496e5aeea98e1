/* Process mesh (weft/mesh.h).
 *
 * 1. weft_mesh_shape_resolve, pure: every combination of dp, sp, ep, ulysses in -1..6 for
 *    world sizes 1..4 against an independent statement of the rules (0 means "infer"); every
 *    valid factorisation is accepted and resolved without zeros; every invalid one is refused
 *    with WEFT_ERR_INVALID_ARG. Named invalid cases check that the message names the values
 *    (dp*sp != world, sp or dp not dividing the world, ep not dividing the world, ulysses not
 *    dividing sp, negatives, world < 1, a product that overflows int), and that a short or
 *    NULL message buffer is safe.
 * 2. Under mpirun: weft_mesh_create for every fully specified valid shape of the world size
 *    (and a few with zeros); each of the six sub-communicators is checked for size, rank,
 *    name and membership against the layout of mesh.h (world rank r = dp_index * sp +
 *    sp_index, sp_index = ring_index * ulysses + ulysses_index, ep groups are blocks of ep
 *    consecutive ranks, ep_replica joins the ranks with the same r % ep). Membership is read
 *    both from weft_comm_world_rank_of and from data: an all-gather of world ranks over the
 *    sub-communicator. */
#include <stdio.h>
#include <string.h>

#include "test_util.h"
#include "weft/bootstrap.h"
#include "weft/comm.h"
#include "weft/mesh.h"

#define MAX_WORLD 64

/* ---- 1. shape resolution ---- */

/* The rules of mesh.h restated: returns true and fills `out` when `in` is valid. */
static bool expect_resolve(weft_mesh_shape_t in, int world, weft_mesh_shape_t *out) {
  if (world < 1 || in.dp < 0 || in.sp < 0 || in.ep < 0 || in.ulysses < 0) return false;
  int dp = in.dp, sp = in.sp;
  if (dp == 0 && sp == 0) sp = 1;
  if (dp == 0) {
    if (world % sp) return false;
    dp = world / sp;
  }
  if (sp == 0) {
    if (world % dp) return false;
    sp = world / dp;
  }
  if ((long long)dp * sp != world) return false;
  int ep = in.ep ? in.ep : 1, ulysses = in.ulysses ? in.ulysses : 1;
  if (world % ep || sp % ulysses) return false;
  *out = (weft_mesh_shape_t){dp, sp, ep, ulysses};
  return true;
}

static void check_resolve_all(void) {
  int accepted = 0, refused = 0;
  for (int world = 1; world <= 4; world++) {
    for (int dp = -1; dp <= 6; dp++)
      for (int sp = -1; sp <= 6; sp++)
        for (int ep = -1; ep <= 6; ep++)
          for (int ul = -1; ul <= 6; ul++) {
            weft_mesh_shape_t in = {dp, sp, ep, ul}, got = in, want;
            char err[256] = "";
            weft_status_t st = weft_mesh_shape_resolve(&got, world, err, sizeof err);
            if (expect_resolve(in, world, &want)) {
              accepted++;
              WT_CHECK(st == WEFT_OK, "world %d dp=%d sp=%d ep=%d ulysses=%d refused: %s", world,
                       dp, sp, ep, ul, err);
              WT_CHECK(st != WEFT_OK || (got.dp == want.dp && got.sp == want.sp &&
                                         got.ep == want.ep && got.ulysses == want.ulysses),
                       "world %d dp=%d sp=%d ep=%d ulysses=%d resolved to %d %d %d %d, "
                       "expected %d %d %d %d",
                       world, dp, sp, ep, ul, got.dp, got.sp, got.ep, got.ulysses, want.dp, want.sp,
                       want.ep, want.ulysses);
            } else {
              refused++;
              WT_CHECK(st == WEFT_ERR_INVALID_ARG,
                       "world %d dp=%d sp=%d ep=%d ulysses=%d accepted (%s), should be refused",
                       world, dp, sp, ep, ul, weft_status_str(st));
              WT_CHECK(err[0] != '\0', "world %d dp=%d sp=%d ep=%d ulysses=%d: empty message",
                       world, dp, sp, ep, ul);
            }
          }
  }
  /* Both outcomes must have been exercised plentifully (guards against a broken loop). */
  WT_CHECK(accepted > 100 && refused > 1000, "accepted %d refused %d", accepted, refused);
}

typedef struct bad_shape {
  weft_mesh_shape_t shape;
  int world;
  const char *must_contain[3]; /* substrings the message must have */
} bad_shape_t;

static void check_resolve_messages(void) {
  static const bad_shape_t cases[] = {
      {{3, 2, 0, 0}, 4, {"dp=3", "sp=2", "4"}},                 /* dp * sp != world */
      {{2, 1, 0, 0}, 4, {"dp=2", "sp=1", "4"}},                 /* dp * sp != world */
      {{0, 3, 0, 0}, 4, {"sp=3", "4", NULL}},                   /* sp does not divide world */
      {{3, 0, 0, 0}, 4, {"dp=3", "4", NULL}},                   /* dp does not divide world */
      {{2, 2, 3, 0}, 4, {"ep=3", "4", NULL}},                   /* ep does not divide world */
      {{1, 4, 8, 0}, 4, {"ep=8", "4", NULL}},                   /* ep larger than world */
      {{1, 4, 1, 3}, 4, {"ulysses=3", "sp=4", NULL}},           /* ulysses does not divide sp */
      {{2, 2, 1, 4}, 4, {"ulysses=4", "sp=2", NULL}},           /* ulysses larger than sp */
      {{-1, 4, 0, 0}, 4, {"dp=-1", NULL, NULL}},                /* a negative degree */
      {{1, -2, 0, 0}, 2, {"sp=-2", NULL, NULL}},                /* a negative degree */
      {{1, 2, -3, 0}, 2, {"ep=-3", NULL, NULL}},                /* a negative degree */
      {{1, 2, 1, -4}, 2, {"ulysses=-4", NULL, NULL}},           /* a negative degree */
      {{0, 0, 0, 0}, 0, {"world size 0", NULL, NULL}},          /* no world */
      {{65536, 65536, 0, 0}, 4, {"dp=65536", "sp=65536", "4"}}, /* product overflows int */
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    weft_mesh_shape_t shape = cases[c].shape;
    char err[256] = "";
    WT_CHECK_STATUS(weft_mesh_shape_resolve(&shape, cases[c].world, err, sizeof err),
                    WEFT_ERR_INVALID_ARG);
    for (int k = 0; k < 3 && cases[c].must_contain[k]; k++)
      WT_CHECK(strstr(err, cases[c].must_contain[k]) != NULL,
               "case %zu: message '%s' does not name '%s'", c, err, cases[c].must_contain[k]);
  }
  /* A short buffer is truncated and terminated; no buffer at all is fine. */
  weft_mesh_shape_t shape = {3, 2, 0, 0};
  char small[8];
  memset(small, 'x', sizeof small);
  WT_CHECK_STATUS(weft_mesh_shape_resolve(&shape, 4, small, sizeof small), WEFT_ERR_INVALID_ARG);
  WT_CHECK(memchr(small, '\0', sizeof small) != NULL, "short message buffer not terminated");
  shape = (weft_mesh_shape_t){3, 2, 0, 0};
  WT_CHECK_STATUS(weft_mesh_shape_resolve(&shape, 4, NULL, 0), WEFT_ERR_INVALID_ARG);

  char text[128];
  weft_mesh_shape_t resolved = {2, 2, 4, 1};
  weft_mesh_describe(&resolved, text, sizeof text);
  WT_CHECK(strcmp(text, "dp=2 sp=2 (ulysses=1 x ring=2) ep=4") == 0, "describe: '%s'", text);
}

/* ---- 2. sub-communicators under mpirun ---- */

/* Checks one sub-communicator against the expected members (world ranks in communicator rank
 * order), by accessors and by an all-gather of world ranks. */
static void check_group(weft_comm_t *comm, const char *name, const int *members, int n, int me,
                        const char *shape_text) {
  if (!comm) {
    WT_CHECK(0, "%s: %s communicator missing", shape_text, name);
    return;
  }
  int pos = -1;
  for (int i = 0; i < n; i++)
    if (members[i] == me) pos = i;
  WT_CHECK(strcmp(weft_comm_name(comm), name) == 0, "%s: name '%s', expected '%s'", shape_text,
           weft_comm_name(comm), name);
  WT_CHECK(weft_comm_size(comm) == n && weft_comm_rank(comm) == pos,
           "%s: %s is rank %d of %d, expected %d of %d", shape_text, name, weft_comm_rank(comm),
           weft_comm_size(comm), pos, n);
  if (weft_comm_size(comm) != n) return; /* the all-gather below would not fit */
  int32_t mine = me, all[MAX_WORLD];
  WT_CHECK_OK(weft_comm_allgather(comm, &mine, all, 1, WEFT_DTYPE_I32, WEFT_MEM_HOST));
  for (int i = 0; i < n; i++) {
    WT_CHECK(weft_comm_world_rank_of(comm, i) == members[i],
             "%s: %s rank %d is world rank %d, expected %d", shape_text, name, i,
             weft_comm_world_rank_of(comm, i), members[i]);
    WT_CHECK(all[i] == members[i], "%s: %s all-gather slot %d holds world rank %d, expected %d",
             shape_text, name, i, (int)all[i], members[i]);
  }
}

/* Coordinates of world rank r under a resolved shape, straight from mesh.h. */
typedef struct coords {
  int dp, sp, ulysses, ring, ep, ep_group;
} coords_t;

static coords_t coords_of(const weft_mesh_shape_t *s, int r) {
  coords_t c;
  c.dp = r / s->sp;
  c.sp = r % s->sp;
  c.ulysses = c.sp % s->ulysses;
  c.ring = c.sp / s->ulysses;
  c.ep = r % s->ep;
  c.ep_group = r / s->ep;
  return c;
}

enum { G_DP, G_SP, G_EP, G_EP_REPLICA, G_ULYSSES, G_RING, G_COUNT };

/* true when world rank q is in the same `group` as coordinates `me`. Inside every group the
 * communicator rank grows with the world rank, so members listed in world-rank order are in
 * communicator-rank order. */
static bool same_group(int group, const coords_t *me, const coords_t *q) {
  switch (group) {
  case G_DP: return q->sp == me->sp;
  case G_SP: return q->dp == me->dp;
  case G_EP: return q->ep_group == me->ep_group;
  case G_EP_REPLICA: return q->ep == me->ep;
  case G_ULYSSES: return q->dp == me->dp && q->ring == me->ring;
  case G_RING: return q->dp == me->dp && q->ulysses == me->ulysses;
  }
  return false;
}

static void check_mesh(weft_comm_t *world, weft_mesh_shape_t requested) {
  const int size = weft_comm_size(world), me = weft_comm_rank(world);
  weft_mesh_shape_t s;
  char shape_text[128];
  snprintf(shape_text, sizeof shape_text, "world %d dp=%d sp=%d ep=%d ulysses=%d", size,
           requested.dp, requested.sp, requested.ep, requested.ulysses);
  if (!expect_resolve(requested, size, &s)) {
    WT_CHECK(0, "%s: test bug, shape is invalid", shape_text);
    return;
  }
  weft_mesh_t *mesh = NULL;
  WT_CHECK_OK(weft_mesh_create(world, requested, &mesh));
  if (!mesh) return;
  WT_CHECK(mesh->shape.dp == s.dp && mesh->shape.sp == s.sp && mesh->shape.ep == s.ep &&
               mesh->shape.ulysses == s.ulysses && mesh->ring == s.sp / s.ulysses,
           "%s: resolved to dp=%d sp=%d ep=%d ulysses=%d ring=%d", shape_text, mesh->shape.dp,
           mesh->shape.sp, mesh->shape.ep, mesh->shape.ulysses, mesh->ring);
  coords_t c = coords_of(&s, me);
  WT_CHECK(mesh->world == world && mesh->world_rank == me, "%s: world", shape_text);
  WT_CHECK(mesh->dp_index == c.dp && mesh->sp_index == c.sp && mesh->ep_index == c.ep &&
               mesh->ulysses_index == c.ulysses && mesh->ring_index == c.ring,
           "%s: coordinates dp %d sp %d ep %d ulysses %d ring %d, expected %d %d %d %d %d",
           shape_text, mesh->dp_index, mesh->sp_index, mesh->ep_index, mesh->ulysses_index,
           mesh->ring_index, c.dp, c.sp, c.ep, c.ulysses, c.ring);
  WT_CHECK(c.sp == c.ring * s.ulysses + c.ulysses && me == c.dp * s.sp + c.sp,
           "%s: layout identities", shape_text);

  static const char *const names[G_COUNT] = {"dp", "sp", "ep", "ep_replica", "ulysses", "ring"};
  weft_comm_t *comms[G_COUNT] = {mesh->dp,         mesh->sp,      mesh->ep,
                                 mesh->ep_replica, mesh->ulysses, mesh->ring_comm};
  const int sizes[G_COUNT] = {s.dp, s.sp, s.ep, size / s.ep, s.ulysses, s.sp / s.ulysses};
  for (int g = 0; g < G_COUNT; g++) {
    int members[MAX_WORLD], n = 0;
    for (int q = 0; q < size; q++) {
      coords_t cq = coords_of(&s, q);
      if (same_group(g, &c, &cq)) members[n++] = q;
    }
    WT_CHECK(n == sizes[g], "%s: %s group has %d members by the layout, expected %d", shape_text,
             names[g], n, sizes[g]);
    check_group(comms[g], names[g], members, n, me, shape_text);
  }
  weft_mesh_destroy(mesh);
}

static void check_meshes(weft_comm_t *world) {
  const int size = weft_comm_size(world);
  int created = 0;
  for (int sp = 1; sp <= size; sp++) {
    if (size % sp) continue;
    for (int ep = 1; ep <= size; ep++) {
      if (size % ep) continue;
      for (int ul = 1; ul <= sp; ul++) {
        if (sp % ul) continue;
        check_mesh(world, (weft_mesh_shape_t){size / sp, sp, ep, ul});
        created++;
      }
    }
  }
  /* Zeros: inferred degrees give the same meshes. */
  check_mesh(world, (weft_mesh_shape_t){0, 0, 0, 0});    /* dp = world */
  check_mesh(world, (weft_mesh_shape_t){0, size, 0, 0}); /* sp = world */
  check_mesh(world, (weft_mesh_shape_t){1, 0, size, 0}); /* sp inferred, ep = world */
  if (weft_comm_rank(world) == 0) printf("test_mesh: %d meshes of %d ranks\n", created + 3, size);

  /* An invalid shape is refused by every rank before any communicator is created. */
  weft_mesh_t *mesh = NULL;
  WT_CHECK_STATUS(weft_mesh_create(world, (weft_mesh_shape_t){size + 1, 1, 0, 0}, &mesh),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK(mesh == NULL, "no mesh from an invalid shape");
  weft_mesh_destroy(NULL); /* a no-op */
  WT_CHECK_OK(weft_comm_barrier(world));
}

int main(int argc, char **argv) {
  weft_bootstrap_t boot;
  if (weft_comm_bootstrap(&argc, &argv, WEFT_DEVICE_REQUEST_CPU, &boot) != WEFT_OK)
    weft_comm_abort(1);
  weft_test_set_rank(boot.world_rank);
  weft_comm_t *world = NULL;
  if (weft_comm_create_world(&boot, &world) != WEFT_OK) weft_comm_abort(1);
  weft_comm_set_timeout(world, 60.0); /* a hang becomes an error before ctest's limit */
  if (boot.world_size > MAX_WORLD) {
    fprintf(stderr, "test_mesh: written for up to %d ranks\n", MAX_WORLD);
    weft_comm_abort(1);
  }
  check_resolve_all();
  check_resolve_messages();
  check_meshes(world);
  weft_comm_destroy(world);
  int rc = weft_test_exit_code("test_mesh");
  weft_comm_finalize(&boot);
  return rc;
}
