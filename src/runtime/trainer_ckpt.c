/* The trainer's checkpoints (docs/checkpoint-format.md) and parameter freezing.
 *
 * A checkpoint holds, as global tensors: /params/<name> for every parameter, /optim/m/<name>
 * and /optim/v/<name> (AdamW moments) for every trainable one; and as root attributes the
 * step, the optimizer's step count, tokens seen, the run configuration, the model's shape
 * configuration and the mesh (weft/checkpoint.h adds the format version, the weft version and
 * a checksum per dataset). weft draws no random numbers during training (the data order is a
 * function of seed and step), so the step is the whole data cursor and there is no RNG state.
 *
 * Slabs: the rows of a replicated tensor are written in equal shares by every rank and read
 * whole by every rank; an expert tensor's rows (experts) are written by the first rank of each
 * set of ranks holding the same experts and read by every rank for its own experts. Reading at
 * another mesh is the same code with other slabs (resharding by hyperslab). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer_internal.h"
#include "weft/check.h"
#include "weft/checkpoint.h"
#include "weft/env.h"
#include "weft/log.h"

/* The checkpoint tensors of this rank: params, then (when with_optim) m and v of every
 * trainable parameter. Host staging on a GPU; the device buffers themselves on the CPU. */
typedef struct ckpt_set {
  weft_ckpt_tensor_t *tensors;
  float **device; /* [count] where each tensor's data lives on the device */
  int count;
  float *host; /* staging (GPU only) */
} ckpt_set_t;

static void set_free(ckpt_set_t *s) {
  free(s->tensors);
  free(s->device);
  free(s->host);
  memset(s, 0, sizeof *s);
}

/* for_save: every rank writes an equal share of the rows of each replicated tensor (all hold
 * it), so a save runs at the ranks' combined write bandwidth instead of rank 0's; an expert
 * tensor's rows are written by the first of the ranks holding them. Loading: replicated
 * tensors are read whole by every rank, experts by rows. */
static weft_status_t set_build(weft_trainer_t *t, bool with_optim, bool for_save, ckpt_set_t *s) {
  weft_model_t *m = t->model;
  const int n = weft_model_param_count(m);
  s->tensors = calloc((size_t)(3 * n), sizeof *s->tensors);
  s->device = calloc((size_t)(3 * n), sizeof *s->device);
  if (!s->tensors || !s->device) {
    return WEFT_ERR_NO_MEMORY;
  }
  const int64_t rank = weft_comm_rank(t->world), ranks = weft_comm_size(t->world);
  const bool expert_owner = weft_comm_rank(t->mesh->ep_replica) == 0;
  int64_t staged = 0;
  for (int pass = 0; pass < (with_optim ? 3 : 1); pass++) {
    for (int i = 0; i < n; i++) {
      if (pass > 0 && t->frozen[i]) {
        continue;
      }
      const weft_param_t *p = weft_model_param(m, i);
      weft_ckpt_tensor_t *c = &s->tensors[s->count];
      static const char *const groups[3] = {"params", "optim/m", "optim/v"};
      snprintf(c->name, sizeof c->name, "/%s/%s", groups[pass], p->name);
      c->ndim = p->ndim;
      for (int d = 0; d < 4; d++) {
        c->shape[d] = d < p->ndim ? p->shape[d] : 1;
      }
      float *local = pass == 0 ? p->data : pass == 1 ? t->m[i] : t->v[i];
      if (p->expert || !for_save) {
        c->start = p->slice_start;
        c->rows = p->local_shape[0];
        c->owner = p->expert ? expert_owner : rank == 0;
        s->device[s->count] = local;
      } else { /* rows [r R / P, (r + 1) R / P) of a replicated tensor */
        const int64_t R = p->shape[0];
        c->start = rank * R / ranks;
        c->rows = (rank + 1) * R / ranks - c->start;
        c->owner = true;
        s->device[s->count] = local + c->start * weft_ckpt_row_elems(c);
      }
      staged += c->rows * weft_ckpt_row_elems(c);
      s->count++;
    }
  }
  if (!m->on_device) { /* the CPU device's memory is host memory: no copies */
    for (int i = 0; i < s->count; i++) {
      s->tensors[i].data = s->device[i];
    }
    return WEFT_OK;
  }
  s->host = malloc((size_t)(staged > 0 ? staged : 1) * sizeof(float));
  if (!s->host) {
    return WEFT_ERR_NO_MEMORY;
  }
  float *next = s->host;
  for (int i = 0; i < s->count; i++) {
    s->tensors[i].data = next;
    next += s->tensors[i].rows * weft_ckpt_row_elems(&s->tensors[i]);
  }
  return WEFT_OK;
}

