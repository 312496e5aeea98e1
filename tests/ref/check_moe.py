#!/usr/bin/env python3
"""PyTorch oracle for `weft check moe` (the expert-parallel MoE layer, parallel/moe_ep.h).

usage: check_moe.py WEFT MPIRUN_WRAPPER SCRATCH_DIR

Writes input files with h5py and runs `weft check moe --device cpu` under tests/mpirun.sh at
1..4 ranks (E = 8 at 1, 2, 4; E = 6 at 3; E = 12 at 3 and 4), top-1 and top-2, with and
without renormalised weights, dropless and with a capacity factor that drops slots, load
balancing and z-loss weights, a skewed router that sends every token to experts 0 and 1
(the other ranks receive nothing), T not divisible by P, T < P (a rank without tokens) and a
forward-only file. It compares with a float64 torch implementation of moe_ep.h's math whose
gradients come from torch.autograd:
  logits = x W_r, p = softmax, top-k by logits (the cases keep a margin of 1e-3 at the k-th
  logit, so f32 rounding cannot change the choice), weights p (renormalised over the k when
  normalize); capacity C = ceil(cf k T / E): each expert keeps its first C (token, slot)
  pairs in token order, a dropped slot contributes 0 and is not renormalised away;
  y = sum over kept slots of w * (silu(x W1_e) * (x W3_e)) W2_e; c_i counted before dropping;
  LBL = E sum_i (c_i / (k T)) mean_t p_t,i with f constant; z = mean_t logsumexp(logits_t)^2;
  loss = sum(y * dy) + aux_weight LBL + z_weight z.

Tolerance, every float output, rank count and case: |weft - ref| <= 2e-5 * max|ref| +
1e-4 * |ref| + 1e-9 (max over the tensor; f32 against f64: a few roundings of the largest terms,
while a lost or misrouted slot gives errors of order max|ref|). counts, expert_rows,
capacity and dropped must be exact. The worst error of each output is printed at the end.

Bytes, recomputed from the reference routing and compared exactly (see check_bytes):
bytes_payload_max and bytes_sent_min_possible = max over ranks of h 4 bytes per row a rank
dispatches (own token, distinct remote rank owning one of its kept experts) plus per row it
returns in the combine (remote token, this rank), twice with dy; the two must be equal (the
payload is the de-duplicated minimum); bytes_sent_max adds the counts and routing metadata;
bytes_payload_total = bytes_min_total = 2 h 4 bytes per (token, remote rank) pair over all
ranks, twice with dy.

Malformed inputs (missing w2, f64 x, mismatched h, 2-D w1, topk missing, 0 and > E,
normalize 2, a negative capacity factor, an integer aux_weight, E not divisible by P, NaN in
x) must exit 1 with exactly one line naming the dataset or attribute and the value, and
leave no output file.

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

TOL_MAX = 2e-5
TOL_REL = 1e-4
TOL_ABS = 1e-9  # for outputs that are zero but for float64 rounding
MARGIN = 1e-3  # smallest gap between the k-th and (k+1)-th logit a case may have
RUN_TIMEOUT_S = 120
FLOAT_OUTPUTS = ("y", "dx", "dw_router", "dw1", "dw3", "dw2", "aux_loss", "z_loss")
FAILURES = []
WORST = {}  # output -> (worst |err| / max|ref|, label)


def fail(msg):
    FAILURES.append(msg)
    print("FAIL " + msg, flush=True)


# ---- the reference ---------------------------------------------------------------------------


def route(logits, k, cf):
    """ids [T,k] (best first, ties to the lowest id), keep [T,k], counts [E], capacity."""
    t_count, e_count = logits.shape
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    counts = np.bincount(ids.ravel(), minlength=e_count)
    capacity = math.ceil(cf * k * t_count / e_count) if cf > 0 else 0
    keep = np.ones_like(ids, dtype=bool)
    if capacity:
        used = np.zeros(e_count, dtype=np.int64)
        for t in range(t_count):  # token order; a token names an expert at most once
            for j in range(k):
                e = ids[t, j]
                keep[t, j] = used[e] < capacity
                used[e] += 1
    return ids, keep, counts, capacity


def reference(t, attrs):
    k, normalize = attrs["topk"], attrs.get("normalize", 0)
    cf, aux_w, z_w = (attrs.get(a, 0.0) for a in ("capacity_factor", "aux_weight", "z_weight"))
    x, wr, w1, w3, w2 = (torch.tensor(t[n], dtype=torch.float64, requires_grad=True)
                         for n in ("x", "w_router", "w1", "w3", "w2"))
    t_count, e_count = x.shape[0], wr.shape[1]
    logits = x @ wr
    p = torch.softmax(logits, dim=1)
    ids, keep, counts, capacity = route(logits.detach().numpy(), k, cf)
    ids_t = torch.tensor(ids)
    w = p.gather(1, ids_t)
    if normalize:
        w = w / w.sum(dim=1, keepdim=True)
    y = torch.zeros_like(x)
    expert_rows = np.zeros(e_count, dtype=np.int64)
    for e in range(e_count):
        tok, slot = np.nonzero((ids == e) & keep)
        expert_rows[e] = len(tok)
        if not len(tok):
            continue
        xe = x[tok]
        ye = (torch.nn.functional.silu(xe @ w1[e]) * (xe @ w3[e])) @ w2[e]
        y = y.index_add(0, torch.tensor(tok), w[tok, slot][:, None] * ye)
    f = torch.tensor(counts / (k * t_count), dtype=torch.float64)
    lbl = e_count * (f * p.mean(dim=0)).sum()
    z = (torch.logsumexp(logits, dim=1) ** 2).mean()
    ref = {"y": y.detach().numpy(), "aux_loss": lbl.detach().numpy(), "z_loss": z.detach().numpy(),
           "counts": counts, "expert_rows": expert_rows, "capacity": capacity,
           "dropped": int((~keep).sum()), "ids": ids, "keep": keep}
    if "dy" in t:
        loss = (y * torch.tensor(t["dy"], dtype=torch.float64)).sum() + aux_w * lbl + z_w * z
        loss.backward()
        ref.update(dx=x.grad.numpy(), dw_router=wr.grad.numpy(), dw1=w1.grad.numpy(),
                   dw3=w3.grad.numpy(), dw2=w2.grad.numpy())
    return ref


# ---- cases ------------------------------------------------------------------------------------


def make_case(rng, t_count, h, f, e_count, k, skewed=False, with_dy=True):
    """Random f32 tensors whose top-k choice has a margin of MARGIN at every token."""
    for _ in range(100):
        t = {
            "x": rng.uniform(-1, 1, (t_count, h)).astype(np.float32),
            "w_router": rng.uniform(-1, 1, (h, e_count)).astype(np.float32),
            "w1": (rng.uniform(-1, 1, (e_count, h, f)) / math.sqrt(h)).astype(np.float32),
            "w3": (rng.uniform(-1, 1, (e_count, h, f)) / math.sqrt(h)).astype(np.float32),
            "w2": (rng.uniform(-1, 1, (e_count, f, h)) / math.sqrt(f)).astype(np.float32),
        }
        if with_dy:
            t["dy"] = rng.uniform(-1, 1, (t_count, h)).astype(np.float32)
        if skewed:  # feature 0 is 1 everywhere and pulls hard towards experts 0 and 1
            t["x"][:, 0] = 1.0
            t["w_router"] *= 0.1
            t["w_router"][0, :2] = (10.0, 9.0)
        logits = np.sort(t["x"].astype(np.float64) @ t["w_router"], axis=1)[:, ::-1]
        if k == e_count or (logits[:, k - 1] - logits[:, k]).min() > MARGIN:
            return t
    raise RuntimeError("could not draw a case with a clear top-k margin")


def write_input(path, tensors, attrs):
    with h5py.File(path, "w") as f:
        for name, x in tensors.items():
            f.create_dataset(name, data=x)
        for name, value in attrs.items():
            f.attrs[name] = value


def run_weft(weft, mpirun, np_, args):
    cmd = [mpirun, str(np_), weft, "check", "moe", "--device", "cpu"] + args
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, 124, exc.stdout or "",
                                           f"timed out after {RUN_TIMEOUT_S} s")


def compare(label, name, got, ref):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        fail(f"{label} {name}: shape {got.shape}, expected {ref.shape}")
        return
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    err = np.abs(got - ref)
    bound = TOL_MAX * scale + TOL_REL * np.abs(ref) + TOL_ABS
    ratio = float(np.nanmax(err)) / scale if scale > 0 else float(np.nanmax(err))
    if np.isnan(err).any():
        ratio = float("nan")
    # An output that is zero but for float64 rounding (scale ~1e-18) has no meaningful ratio.
    if scale > TOL_ABS and not ratio <= WORST.get(name, (-1.0, ""))[0] and not math.isnan(ratio):
        WORST[name] = (ratio, label)
    if not (err <= bound).all():
        i = np.unravel_index(int(np.argmax(np.where(np.isnan(err), np.inf, err - bound))),
                             err.shape)
        fail(f"{label} {name}: max error {np.nanmax(err):.3g} = {ratio:.3g} x max|ref| "
             f"(tolerance {TOL_MAX:g} x max|ref| + {TOL_REL:g} x |ref|) worst at {i}: "
             f"weft {got[i]!r}, torch {ref[i]!r}")


def share(total, parts, i):
    base, extra = total // parts, total % parts
    return i * base + min(i, extra), base + (1 if i < extra else 0)


def check_bytes(label, attrs, ref, t_count, h, e_count, np_, with_dy):
    """moe_ep.h's byte accounting, recomputed from the reference routing. Per rank r:
    own = (own token, distinct remote rank owning one of its kept experts) pairs, back = such
    pairs of other ranks' tokens that name r, slots_out / slots_in = kept slots between r's
    tokens and remote experts / remote tokens and r's experts. Per pass r sends h 4 bytes per
    row it dispatches (own) and per row it returns (back), which is also its minimum.
    Metadata: 8 E bytes per peer (counts) and 12 per slot out forward, 4 per slot in backward
    (the routing-weight gradients go back)."""
    per_rank = e_count // np_
    own, back, slots_out, slots_in = ([0] * np_ for _ in range(4))
    for r in range(np_):
        first, n = share(t_count, np_, r)
        for t in range(first, first + n):
            owners = [int(e) // per_rank for e, kept in zip(ref["ids"][t], ref["keep"][t]) if kept]
            for d in owners:
                if d != r:
                    slots_out[r] += 1
                    slots_in[d] += 1
            dests = set(owners) - {r}
            own[r] += len(dests)
            for d in dests:
                back[d] += 1
    passes = 2 if with_dy else 1
    row = h * 4
    payload = [passes * row * (o + b) for o, b in zip(own, back)]
    sent = [payload[r] + 8 * e_count * (np_ - 1) + 12 * slots_out[r] +
            (4 * slots_in[r] if with_dy else 0) for r in range(np_)]
    total = passes * 2 * row * sum(own)
    if attrs.get("bytes_payload_max") != attrs.get("bytes_sent_min_possible"):
        fail(f"{label}: bytes_payload_max {attrs.get('bytes_payload_max')!r} is not the "
             f"de-duplicated minimum {attrs.get('bytes_sent_min_possible')!r}")
    for attr, want in (("bytes_sent_min_possible", max(payload)),
                       ("bytes_payload_max", max(payload)), ("bytes_sent_max", max(sent)),
                       ("bytes_payload_total", total), ("bytes_min_total", total)):
        if int(attrs.get(attr, -1)) != want:
            fail(f"{label}: {attr} = {attrs.get(attr)!r}, expected {want} (own pairs {own}, "
                 f"returned pairs {back}, slots out {slots_out}, in {slots_in})")


def check_run(label, out_path, ref, tensors, np_):
    t_count, h = tensors["x"].shape
    e_count = tensors["w_router"].shape[1]
    with h5py.File(out_path, "r") as f:
        for name in FLOAT_OUTPUTS:
            if name not in ref:
                if name in f:
                    fail(f"{label}: dataset {name} written although the input has no dy")
                continue
            if name not in f:
                fail(f"{label}: dataset {name} missing from the output")
                continue
            compare(label, name, f[name][()], ref[name])
        for name in ("counts", "expert_rows"):
            got = f[name][()] if name in f else None
            if got is None or got.dtype != np.int64 or not np.array_equal(got, ref[name]):
                fail(f"{label}: {name} = {got!r}, expected {ref[name]!r}")
        attrs = dict(f.attrs)
    for attr in ("ranks", "capacity", "dropped"):
        want = np_ if attr == "ranks" else ref[attr]
        if int(attrs.get(attr, -1)) != want:
            fail(f"{label}: attribute {attr} = {attrs.get(attr)!r}, expected {want}")
    for attr in ("time_fwd_s", "time_bwd_s"):
        if not float(attrs.get(attr, -1)) >= 0:
            fail(f"{label}: {attr} = {attrs.get(attr)!r}")
    check_bytes(label, attrs, ref, t_count, h, e_count, np_, "dy" in tensors)


def check_case(weft, mpirun, scratch, name, tensors, attrs, ranks):
    in_path = os.path.join(scratch, f"{name}.in.h5")
    write_input(in_path, tensors, attrs)
    ref = reference(tensors, attrs)
    if attrs.get("capacity_factor", 0) > 0 and name.endswith("drop") and not ref["dropped"]:
        fail(f"{name}: the case was meant to drop slots but drops none")
    for np_ in ranks:
        label = f"{name} P={np_}"
        out_path = os.path.join(scratch, f"{name}.{np_}.out.h5")
        if os.path.exists(out_path):  # a stale file from an earlier run must not pass
            os.remove(out_path)
        res = run_weft(weft, mpirun, np_, ["--input", in_path, "--output", out_path])
        if res.returncode != 0:
            fail(f"{label}: exit {res.returncode}\n{res.stdout}{res.stderr}")
            continue
        check_run(label, out_path, ref, tensors, np_)


def check_bad_inputs(weft, mpirun, scratch, rng):
    """Malformed files: exit 1, exactly one line naming the culprit, no output file."""
    good = make_case(rng, 10, 8, 8, 8, 2)
    base = {"topk": 2, "normalize": 0, "capacity_factor": 0.0}
    nan_x = good["x"].copy()
    nan_x[7, 3] = np.nan
    w_router_h9 = rng.uniform(-1, 1, (9, 8)).astype(np.float32)
    cases = [
        ("missing-w2", {n: good[n] for n in good if n != "w2"}, base, ["'w2'", "missing"], 2),
        ("f64-x", dict(good, x=good["x"].astype(np.float64)), base, ["'x'"], 2),
        ("h-mismatch", dict(good, w_router=w_router_h9), base, ["'w_router'", "[9,8]"], 2),
        ("rank-w1", dict(good, w1=good["w1"][0]), base, ["'w1'", "3-D"], 2),
        ("topk-missing", good, {"normalize": 1}, ["'topk'", "missing"], 2),
        ("topk-0", good, dict(base, topk=0), ["'topk'", "is 0"], 2),
        ("topk-9", good, dict(base, topk=9), ["'topk'", "is 9", "1 .. 8"], 2),
        ("normalize-2", good, dict(base, normalize=2), ["'normalize'", "is 2", "0 or 1"], 2),
        ("cf-negative", good, dict(base, capacity_factor=-1.0), ["'capacity_factor'", "-1"], 2),
        ("aux-int", good, dict(base, aux_weight=1), ["'aux_weight'"], 2),
        ("e8-np3", good, base, ["E = 8", "3 ranks"], 3),
        ("nan-x", dict(good, x=nan_x), base, ["'x'", "nan", "[7,3]"], 2),
    ]
    for name, tensors, attrs, needles, np_ in cases:
        path = os.path.join(scratch, f"bad-{name}.h5")
        out_path = os.path.join(scratch, f"bad-{name}.out.h5")
        if os.path.exists(out_path):
            os.remove(out_path)
        write_input(path, tensors, attrs)
        res = run_weft(weft, mpirun, np_, ["--input", path, "--output", out_path])
        lines = [l for l in res.stderr.splitlines() if l.startswith("weft check moe")]
        named = [l for l in lines if all(n in l for n in needles)]
        if res.returncode != 1:
            fail(f"bad input {name}: exit {res.returncode}, expected 1:\n{res.stderr}")
        elif len(lines) != 1 or len(named) != 1:
            fail(f"bad input {name}: not exactly one line naming {needles}:\n{res.stderr}")
        elif "MPI_ABORT" in res.stderr:
            fail(f"bad input {name}: the job was aborted instead of finalised:\n{res.stderr}")
        elif os.path.exists(out_path):
            fail(f"bad input {name}: an output file was written")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    weft, mpirun, scratch = sys.argv[1:]
    os.makedirs(scratch, exist_ok=True)
    rng = np.random.default_rng(20250711)
    start = time.time()
    cases = [
        # name, (T, h, f, E, k), attributes, ranks, extra make_case arguments
        ("e8-k2-norm", (37, 16, 24, 8, 2), {"topk": 2, "normalize": 1, "aux_weight": 0.01},
         (1, 2, 4), {}),
        ("e8-k1-drop", (30, 12, 16, 8, 1),
         {"topk": 1, "normalize": 0, "capacity_factor": 1.0, "aux_weight": 0.05}, (1, 2, 4), {}),
        ("e8-k2-z-drop", (33, 8, 12, 8, 2),
         {"topk": 2, "normalize": 0, "capacity_factor": 1.0, "aux_weight": 0.02,
          "z_weight": 0.003}, (1, 2, 4), {}),
        ("e8-k2-norm-drop", (26, 8, 8, 8, 2),
         {"topk": 2, "normalize": 1, "capacity_factor": 0.75}, (2, 4), {}),
        ("e6-k2-drop", (29, 12, 16, 6, 2),
         {"topk": 2, "normalize": 1, "capacity_factor": 1.0, "aux_weight": 0.1}, (1, 3), {}),
        ("e12-k2", (40, 8, 12, 12, 2), {"topk": 2, "normalize": 0, "aux_weight": 0.01},
         (3, 4), {}),
        # top-1 renormalised: every weight is 1, so dw_router is 0 without the aux loss
        ("e12-k1", (23, 8, 8, 12, 1), {"topk": 1, "normalize": 1}, (3, 4), {}),
        ("e12-k1-aux", (23, 8, 8, 12, 1), {"topk": 1, "normalize": 1, "aux_weight": 0.05},
         (4,), {}),
        ("skewed", (24, 8, 12, 8, 2), {"topk": 2, "normalize": 1, "aux_weight": 0.1},
         (1, 2, 4), {"skewed": True}),
        ("skewed-drop", (24, 8, 12, 8, 2),
         {"topk": 2, "normalize": 0, "capacity_factor": 1.0, "aux_weight": 0.1}, (2, 4),
         {"skewed": True}),
        ("t3-k2", (3, 8, 8, 8, 2), {"topk": 2, "normalize": 1, "aux_weight": 0.01}, (1, 4), {}),
        ("t2-k1-cap", (2, 8, 8, 6, 1), {"topk": 1, "capacity_factor": 1.0}, (3,), {}),
        ("fwd-only", (21, 8, 8, 8, 2), {"topk": 2, "capacity_factor": 1.0}, (1, 2),
         {"with_dy": False}),
    ]
    for name, (t_count, h, f, e_count, k), attrs, ranks, extra in cases:
        tensors = make_case(rng, t_count, h, f, e_count, k, **extra)
        check_case(weft, mpirun, scratch, name, tensors, attrs, ranks)
    check_bad_inputs(weft, mpirun, scratch, rng)
    for name in FLOAT_OUTPUTS:
        if name in WORST:
            ratio, label = WORST[name]
            print(f"check_moe: worst {name} error {ratio:.3g} x max|ref| ({label})")
    print(f"check_moe: {time.time() - start:.1f} s")
    if FAILURES:
        print(f"check_moe: {len(FAILURES)} failure(s)")
        return 1
    print("check_moe: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
