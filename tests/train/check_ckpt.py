#!/usr/bin/env python3
"""train.checkpoint: checkpoints of `weft train` (docs/checkpoint-format.md).

usage: check_ckpt.py WEFT MPIRUN OUTDIR [--quick]

  resume      40 steps straight vs 20 steps (--stop-at), then --resume auto for 20 more, at
              dp 2 x sp 2, ep 2, --deterministic: identical losses (9 digits) and bitwise
              identical parameters and AdamW moments in the final checkpoints
  reshard     the step-20 checkpoint (saved at 4 ranks: dp 2 x sp 2, ep 2) resumed at 1 rank,
              2 ranks (sp 2, ep 2) and 3 ranks (sp 3); and one saved at sp 4, ep 4 resumed at
              1 and 2 ranks: the loss of the next step equals the 4-rank run's within 2e-5
  crash       a rank killed with SIGKILL in the middle of a save (WEFT_FAULT_KILL_IN_SAVE):
              `latest` still names the previous checkpoint, the .tmp is never loaded, and
              --resume auto continues from the previous one
  corrupt     a flipped byte inside /params/embed, a truncated file, another model's
              configuration, a .tmp path: `weft ckpt verify` and --resume fail naming the
              dataset or the file, with a non-zero exit
  background  checkpoints written in the background (the default) are bitwise the ones
              --sync-save writes at the same steps, while training went on after each; so
              are those written with collective MPI-IO (WEFT_CKPT_IO=mpiio), in the
              background (MPI from the writer thread) and not; WEFT_CKPT_IO=bogus stops the
              run with a message naming it
  h5py        h5py reads a checkpoint and gets the tensors `weft ckpt export` writes; a copy
              that h5py rewrote with chunked, compressed datasets (which weft reads through
              HDF5 instead of at byte offsets) verifies and resumes like the original
  finetune    `weft finetune --freeze embed,attn` keeps those parameters bitwise unchanged and
              trains the others; --reset-optimizer starts AdamW afresh; pretrained on fortunes
              and fine-tuned on /usr/share/common-licenses, the held-out license loss beats
              training from scratch with the same step budget (measured 2.63 vs 3.06)
--quick (sanitizer build): fewer steps, no reshard at 3 ranks, no fine-tune-vs-scratch run.
"""
import json
import os
import shutil
import subprocess
import sys

TINY = ["--dim", "32", "--layers", "LS", "--heads", "4", "--kv-heads", "2", "--experts", "4",
        "--topk", "2", "--ffn-dim", "32", "--seq", "48", "--batch", "8", "--warmup", "4",
        "--lr", "3e-3", "--eval-every", "0", "--eval-batches", "1", "--seed", "5"]
MESH4 = ["--dp", "2", "--sp", "2", "--ep", "2"]
RESHARD_RTOL = 2e-5


def run(cmd, env=None, timeout=300):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)


def must(proc, what):
    if proc.returncode != 0:
        print(proc.stdout)
        raise SystemExit(f"FAIL {what}: exit {proc.returncode}")
    return proc.stdout


def metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def datasets(path):
    import h5py
    import numpy
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, numpy.array(o))
                     if isinstance(o, h5py.Dataset) else None)
    return out


def train(ctx, np_, args, env=None):
    return run([ctx["mpirun"], str(np_), ctx["weft"], "train"] + TINY + args, env=env)