/* Device <-> host staging (GPU only). */
static weft_status_t set_copy(weft_trainer_t *t, ckpt_set_t *s, bool to_host) {
  if (!s->host) {
    return WEFT_OK;
  }
  const weft_device_t *dev = weft_kernel_ctx_device(t->ctx);
  for (int i = 0; i < s->count; i++) {
    const size_t bytes =
        (size_t)(s->tensors[i].rows * weft_ckpt_row_elems(&s->tensors[i])) * sizeof(float);
    WEFT_CHECK(to_host ? weft_device_copy(dev, s->tensors[i].data, s->device[i], bytes,
                                          WEFT_COPY_DEVICE_TO_HOST)
                       : weft_device_copy(dev, s->device[i], s->tensors[i].data, bytes,
                                          WEFT_COPY_HOST_TO_DEVICE));
  }
  return WEFT_OK;
}

char *weft_trainer_model_json(const weft_trainer_t *t) {
  const weft_model_config_t *c = weft_model_config(t->model);
  char *json = malloc(512);
  if (json) {
    snprintf(json, 512,
             "{\"dim\":%lld,\"layers\":\"%s\",\"moe_layers\":\"%s\",\"heads\":%lld,"
             "\"kv_heads\":%lld,\"experts\":%lld,\"topk\":%d,\"ffn_dim\":%lld,\"vocab\":%d}",
             (long long)c->dim, c->pattern, c->moe_pattern, (long long)c->heads,
             (long long)c->kv_heads, (long long)c->experts, c->topk, (long long)c->ffn,
             WEFT_MODEL_VOCAB);
  }
  return json;
}

weft_status_t weft_trainer_save(weft_trainer_t *t, const char *dir, int64_t steps_done, int keep,
                                bool background, char *path, size_t path_size) {
  ckpt_set_t set = {0};
  char *config = weft_train_opts_json(&t->opts), *model = weft_trainer_model_json(t);
  char mesh[160];
  snprintf(mesh, sizeof mesh, "{\"world\":%d,\"dp\":%d,\"sp\":%d,\"ep\":%d}",
           weft_comm_size(t->world), t->plan.mesh.dp, t->plan.mesh.sp, t->plan.mesh.ep);
  weft_status_t st = config && model ? set_build(t, true, true, &set) : WEFT_ERR_NO_MEMORY;
  if (st == WEFT_OK) st = set_copy(t, &set, true);
  if (st == WEFT_OK && background && !t->writer) st = weft_ckpt_writer_create(t->world, &t->writer);
  long kill_rank = -1;
  weft_env_get_long("WEFT_FAULT_KILL_IN_SAVE", &kill_rank);
  const char *io = "posix";
  weft_env_get_str("WEFT_CKPT_IO", &io);
  if (st == WEFT_OK && strcmp(io, "posix") != 0 && strcmp(io, "mpiio") != 0) {
    WEFT_ERROR("ckpt", "WEFT_CKPT_IO='%s': expected posix or mpiio", io);
    st = WEFT_ERR_INVALID_ARG;
  }
  st = weft_comm_agree(t->world, st);
  const weft_ckpt_meta_t meta = {.fault_kill_rank = (int)kill_rank,
                                 .mpiio = strcmp(io, "mpiio") == 0,
                                 .step = steps_done,
                                 .tokens_seen = steps_done * t->opts.batch * t->opts.seq,
                                 .optimizer_step = t->adam_base + steps_done,
                                 .config_json = config,
                                 .model_json = model,
                                 .mesh_json = mesh};
  if (st == WEFT_OK && !background) { /* straight from the model's (or the staging) memory */
    st = weft_ckpt_save(t->world, dir, &meta, set.tensors, set.count, keep, path, path_size);
  } else if (st == WEFT_OK) { /* the writer copies what it needs before returning */
    st = weft_ckpt_writer_start(t->writer, dir, &meta, set.tensors, set.count, keep);
    if (st == WEFT_OK && path) {
      snprintf(path, path_size, "%s/step-%08lld.h5", dir, (long long)steps_done);
    }
  }
  set_free(&set);
  free(config);
  free(model);
  return st;
}

/* The checkpoint's model must be this run's (same shapes and layer kinds). */
static weft_status_t check_model(weft_trainer_t *t, weft_tensor_file_t *file, const char *path) {
  char *stored = NULL, *mine = weft_trainer_model_json(t);
  weft_status_t st =
      mine ? weft_tensor_file_attr_read_str(file, NULL, "model", &stored) : WEFT_ERR_NO_MEMORY;
  if (st == WEFT_OK && strcmp(stored, mine) != 0) {
    WEFT_ERROR("ckpt", "'%s' holds another model: %s; this run's is %s", path, stored, mine);
    st = WEFT_ERR_CORRUPT;
  }
  free(stored);
  free(mine);
  return st;
}

