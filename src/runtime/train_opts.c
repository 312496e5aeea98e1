/* Training options: flag table, --config JSON files, and the checks (see train_opts.h). */
#include "train_opts.h"

#include "weft/checkpoint.h"
#include "weft/tensor_file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CORPUS "/usr/share/games/fortunes"

/* The parsed --config file and --from checkpoint configuration stay alive for the process
 * (string settings point into them) and are freed at exit. (A static pointer alone is not
 * enough: the compiler drops a static that is written and never read, and LeakSanitizer then
 * reports the trees.) */
static cJSON *g_kept_trees[2];

static void free_kept_trees(void) {
  for (int i = 0; i < 2; i++) {
    cJSON_Delete(g_kept_trees[i]);
    g_kept_trees[i] = NULL;
  }
}

static void keep_tree(int slot, cJSON *tree) {
  static bool registered;
  if (!registered) {
    atexit(free_kept_trees);
    registered = true;
  }
  cJSON_Delete(g_kept_trees[slot]);
  g_kept_trees[slot] = tree;
}

void weft_train_opts_defaults(weft_train_opts_t *o) {
  *o = (weft_train_opts_t){.dim = 128,
                           .heads = 4,
                           .kv_heads = 2,
                           .experts = 4,
                           .topk = 2,
                           .ffn_dim = 256,
                           .layers = "LLSL",
                           .moe_layers = NULL,
                           .aux_weight = 0.01,
                           .z_weight = 0.0,
                           .data = DEFAULT_CORPUS,
                           .seq = 256,
                           .batch = 16,
                           .micro_batch = 0,
                           .val_fraction = 0.01,
                           .steps = 200,
                           .warmup = 20,
                           .lr = 3e-3,
                           .weight_decay = 0.1,
                           .clip = 1.0,
                           .dp = 0,
                           .sp = 1,
                           .ep = 0,
                           .ulysses_degree = 0,
                           .sp_algo = "ring",
                           .linear_algo = "zeco",
                           .precision = "f32",
                           .device = "auto",
                           .metrics = NULL,
                           .config = NULL,
                           .save = NULL,
                           .params = NULL,
                           .seed = 1234,
                           .eval_every = 50,
                           .eval_batches = 4,
                           .keep = 3,
                           .log_every = 10,
                           .deterministic = false};
}

/* The flag table over `o` (static storage: one table per process is enough). */
#define FLAG_CAPACITY 64

