#!/usr/bin/env python3
"""PyTorch oracle for `weft check attention` (sequence-parallel softmax attention).

usage: check_attention.py WEFT MPIRUN_WRAPPER SCRATCH_DIR

Writes input files with h5py and runs `weft check attention --device cpu` under tests/mpirun.sh
at 1..4 ranks with ulysses, ring, tokenring and auto (and hybrid with Ulysses degree 2 at 4
ranks), on causal and non-causal inputs, MHA and GQA, sequence lengths that are not multiples
of 2P (padding) and head counts that P does not divide (uneven head split, replicated KV
heads). It compares out, lse, dq, dk and dv with explicit float64 attention (causal mask, GQA
by repeating each KV head for its H/Hkv query heads) whose gradients come from torch.autograd.

Tolerance, the same for every tensor, rank count and algorithm: |weft - ref| <= 2e-5 * max|ref|
(max over the tensor). weft computes in f32 with a blockwise (online) softmax, so its errors
are a few f32 roundings of the largest terms; a wrong mask, a wrong scatter or a lost block
gives errors of order max|ref|.

Also checks the root attributes (algo, ranks, ulysses_degree, times), the byte counts against
the formulas written in the header comment of parallel/attention_sp_bytes.c (recomputed here,
max over ranks), and that malformed inputs (missing k, a 3-D q, H not a multiple of Hkv, int
data, a bad or missing causal attribute) and bf16 on the CPU device fail with a non-zero exit
and a one-line message naming the dataset or value, without hanging.

Exit 77 (skipped) when torch or h5py cannot be imported.
"""
import math
import os
import subprocess
import sys
import time

try:
    import h5py
    import numpy as np
    import torch
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(f"skipped: {exc}")
    sys.exit(77)

TOL = 2e-5
RUN_TIMEOUT_S = 120
FAILURES = []
OUTPUTS = ("out", "lse", "dq", "dk", "dv")


def fail(msg):
    FAILURES.append(msg)
    print("FAIL " + msg, flush=True)