weft_status_t weft_trainer_load(weft_trainer_t *t, const char *path, weft_trainer_load_mode_t mode,
                                int64_t *step_p) {
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_ckpt_open(t->world, path, &file));
  int64_t step = 0, optimizer_step = 0;
  ckpt_set_t set = {0};
  weft_status_t st = check_model(t, file, path);
  if (st == WEFT_OK) st = weft_tensor_file_attr_read_i64(file, NULL, "step", &step);
  if (st == WEFT_OK)
    st = weft_tensor_file_attr_read_i64(file, NULL, "optimizer_step", &optimizer_step);
  /* Every rank reads the same attributes; agree anyway before the collective reads. */
  st = weft_comm_agree(t->world, st);
  if (st == WEFT_OK) st = set_build(t, mode != WEFT_LOAD_PARAMS, false, &set);
  if (st == WEFT_OK) st = weft_ckpt_read(file, set.tensors, set.count);
  if (st == WEFT_OK) st = set_copy(t, &set, false); /* only verified data reaches the model */
  set_free(&set);
  const weft_status_t close_st = weft_tensor_file_close(file);
  WEFT_CHECK(st != WEFT_OK ? st : close_st);
  switch (mode) {
  case WEFT_LOAD_RESUME:
    t->start_step = step;
    t->adam_base = optimizer_step - step;
    break;
  case WEFT_LOAD_FINETUNE:
    t->start_step = 0;
    t->adam_base = optimizer_step;
    break;
  case WEFT_LOAD_PARAMS:
    t->start_step = 0;
    t->adam_base = 0;
    break;
  }
  if (step_p) {
    *step_p = step;
  }
  return WEFT_OK;
}

weft_status_t weft_trainer_save_poll(weft_trainer_t *t, bool wait, bool *committed_p, char *path,
                                     size_t path_size) {
  *committed_p = false;
  return t->writer ? weft_ckpt_writer_poll(t->writer, wait, committed_p, path, path_size) : WEFT_OK;
}

int64_t weft_trainer_start_step(const weft_trainer_t *t) { return t->start_step; }

/* ---- freezing ----------------------------------------------------------------------------- */

/* Does parameter `name` belong to group `g`? */
static bool in_group(const char *name, const char *g, int layers) {
  if (strcmp(g, "embed") == 0) return strcmp(name, "embed") == 0;
  if (strcmp(g, "head") == 0)
    return strcmp(name, "lm_head") == 0 || strcmp(name, "final_norm") == 0;
  if (strcmp(g, "norm") == 0) return strstr(name, "norm") != NULL;
  if (strcmp(g, "attn") == 0) return strstr(name, ".attn.") != NULL;
  if (strcmp(g, "ffn") == 0) return strstr(name, ".ffn.") != NULL;
  if (strcmp(g, "moe") == 0) return strstr(name, ".moe.") != NULL;
  if (strcmp(g, "router") == 0) return strstr(name, ".moe.router") != NULL;
  if (strcmp(g, "experts") == 0) {
    return strstr(name, ".moe.w") != NULL;
  }
  int a = -1, b = -1, used = 0;
  if (sscanf(g, "layers.%d-%d%n", &a, &b, &used) == 2 && g[used] == '\0') {
  } else if (sscanf(g, "layers.%d%n", &a, &used) == 1 && g[used] == '\0') {
    b = a;
  } else {
    return false;
  }
  int l = -1;
  if (a < 0 || b < a || b >= layers || sscanf(name, "layers.%d.", &l) != 1) {
    return false;
  }
  return l >= a && l <= b;
}

weft_status_t trainer_freeze(weft_trainer_t *t, const char *spec) {
  const int n = weft_model_param_count(t->model);
  const int layers = weft_model_config(t->model)->layers;
  memset(t->frozen, 0, sizeof t->frozen);
  if (!spec || !*spec) {
    return WEFT_OK;
  }
  char groups[256];
  snprintf(groups, sizeof groups, "%s", spec);
  for (char *save = NULL, *g = strtok_r(groups, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
    if (!weft_train_freeze_group_valid(g, layers)) {
      WEFT_ERROR("train",
                 "--freeze '%s': unknown group '%s' (embed, head, norm, attn, ffn, moe, "
                 "router, experts, layers.N, layers.A-B with layers < %d)",
                 spec, g, layers);
      return WEFT_ERR_INVALID_ARG;
    }
    for (int i = 0; i < n; i++) {
      t->frozen[i] |= in_group(weft_model_param(t->model, i)->name, g, layers);
    }
  }
  return WEFT_OK;
}
