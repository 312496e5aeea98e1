/* `weft generate`: text from a checkpoint, one rank, no MPI (docs/generation.md).
 *
 *   weft generate --ckpt FILE.h5 --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
 *                 [--seed S] [--device cpu|cuda|auto] [--prefill-chunk N]
 *
 * Reads the root "config" attribute (the JSON `weft train --save` writes) and /params, feeds
 * the prompt's bytes (batched prefill), then samples --max-tokens bytes one at a time and
 * writes them raw to stdout; a summary line goes to stderr. Exit 0 on success, 2 for a bad
 * flag or an unreadable --ckpt, 1 for a file that is not a usable checkpoint or a runtime
 * failure. No MPI session: generation is one process, and a serial HDF5 read needs none. */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "generate.h"
#include "session.h"
#include "weft/check.h"
#include "weft/checkpoint.h"
#include "weft/env.h"
#include "weft/tensor_file.h"
#include "weft/timer.h"

static const weft_cli_command_t k_generate = {
    "generate", "Generate text from a checkpoint (KV cache, greedy or top-k sampling).",
    "--ckpt FILE.h5 --prompt TEXT [flags] (see docs/generation.md)", NULL};

typedef struct generate_opts {
  const char *ckpt, *prompt, *device;
  long max_tokens, top_k, seed, prefill_chunk;
  double temperature;
} generate_opts_t;

/* Returns an exit code to stop with, or -1 to go on. */
static int parse_opts(int argc, char **argv, generate_opts_t *o) {
  *o = (generate_opts_t){.device = "cpu",
                         .max_tokens = 64,
                         .top_k = 0,
                         .seed = 1234,
                         .prefill_chunk = WEFT_GENERATE_DEFAULT_CHUNK,
                         .temperature = 1.0};
  const weft_cli_flag_t flags[] = {
      {"ckpt", 0, WEFT_CLI_STRING, &o->ckpt, "FILE.h5",
       "checkpoint file or directory, or weft train --save output"},
      {"prompt", 0, WEFT_CLI_STRING, &o->prompt, "TEXT", "the text to continue (its bytes)"},
      {"max-tokens", 0, WEFT_CLI_INT, &o->max_tokens, "N", "bytes to generate (64)"},
      {"temperature", 0, WEFT_CLI_DOUBLE, &o->temperature, "T",
       "softmax temperature, 0 = greedy (1.0)"},
      {"top-k", 0, WEFT_CLI_INT, &o->top_k, "K", "sample among the K likeliest bytes, 0 = all (0)"},
      {"seed", 0, WEFT_CLI_INT, &o->seed, "S", "sampling seed (1234)"},
      {"device", 0, WEFT_CLI_STRING, &o->device, "cpu|cuda|auto", "device to run on (cpu)"},
      {"prefill-chunk", 0, WEFT_CLI_INT, &o->prefill_chunk, "N",
       "prompt tokens per forward (256); bounds the activation memory"},
  };
  bool help = false;
  if (weft_cli_parse(&k_generate, flags, sizeof flags / sizeof flags[0], argc, argv, &help) !=
      WEFT_OK) {
    return WEFT_EXIT_USAGE;
  }
  if (help) {
    return WEFT_EXIT_OK;
  }
  const char *problem = NULL;
  char buf[160];
  if (!o->ckpt) {
    problem = "--ckpt FILE.h5 is required";
  } else if (!o->prompt) {
    problem = "--prompt TEXT is required";
  } else if (o->prompt[0] == '\0') {
    problem = "--prompt is empty; generation continues at least one byte";
  } else if (o->max_tokens < 0 || o->max_tokens > (1L << 30)) {
    snprintf(buf, sizeof buf, "--max-tokens %ld must be in 0..2^30", o->max_tokens);
    problem = buf;
  } else if (!(o->temperature >= 0) || !isfinite(o->temperature)) {
    snprintf(buf, sizeof buf, "--temperature %g must be >= 0 (0 = greedy)", o->temperature);
    problem = buf;
  } else if (o->top_k < 0) {
    snprintf(buf, sizeof buf, "--top-k %ld must be >= 0 (0 = all %d bytes)", o->top_k,
             WEFT_MODEL_VOCAB);
    problem = buf;
  } else if (o->prefill_chunk < 1) {
    snprintf(buf, sizeof buf, "--prefill-chunk %ld must be >= 1", o->prefill_chunk);
    problem = buf;
  } else if (strcmp(o->device, "cpu") != 0 && strcmp(o->device, "cuda") != 0 &&
             strcmp(o->device, "auto") != 0) {
    snprintf(buf, sizeof buf, "--device '%.40s': use cpu, cuda or auto", o->device);
    problem = buf;
  }
  if (problem) {
    fprintf(stderr, "weft generate: %s\n", problem);
    return WEFT_EXIT_USAGE;
  }
  if (access(o->ckpt, R_OK) != 0) {
    fprintf(stderr, "weft generate: --ckpt '%s' cannot be read: %s\n", o->ckpt, strerror(errno));
    return WEFT_EXIT_USAGE;
  }
  /* A checkpoint directory means the checkpoint its `latest` names. */
  static char resolved[4096];
  bool found = false;
  if (weft_ckpt_resolve(o->ckpt, NULL, resolved, sizeof resolved, &found) != WEFT_OK) {
    fprintf(stderr, "weft generate: --ckpt '%s' is not a usable checkpoint (see above)\n", o->ckpt);
    return WEFT_EXIT_USAGE;
  }
  o->ckpt = resolved;
  return -1;
}

