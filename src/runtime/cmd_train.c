/* `weft train` and `weft eval` (docs/training.md).
 *
 * Errors: flags, the --config file and the data path are checked before MPI starts, and the
 * options against the world size right after, identically on every rank, so each rank
 * prints the problem and exits 2 without any rank waiting in a collective. A non-finite loss
 * is seen by every rank at once (it is reduced), which all stop with exit 1 after a clean MPI
 * finalize. Anything else fails inside the library and ends the job (session.h). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "session.h"
#include "train_opts.h"
#include "trainer.h"
#include "weft/check.h"
#include "weft/checkpoint.h"
#include "weft/tensor_file.h"
#include "weft/timer.h"

static const weft_cli_command_t k_train = {
    "train", "Train the model of docs/model.md on a text corpus (dp x sp x ep ranks).", "[flags]",
    NULL};
static const weft_cli_command_t k_eval = {
    "eval",
    "Validation loss of a checkpoint (--from CKPT), saved parameters (--params) or the initial "
    "model.",
    "[flags]", NULL};
static const weft_cli_command_t k_finetune = {
    "finetune",
    "Continue training a checkpoint's model (--from CKPT) on new data with a new schedule; "
    "--freeze keeps parameter groups fixed, --reset-optimizer starts AdamW afresh.",
    "--from CKPT --data PATH [flags]", NULL};

static void format_duration(double s, char *buf, size_t size) {
  const long t = (long)(s + 0.5);
  if (t >= 3600) {
    snprintf(buf, size, "%ldh%02ldm", t / 3600, t / 60 % 60);
  } else if (t >= 60) {
    snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
  } else {
    snprintf(buf, size, "%lds", t);
  }
}

static void print_start(const weft_train_opts_t *o, const weft_train_plan_t *p, weft_trainer_t *t) {
  char mesh[96];
  weft_mesh_describe(&p->mesh, mesh, sizeof mesh);
  const weft_model_config_t *m = &p->model;
  printf(
      "weft train: %lld parameters, d=%lld layers=%s ffn=%s heads=%lld/%lld experts=%lld "
      "top-%d, seq %lld, batch %ld (%ld micro-batches of %ld per rank)\n",
      (long long)weft_model_global_params(weft_trainer_model(t)), (long long)m->dim, m->pattern,
      m->moe_pattern, (long long)m->heads, (long long)m->kv_heads, (long long)m->experts, m->topk,
      (long long)m->seq, o->batch, p->micro_batches, p->rows);
  printf("weft train: mesh %s, softmax SP %s, linear SP %s; corpus %s (unigram %.3f nats/byte)\n",
         mesh, o->sp_algo, o->linear_algo, o->data, weft_trainer_unigram_nats(t));
  fflush(stdout);
}

static void write_metrics(FILE *f, const weft_step_metrics_t *s, double val_loss) {
  if (!f) {
    return;
  }
  fprintf(f,
          "{\"step\":%lld,\"loss\":%.9g,\"ce\":%.9g,\"lbl\":%.9g,\"zloss\":%.9g,\"lr\":%.6g,"
          "\"grad_norm\":%.9g,\"tokens_per_s\":%.1f,\"step_s\":%.6f,\"compute_s\":%.6f,"
          "\"wait_s\":%.6f,\"comm_s\":%.6f,\"allreduce_s\":%.6f,\"comm_bytes\":%llu",
          (long long)s->step, s->loss, s->ce, s->lbl, s->zloss, s->lr, s->grad_norm,
          s->tokens_per_s, s->step_s, s->step_s - s->comm_s - s->wait_s, s->wait_s, s->comm_s,
          s->allreduce_s, (unsigned long long)s->comm_bytes);
  if (val_loss == val_loss) {
    fprintf(f, ",\"val_loss\":%.9g", val_loss);
  }
  fprintf(f, "}\n");
  fflush(f);
}

/* Progress: one rewritten line on a terminal, plain lines every --log-every steps otherwise. */
static void print_progress(const weft_train_opts_t *o, const weft_step_metrics_t *s,
                           long first_step, double elapsed, bool tty) {
  const bool last = s->step == o->steps;
  if (!tty && s->step % o->log_every != 0 && s->step != 1 && !last) {
    return;
  }
  char eta[32];
  const double done = (double)(s->step - first_step);
  format_duration(elapsed / (done > 0 ? done : 1) * (double)(o->steps - s->step), eta, sizeof eta);
  printf("%sstep %lld/%ld loss %.4f lr %.2e |g| %.3f tok/s %.0f comm %.0f%% ETA %s%s",
         tty ? "\r" : "", (long long)s->step, o->steps, s->loss, s->lr, s->grad_norm,
         s->tokens_per_s, 100.0 * s->comm_s / (s->step_s > 0 ? s->step_s : 1), eta,
         tty ? "\033[K" : "\n");
  fflush(stdout);
}