static size_t flag_table(weft_train_opts_t *o, weft_cli_flag_t **flags_p) {
  static weft_cli_flag_t flags[FLAG_CAPACITY];
  const weft_cli_flag_t table[] = {
      {"config", 0, WEFT_CLI_STRING, &o->config, "FILE.json", "settings file (keys = flag names)"},
      {"dim", 0, WEFT_CLI_INT, &o->dim, "D", "model width (128)"},
      {"layers", 0, WEFT_CLI_STRING, &o->layers, "PATTERN",
       "S/L per layer (softmax / linear attention) or a count of S layers (LLSL)"},
      {"heads", 0, WEFT_CLI_INT, &o->heads, "H", "attention heads (4)"},
      {"kv-heads", 0, WEFT_CLI_INT, &o->kv_heads, "H", "key/value heads of softmax layers (2)"},
      {"experts", 0, WEFT_CLI_INT, &o->experts, "E", "experts per MoE layer, 0 = dense (4)"},
      {"topk", 0, WEFT_CLI_INT, &o->topk, "K", "experts per token (2)"},
      {"ffn-dim", 0, WEFT_CLI_INT, &o->ffn_dim, "F", "FFN / expert hidden width (256)"},
      {"moe-layers", 0, WEFT_CLI_STRING, &o->moe_layers, "PATTERN",
       "M/D per layer (default: all MoE when --experts > 0)"},
      {"aux-weight", 0, WEFT_CLI_DOUBLE, &o->aux_weight, "W", "load-balancing loss weight (0.01)"},
      {"z-weight", 0, WEFT_CLI_DOUBLE, &o->z_weight, "W", "router z-loss weight (0)"},
      {"data", 0, WEFT_CLI_STRING, &o->data, "PATH", "text file or directory (" DEFAULT_CORPUS ")"},
      {"seq", 0, WEFT_CLI_INT, &o->seq, "N", "tokens (bytes) per sequence (256)"},
      {"batch", 0, WEFT_CLI_INT, &o->batch, "B", "sequences per step, all ranks (16)"},
      {"micro-batch", 0, WEFT_CLI_INT, &o->micro_batch, "B",
       "sequences per micro-batch, all ranks (default: --batch)"},
      {"val-fraction", 0, WEFT_CLI_DOUBLE, &o->val_fraction, "F", "held-out share (0.01)"},
      {"steps", 0, WEFT_CLI_INT, &o->steps, "S", "optimizer steps (200)"},
      {"warmup", 0, WEFT_CLI_INT, &o->warmup, "S", "linear warmup steps (20)"},
      {"lr", 0, WEFT_CLI_DOUBLE, &o->lr, "LR", "peak learning rate (3e-3)"},
      {"weight-decay", 0, WEFT_CLI_DOUBLE, &o->weight_decay, "W", "AdamW decay on matrices (0.1)"},
      {"clip", 0, WEFT_CLI_DOUBLE, &o->clip, "C", "global gradient-norm clip, 0 = off (1.0)"},
      {"dp", 0, WEFT_CLI_INT, &o->dp, "N", "data-parallel degree (world / sp)"},
      {"sp", 0, WEFT_CLI_INT, &o->sp, "N", "sequence-parallel degree (1)"},
      {"ep", 0, WEFT_CLI_INT, &o->ep, "N",
       "expert-parallel degree (world, or the largest "
       "divisor of the world dividing --experts)"},
      {"sp-algo", 0, WEFT_CLI_STRING, &o->sp_algo, "ALGO",
       "softmax SP: ulysses|ring|tokenring|hybrid|auto (ring)"},
      {"ulysses-degree", 0, WEFT_CLI_INT, &o->ulysses_degree, "U",
       "hybrid's Ulysses degree (0 = auto)"},
      {"linear-algo", 0, WEFT_CLI_STRING, &o->linear_algo, "ALGO",
       "linear SP: zeco|lasp2|ring (zeco)"},
      {"device", 0, WEFT_CLI_STRING, &o->device, "auto|cpu|cuda", "device each rank opens (auto)"},
      {"precision", 0, WEFT_CLI_STRING, &o->precision, "f32|bf16",
       "GEMM (and CUDA attention) operands; master weights stay f32 (f32)"},
      {"seed", 0, WEFT_CLI_INT, &o->seed, "S", "initialisation and data order (1234)"},
      {"eval-every", 0, WEFT_CLI_INT, &o->eval_every, "S",
       "validation every S steps, 0 = end only (50)"},
      {"eval-batches", 0, WEFT_CLI_INT, &o->eval_batches, "N", "micro-batches per validation (4)"},
      {"log-every", 0, WEFT_CLI_INT, &o->log_every, "S",
       "log line every S steps off a terminal (10)"},
      {"metrics", 0, WEFT_CLI_STRING, &o->metrics, "FILE", "JSON lines, one per step (rank 0)"},
      {"save", 0, WEFT_CLI_STRING, &o->save, "FILE.h5", "write the final parameters"},
      {"params", 0, WEFT_CLI_STRING, &o->params, "FILE.h5", "start from saved parameters"},
      {"deterministic", 0, WEFT_CLI_BOOL, &o->deterministic, NULL,
       "fixed-order gradient reduction: bitwise reproducible for a world size and seed"},
      {"ckpt-dir", 0, WEFT_CLI_STRING, &o->ckpt_dir, "DIR", "checkpoint directory"},
      {"ckpt-every", 0, WEFT_CLI_INT, &o->ckpt_every, "S",
       "checkpoint every S steps (0 = at the end and on signals only)"},
      {"keep", 0, WEFT_CLI_INT, &o->keep, "K", "checkpoints kept in --ckpt-dir (3)"},
      {"sync-save", 0, WEFT_CLI_BOOL, &o->sync_save, NULL,
       "training waits while each checkpoint is written (default: written in the background)"},
      {"resume", 0, WEFT_CLI_STRING, &o->resume, "auto|PATH",
       "continue from a checkpoint (auto: --ckpt-dir's latest, if any)"},
      {"stop-at", 0, WEFT_CLI_INT, &o->stop_at, "S",
       "stop after step S as if signalled (checkpoint, exit 0)"},
      {"from", 0, WEFT_CLI_STRING, &o->from, "CKPT", "finetune: checkpoint to start from"},
      {"freeze", 0, WEFT_CLI_STRING, &o->freeze, "GROUPS",
       "finetune: groups kept fixed (embed,head,norm,attn,ffn,moe,router,experts,layers.A-B)"},
      {"reset-optimizer", 0, WEFT_CLI_BOOL, &o->reset_optimizer, NULL,
       "finetune: fresh AdamW state instead of the checkpoint's"},
  };
  const size_t count = sizeof table / sizeof table[0];
  memcpy(flags, table, sizeof table);
  *flags_p = flags;
  return count;
}