def test_resume(ctx, steps):
    d = ctx["dir"]
    half = steps // 2
    a_dir, b_dir = os.path.join(d, "straight"), os.path.join(d, "stopped")
    a_m, b_m = os.path.join(d, "straight.jsonl"), os.path.join(d, "stopped.jsonl")
    common = MESH4 + ["--steps", str(steps), "--deterministic", "--ckpt-every", str(half)]
    must(train(ctx, 4, common + ["--ckpt-dir", a_dir, "--metrics", a_m]), "straight run")
    out = must(train(ctx, 4, common + ["--ckpt-dir", b_dir, "--metrics", b_m,
                                       "--stop-at", str(half)]), "run stopped at half")
    assert "stopping after step" in out, out
    out = must(train(ctx, 4, common + ["--ckpt-dir", b_dir, "--metrics", b_m,
                                       "--resume", "auto"]), "resumed run")
    assert f"resumed from {b_dir}/step-{half:08d}.h5 at step {half}" in out, out
    a, b = metrics(a_m), metrics(b_m)
    assert len(a) == steps and len(b) == steps, (len(a), len(b))
    for ra, rb in zip(a, b):
        if ra["loss"] != rb["loss"] or ra["grad_norm"] != rb["grad_norm"]:
            raise SystemExit(f"FAIL resume: step {ra['step']}: {ra['loss']} vs {rb['loss']}")
    fa = datasets(os.path.join(a_dir, f"step-{steps:08d}.h5"))
    fb = datasets(os.path.join(b_dir, f"step-{steps:08d}.h5"))
    assert fa.keys() == fb.keys() and len(fa) > 24, fa.keys()
    for name in fa:
        if fa[name].tobytes() != fb[name].tobytes():
            raise SystemExit(f"FAIL resume: {name} differs after resuming")
    print(f"ok resume: {steps} steps straight == {half} + {half} resumed: equal losses, "
          f"{len(fa)} datasets (parameters and AdamW moments) bitwise equal")
    ctx["half_ckpt"] = os.path.join(a_dir, f"step-{half:08d}.h5")
    ctx["straight"] = a
    ctx["half"] = half


def test_reshard(ctx, quick):
    half, want = ctx["half"], ctx["straight"][ctx["half"]]["loss"]
    # A second source mesh: the same run at sp 4 x ep 4, checkpointed at step `half`; its own
    # step half + 1 is the reference for checkpoints loaded from it (20 steps on another mesh
    # drift by ~1e-5 from the first run's losses, which is not what this test measures).
    sp4 = os.path.join(ctx["dir"], "sp4")
    sp4_m = os.path.join(ctx["dir"], "sp4.jsonl")
    must(train(ctx, 4, ["--sp", "4", "--ep", "4", "--steps", str(2 * half), "--deterministic",
                        "--ckpt-dir", sp4, "--ckpt-every", str(half), "--stop-at", str(half + 1),
                        "--metrics", sp4_m]), "save at sp 4, ep 4")
    sources = [("dp2 sp2 ep2", ctx["half_ckpt"], want),
               ("sp4 ep4", os.path.join(sp4, f"step-{half:08d}.h5"), metrics(sp4_m)[half]["loss"])]
    if quick:
        sources = sources[:1]
    meshes = [(1, ["--ep", "1"]), (2, ["--sp", "2", "--ep", "2"])]
    if not quick:
        meshes.append((3, ["--sp", "3", "--ep", "1"]))
    for (source, ckpt, want), (np_, mesh) in [(s, m) for s in sources for m in meshes]:
        m = os.path.join(ctx["dir"], f"reshard{np_}.jsonl")
        out = must(train(ctx, np_, mesh + ["--steps", str(2 * half), "--stop-at", str(half + 1),
                                           "--ckpt-dir", os.path.join(ctx["dir"], "rs"),
                                           "--resume", ckpt, "--metrics", m]),
                   f"reshard {source} to {np_} ranks")
        assert f"at step {half}" in out, out
        got = metrics(m)[-1]
        err = abs(got["loss"] - want) / abs(want)
        print(f"{'ok' if err <= RESHARD_RTOL else 'FAIL'} reshard: saved at 4 ranks ({source}), "
              f"step {half + 1} at {np_} ranks {' '.join(mesh)}: loss {got['loss']:.8f} vs "
              f"{want:.8f} (relative {err:.1e})")
        if err > RESHARD_RTOL:
            raise SystemExit("FAIL reshard")


