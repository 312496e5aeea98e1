/* `weft ckpt info|verify|export` (docs/checkpoint-format.md): look at, check and convert a
 * checkpoint on one process (no MPI job needed; the file is read serially).
 *
 *   weft ckpt info PATH               root attributes, then every dataset with shape and checksum
 *   weft ckpt verify PATH             recomputes every dataset's checksum; exit 1 on the first bad
 *   weft ckpt export PATH --output F  the parameters (/params/<name>, f32, global shapes) and the
 *                                     run configuration into a plain tensor file, checksums
 *                                     verified first; `weft eval --params F` and h5py read it
 * PATH is a checkpoint file or a checkpoint directory (its `latest`). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "weft/checkpoint.h"
#include "weft/log.h"
#include "weft/tensor_file.h"

static const weft_cli_command_t k_command = {
    "ckpt", "Inspect, verify or export a checkpoint: `weft ckpt info|verify|export PATH`.",
    "info|verify|export PATH [--output OUT.h5]", NULL};

static void print_attrs(weft_tensor_file_t *f) {
  static const char *const ints[] = {"format_version", "step", "optimizer_step", "tokens_seen",
                                     "ranks"};
  static const char *const strs[] = {"weft_version", "mesh", "model", "config"};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    int64_t v = 0;
    if (weft_tensor_file_attr_read_i64(f, NULL, ints[i], &v) == WEFT_OK) {
      printf("%-15s %lld\n", ints[i], (long long)v);
    }
  }
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    char *v = NULL;
    if (weft_tensor_file_attr_read_str(f, NULL, strs[i], &v) == WEFT_OK) {
      printf("%-15s %s\n", strs[i], v);
    }
    free(v);
  }
}

static weft_status_t info(const char *path) {
  weft_tensor_file_t *f = NULL;
  if (weft_ckpt_open(NULL, path, &f) != WEFT_OK) {
    return WEFT_ERR_CORRUPT;
  }
  printf("file            %s\n", path);
  print_attrs(f);
  weft_tensor_file_names_t names = {0};
  weft_status_t st = weft_tensor_file_list(f, &names);
  int64_t total = 0;
  for (int i = 0; i < names.count && st == WEFT_OK; i++) {
    weft_tensor_file_info_t ti;
    int64_t sum = 0;
    st = weft_tensor_file_query(f, names.names[i], &ti);
    if (st == WEFT_OK) {
      st = weft_tensor_file_attr_read_i64(f, names.names[i], "checksum", &sum);
    }
    if (st != WEFT_OK) {
      break;
    }
    char shape[96] = "";
    int64_t numel = 1;
    for (int d = 0; d < ti.ndim; d++) {
      snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? "," : "",
               (long long)ti.shape[d]);
      numel *= ti.shape[d];
    }
    total += numel;
    printf("%-40s f32 [%s] checksum %016" PRIx64 "\n", names.names[i], shape, (uint64_t)sum);
  }
  printf("%d datasets, %lld values (%.1f MB)\n", names.count, (long long)total, total * 4e-6);
  weft_tensor_file_names_cleanup(&names);
  weft_tensor_file_close(f);
  return st;
}

static weft_status_t export_params(const char *path, const char *output) {
  weft_tensor_file_t *in = NULL, *out = NULL;
  if (weft_ckpt_open(NULL, path, &in) != WEFT_OK) {
    return WEFT_ERR_CORRUPT;
  }
  weft_tensor_file_names_t names = {0};
  char *config = NULL;
  weft_status_t st = weft_tensor_file_list(in, &names);
  if (st == WEFT_OK) st = weft_tensor_file_attr_read_str(in, NULL, "config", &config);
  if (st == WEFT_OK) st = weft_tensor_file_create(output, NULL, &out);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_str(out, NULL, "config", config);
  int exported = 0;
  for (int i = 0; i < names.count && st == WEFT_OK; i++) {
    if (strncmp(names.names[i], "/params/", 8) != 0) {
      continue;
    }
    weft_ckpt_tensor_t t;
    st = weft_ckpt_read_whole(in, names.names[i], &t); /* verifies the checksum */
    if (st == WEFT_OK) {
      st = weft_tensor_file_write(out, t.name, WEFT_DTYPE_F32, t.ndim, t.shape, t.data);
    }
    exported += st == WEFT_OK;
    free(t.data);
  }
  const weft_status_t close_st = out ? weft_tensor_file_close(out) : WEFT_OK;
  st = st != WEFT_OK ? st : close_st;
  if (st == WEFT_OK) {
    printf("exported %d parameter tensors from %s to %s\n", exported, path, output);
  }
  free(config);
  weft_tensor_file_names_cleanup(&names);
  weft_tensor_file_close(in);
  return st;
}

int weft_cmd_ckpt(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    printf(
        "usage: weft ckpt info|verify|export PATH [--output OUT.h5]\n\n%s\n"
        "PATH: a checkpoint file or a checkpoint directory (its `latest`).\n",
        k_command.summary);
    return argc < 2 ? WEFT_EXIT_USAGE : WEFT_EXIT_OK;
  }
  const char *what = argv[1];
  const char *output = NULL;
  const weft_cli_flag_t flags[] = {
      {"output", 'o', WEFT_CLI_STRING, &output, "OUT.h5", "export: output file"}};
  if (argc < 3 || argv[2][0] == '-') {
    fprintf(stderr, "weft ckpt %s: a checkpoint PATH is required\n", what);
    return WEFT_EXIT_USAGE;
  }
  bool help = false;
  if (weft_cli_parse(&k_command, flags, 1, argc - 2, argv + 2, &help) != WEFT_OK) {
    return WEFT_EXIT_USAGE;
  }
  if (help) {
    return WEFT_EXIT_OK;
  }
  weft_log_configure();
  char path[4096];
  bool found = false;
  if (weft_ckpt_resolve(argv[2], NULL, path, sizeof path, &found) != WEFT_OK) {
    return WEFT_EXIT_FAILURE;
  }
  weft_status_t st;
  if (strcmp(what, "info") == 0) {
    st = info(path);
  } else if (strcmp(what, "verify") == 0) {
    st = weft_ckpt_verify(path, stdout);
    if (st == WEFT_OK) {
      printf("%s: every checksum verified\n", path);
    }
  } else if (strcmp(what, "export") == 0) {
    if (!output) {
      fprintf(stderr, "weft ckpt export: --output OUT.h5 is required\n");
      return WEFT_EXIT_USAGE;
    }
    st = export_params(path, output);
  } else {
    fprintf(stderr, "weft ckpt: unknown action '%s' (info, verify or export)\n", what);
    return WEFT_EXIT_USAGE;
  }
  if (st != WEFT_OK) {
    fprintf(stderr, "weft ckpt %s: %s: failed (%s)\n", what, path, weft_status_str(st));
    return WEFT_EXIT_FAILURE;
  }
  return WEFT_EXIT_OK;
}