/* Underscores in JSON keys are accepted for dashes ("kv_heads" = "kv-heads"). */
static int apply_config(const weft_cli_command_t *command, const weft_cli_flag_t *flags,
                        size_t count, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "weft %s: cannot read --config '%s': %s\n", command->name, path,
            strerror(errno));
    return WEFT_EXIT_USAGE;
  }
  static char text[1 << 16];
  const size_t len = fread(text, 1, sizeof text - 1, f);
  const bool too_long = !feof(f);
  fclose(f);
  text[len] = '\0';
  if (too_long) {
    fprintf(stderr, "weft %s: --config '%s' is larger than 64 KiB\n", command->name, path);
    return WEFT_EXIT_USAGE;
  }
  cJSON *root = cJSON_Parse(text);
  if (!cJSON_IsObject(root)) {
    const char *at = cJSON_GetErrorPtr();
    fprintf(stderr, "weft %s: --config '%s' is not a JSON object%s%.20s%s\n", command->name, path,
            at ? " (near '" : "", at ? at : "", at ? "')" : "");
    cJSON_Delete(root);
    return WEFT_EXIT_USAGE;
  }
  keep_tree(0, root);
  for (const cJSON *item = root->child; item; item = item->next) {
    char name[64], value[64];
    snprintf(name, sizeof name, "%s", item->string);
    for (char *c = name; *c; c++) {
      *c = *c == '_' ? '-' : *c;
    }
    const char *text_value = value;
    if (cJSON_IsString(item)) {
      text_value = item->valuestring;
    } else if (cJSON_IsBool(item)) {
      snprintf(value, sizeof value, "%s", cJSON_IsTrue(item) ? "true" : "false");
    } else if (cJSON_IsNumber(item)) {
      snprintf(value, sizeof value, "%.17g", item->valuedouble);
    } else {
      fprintf(stderr, "weft %s: --config '%s': \"%s\" must be a number, string or boolean\n",
              command->name, path, item->string);
      return WEFT_EXIT_USAGE;
    }
    if (strcmp(name, "config") == 0 ||
        weft_cli_set_flag(command, flags, count, name, text_value) != WEFT_OK) {
      fprintf(stderr, "weft %s: --config '%s': bad setting \"%s\"\n", command->name, path,
              item->string);
      return WEFT_EXIT_USAGE;
    }
  }
  return -1;
}

/* finetune and eval --from: the checkpoint's model shape becomes the default, so the command
 * line need not repeat it (and cannot silently differ from it by omission). */
static int apply_checkpoint_model(const weft_cli_command_t *command, const weft_cli_flag_t *flags,
                                  size_t count, const char *spec) {
  static const char *const keys[] = {"dim",     "layers", "heads",   "kv-heads",
                                     "experts", "topk",   "ffn-dim", "moe-layers"};
  char path[4096];
  bool found = false;
  weft_tensor_file_t *file = NULL;
  char *text = NULL;
  if (weft_ckpt_resolve(spec, NULL, path, sizeof path, &found) != WEFT_OK ||
      weft_tensor_file_open(path, WEFT_TENSOR_FILE_READ, NULL, &file) != WEFT_OK ||
      weft_tensor_file_attr_read_str(file, NULL, "config", &text) != WEFT_OK) {
    weft_tensor_file_close(file);
    fprintf(stderr,
            "weft %s: --from '%s' is not a readable weft checkpoint (see the message "
            "above)\n",
            command->name, spec);
    return WEFT_EXIT_USAGE;
  }
  weft_tensor_file_close(file);
  cJSON *root = cJSON_Parse(text);
  free(text);
  if (!cJSON_IsObject(root)) {
    fprintf(stderr, "weft %s: --from '%s': its config attribute is not JSON\n", command->name,
            path);
    cJSON_Delete(root);
    return WEFT_EXIT_USAGE;
  }
  keep_tree(1, root);
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, keys[i]);
    char value[64];
    const char *v = value;
    if (cJSON_IsString(item)) {
      v = item->valuestring;
    } else if (cJSON_IsNumber(item)) {
      snprintf(value, sizeof value, "%.17g", item->valuedouble);
    } else {
      continue;
    }
    if (weft_cli_set_flag(command, flags, count, keys[i], v) != WEFT_OK) {
      return WEFT_EXIT_USAGE;
    }
  }
  return -1;
}

