#!/usr/bin/env python3
"""PyTorch oracle for `weft check linear-attention` (sequence-parallel gated linear attention).

usage: check_linear_attention.py WEFT MPIRUN_WRAPPER SCRATCH_DIR

Writes input files with h5py, runs `weft check linear-attention` under tests/mpirun.sh for
1..4 ranks and every algorithm (zeco with automatic and explicit All-Scan block counts), and
compares out, final_state, dq, dk, dv and dg with a naive token-by-token recurrence in float64
whose gradients come from torch.autograd. Also checks the root attributes (algo, ranks, the
byte counts against the formulas) and that malformed inputs fail with a one-line message that
names the dataset.

Tolerance, the same at every rank count: |weft - ref| <= 1e-4 * scale + 1e-4 * |ref|, scale =
max |ref| over the tensor; for dg the scale is the largest per-(b, h, i) sum over tokens of
|q dq| + |k dk|, the terms whose differences make up dg (see tests/parallel/test_linear_sp.c).

Exit 77 (skipped) when torch or h5py cannot be imported.
"""
import os
import subprocess
import sys

try:
    import h5py
    import numpy as np
    import torch
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(f"skipped: {exc}")
    sys.exit(77)

RTOL = 1e-4
ATOL_REL = 1e-4
ALGOS = [("zeco", None), ("zeco", 1), ("zeco", 3), ("lasp2", None), ("ring", None)]
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print("FAIL " + msg, flush=True)


def reference(q, k, v, g, dout, scale):
    """Naive float64 recurrence; returns out, final_state and the gradients of sum(dout*out)."""
    q, k, v, g = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v, g))
    b_, n_, h_, dk_ = q.shape
    dv_ = v.shape[3]
    s = torch.zeros(b_, h_, dk_, dv_, dtype=torch.float64)
    outs = []
    for t in range(n_):
        decay = torch.exp(g[:, t])  # [B,H,dk]
        s = decay[..., None] * s + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(scale * torch.einsum("bhi,bhij->bhj", q[:, t], s))
    out = torch.stack(outs, dim=1)  # [B,N,H,dv]
    (out * torch.tensor(dout, dtype=torch.float64)).sum().backward()
    return {
        "out": out.detach().numpy(),
        "final_state": s.detach().numpy(),
        "dq": q.grad.numpy(),
        "dk": k.grad.numpy(),
        "dv": v.grad.numpy(),
        "dg": g.grad.numpy(),
    }


def make_case(rng, b, n, h, dk, dv, g_mode):
    q = rng.uniform(-1, 1, (b, n, h, dk)).astype(np.float32)
    k = rng.uniform(-1, 1, (b, n, h, dk)).astype(np.float32)
    v = rng.uniform(-1, 1, (b, n, h, dv)).astype(np.float32)
    dout = rng.uniform(-1, 1, (b, n, h, dv)).astype(np.float32)
    if g_mode == "zero":
        g = np.zeros((b, n, h, dk), np.float32)
    elif g_mode == "very-negative":
        g = rng.uniform(-60, -20, (b, n, h, dk)).astype(np.float32)
    else:
        g = rng.uniform(-0.5, 0, (b, n, h, dk)).astype(np.float32)
    return {"q": q, "k": k, "v": v, "g": g, "dout": dout}


def write_input(path, tensors, scale=None):
    with h5py.File(path, "w") as f:
        for name, x in tensors.items():
            f.create_dataset(name, data=x)
        if scale is not None:
            f.attrs["scale"] = scale


def compare(label, name, got, ref, inputs=None):
    if got.shape != ref.shape:
        fail(f"{label} {name}: shape {got.shape}, expected {ref.shape}")
        return
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    if name == "dg":
        terms = np.abs(inputs["q"] * inputs["dq_ref"]) + np.abs(inputs["k"] * inputs["dk_ref"])
        scale = max(scale, float(terms.sum(axis=1).max()))
    err = np.abs(got.astype(np.float64) - ref) / (ATOL_REL * scale + RTOL * np.abs(ref) + 1e-30)
    worst = float(err.max()) if err.size else 0.0
    if not worst <= 1.0:
        i = np.unravel_index(int(np.nanargmax(err)), err.shape)
        fail(f"{label} {name}: {worst:.3g} x tolerance at {i}: weft {got[i]!r}, torch {ref[i]!r}")


def run_weft(weft, mpirun, np_, args):
    cmd = [mpirun, str(np_), weft, "check", "linear-attention", "--device", "cpu"] + args
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=240)