static weft_status_t save_params(weft_trainer_t *t, weft_comm_t *world, const char *path,
                                 const weft_train_opts_t *o) {
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_tensor_file_create(path, world, &file));
  weft_status_t st = weft_model_write(weft_trainer_model(t), file, "params", false);
  char *json = weft_train_opts_json(o);
  if (st == WEFT_OK && json) {
    st = weft_tensor_file_attr_write_str(file, NULL, "config", json);
  }
  free(json);
  const weft_status_t close_st = weft_tensor_file_close(file);
  return st != WEFT_OK ? st : close_st;
}

static weft_status_t load_params(weft_trainer_t *t, weft_comm_t *world, const char *path) {
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_tensor_file_open(path, WEFT_TENSOR_FILE_READ, world, &file));
  const weft_status_t st = weft_model_read(weft_trainer_model(t), file, "params");
  weft_tensor_file_close(file);
  return st;
}

typedef struct train_run {
  const weft_cli_command_t *cmd;
  const weft_train_opts_t *o;
  const weft_train_plan_t *plan;
  weft_session_t *session;
  bool nonfinite;
  /* the checkpoint being written in the background, for its log line */
  long save_step;
  const char *save_why;
  double save_started, save_blocked_s;
} train_run_t;

/* SIGUSR1 (SLURM's --signal warning before the time limit) or SIGTERM: finish the step,
 * checkpoint, exit 0. The flag is agreed over the ranks after every step, since a signal may
 * reach the ranks at different steps. */
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int signo) { g_stop_signal = signo; }

static void install_signal_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