/* The value of --name VALUE or --name=VALUE in argv (the last one given), or NULL: the files
 * that supply defaults are applied before the full parse. */
static const char *flag_value(int argc, char **argv, const char *name) {
  const size_t len = strlen(name);
  const char *value = NULL;
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "--", 2) != 0 || strncmp(argv[i] + 2, name, len) != 0) {
      continue;
    }
    const char *rest = argv[i] + 2 + len;
    if (*rest == '=') {
      value = rest + 1;
    } else if (*rest == '\0' && i + 1 < argc) {
      value = argv[i + 1];
    }
  }
  return value;
}

int weft_train_opts_parse(const weft_cli_command_t *command, weft_train_opts_t *o,
                          const weft_cli_flag_t *extra, size_t extra_count, int argc, char **argv) {
  weft_cli_flag_t *flags = NULL;
  size_t count = flag_table(o, &flags);
  for (size_t i = 0; i < extra_count && count < FLAG_CAPACITY; i++) {
    flags[count++] = extra[i];
  }
  /* A --from checkpoint's model first, then the file, so that flags given on the command line
   * override both. */
  const char *from = flag_value(argc, argv, "from");
  if (from) {
    const int rc = apply_checkpoint_model(command, flags, count, from);
    if (rc >= 0) {
      return rc;
    }
  }
  const char *config = flag_value(argc, argv, "config");
  if (config) {
    const int rc = apply_config(command, flags, count, config);
    if (rc >= 0) {
      return rc;
    }
  }
  bool help = false;
  if (weft_cli_parse(command, flags, count, argc, argv, &help) != WEFT_OK) {
    return WEFT_EXIT_USAGE;
  }
  return help ? WEFT_EXIT_OK : -1;
}

int weft_train_opts_load(const weft_cli_command_t *cmd, weft_train_opts_t *o,
                         const weft_cli_flag_t *extra, size_t extra_count, int argc, char **argv) {
  weft_train_opts_defaults(o);
  const int rc = weft_train_opts_parse(cmd, o, extra, extra_count, argc, argv);
  if (rc >= 0) {
    return rc;
  }
  struct stat sb;
  if (!o->data || stat(o->data, &sb) != 0) {
    fprintf(stderr,
            "weft %s: --data '%s' does not exist (a text file or a directory of text files; the "
            "default corpus comes with the Debian package fortunes: launch/install-deps.sh)\n",
            cmd->name, o->data ? o->data : "");
    return WEFT_EXIT_USAGE;
  }
  if (o->params && access(o->params, R_OK) != 0) {
    fprintf(stderr, "weft %s: --params '%s' cannot be read\n", cmd->name, o->params);
    return WEFT_EXIT_USAGE;
  }
  return -1;
}

#define FAIL(...)                         \
  do {                                    \
    snprintf(err, err_size, __VA_ARGS__); \
    return WEFT_ERR_INVALID_ARG;          \
  } while (0)

/* Largest divisor of `world` that also divides `experts` (experts > 0). */
static int default_ep(int world, long experts) {
  for (int ep = world; ep > 1; ep--) {
    if (world % ep == 0 && experts % ep == 0) {
      return ep;
    }
  }
  return 1;
}

