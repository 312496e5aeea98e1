/* `weft train` and `weft eval` (docs/training.md).
 *
 * Errors: flags, the --config file and the data path are checked before MPI starts, and the
 * options against the world size right after, identically on every rank, so each rank
 * prints the problem and exits 2 without any rank waiting in a collective. A non-finite loss
 * is seen by every rank at once (it is reduced), which all stop with exit 1 after a clean MPI
 * finalize. Anything else fails inside the library and ends the job (session.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "session.h"
#include "train_opts.h"
#include "trainer.h"
#include "weft/check.h"
#include "weft/tensor_file.h"
#include "weft/timer.h"

static const weft_cli_command_t k_train = {
    "train", "Train the model of docs/model.md on a text corpus (dp x sp x ep ranks).", "[flags]",
    NULL};
static const weft_cli_command_t k_eval = {
    "eval", "Validation loss of saved parameters (--params) or of the initial model.", "[flags]",
    NULL};

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
static void print_progress(const weft_train_opts_t *o, const weft_step_metrics_t *s, double elapsed,
                           bool tty) {
  const bool last = s->step == o->steps;
  if (!tty && s->step % o->log_every != 0 && s->step != 1 && !last) {
    return;
  }
  char eta[32];
  format_duration(elapsed / (double)s->step * (double)(o->steps - s->step), eta, sizeof eta);
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
  const weft_train_opts_t *o;
  const weft_train_plan_t *plan;
  weft_session_t *session;
  bool nonfinite;
} train_run_t;

static weft_status_t train(train_run_t *r) {
  const weft_train_opts_t *o = r->o;
  const bool root = r->session->boot.world_rank == 0;
  weft_trainer_t *t = NULL;
  WEFT_CHECK(weft_trainer_create(o, r->plan, r->session->world, &t));
  weft_status_t st = o->params ? load_params(t, r->session->world, o->params) : WEFT_OK;
  FILE *metrics = NULL;
  if (st == WEFT_OK && root) {
    print_start(o, r->plan, t);
    if (o->metrics && !(metrics = fopen(o->metrics, "w"))) {
      fprintf(stderr, "weft train: cannot write --metrics '%s'\n", o->metrics);
    }
  }
  const bool tty = root && isatty(STDOUT_FILENO);
  const double t0 = weft_time_now();
  double val = 0.0 / 0.0;
  for (long step = 0; step < o->steps && st == WEFT_OK; step++) {
    weft_step_metrics_t m;
    st = weft_trainer_step(t, step, &m);
    if (st != WEFT_OK) {
      break;
    }
    if (m.nonfinite) {
      if (root) {
        fprintf(stderr,
                "\nweft train: non-finite loss at step %ld (loss %g, gradient norm %g); the "
                "parameters were not updated. Lower --lr or check the data.\n",
                step + 1, m.loss, m.grad_norm);
      }
      r->nonfinite = true;
      break;
    }
    const bool eval_now =
        (o->eval_every > 0 && (step + 1) % o->eval_every == 0) || step + 1 == o->steps;
    val = 0.0 / 0.0;
    if (eval_now && o->eval_batches > 0) {
      st = weft_trainer_evaluate(t, o->eval_batches, &val);
    }
    if (root) {
      print_progress(o, &m, weft_time_now() - t0, tty);
      if (val == val) {
        printf("%sstep %ld: validation loss %.4f nats/byte (unigram %.3f)\n", tty ? "\n" : "",
               step + 1, val, weft_trainer_unigram_nats(t));
      }
      write_metrics(metrics, &m, val);
    }
  }
  if (st == WEFT_OK && !r->nonfinite && o->save) {
    st = save_params(t, r->session->world, o->save, o);
    if (st == WEFT_OK && root) {
      printf("weft train: parameters saved to %s\n", o->save);
    }
  }
  if (root) {
    char took[32];
    format_duration(weft_time_now() - t0, took, sizeof took);
    printf("weft train: %s after %s\n", st == WEFT_OK && !r->nonfinite ? "done" : "stopped", took);
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
  weft_session_t session;
  weft_session_start(&session, cmd->name, &argc, &argv, o.device);
  weft_train_plan_t plan;
  rc = weft_train_resolve_or_exit(cmd, &o, &session, &plan);
  if (rc >= 0) {
    weft_session_end(&session, WEFT_OK);
    return rc;
  }
  train_run_t run = {.o = &o, .plan = &plan, .session = &session};
  weft_status_t st = WEFT_OK;
  if (!eval) {
    st = train(&run);
  } else {
    weft_trainer_t *t = NULL;
    st = weft_trainer_create(&o, &plan, session.world, &t);
    if (st == WEFT_OK && o.params) {
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