static weft_status_t stop_requested(weft_comm_t *world, bool *stop_p) {
  int32_t mine = g_stop_signal != 0, any = 0;
  WEFT_CHECK(
      weft_comm_allreduce(world, &mine, &any, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  *stop_p = any != 0;
  return WEFT_OK;
}

/* Where this run starts: a fine-tuning source, a checkpoint to resume, saved parameters, or
 * the initialisation. *resumed_p: continuing an earlier run (metrics are appended). */
static weft_status_t load_start(train_run_t *r, weft_trainer_t *t, bool *resumed_p) {
  const weft_train_opts_t *o = r->o;
  const bool root = r->session->boot.world_rank == 0;
  char path[4096];
  bool found = false;
  int64_t step = 0;
  *resumed_p = false;
  /* An interrupted run (a requeued batch job) resumes its own checkpoint first; --from only
   * says where a fine-tuning run that has none yet starts. */
  if (o->resume) {
    WEFT_CHECK(weft_ckpt_resolve(o->resume, o->ckpt_dir, path, sizeof path, &found));
    if (found) {
      WEFT_CHECK(weft_trainer_load(t, path, WEFT_LOAD_RESUME, &step));
      *resumed_p = true;
      if (root) {
        printf("weft %s: resumed from %s at step %lld\n", r->cmd->name, path, (long long)step);
      }
      return WEFT_OK;
    }
    if (root && !o->from) {
      printf("weft %s: no checkpoint in %s yet: starting from scratch\n", r->cmd->name,
             o->ckpt_dir);
    }
  }
  if (o->from) {
    WEFT_CHECK(weft_ckpt_resolve(o->from, NULL, path, sizeof path, &found));
    WEFT_CHECK(weft_trainer_load(
        t, path, o->reset_optimizer ? WEFT_LOAD_PARAMS : WEFT_LOAD_FINETUNE, &step));
    if (root) {
      printf("weft %s: starting from %s (step %lld)%s\n", r->cmd->name, path, (long long)step,
             o->reset_optimizer ? " with fresh optimizer state" : "");
    }
    return WEFT_OK;
  }
  return o->params ? load_params(t, r->session->world, o->params) : WEFT_OK;
}

static void report_saved(const train_run_t *r, const char *path) {
  if (r->session->boot.world_rank == 0) {
    /* On a terminal the progress line has no newline yet. */
    printf("%sweft %s: checkpoint saved: %s (step %ld, %s, %.2f s, training blocked %.2f s)\n",
           isatty(STDOUT_FILENO) ? "\n" : "", r->cmd->name, path, r->save_step, r->save_why,
           weft_time_now() - r->save_started, r->save_blocked_s);
    fflush(stdout);
  }
}

/* Commits a background checkpoint once every rank has written it (wait: waits for that). */
static weft_status_t checkpoint_poll(train_run_t *r, weft_trainer_t *t, bool wait) {
  char path[4096];
  bool committed = false;
  WEFT_CHECK(weft_trainer_save_poll(t, wait, &committed, path, sizeof path));
  if (committed) {
    report_saved(r, path);
  }
  return WEFT_OK;
}

/* Saves after `steps_done` steps: in the background unless --sync-save; `final` (the run
 * ends after this step) waits until it is committed. */
static weft_status_t checkpoint(train_run_t *r, weft_trainer_t *t, long steps_done, const char *why,
                                bool final) {
  const bool background = !r->o->sync_save;
  char path[4096];
  const double t0 = weft_time_now();
  /* The previous save first, committed and reported; waiting for it blocks training too. */
  WEFT_CHECK(checkpoint_poll(r, t, true));
  const double t1 = weft_time_now();
  WEFT_CHECK(weft_trainer_save(t, r->o->ckpt_dir, steps_done, (int)r->o->keep, background, path,
                               sizeof path));
  r->save_step = steps_done;
  r->save_why = why;
  r->save_started = t1;
  r->save_blocked_s = weft_time_now() - t0;
  if (!background) {
    report_saved(r, path);
    return WEFT_OK;
  }
  return final ? checkpoint_poll(r, t, true) : WEFT_OK;
}

static weft_status_t train(train_run_t *r) {
  const weft_train_opts_t *o = r->o;
  const bool root = r->session->boot.world_rank == 0;
  weft_trainer_t *t = NULL;
  WEFT_CHECK(weft_trainer_create(o, r->plan, r->session->world, &t));
  install_signal_handlers();
  bool resumed = false;
  weft_status_t st = load_start(r, t, &resumed);
  FILE *metrics = NULL;
  if (st == WEFT_OK && root) {
    print_start(o, r->plan, t);
    if (o->metrics && !(metrics = fopen(o->metrics, resumed ? "a" : "w"))) {
      fprintf(stderr, "weft %s: cannot write --metrics '%s'\n", r->cmd->name, o->metrics);
    }
  }
  const bool tty = root && isatty(STDOUT_FILENO);
  const double t0 = weft_time_now();
  const long first = (long)weft_trainer_start_step(t);
  double val = 0.0 / 0.0;
  for (long step = first; step < o->steps && st == WEFT_OK; step++) {
    weft_step_metrics_t m;
    st = weft_trainer_step(t, step, &m);
    if (st != WEFT_OK) {
      break;
    }
    if (m.nonfinite) {
      if (root) {
        fprintf(stderr,
                "\nweft %s: non-finite loss at step %ld (loss %g, gradient norm %g); the "
                "parameters were not updated. Lower --lr or check the data.\n",
                r->cmd->name, step + 1, m.loss, m.grad_norm);
      }
      r->nonfinite = true;
      break;
    }
    const bool last = step + 1 == o->steps;
    const bool eval_now = (o->eval_every > 0 && (step + 1) % o->eval_every == 0) || last;
    val = 0.0 / 0.0;
    if (eval_now && o->eval_batches > 0) {
      st = weft_trainer_evaluate(t, o->eval_batches, &val);
    }
    if (root) {
      print_progress(o, &m, first, weft_time_now() - t0, tty);
      if (val == val) {
        printf("%sstep %ld: validation loss %.4f nats/byte (unigram %.3f)\n", tty ? "\n" : "",
               step + 1, val, weft_trainer_unigram_nats(t));
      }
      write_metrics(metrics, &m, val);
    }
    bool signalled = false;
    if (st == WEFT_OK) {
      st = stop_requested(r->session->world, &signalled);
    }
    const bool stop = signalled || (o->stop_at > 0 && step + 1 == o->stop_at);
    if (st == WEFT_OK) {
      st = checkpoint_poll(r, t, false); /* an earlier save may have finished writing */
    }
    const char *why = signalled ? "signal" : stop ? "--stop-at" : "scheduled";
    if (st == WEFT_OK && o->ckpt_dir &&
        (stop || last || (o->ckpt_every > 0 && (step + 1) % o->ckpt_every == 0))) {
      st = checkpoint(r, t, step + 1, why, stop || last);
    }
    if (stop && !last) {
      if (root) {
        printf("weft %s: stopping after step %ld (%s)%s\n", r->cmd->name, step + 1,
               signalled ? "signal" : "--stop-at",
               o->ckpt_dir ? "" : "; no --ckpt-dir, so no checkpoint");
      }
      break;
    }
  }
  if (st == WEFT_OK) { /* a save still being written (the run stopped on a non-finite loss) */
    st = checkpoint_poll(r, t, true);
  }
  if (st == WEFT_OK && !r->nonfinite && o->save) {
    st = save_params(t, r->session->world, o->save, o);
    if (st == WEFT_OK && root) {
      printf("weft %s: parameters saved to %s\n", r->cmd->name, o->save);
    }
  }
  if (root) {
    char took[32];
    format_duration(weft_time_now() - t0, took, sizeof took);
    printf("weft %s: %s after %s\n", r->cmd->name,
           st == WEFT_OK && !r->nonfinite ? "done" : "stopped", took);
  }
  if (metrics) {
    fclose(metrics);
  }
  weft_trainer_destroy(t);
  return st;
}

static int run_command(const weft_cli_command_t *cmd, int argc, char **argv, bool eval) {
  weft_train_opts_t o;
  int rc = weft_train_opts_load(cmd, &o, NULL, 0, argc, argv);
  if (rc >= 0) {
    return rc;
  }
  if (cmd == &k_finetune && !o.from) {
    fprintf(stderr, "weft finetune: --from CKPT is required (a checkpoint file or directory)\n");
    return WEFT_EXIT_USAGE;
  }
  if (cmd != &k_finetune && (o.freeze || o.reset_optimizer)) {
    fprintf(stderr, "weft %s: --freeze and --reset-optimizer belong to weft finetune\n", cmd->name);
    return WEFT_EXIT_USAGE;
  }
  if (cmd == &k_train && o.from) {
    fprintf(stderr,
            "weft train: --from starts a new run from a checkpoint: use weft finetune "
            "(or --resume to continue the same run)\n");
    return WEFT_EXIT_USAGE;
  }
  weft_session_t session;
  weft_session_start(&session, cmd->name, &argc, &argv, o.device);
  weft_train_plan_t plan;
  rc = weft_train_resolve_or_exit(cmd, &o, &session, &plan);
  if (rc >= 0) {
    weft_session_end(&session, WEFT_OK);
    return rc;
  }
  train_run_t run = {.cmd = cmd, .o = &o, .plan = &plan, .session = &session};
  weft_status_t st = WEFT_OK;
  if (!eval) {
    st = train(&run);
  } else {
    weft_trainer_t *t = NULL;
    st = weft_trainer_create(&o, &plan, session.world, &t);
    if (st == WEFT_OK && o.from) {
      char path[4096];
      bool found = false;
      st = weft_ckpt_resolve(o.from, NULL, path, sizeof path, &found);
      if (st == WEFT_OK) st = weft_trainer_load(t, path, WEFT_LOAD_PARAMS, NULL);
    } else if (st == WEFT_OK && o.params) {
      st = load_params(t, session.world, o.params);
    }
    double val = 0;
    if (st == WEFT_OK) {
      st = weft_trainer_evaluate(t, o.eval_batches, &val);
    }
    if (st == WEFT_OK && session.boot.world_rank == 0) {
      printf(
          "validation loss %.4f nats/byte over %ld micro-batches of %ld sequences (unigram "
          "%.3f)\n",
          val, o.eval_batches, plan.rows * plan.mesh.dp, weft_trainer_unigram_nats(t));
    }
    weft_trainer_destroy(t);
  }
  rc = weft_session_end(&session, st);
  return run.nonfinite ? WEFT_EXIT_FAILURE : rc;
}

int weft_cmd_train(int argc, char **argv) { return run_command(&k_train, argc, argv, false); }

int weft_cmd_eval(int argc, char **argv) { return run_command(&k_eval, argc, argv, true); }

int weft_cmd_finetune(int argc, char **argv) { return run_command(&k_finetune, argc, argv, false); }