weft_status_t weft_train_opts_resolve(const weft_train_opts_t *o, int world_size,
                                      weft_train_plan_t *plan, char *err, size_t err_size) {
  memset(plan, 0, sizeof *plan);
  if (o->dp < 0 || o->sp < 0 || o->ep < 0 || o->ulysses_degree < 0) {
    FAIL("--dp %ld, --sp %ld, --ep %ld and --ulysses-degree %ld must not be negative", o->dp, o->sp,
         o->ep, o->ulysses_degree);
  }
  weft_mesh_shape_t mesh = {
      .dp = (int)o->dp,
      .sp = (int)o->sp,
      .ep = o->ep > 0 ? (int)o->ep : (o->experts > 0 ? default_ep(world_size, o->experts) : 1),
      .ulysses = 1};
  weft_model_parallel_t par = {.ulysses_degree = (int)o->ulysses_degree};
  if (weft_attn_sp_algo_parse(o->sp_algo, &par.sp_algo) != WEFT_OK) {
    FAIL("--sp-algo '%s': use ulysses, ring, tokenring, hybrid or auto", o->sp_algo);
  }
  if (weft_linear_sp_algo_parse(o->linear_algo, &par.linear_algo) != WEFT_OK) {
    FAIL("--linear-algo '%s': use zeco, lasp2 or ring", o->linear_algo);
  }
  char mesh_err[200];
  if (weft_mesh_shape_resolve(&mesh, world_size, mesh_err, sizeof mesh_err) != WEFT_OK) {
    FAIL("%s", mesh_err);
  }
  weft_model_config_t *m = &plan->model;
  *m = (weft_model_config_t){.dim = o->dim,
                             .heads = o->heads,
                             .kv_heads = o->kv_heads,
                             .ffn = o->ffn_dim,
                             .experts = o->experts,
                             .topk = (int)o->topk,
                             .seq = o->seq,
                             .aux_weight = o->aux_weight,
                             .z_weight = o->z_weight};
  if (strcmp(o->precision, "f32") != 0 && strcmp(o->precision, "bf16") != 0) {
    FAIL("--precision '%s': use f32 or bf16", o->precision);
  }
  m->bf16 = strcmp(o->precision, "bf16") == 0;
  if (weft_model_config_set_layers(m, o->layers, o->moe_layers, err, err_size) != WEFT_OK ||
      weft_model_config_check(m, mesh.sp, mesh.ep, err, err_size) != WEFT_OK) {
    return WEFT_ERR_INVALID_ARG;
  }
  const long micro = o->micro_batch > 0 ? o->micro_batch : o->batch;
  if (o->batch < 1 || o->micro_batch < 0) {
    FAIL("--batch %ld must be >= 1 and --micro-batch %ld >= 0", o->batch, o->micro_batch);
  }
  if (o->batch % micro != 0) {
    FAIL("--batch %ld is not a multiple of --micro-batch %ld", o->batch, micro);
  }
  if (micro % mesh.dp != 0) {
    FAIL("--micro-batch %ld sequences cannot be split over dp = %d ranks", micro, mesh.dp);
  }
  if (o->steps < 0 || o->warmup < 0 || o->eval_every < 0 || o->eval_batches < 0 ||
      o->log_every < 1) {
    FAIL(
        "--steps %ld, --warmup %ld, --eval-every %ld, --eval-batches %ld must be >= 0 and "
        "--log-every %ld >= 1",
        o->steps, o->warmup, o->eval_every, o->eval_batches, o->log_every);
  }
  if (!(o->lr >= 0 && isfinite(o->lr)) || !(o->weight_decay >= 0) || !(o->clip >= 0)) {
    FAIL("--lr %g, --weight-decay %g and --clip %g must be finite and >= 0", o->lr, o->weight_decay,
         o->clip);
  }
  if (o->ckpt_every < 0 || o->keep < 1 || o->stop_at < 0) {
    FAIL("--ckpt-every %ld and --stop-at %ld must be >= 0 and --keep %ld >= 1", o->ckpt_every,
         o->stop_at, o->keep);
  }
  if ((o->ckpt_every > 0 || o->stop_at > 0) && !o->ckpt_dir) {
    FAIL("--ckpt-every and --stop-at need --ckpt-dir DIR");
  }
  if (o->resume && strcmp(o->resume, "auto") == 0 && !o->ckpt_dir) {
    FAIL("--resume auto needs --ckpt-dir DIR");
  }
  if (o->freeze && *o->freeze) {
    char groups[256];
    snprintf(groups, sizeof groups, "%s", o->freeze);
    for (char *save = NULL, *g = strtok_r(groups, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
      if (!weft_train_freeze_group_valid(g, m->layers)) {
        FAIL(
            "--freeze '%s': unknown group '%s' (embed, head, norm, attn, ffn, moe, router, "
            "experts, layers.N, layers.A-B with layer numbers below %d)",
            o->freeze, g, m->layers);
      }
    }
  }
  if (!(o->val_fraction >= 0 && o->val_fraction <= 0.5)) {
    FAIL("--val-fraction %g must be in 0 .. 0.5", o->val_fraction);
  }
  plan->par = par;
  plan->mesh = mesh;
  plan->rows = micro / mesh.dp;
  plan->micro_batches = o->batch / micro;
  return WEFT_OK;
}

char *weft_train_opts_json(const weft_train_opts_t *o) {
  cJSON *j = cJSON_CreateObject();
  if (!j) {
    return NULL;
  }
  cJSON_AddNumberToObject(j, "dim", (double)o->dim);
  cJSON_AddStringToObject(j, "layers", o->layers);
  cJSON_AddNumberToObject(j, "heads", (double)o->heads);
  cJSON_AddNumberToObject(j, "kv-heads", (double)o->kv_heads);
  cJSON_AddNumberToObject(j, "experts", (double)o->experts);
  cJSON_AddNumberToObject(j, "topk", (double)o->topk);
  cJSON_AddNumberToObject(j, "ffn-dim", (double)o->ffn_dim);
  if (o->moe_layers) {
    cJSON_AddStringToObject(j, "moe-layers", o->moe_layers);
  }
  cJSON_AddNumberToObject(j, "aux-weight", o->aux_weight);
  cJSON_AddNumberToObject(j, "z-weight", o->z_weight);
  cJSON_AddStringToObject(j, "data", o->data);
  cJSON_AddNumberToObject(j, "seq", (double)o->seq);
  cJSON_AddNumberToObject(j, "batch", (double)o->batch);
  cJSON_AddNumberToObject(j, "micro-batch", (double)o->micro_batch);
  cJSON_AddNumberToObject(j, "steps", (double)o->steps);
  cJSON_AddNumberToObject(j, "warmup", (double)o->warmup);
  cJSON_AddNumberToObject(j, "lr", o->lr);
  cJSON_AddNumberToObject(j, "dp", (double)o->dp);
  cJSON_AddNumberToObject(j, "sp", (double)o->sp);
  cJSON_AddNumberToObject(j, "ep", (double)o->ep);
  cJSON_AddStringToObject(j, "sp-algo", o->sp_algo);
  cJSON_AddStringToObject(j, "linear-algo", o->linear_algo);
  cJSON_AddStringToObject(j, "precision", o->precision);
  cJSON_AddNumberToObject(j, "seed", (double)o->seed);
  char *text = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  return text;
}

/* The options against the world size: the same verdict on every rank, and every rank says so
 * (a user reading any one rank's log sees why it stopped). */
int weft_train_resolve_or_exit(const weft_cli_command_t *cmd, const weft_train_opts_t *o,
                               const weft_session_t *s, weft_train_plan_t *plan) {
  char err[300];
  if (weft_train_opts_resolve(o, s->boot.world_size, plan, err, sizeof err) != WEFT_OK) {
    fprintf(stderr, "weft %s: %s\n", cmd->name, err);
    return WEFT_EXIT_USAGE;
  }
  return -1;
}

bool weft_train_freeze_group_valid(const char *g, int layers) {
  static const char *const names[] = {"embed", "head", "norm",   "attn",
                                      "ffn",   "moe",  "router", "experts"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strcmp(g, names[i]) == 0) {
      return true;
    }
  }
  int a = -1, b = -1, used = 0;
  if (sscanf(g, "layers.%d-%d%n", &a, &b, &used) == 2 && g[used] == '\0') {
    return a >= 0 && a <= b && b < layers;
  }
  used = 0;
  return sscanf(g, "layers.%d%n", &a, &used) == 1 && g[used] == '\0' && a >= 0 && a < layers;
}