def test_crash(ctx):
    d = os.path.join(ctx["dir"], "crash")
    args = MESH4 + ["--steps", "6", "--ckpt-dir", d, "--ckpt-every", "2"]
    must(train(ctx, 4, args + ["--stop-at", "2"]), "run before the crash")
    env = dict(os.environ, WEFT_FAULT_KILL_IN_SAVE="1")
    proc = train(ctx, 4, args + ["--resume", "auto"], env=env)
    if proc.returncode == 0:
        raise SystemExit("FAIL crash: the run with a killed rank exited 0")
    with open(os.path.join(d, "latest")) as f:
        latest = f.read().strip()
    tmp = [n for n in os.listdir(d) if n.endswith(".tmp")]
    assert latest == "step-00000002.h5", latest
    assert tmp == ["step-00000004.h5.tmp"], tmp
    bad = run([ctx["weft"], "ckpt", "verify", os.path.join(d, tmp[0])])
    assert bad.returncode != 0 and "unfinished checkpoint" in bad.stdout, bad.stdout
    out = must(train(ctx, 4, args + ["--resume", "auto"]), "resume after the crash")
    assert "resumed from" in out and "step-00000002.h5 at step 2" in out, out
    assert not [n for n in os.listdir(d) if n.endswith(".tmp")], os.listdir(d)
    print(f"ok crash: rank 1 killed while saving step 4 (exit {proc.returncode}); latest = "
          f"{latest}, {tmp[0]} refused, resumed from step 2 and the .tmp cleaned up")


def flip_byte(path, dataset):
    import h5py
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_offset()
    with open(path, "r+b") as f:
        f.seek(offset + 100)
        b = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([b[0] ^ 0x10]))