/* CPU threads: WEFT_CPU_THREADS, else the cores this process may run on. */
static weft_status_t set_cpu_threads(void) {
  WEFT_CHECK(weft_env_register(&weft_runtime_env_table));
  long threads = 0;
  WEFT_CHECK(weft_env_get_long("WEFT_CPU_THREADS", &threads));
  if (threads <= 0) {
    cpu_set_t set;
    threads = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  weft_kernels_set_cpu_threads(threads < 1 ? 1 : (int)threads);
  return WEFT_OK;
}

static weft_status_t open_device(const char *name, weft_device_t **dev_p) {
  weft_device_kind_t kind = WEFT_DEVICE_CPU;
  if (strcmp(name, "auto") == 0) {
    kind = weft_device_cuda_count() > 0 ? WEFT_DEVICE_CUDA : WEFT_DEVICE_CPU;
  } else {
    WEFT_CHECK(weft_device_kind_parse(name, &kind));
  }
  return weft_device_open(kind, 0, dev_p);
}

/* Opens the checkpoint, reads its configuration and creates a loaded generator. A file that
 * is not a checkpoint is described in `err` (exit 1 without a library trace). */
static weft_status_t load_checkpoint(const generate_opts_t *o, weft_kernel_ctx_t *ctx,
                                     int64_t capacity, weft_generator_t **gen_p, char *err,
                                     size_t err_size) {
  weft_tensor_file_t *file = NULL;
  snprintf(err, err_size, "--ckpt '%s' is not an HDF5 file weft can open (see the log line above)",
           o->ckpt);
  WEFT_CHECK(weft_tensor_file_open(o->ckpt, WEFT_TENSOR_FILE_READ, NULL, &file));
  char *json = NULL;
  weft_model_config_t cfg;
  bool has_config = false, has_params = false;
  weft_status_t st = weft_tensor_file_attr_exists(file, NULL, "config", &has_config);
  if (st == WEFT_OK) {
    st = weft_tensor_file_exists(file, "/params/embed", &has_params);
  }
  if (st == WEFT_OK && (!has_config || !has_params)) {
    snprintf(err, err_size,
             "--ckpt '%s' has no %s: not a checkpoint written by `weft train --save`", o->ckpt,
             !has_config ? "root attribute \"config\"" : "/params group (dataset /params/embed)");
    st = WEFT_ERR_INVALID_ARG;
  }
  if (st == WEFT_OK) {
    st = weft_tensor_file_attr_read_str(file, NULL, "config", &json);
  }
  if (st == WEFT_OK) {
    char why[256];
    st = weft_generate_config_parse(json, &cfg, why, sizeof why);
    if (st != WEFT_OK) {
      snprintf(err, err_size, "--ckpt '%s': %s", o->ckpt, why);
    }
  }
  weft_generator_t *gen = NULL;
  if (st == WEFT_OK) {
    st = weft_generator_create(&cfg, ctx, capacity, o->prefill_chunk, &gen);
    if (st != WEFT_OK) {
      snprintf(err, err_size, "cannot set up the model of --ckpt '%s' (see the log line above)",
               o->ckpt);
    }
  }
  if (st == WEFT_OK) {
    char why[256];
    st = weft_generator_load(gen, file, "params", why, sizeof why);
    if (st != WEFT_OK) {
      snprintf(err, err_size, "--ckpt '%s': %s", o->ckpt, why);
    }
  }
  free(json);
  weft_tensor_file_close(file);
  if (st != WEFT_OK) {
    weft_generator_destroy(gen);
    return st;
  }
  fprintf(stderr,
          "weft generate: %s: d=%lld layers=%s ffn=%s heads=%lld/%lld experts=%lld top-%d "
          "(trained at seq %lld)\n",
          o->ckpt, (long long)cfg.dim, cfg.pattern, cfg.moe_pattern, (long long)cfg.heads,
          (long long)cfg.kv_heads, (long long)cfg.experts, cfg.topk, (long long)cfg.seq);
  *gen_p = gen;
  return WEFT_OK;
}

typedef struct generate_stats {
  int64_t prompt, generated;
  double prefill_s, decode_s;
} generate_stats_t;

/* Prefill, then max_tokens draws; each byte goes to stdout as soon as it is drawn. */
static weft_status_t generate(weft_generator_t *gen, const generate_opts_t *o,
                              generate_stats_t *stats) {
  const int64_t n = (int64_t)strlen(o->prompt);
  int32_t *ids = malloc((size_t)n * sizeof *ids);
  if (!ids) {
    return WEFT_ERR_NO_MEMORY;
  }
  for (int64_t i = 0; i < n; i++) {
    ids[i] = (unsigned char)o->prompt[i];
  }
  float logits[WEFT_MODEL_VOCAB];
  const double t0 = weft_time_now();
  weft_status_t st = weft_generator_feed(gen, ids, n, logits);
  free(ids);
  WEFT_CHECK(st);
  const double t1 = weft_time_now();
  stats->prompt = n;
  stats->prefill_s = t1 - t0;
  weft_sampler_t sampler;
  weft_sampler_init(&sampler, o->temperature, (int)o->top_k, (uint64_t)o->seed);
  const bool tty = isatty(STDOUT_FILENO);
  for (long i = 0; i < o->max_tokens; i++) {
    const int32_t next = weft_sampler_draw(&sampler, logits);
    putchar(next);
    if (tty) {
      fflush(stdout);
    }
    stats->generated++;
    if (i + 1 < o->max_tokens) { /* the last byte needs no forward */
      WEFT_CHECK(weft_generator_feed(gen, &next, 1, logits));
    }
  }
  fflush(stdout);
  stats->decode_s = weft_time_now() - t1;
  return WEFT_OK;
}

int weft_cmd_generate(int argc, char **argv) {
  generate_opts_t o;
  const int rc = parse_opts(argc, argv, &o);
  if (rc >= 0) {
    return rc;
  }
  weft_device_t *dev = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  weft_generator_t *gen = NULL;
  generate_stats_t stats = {0};
  char err[512] = "";
  const int64_t capacity = (int64_t)strlen(o.prompt) + o.max_tokens;
  weft_status_t st = set_cpu_threads();
  if (st == WEFT_OK) {
    st = open_device(o.device, &dev);
  }
  if (st == WEFT_OK) {
    st = weft_kernel_ctx_create(dev, NULL, &ctx);
  }
  if (st == WEFT_OK) {
    st = load_checkpoint(&o, ctx, capacity, &gen, err, sizeof err);
  } else {
    snprintf(err, sizeof err, "cannot open --device %s (see the log line above)", o.device);
  }
  if (st == WEFT_OK) {
    snprintf(err, sizeof err, "generation failed (see the log line above)");
    st = generate(gen, &o, &stats);
  }
  if (st == WEFT_OK) {
    const double decode_rate = stats.decode_s > 0 ? (double)stats.generated / stats.decode_s : 0;
    const double prefill_rate = stats.prefill_s > 0 ? (double)stats.prompt / stats.prefill_s : 0;
    fprintf(stderr,
            "%sweft generate: %lld tokens in %.3f s (%.1f tokens/s) after a prefill of %lld "
            "prompt tokens in %.3f s (%.1f tokens/s); cache %lld positions (%.2f MiB), "
            "device %s\n",
            isatty(STDOUT_FILENO) ? "\n" : "", (long long)stats.generated, stats.decode_s,
            decode_rate, (long long)stats.prompt, stats.prefill_s, prefill_rate,
            (long long)capacity, (double)weft_generator_cache_bytes(gen) / (1024.0 * 1024.0),
            weft_device_kind_name(dev->kind));
  } else {
    fprintf(stderr, "weft generate: %s\n", err);
  }
  weft_generator_destroy(gen);
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(dev);
  return st == WEFT_OK ? WEFT_EXIT_OK : WEFT_EXIT_FAILURE;
}