def check_case(weft, mpirun, scratch, case_name, tensors, scale):
    in_path = os.path.join(scratch, f"{case_name}.in.h5")
    write_input(in_path, tensors, scale)
    b, n, h, dk = tensors["q"].shape
    dv = tensors["v"].shape[3]
    eff_scale = scale if scale is not None else 1.0 / np.sqrt(dk)
    ref = reference(tensors["q"], tensors["k"], tensors["v"], tensors["g"], tensors["dout"],
                    eff_scale)
    inputs = {"q": tensors["q"], "k": tensors["k"], "dq_ref": ref["dq"], "dk_ref": ref["dk"]}
    state_bytes = b * h * dk * dv * 4
    gamma_bytes = b * h * dk * 4
    for np_ in (1, 2, 3, 4):
        for algo, blocks in ALGOS:
            label = f"{case_name} P={np_} {algo}" + (f" K={blocks}" if blocks else "")
            out_path = os.path.join(scratch, f"{case_name}.{np_}.{algo}.{blocks}.out.h5")
            args = ["--algo", algo, "--input", in_path, "--output", out_path]
            if blocks:
                args += ["--scan-blocks", str(blocks)]
            res = run_weft(weft, mpirun, np_, args)
            if res.returncode != 0:
                fail(f"{label}: exit {res.returncode}\n{res.stdout}{res.stderr}")
                continue
            with h5py.File(out_path, "r") as f:
                for name in ("out", "final_state", "dq", "dk", "dv", "dg"):
                    if name not in f:
                        fail(f"{label}: dataset {name} missing from the output")
                        continue
                    compare(label, name, f[name][...], ref[name], inputs)
                attrs = dict(f.attrs)
            if attrs.get("algo") not in (algo, algo.encode()):
                fail(f"{label}: attribute algo is {attrs.get('algo')!r}")
            if int(attrs.get("ranks", -1)) != np_:
                fail(f"{label}: attribute ranks is {attrs.get('ranks')!r}")
            if algo == "lasp2":
                want = (np_ - 1) * (state_bytes + gamma_bytes)
            else:
                want = state_bytes if np_ > 1 else 0
            for attr in ("bytes_sent_fwd_max", "bytes_sent_bwd_max"):
                if int(attrs.get(attr, -1)) != want:
                    fail(f"{label}: {attr} = {attrs.get(attr)!r}, expected {want}")
            for attr in ("time_fwd_s", "time_bwd_s"):
                if not float(attrs.get(attr, -1)) >= 0:
                    fail(f"{label}: {attr} = {attrs.get(attr)!r}")


def check_bad_inputs(weft, mpirun, scratch, rng):
    """Malformed files: exit non-zero with one line naming the dataset."""
    good = make_case(rng, 1, 6, 2, 4, 3, "random")
    bad_g = dict(good)
    bad_g["g"] = good["g"].copy()
    bad_g["g"][0, 4, 1, 2] = 0.25
    cases = [
        ("missing", {x: good[x] for x in ("q", "k", "v")}, "'g'"),
        ("rank", dict(good, k=good["k"][0]), "'k'"),
        ("shape", dict(good, v=good["v"][:, :5]), "'v'"),
        ("positive-g", bad_g, "0.25"),
        ("dtype", dict(good, q=good["q"].astype(np.float64)), "'q'"),
    ]
    for name, tensors, needle in cases:
        path = os.path.join(scratch, f"bad-{name}.h5")
        write_input(path, tensors)
        res = run_weft(weft, mpirun, 2, ["--algo", "zeco", "--input", path, "--output",
                                         os.path.join(scratch, f"bad-{name}.out.h5")])
        lines = [l for l in res.stderr.splitlines() if l.startswith("weft check")]
        if res.returncode == 0:
            fail(f"bad input {name}: exit 0")
        elif not any(needle in l for l in lines):
            fail(f"bad input {name}: no message naming {needle}:\n{res.stderr}")
        elif name == "positive-g" and not any("[0,4,1,2]" in l for l in lines):
            fail(f"bad input {name}: message does not name the index:\n{res.stderr}")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    weft, mpirun, scratch = sys.argv[1:]
    os.makedirs(scratch, exist_ok=True)
    rng = np.random.default_rng(20250704)
    check_case(weft, mpirun, scratch, "random-n12", make_case(rng, 2, 12, 2, 8, 6, "random"), None)
    check_case(weft, mpirun, scratch, "random-n23", make_case(rng, 1, 23, 3, 6, 5, "random"), 0.3)
    check_case(weft, mpirun, scratch, "zero-n70", make_case(rng, 1, 70, 1, 4, 4, "zero"), None)
    check_case(weft, mpirun, scratch, "very-negative-n9",
               make_case(rng, 1, 9, 2, 4, 6, "very-negative"), None)
    check_bad_inputs(weft, mpirun, scratch, rng)
    if FAILURES:
        print(f"check_linear_attention: {len(FAILURES)} failure(s)")
        return 1
    print("check_linear_attention: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