def reference(t, causal, scale):
    """float64 attention; returns out [B,N,H,d], lse [B,H,N] and the gradients of sum(dout*out)."""
    q, k, v = (torch.tensor(t[x], dtype=torch.float64, requires_grad=True) for x in "qkv")
    groups = q.shape[2] // k.shape[2]
    kr = k.repeat_interleave(groups, dim=2)  # query head h uses kv head h // groups
    vr = v.repeat_interleave(groups, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, kr) * scale
    if causal:
        n = q.shape[1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # [B,H,N]
    p = torch.exp(s - lse[..., None])
    out = torch.einsum("bhqk,bkhd->bqhd", p, vr)
    ref = {"out": out.detach().numpy(), "lse": lse.detach().numpy()}
    if "dout" in t:
        (out * torch.tensor(t["dout"], dtype=torch.float64)).sum().backward()
        ref.update(dq=q.grad.numpy(), dk=k.grad.numpy(), dv=v.grad.numpy())
    return ref


def make_case(rng, b, n, h, hkv, d, with_dout=True):
    t = {
        "q": rng.uniform(-1, 1, (b, n, h, d)).astype(np.float32),
        "k": rng.uniform(-1, 1, (b, n, hkv, d)).astype(np.float32),
        "v": rng.uniform(-1, 1, (b, n, hkv, d)).astype(np.float32),
    }
    if with_dout:
        t["dout"] = rng.uniform(-1, 1, (b, n, h, d)).astype(np.float32)
    return t


def write_input(path, tensors, attrs):
    with h5py.File(path, "w") as f:
        for name, x in tensors.items():
            f.create_dataset(name, data=x)
        for name, value in attrs.items():
            f.attrs[name] = value


# ---- bytes: parallel/attention_sp_bytes.c's header formulas, written out independently ----


def local_slots(n_tokens, ranks, causal):
    chunks = 2 * ranks if causal else ranks
    chunk = -(-n_tokens // chunks)
    return 2 * chunk if causal else chunk


def share(total, parts, i):
    """(first, count) of part i when `total` is shared out evenly, the first total % parts
    parts one more."""
    base, extra = total // parts, total % parts
    return i * base + min(i, extra), base + (1 if i < extra else 0)


def head_split(h, hkv, u, i):
    """(nq, nkv) of member i of a Ulysses group of u (parallel/attention_sp_split.h): for
    u <= Hkv the kv heads are shared out and each member takes their query heads; for u > Hkv
    kv head j goes to a block of u // Hkv (the first u % Hkv blocks one more) consecutive
    members, which share its H / Hkv query heads (nkv = 1, or 0 with no query head)."""
    groups = h // hkv
    if u <= hkv:
        _, nkv = share(hkv, u, i)
        return nkv * groups, nkv
    for j in range(hkv):
        first, members = share(u, hkv, j)
        if i < first + members:
            _, nq = share(groups, members, i - first)
            return nq, (1 if nq else 0)
    raise AssertionError("member outside the group")


def rank_bytes(shape, causal, algo, ranks, u, r, b=4):
    bsz, n_tokens, h, hkv, d = shape
    n = local_slots(n_tokens, ranks, causal)
    if algo == "tokenring":
        half = n // 2 if causal else n
        q_rows = (ranks - 1 - r) * half + r * n
        out_rows = r * half + (ranks - 1 - r) * n
        fwd = bsz * h * (q_rows * d * b + out_rows * (d + 1) * 4)
        bwd = bsz * h * (q_rows * (2 * d * b + 8) + out_rows * d * 4)
        return fwd, bwd
    u = {"ulysses": ranks, "ring": 1, "hybrid": u}[algo]
    m, rings = r % u, ranks // u
    nq_m, nkv_m = head_split(h, hkv, u, m)
    fwd = bwd = 0
    for i in range(u):
        if i == m:
            continue
        nq_i, nkv_i = head_split(h, hkv, u, i)
        fwd += bsz * n * (nq_i * d * b + 2 * nkv_i * d * b)
        bwd += bsz * n * (2 * nq_i * d * b + 2 * nkv_i * d * b + 2 * nq_i * 4)
    fwd += (u - 1) * bsz * n * nq_m * (d + 1) * 4
    bwd += (u - 1) * bsz * n * (nq_m + 2 * nkv_m) * d * 4
    tokens = u * n
    fwd += (rings - 1) * 2 * bsz * tokens * nkv_m * d * b
    bwd += (rings - 1) * 2 * bsz * tokens * nkv_m * d * (b + 4)
    return fwd, bwd


def expected_bytes(shape, causal, algo, ranks, u):
    per_rank = [rank_bytes(shape, causal, algo, ranks, u, r) for r in range(ranks)]
    return max(f for f, _ in per_rank), max(g for _, g in per_rank)


# ---- running weft ----------------------------------------------------------------------------


def run_weft(weft, mpirun, np_, args):
    cmd = [mpirun, str(np_), weft, "check", "attention", "--device", "cpu"] + args
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, 124, exc.stdout or "",
                                           f"timed out after {RUN_TIMEOUT_S} s")


def compare(label, name, got, ref):
    if got.shape != ref.shape:
        fail(f"{label} {name}: shape {got.shape}, expected {ref.shape}")
        return
    scale = float(np.abs(ref).max())
    err = np.abs(got.astype(np.float64) - ref)
    worst = float(np.nanmax(err)) if not np.isnan(err).any() else float("nan")
    if not worst <= TOL * scale:
        i = np.unravel_index(int(np.nanargmax(np.where(np.isnan(err), np.inf, err))), err.shape)
        fail(f"{label} {name}: max error {worst:.3g} = {worst / scale:.3g} x max|ref| "
             f"(tolerance {TOL:g}) worst at {i}: weft {got[i]!r}, torch {ref[i]!r}")


def check_run(label, out_path, ref, shape, causal, algo, np_, u):
    with h5py.File(out_path, "r") as f:
        for name in OUTPUTS:
            if name not in ref:
                if name in f:
                    fail(f"{label}: dataset {name} written although the input has no dout")
                continue
            if name not in f:
                fail(f"{label}: dataset {name} missing from the output")
                continue
            compare(label, name, f[name][...], ref[name])
        attrs = dict(f.attrs)
    ran = attrs.get("algo")
    ran = ran.decode() if isinstance(ran, bytes) else ran
    if algo == "auto":
        if ran not in ("ulysses", "ring", "tokenring", "hybrid"):
            fail(f"{label}: attribute algo is {ran!r} after auto")
            return
    elif ran != algo:
        fail(f"{label}: attribute algo is {ran!r}")
        return
    if int(attrs.get("ranks", -1)) != np_:
        fail(f"{label}: attribute ranks is {attrs.get('ranks')!r}")
    used_u = int(attrs.get("ulysses_degree", -1))
    if ran == "hybrid" and (used_u < 1 or np_ % used_u or (u and used_u != u)):
        fail(f"{label}: attribute ulysses_degree is {used_u}, asked for {u}")
    want_fwd, want_bwd = expected_bytes(shape, causal, ran, np_, used_u)
    if "dq" not in ref:
        want_bwd = 0
    for attr, want in (("bytes_sent_fwd_max", want_fwd), ("bytes_sent_bwd_max", want_bwd)):
        if int(attrs.get(attr, -1)) != want:
            fail(f"{label}: {attr} = {attrs.get(attr)!r}, expected {want} ({ran}, u={used_u})")
    for attr in ("time_fwd_s", "time_bwd_s"):
        if not float(attrs.get(attr, -1)) >= 0:
            fail(f"{label}: {attr} = {attrs.get(attr)!r}")


def check_case(weft, mpirun, scratch, case_name, tensors, causal, scale=None, ranks=(1, 2, 3, 4),
               algos=("ulysses", "ring", "tokenring", "auto")):
    attrs = {"causal": int(causal)}
    if scale is not None:
        attrs["softmax_scale"] = scale
    in_path = os.path.join(scratch, f"{case_name}.in.h5")
    write_input(in_path, tensors, attrs)
    bsz, n_tokens, h, d = tensors["q"].shape
    hkv = tensors["k"].shape[2]
    shape = (bsz, n_tokens, h, hkv, d)
    ref = reference(tensors, causal, scale if scale is not None else 1.0 / math.sqrt(d))
    runs = [(np_, algo, 0) for np_ in ranks for algo in algos]
    if 4 in ranks:
        runs.append((4, "hybrid", 2))
    for np_, algo, u in runs:
        label = f"{case_name} P={np_} {algo}" + (f" U={u}" if u else "")
        out_path = os.path.join(scratch, f"{case_name}.{np_}.{algo}.{u}.out.h5")
        args = ["--algo", algo, "--input", in_path, "--output", out_path]
        if u:
            args += ["--ulysses-degree", str(u)]
        if os.path.exists(out_path):  # a stale file from an earlier run must not pass
            os.remove(out_path)
        res = run_weft(weft, mpirun, np_, args)
        if res.returncode != 0:
            fail(f"{label}: exit {res.returncode}\n{res.stdout}{res.stderr}")
            continue
        check_run(label, out_path, ref, shape, causal, algo, np_, u)


def check_bad_inputs(weft, mpirun, scratch, rng):
    """Malformed files and refused options: non-zero exit, one line naming the culprit."""
    good = make_case(rng, 1, 10, 4, 2, 8)
    cases = [
        ("missing-k", {x: good[x] for x in ("q", "v", "dout")}, {"causal": 1}, "'k'", []),
        ("rank-q", dict(good, q=good["q"][0]), {"causal": 1}, "'q'", []),
        ("heads", dict(good, k=good["q"][:, :, :3], v=good["q"][:, :, :3]), {"causal": 0},
         "'q'", []),
        ("int-v", dict(good, v=(good["v"] * 10).astype(np.int32)), {"causal": 0}, "'v'", []),
        ("f64-q", dict(good, q=good["q"].astype(np.float64)), {"causal": 0}, "'q'", []),
        ("shape-dout", dict(good, dout=good["dout"][:, :7]), {"causal": 1}, "'dout'", []),
        ("causal-2", good, {"causal": 2}, "'causal'", []),
        ("causal-missing", good, {}, "'causal'", []),
        ("causal-float", good, {"causal": 0.5}, "'causal'", []),
        ("bf16-cpu", good, {"causal": 1}, "bf16", ["--dtype", "bf16"]),
        ("hybrid-u3", good, {"causal": 1}, "--ulysses-degree 3", ["--algo", "hybrid",
                                                                  "--ulysses-degree", "3"]),
    ]
    for name, tensors, attrs, needle, extra in cases:
        path = os.path.join(scratch, f"bad-{name}.h5")
        write_input(path, tensors, attrs)
        args = ["--input", path, "--output", os.path.join(scratch, f"bad-{name}.out.h5")]
        args = (extra if "--algo" in extra else ["--algo", "ring"] + extra) + args
        res = run_weft(weft, mpirun, 2, args)
        lines = [l for l in res.stderr.splitlines() if l.startswith("weft check attention")]
        if res.returncode == 0:
            fail(f"bad input {name}: exit 0")
        elif res.returncode == 124:
            fail(f"bad input {name}: {res.stderr}")
        elif len([l for l in lines if needle in l]) != 1:
            fail(f"bad input {name}: not exactly one line naming {needle}:\n{res.stderr}")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    weft, mpirun, scratch = sys.argv[1:]
    os.makedirs(scratch, exist_ok=True)
    rng = np.random.default_rng(20250705)
    start = time.time()
    # MHA, causal, N = 37: padding at every P > 1 (2P does not divide 37).
    check_case(weft, mpirun, scratch, "mha-causal-n37", make_case(rng, 2, 37, 4, 4, 16), True)
    # GQA 8/2, non-causal, N = 50, explicit scale.
    check_case(weft, mpirun, scratch, "gqa-n50", make_case(rng, 2, 50, 8, 2, 16), False, 0.2)
    # H = 6, Hkv = 3: P = 4 splits the heads unevenly and replicates KV heads; causal.
    check_case(weft, mpirun, scratch, "h6kv3-causal-n45", make_case(rng, 1, 45, 6, 3, 16), True,
               ranks=(3, 4))
    # H = 6, Hkv = 2, non-causal, N = 64 (no padding), no dout: forward only.
    check_case(weft, mpirun, scratch, "h6kv2-fwd-n64", make_case(rng, 2, 64, 6, 2, 8, False),
               False, ranks=(2, 4), algos=("ulysses", "tokenring"))
    check_bad_inputs(weft, mpirun, scratch, rng)
    print(f"check_attention: {time.time() - start:.1f} s")
    if FAILURES:
        print(f"check_attention: {len(FAILURES)} failure(s)")
        return 1
    print("check_attention: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