def test_corrupt(ctx):
    d = ctx["dir"]
    src = ctx["half_ckpt"]
    flipped = os.path.join(d, "flipped.h5")
    shutil.copy(src, flipped)
    flip_byte(flipped, "/params/embed")
    truncated = os.path.join(d, "truncated.h5")
    with open(src, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    cases = [
        ("flipped byte: verify", [ctx["weft"], "ckpt", "verify", flipped], "/params/embed"),
        ("flipped byte: resume", [ctx["mpirun"], "2", ctx["weft"], "train"] + TINY +
         ["--steps", "9", "--sp", "2", "--resume", flipped], "/params/embed"),
        ("truncated: verify", [ctx["weft"], "ckpt", "verify", truncated], "truncated.h5"),
        ("truncated: resume", [ctx["mpirun"], "2", ctx["weft"], "train"] + TINY +
         ["--steps", "9", "--resume", truncated], "truncated.h5"),
        ("other model", [ctx["mpirun"], "2", ctx["weft"], "train"] + TINY +
         ["--steps", "9", "--dim", "48", "--resume", src], "another model"),
        (".tmp file", [ctx["weft"], "ckpt", "verify", src + ".tmp"], ".tmp"),
    ]
    for what, cmd, needle in cases:
        if what == ".tmp file":
            shutil.copy(src, src + ".tmp")
        proc = run(cmd)
        if proc.returncode == 0 or needle not in proc.stdout:
            print(proc.stdout)
            raise SystemExit(f"FAIL corrupt ({what}): exit {proc.returncode}, '{needle}' "
                             f"{'found' if needle in proc.stdout else 'not in the output'}")
        line = [l for l in proc.stdout.splitlines() if needle in l][0].strip()
        print(f"ok corrupt ({what}): exit {proc.returncode}: {line[:160]}")
    os.remove(src + ".tmp")


def test_background(ctx):
    d = ctx["dir"]
    args = MESH4 + ["--steps", "6", "--deterministic", "--ckpt-every", "2", "--keep", "3"]
    files = {}
    mpiio = dict(os.environ, WEFT_CKPT_IO="mpiio")
    for mode, extra, env in (("background", [], None), ("sync", ["--sync-save"], None),
                             ("mpiio", [], mpiio), ("mpiio-sync", ["--sync-save"], mpiio)):
        out = must(train(ctx, 4, args + ["--ckpt-dir", os.path.join(d, mode)] + extra, env=env),
                   mode)
        saved = [l for l in out.splitlines() if "checkpoint saved" in l]
        assert len(saved) == 3 and all("training blocked" in l for l in saved), out
        files[mode] = [datasets(os.path.join(d, mode, f"step-{s:08d}.h5")) for s in (2, 4, 6)]
    for mode in ("background", "mpiio", "mpiio-sync"):
        for step, got, sync in zip((2, 4, 6), files[mode], files["sync"]):
            assert got.keys() == sync.keys() and len(got) > 24, got.keys()
            for name in got:
                if got[name].tobytes() != sync[name].tobytes():
                    raise SystemExit(f"FAIL {mode}: step {step}: {name} differs from --sync-save's")
    bad = train(ctx, 2, ["--steps", "2", "--ckpt-dir", os.path.join(d, "bad-io")],
                env=dict(os.environ, WEFT_CKPT_IO="bogus"))
    assert bad.returncode != 0 and "WEFT_CKPT_IO='bogus': expected posix or mpiio" in bad.stdout, \
        bad.stdout
    print(f"ok background: checkpoints of steps 2, 4, 6 written in the background, and with "
          f"WEFT_CKPT_IO=mpiio (background and --sync-save), are bitwise those of --sync-save "
          f"({len(files['sync'][0])} datasets each)")


def test_chunked_copy(ctx):
    """weft reads its own files at the datasets' byte offsets; a file rewritten by another tool
    with another layout must still load, through HDF5."""
    import h5py
    src = ctx["half_ckpt"]
    d = os.path.join(ctx["dir"], "chunked")
    os.makedirs(d)
    dst = os.path.join(d, os.path.basename(src))
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        fout.attrs.update(fin.attrs)

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                out = fout.create_dataset(name, data=obj[()], chunks=True, compression="gzip")
                out.attrs.update(obj.attrs)
        fin.visititems(copy)
    with h5py.File(dst, "r") as f:
        assert f["params/embed"].chunks is not None
    must(run([ctx["weft"], "ckpt", "verify", dst]), "verify the chunked copy")
    m = os.path.join(ctx["dir"], "chunked.jsonl")
    half = ctx["half"]
    out = must(train(ctx, 2, ["--sp", "2", "--ep", "2", "--steps", str(2 * half), "--stop-at",
                              str(half + 1), "--ckpt-dir", os.path.join(ctx["dir"], "rs2"),
                              "--resume", dst, "--metrics", m]), "resume from the chunked copy")
    assert f"at step {half}" in out, out
    want = ctx["straight"][half]["loss"]
    err = abs(metrics(m)[-1]["loss"] - want) / abs(want)
    if err > RESHARD_RTOL:
        raise SystemExit(f"FAIL chunked copy: step {half + 1} loss off by {err:.1e}")
    print(f"ok h5py: a chunked, gzip-compressed copy verifies and resumes (step {half + 1} loss "
          f"within {err:.1e} of the original's)")


def test_h5py(ctx):
    exported = os.path.join(ctx["dir"], "exported.h5")
    must(run([ctx["weft"], "ckpt", "export", ctx["half_ckpt"], "--output", exported]), "export")
    ck, ex = datasets(ctx["half_ckpt"]), datasets(exported)
    params = {k: v for k, v in ck.items() if k.startswith("params/")}
    assert params.keys() == ex.keys() and params, (params.keys(), ex.keys())
    for name in params:
        if params[name].tobytes() != ex[name].tobytes():
            raise SystemExit(f"FAIL h5py: {name} differs between h5py and weft ckpt export")
    # The checksum attribute follows docs/checkpoint-format.md's formula.
    import h5py
    import numpy as np
    with h5py.File(ctx["half_ckpt"], "r") as f, np.errstate(over="ignore"):
        for name in params:
            b = np.asarray(f[name]).view(np.uint32).ravel().astype(np.uint64)
            i = np.arange(1, b.size + 1, dtype=np.uint64)
            k = (i * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
            want = int(((b + np.uint64(1)) * k).sum(dtype=np.uint64))
            if want != int(f[name].attrs["checksum"]) % 2**64:
                raise SystemExit(f"FAIL h5py: {name}: checksum differs from the documented one")
    print(f"ok h5py: {len(params)} parameter tensors read by h5py equal weft ckpt export's; "
          f"their checksums match docs/checkpoint-format.md's formula")


def test_finetune(ctx):
    d = os.path.join(ctx["dir"], "ft")
    base = ["--steps", "3", "--eval-every", "0", "--ckpt-dir", d, "--sp", "2"]
    for extra in (["--freeze", "embed,attn"], ["--freeze", "layers.1", "--reset-optimizer"]):
        shutil.rmtree(d, ignore_errors=True)
        out = must(run([ctx["mpirun"], "2", ctx["weft"], "finetune", "--from", ctx["half_ckpt"],
                        "--data", "/usr/share/common-licenses"] + base + extra),
                   f"finetune {' '.join(extra)}")
        assert "starting from" in out, out
        before, after = datasets(ctx["half_ckpt"]), datasets(os.path.join(d, "step-00000003.h5"))
        frozen = extra[1].split(",")

        def is_frozen(name):
            n = name[len("params/"):]
            return any((g == "embed" and n == "embed") or (g == "attn" and ".attn." in n) or
                       (g == "layers.1" and n.startswith("layers.1.")) for g in frozen)
        names = [k for k in before if k.startswith("params/")]
        kept = [k for k in names if is_frozen(k)]
        for k in names:
            same = before[k].tobytes() == after[k].tobytes()
            if is_frozen(k) != same:
                raise SystemExit(f"FAIL finetune {extra}: {k} {'changed' if not same else 'did not change'}")
        moments = [k for k in after if k.startswith("optim/m/")]
        assert all(not is_frozen("params/" + k[len("optim/m/"):]) for k in moments), moments
        print(f"ok finetune {' '.join(extra)}: {len(kept)} frozen tensors bitwise unchanged, "
              f"{len(names) - len(kept)} trained; no optimizer state for frozen ones")


def test_finetune_beats_scratch(ctx):
    """Pretrain on fortunes, fine-tune on the license texts; versus the same step budget from
    scratch on the licenses, the held-out license loss must be clearly lower."""
    model = ["--dim", "64", "--layers", "LS", "--heads", "4", "--kv-heads", "2", "--experts",
             "4", "--topk", "2", "--ffn-dim", "128", "--seq", "64", "--batch", "16",
             "--eval-every", "0", "--eval-batches", "8", "--lr", "3e-3"]
    d = os.path.join(ctx["dir"], "pretrain")
    licenses = "/usr/share/common-licenses"
    mp, weft = ctx["mpirun"], ctx["weft"]
    must(run([mp, "4", weft, "train"] + model + ["--steps", "60", "--warmup", "6",
                                                 "--ckpt-dir", d]), "pretraining")
    tuned = must(run([mp, "4", weft, "finetune", "--from", d, "--data", licenses, "--steps",
                      "30", "--warmup", "3", "--seq", "64", "--batch", "16", "--eval-every",
                      "0", "--eval-batches", "8"]), "fine-tuning")
    scratch = must(run([mp, "4", weft, "train"] + model + ["--data", licenses, "--steps", "30",
                                                           "--warmup", "3"]), "from scratch")

    def val(out):
        return float([l for l in out.splitlines() if "validation loss" in l][-1].split()[4])
    v_tuned, v_scratch = val(tuned), val(scratch)
    margin = 0.15
    print(f"{'ok' if v_tuned < v_scratch - margin else 'FAIL'} finetune vs scratch: held-out "
          f"license loss after 30 steps {v_tuned:.3f} (pretrained 60 steps on fortunes) vs "
          f"{v_scratch:.3f} (from scratch); required margin {margin}")
    if not v_tuned < v_scratch - margin:
        raise SystemExit("FAIL: fine-tuning does not beat training from scratch")


def main():
    try:
        import h5py  # noqa: F401
    except ImportError:
        print("skipped: python3-h5py missing")
        return 77
    weft, mpirun, outdir = sys.argv[1:4]
    quick = "--quick" in sys.argv[4:]
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    ctx = {"weft": weft, "mpirun": mpirun, "dir": outdir}
    test_resume(ctx, 8 if quick else 40)
    test_reshard(ctx, quick)
    test_crash(ctx)
    test_corrupt(ctx)
    test_background(ctx)
    test_h5py(ctx)
    test_chunked_copy(ctx)
    test_finetune(ctx)
    if not quick:
        test_finetune_beats_scratch(ctx)
    print("train.checkpoint: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
