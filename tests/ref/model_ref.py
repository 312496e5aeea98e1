#!/usr/bin/env python3
"""Float64 PyTorch oracle for one training step of the model of docs/model.md.

usage: model_ref.py OUT.h5 [--rtol R] [--tie-margin M]
       model_ref.py --self-test

OUT.h5 is what `weft check model` writes: the configuration, one global batch, the parameters
and weft's loss and gradients (format below). This script re-implements docs/model.md in
float64 with torch.autograd (the parameters are read as stored, f32 values widened to f64),
recomputes the losses and every gradient, and compares:
  loss, ce, lbl, zloss   |weft - ref| <= rtol * |ref| + 1e-7
  every gradient tensor  max|weft - ref| <= rtol * max|ref| + 1e-7   (rtol default 1e-4)
weft computes in f32, so its errors are a few f32 roundings of the largest terms, far below
1e-4 of max|ref|; a wrong mask, decay, rotation or routing gives errors of order max|ref|.
It prints the worst few tensors (error as a fraction of the tolerance), every failure, and a
summary line. Exit 0: passed; 1: a failure (missing or unexpected dataset or attribute, a
shape mismatch, a value out of tolerance); 77: skipped (torch or h5py missing, or a token's
routing sits on a near-tie, see check_routing_margin); 2: usage.

OUT.h5
  root attributes  int64  dim, heads, kv_heads, experts (0 = no MoE), topk, ffn_dim, seq (N),
                          vocab (256)
                   string pattern (per layer: S softmax / L gated linear attention),
                          moe_pattern (per layer: M MoE FFN / D dense SwiGLU FFN)
                   double aux_weight, z_weight, rope_base, norm_eps, gate_scale,
                          loss (= ce + aux_weight lbl + z_weight zloss), ce,
                          lbl (sum over MoE layers of the unweighted LBL), zloss (likewise)
  /batch/ids, /batch/targets   [G, N] int32; a negative target is an unlabelled position
  /params/<name>, /grads/<name>   float32, the global shapes of docs/model.md's table, the
                   name containing dots ("/params/layers.0.attn.wq"), layers numbered from 0:
      embed [V,d]; layers.l.attn_norm [d]; layers.l.attn.wq [d,H dh];
      layers.l.attn.wk, wv [d,Hkv dh] (S layers) or [d,H dh] (L layers);
      layers.l.attn.wg [d,H dh] (L layers only); layers.l.attn.wo [H dh,d];
      layers.l.ffn_norm [d]; dense: layers.l.ffn.w1, w3 [d,f], layers.l.ffn.w2 [f,d];
      MoE: layers.l.moe.router [d,E], layers.l.moe.w1, w3 [E,d,f], layers.l.moe.w2 [E,f,d];
      final_norm [d]; lm_head [d,V]
  The gradients are those of `loss` with respect to each parameter.

Averaging: CE is divided by T = the number of labelled positions of the batch; the MoE layers'
LBL and z-loss by the number of tokens the router saw, G * N (every position, labelled or not:
the router runs on every token, and weft_model_step_begin takes the global token count).

--self-test builds a small random model, writes such a file from this script's own forward
and backward and checks that it passes, that a perturbed gradient, a missing dataset, a wrong
shape and a near-tie are reported, and checks the pieces against independent formulas and
torch.autograd.gradcheck at tiny sizes.
"""
import argparse
import math
import os
import sys
import tempfile

try:
    import h5py
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(f"skipped: {exc}")
    sys.exit(77)

DEFAULT_RTOL = 1e-4
ATOL = 1e-7  # floor of every tolerance: tensors that are zero but for rounding
# Smallest gap between a token's k-th and (k+1)-th router probability the comparison trusts.
DEFAULT_TIE_MARGIN = 1e-6
SHOW_WORST = 5  # tensors listed by name besides the failures
EXIT_SKIPPED = 77

INT_ATTRS = ("dim", "heads", "kv_heads", "experts", "topk", "ffn_dim", "seq", "vocab")
STR_ATTRS = ("pattern", "moe_pattern")
CONFIG_FLOAT_ATTRS = ("aux_weight", "z_weight", "rope_base", "norm_eps", "gate_scale")
RESULT_ATTRS = ("loss", "ce", "lbl", "zloss")


class FormatError(Exception):
    """OUT.h5 does not hold what the format above promises."""


# ---- configuration and parameter table ----------------------------------------------------


def read_attrs(attrs):
    """The root attributes as Python values (h5py hands strings back as str or bytes, and
    numbers as numpy scalars or 1-element arrays, depending on how the writer stored them)."""
    def scalar(name):
        if name not in attrs:
            raise FormatError(f"root attribute '{name}' missing")
        value = attrs[name]
        if isinstance(value, np.ndarray):
            if value.size != 1:
                raise FormatError(f"root attribute '{name}' has shape {value.shape}, not a scalar")
            value = value.reshape(())[()]
        return value

    cfg = {}
    for name in INT_ATTRS:
        value = scalar(name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise FormatError(f"root attribute '{name}' is {value!r}, not an integer")
        cfg[name] = int(value)
    for name in STR_ATTRS:
        value = scalar(name)
        cfg[name] = value.decode() if isinstance(value, (bytes, np.bytes_)) else str(value)
    for name in CONFIG_FLOAT_ATTRS + RESULT_ATTRS:
        value = scalar(name)
        if not isinstance(value, (int, float, np.integer, np.floating)):
            raise FormatError(f"root attribute '{name}' is {value!r}, not a number")
        cfg[name] = float(value)
    return cfg


def check_config(cfg):
    """The shape rules docs/model.md states (weft_model_config_check enforces more)."""
    d, h, hkv, e, k = (cfg[n] for n in ("dim", "heads", "kv_heads", "experts", "topk"))
    layers = len(cfg["pattern"])
    if layers < 1 or set(cfg["pattern"]) - set("SL"):
        raise FormatError(f"pattern '{cfg['pattern']}' is not a non-empty string over S, L")
    if len(cfg["moe_pattern"]) != layers or set(cfg["moe_pattern"]) - set("MD"):
        raise FormatError(f"moe_pattern '{cfg['moe_pattern']}' is not {layers} letters of M, D")
    if "M" in cfg["moe_pattern"] and not 1 <= k <= e:
        raise FormatError(f"moe_pattern '{cfg['moe_pattern']}' with experts {e}, topk {k}")
    if min(d, h, hkv, cfg["ffn_dim"], cfg["seq"], cfg["vocab"]) < 1 or d % h or h % hkv:
        raise FormatError(f"dim {d}, heads {h}, kv_heads {hkv}: H must divide d, Hkv divide H")
    if "S" in cfg["pattern"] and (d // h) % 2:
        raise FormatError(f"head width {d // h} is odd: RoPE rotates pairs")


def param_shapes(cfg):
    """name -> global shape, in docs/model.md's table order."""
    d, f, e, v = cfg["dim"], cfg["ffn_dim"], cfg["experts"], cfg["vocab"]
    dh = d // cfg["heads"]
    shapes = {"embed": (v, d)}
    for l, (kind, ffn) in enumerate(zip(cfg["pattern"], cfg["moe_pattern"])):
        p = f"layers.{l}."
        kv_width = (cfg["kv_heads"] if kind == "S" else cfg["heads"]) * dh
        shapes[p + "attn_norm"] = (d,)
        shapes[p + "attn.wq"] = (d, cfg["heads"] * dh)
        shapes[p + "attn.wk"] = (d, kv_width)
        shapes[p + "attn.wv"] = (d, kv_width)
        if kind == "L":
            shapes[p + "attn.wg"] = (d, cfg["heads"] * dh)
        shapes[p + "attn.wo"] = (cfg["heads"] * dh, d)
        shapes[p + "ffn_norm"] = (d,)
        if ffn == "M":
            shapes[p + "moe.router"] = (d, e)
            shapes[p + "moe.w1"] = (e, d, f)
            shapes[p + "moe.w3"] = (e, d, f)
            shapes[p + "moe.w2"] = (e, f, d)
        else:
            shapes[p + "ffn.w1"] = (d, f)
            shapes[p + "ffn.w3"] = (d, f)
            shapes[p + "ffn.w2"] = (f, d)
    shapes["final_norm"] = (d,)
    shapes["lm_head"] = (d, v)
    return shapes


# ---- the model, float64 -------------------------------------------------------------------


def rms_norm(x, gain, eps):
    """y = x / sqrt(mean(x^2) + eps) * gain over the last dimension (gain None: no gain)."""
    y = x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    return y if gain is None else y * gain


def rope(x, base):
    """x [G, N, heads, dh] at positions 0..N-1: pair (2i, 2i+1) of each head rotates by the
    angle p * base^(-2i/dh)."""
    n, dh = x.shape[1], x.shape[3]
    theta = base ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)  # [dh/2]: 2i/dh
    angle = torch.arange(n, dtype=torch.float64)[:, None] * theta[None, :]  # [N, dh/2]
    cos, sin = torch.cos(angle)[None, :, None, :], torch.sin(angle)[None, :, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def softmax_attention(a, w, cfg):
    """Causal multi-head attention with RoPE and GQA; a [G, N, d]."""
    g_, n = a.shape[:2]
    h, hkv = cfg["heads"], cfg["kv_heads"]
    dh = cfg["dim"] // h
    q = rope((a @ w["wq"]).view(g_, n, h, dh), cfg["rope_base"])
    k = rope((a @ w["wk"]).view(g_, n, hkv, dh), cfg["rope_base"])
    v = (a @ w["wv"]).view(g_, n, hkv, dh)
    k = k.repeat_interleave(h // hkv, dim=2)  # query head h reads kv head h // (H / Hkv)
    v = v.repeat_interleave(h // hkv, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, dim=-1), v)
    return o.reshape(g_, n, h * dh) @ w["wo"]


def linear_recurrence(q, k, v, g):
    """The plain recurrence, token by token: S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,
    S_0 = 0, o_t = q_t S_t (unscaled). q, k, g [G, N, H, dk], v [G, N, H, dv]."""
    state = q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[3])  # [G, H, dk, dv]
    outs = []
    for t in range(q.shape[1]):
        state = torch.exp(g[:, t])[..., None] * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhi,bhij->bhj", q[:, t], state))
    return torch.stack(outs, dim=1)


def linear_attention(a, w, cfg):
    """Gated linear attention with the per-head gain-free output norm; a [G, N, d]."""
    g_, n = a.shape[:2]
    h = cfg["heads"]
    dh = cfg["dim"] // h
    q, k, v = ((a @ w[name]).view(g_, n, h, dh) for name in ("wq", "wk", "wv"))
    log_decay = F.logsigmoid(a @ w["wg"]).view(g_, n, h, dh) * cfg["gate_scale"]
    o = linear_recurrence(q, k, v, log_decay) / math.sqrt(dh)
    o = rms_norm(o, None, cfg["norm_eps"])  # per head: the last dimension is dh
    return o.reshape(g_, n, h * dh) @ w["wo"]


def swiglu(x, w1, w3, w2):
    return (F.silu(x @ w1) * (x @ w3)) @ w2


def route(logits, k):
    """ids [T, k] of each token's k largest logits, largest first; equal logits keep their
    order in a stable sort, so ties go to the lowest expert id."""
    return np.argsort(-logits.detach().numpy(), axis=1, kind="stable")[:, :k]


def routing_margin(probs, k):
    """Smallest gap between a token's k-th and (k+1)-th probability (inf when k = E)."""
    if k == probs.shape[1]:
        return math.inf
    top = np.sort(probs.detach().numpy(), axis=1)[:, ::-1]
    return float((top[:, k - 1] - top[:, k]).min())


def load_balancing_loss(probs, ids, experts):
    """E * sum_i f_i P_i over the batch; f_i = c_i / (k T) is a constant (no gradient)."""
    tokens, k = ids.shape
    counts = np.bincount(ids.ravel(), minlength=experts)
    f = torch.tensor(counts / (k * tokens), dtype=probs.dtype)
    return experts * (f * probs.mean(dim=0)).sum()


def moe(b, w, cfg):
    """Top-k MoE FFN over every token of the batch; returns (y, LBL, z-loss, routing margin).
    b [G, N, d]: the LBL and z-loss average over all G * N tokens."""
    x = b.reshape(-1, b.shape[-1])
    k = cfg["topk"]
    logits = x @ w["router"]
    probs = torch.softmax(logits, dim=1)
    ids = route(logits, k)
    weights = probs.gather(1, torch.from_numpy(ids))
    weights = weights / weights.sum(dim=1, keepdim=True)
    y = torch.zeros_like(x)
    for e in range(cfg["experts"]):
        tok, slot = np.nonzero(ids == e)
        if len(tok):
            ye = swiglu(x[tok], w["w1"][e], w["w3"][e], w["w2"][e])
            y = y.index_add(0, torch.from_numpy(tok), weights[tok, slot][:, None] * ye)
    lbl = load_balancing_loss(probs, ids, cfg["experts"])
    z = (torch.logsumexp(logits, dim=1) ** 2).mean()
    return y.view_as(b), lbl, z, routing_margin(probs, k)


def forward(params, ids, targets, cfg):
    """The losses of docs/model.md for one global batch; params: name -> f64 tensor.
    Returns {loss, ce, lbl, zloss} (0-d tensors) and the smallest routing margin."""
    eps = cfg["norm_eps"]
    x = params["embed"][torch.from_numpy(ids.astype(np.int64))]  # [G, N, d]
    lbl = z = torch.zeros((), dtype=torch.float64)
    margin = math.inf
    for l, (kind, ffn) in enumerate(zip(cfg["pattern"], cfg["moe_pattern"])):
        p = f"layers.{l}."
        attn_w = {n[len(p) + 5:]: t for n, t in params.items() if n.startswith(p + "attn.")}
        a = rms_norm(x, params[p + "attn_norm"], eps)
        x = x + (softmax_attention if kind == "S" else linear_attention)(a, attn_w, cfg)
        b = rms_norm(x, params[p + "ffn_norm"], eps)
        if ffn == "M":
            moe_w = {n[len(p) + 4:]: t for n, t in params.items() if n.startswith(p + "moe.")}
            y, layer_lbl, layer_z, layer_margin = moe(b, moe_w, cfg)
            lbl, z, margin = lbl + layer_lbl, z + layer_z, min(margin, layer_margin)
        else:
            y = swiglu(b, params[p + "ffn.w1"], params[p + "ffn.w3"], params[p + "ffn.w2"])
        x = x + y
    logits = (rms_norm(x, params["final_norm"], eps) @ params["lm_head"]).view(-1, cfg["vocab"])
    flat_targets = torch.from_numpy(targets.astype(np.int64)).view(-1)
    labelled = flat_targets >= 0
    logits, flat_targets = logits[labelled], flat_targets[labelled]
    token_loss = torch.logsumexp(logits, dim=1) - logits.gather(1, flat_targets[:, None])[:, 0]
    # A batch without a label has no CE (weft reports 0 rather than 0/0).
    ce = token_loss.sum() / max(int(labelled.sum()), 1)
    loss = ce + cfg["aux_weight"] * lbl + cfg["z_weight"] * z
    return {"loss": loss, "ce": ce, "lbl": lbl, "zloss": z}, margin


def reference(cfg, ids, targets, params_f32):
    """Forward and backward in float64: (results as floats, grads as f64 arrays, margin)."""
    params = {n: torch.tensor(a, dtype=torch.float64, requires_grad=True)
              for n, a in params_f32.items()}
    results, margin = forward(params, ids, targets, cfg)
    results["loss"].backward()
    grads = {n: t.grad.numpy() for n, t in params.items()}
    return {n: float(v) for n, v in results.items()}, grads, margin


# ---- reading and comparing ----------------------------------------------------------------


def load(path):
    """(cfg, ids, targets, params, grads) from OUT.h5; FormatError names what is wrong."""
    with h5py.File(path, "r") as f:
        cfg = read_attrs(f.attrs)
        check_config(cfg)
        batch = []
        for name in ("ids", "targets"):
            key = f"batch/{name}"
            if key not in f:
                raise FormatError(f"dataset /{key} missing")
            data = f[key][()]
            if data.ndim != 2 or data.shape[1] != cfg["seq"] or data.dtype.kind not in "iu":
                raise FormatError(f"dataset /{key} is {data.dtype} {list(data.shape)}, "
                                  f"expected int32 [G,{cfg['seq']}]")
            batch.append(data)
        ids, targets = batch
        if ids.shape != targets.shape:
            raise FormatError(f"/batch/ids {list(ids.shape)} and /batch/targets "
                              f"{list(targets.shape)} differ")
        if ids.min() < 0 or ids.max() >= cfg["vocab"] or targets.max() >= cfg["vocab"]:
            raise FormatError(f"token outside 0..{cfg['vocab'] - 1} in /batch")
        shapes = param_shapes(cfg)
        tensors = {}
        for group in ("params", "grads"):
            if group not in f:
                raise FormatError(f"group /{group} missing")
            names = set(f[group].keys())
            missing, extra = [n for n in shapes if n not in names], sorted(names - set(shapes))
            if missing or extra:
                raise FormatError(f"/{group}: missing {missing}, unexpected {extra}")
            tensors[group] = {}
            for name, shape in shapes.items():
                data = f[group][name][()]
                if data.shape != shape or data.dtype.kind != "f":
                    raise FormatError(f"dataset /{group}/{name} is {data.dtype} "
                                      f"{list(data.shape)}, expected float32 {list(shape)}")
                tensors[group][name] = data
    return cfg, ids, targets, tensors["params"], tensors["grads"]


def error_ratio(got, ref, scale, rtol):
    """max|got - ref| / (rtol * scale + ATOL) and where it peaks (NaN counts as infinite)."""
    err = np.abs(np.asarray(got, dtype=np.float64) - ref)
    err = np.where(np.isnan(err), np.inf, err)
    i = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
    return float(err[i]) / (rtol * scale + ATOL), i


def check_file(path, rtol, tie_margin, log=print):
    """Compares OUT.h5 with the reference; returns (exit code, worst error as a fraction of
    its tolerance, None when nothing was compared)."""
    try:
        cfg, ids, targets, params, grads = load(path)
    except (FormatError, OSError) as exc:
        log(f"FAIL {path}: {exc}")
        return 1, None
    ref, ref_grads, margin = reference(cfg, ids, targets, params)
    # weft routes on f32 logits. When two probabilities of a token are closer than f32
    # rounding can resolve, weft and this float64 reference may legitimately pick different
    # experts, and one swapped expert changes that token's output, everything after it and
    # every gradient: a comparison would fail without a bug. Such a batch is skipped (exit 77,
    # ctest's skip code) rather than failed; `weft check model` inputs are random, so a new
    # seed avoids it.
    if margin < tie_margin:
        log(f"model_ref: skipped: a token's k-th and (k+1)-th router probabilities differ by "
            f"{margin:.3g} < {tie_margin:g}; the f32 routing may differ from the f64 one")
        return EXIT_SKIPPED, None
    rows = []  # (ratio of the tolerance, label, detail)
    for name in RESULT_ATTRS:
        got, want = cfg[name], ref[name]
        ratio, _ = error_ratio(got, want, abs(want), rtol)
        rows.append((ratio, name, f"weft {got!r}, torch {want!r}"))
    for name, want in ref_grads.items():
        scale = float(np.abs(want).max())
        ratio, i = error_ratio(grads[name], want, scale, rtol)
        got = grads[name][i]
        rows.append((ratio, f"grad {name}", f"max|ref| {scale:.3g}, worst at {list(i)}: "
                                            f"weft {float(got)!r}, torch {float(want[i])!r}"))
    rows.sort(key=lambda r: -r[0])
    failures = [r for r in rows if not r[0] <= 1.0]
    for rank, (ratio, label, detail) in enumerate(rows):
        if rank < SHOW_WORST or not ratio <= 1.0:
            status = "FAIL " if not ratio <= 1.0 else ""
            log(f"{status}model_ref: {label}: {ratio:.3g} x tolerance ({detail})")
    worst_ratio, worst_label, _ = rows[0]
    log(f"model_ref: worst {worst_ratio:.3g} x tolerance ({worst_label}); rtol {rtol:g}; "
        f"{len(RESULT_ATTRS)} losses and {len(ref_grads)} gradients compared; "
        f"G={ids.shape[0]} N={cfg['seq']} pattern {cfg['pattern']} moe {cfg['moe_pattern']} "
        f"loss {ref['loss']:.6g}")
    if failures:
        log(f"model_ref: {len(failures)} failure(s)")
        return 1, worst_ratio
    log("model_ref: passed")
    return 0, worst_ratio


# ---- self-test ----------------------------------------------------------------------------


SELF_TEST_CFG = {"dim": 16, "heads": 2, "kv_heads": 1, "experts": 4, "topk": 2, "ffn_dim": 24,
                 "seq": 8, "vocab": 256, "pattern": "LS", "moe_pattern": "MD",
                 "aux_weight": 0.1, "z_weight": 0.01, "rope_base": 10000.0, "norm_eps": 1e-5,
                 "gate_scale": 1.0 / 16}


def random_params(cfg, rng):
    """f32 parameters of O(1) effect (std 1/sqrt(fan-in), gains near 1), so that every
    gradient is well above the tolerance floor; the trainer's init is far smaller."""
    params = {}
    for name, shape in param_shapes(cfg).items():
        if len(shape) == 1:
            params[name] = 1 + 0.2 * rng.standard_normal(shape)
        else:
            params[name] = rng.standard_normal(shape) / math.sqrt(shape[-2])
    return {n: a.astype(np.float32) for n, a in params.items()}


def write_file(path, cfg, ids, targets, params, results, grads):
    with h5py.File(path, "w") as f:
        for name in INT_ATTRS:
            f.attrs[name] = np.int64(cfg[name])
        for name in STR_ATTRS:
            f.attrs[name] = cfg[name]
        for name in CONFIG_FLOAT_ATTRS:
            f.attrs[name] = float(cfg[name])
        for name in RESULT_ATTRS:
            f.attrs[name] = float(results[name])
        f.create_dataset("batch/ids", data=ids.astype(np.int32))
        f.create_dataset("batch/targets", data=targets.astype(np.int32))
        for name in params:
            f.create_dataset(f"params/{name}", data=params[name].astype(np.float32))
            f.create_dataset(f"grads/{name}", data=grads[name].astype(np.float32))


def self_test_pieces(rng, fail):
    """The pieces against independent formulas and finite differences."""
    torch.manual_seed(1)
    # The recurrence against its closed form o_t = sum_{s<=t} (q_t * exp(c_t - c_s)) . k_s v_s
    # with c the inclusive cumulative log decay, and its gradient against finite differences.
    q, k, g = (torch.randn(2, 6, 2, 3, dtype=torch.float64) for _ in range(3))
    v = torch.randn(2, 6, 2, 4, dtype=torch.float64)
    g = -torch.rand(2, 6, 2, 3, dtype=torch.float64)
    c = g.cumsum(dim=1)
    decay = torch.exp(c[:, :, None] - c[:, None, :])  # [G, t, s, H, dk]
    causal = torch.ones(6, 6, dtype=torch.float64).tril()[None, :, :, None]
    scores = torch.einsum("bthi,btshi,bshi->btsh", q, decay, k) * causal
    closed = torch.einsum("btsh,bshj->bthj", scores, v)
    err = float((linear_recurrence(q, k, v, g) - closed).abs().max())
    if not err < 1e-12:
        fail(f"linear recurrence differs from its closed form by {err:.3g}")
    small = [t[:1, :4, :, :2].clone().requires_grad_() for t in (q, k, v, g)]
    if not torch.autograd.gradcheck(linear_recurrence, small, raise_exception=False):
        fail("linear recurrence: gradcheck failed")

    # RoPE: an explicit rotation of one pair, and the relative-position property
    # <rope(q)_m, rope(k)_n> = f(m - n) that makes it a position encoding.
    dh, base = 8, 10000.0
    x = torch.randn(1, 5, 1, dh, dtype=torch.float64)
    angle = 3 * base ** (-2 * 1 / dh)  # position 3, pair i = 1: elements 2 and 3
    want = (x[0, 3, 0, 2] * math.cos(angle) - x[0, 3, 0, 3] * math.sin(angle),
            x[0, 3, 0, 2] * math.sin(angle) + x[0, 3, 0, 3] * math.cos(angle))
    got = rope(x, base)[0, 3, 0, 2:4]
    if not torch.allclose(got, torch.stack(want), atol=1e-14):
        fail(f"rope: pair (2,3) at position 3 is {got.tolist()}, expected {want}")
    qv, kv = torch.randn(dh, dtype=torch.float64), torch.randn(dh, dtype=torch.float64)
    rq, rk = rope(qv.expand(1, 5, 1, dh), base), rope(kv.expand(1, 5, 1, dh), base)
    if not abs(float(rq[0, 4, 0] @ rk[0, 2, 0] - rq[0, 2, 0] @ rk[0, 0, 0])) < 1e-12:
        fail("rope: the score of positions (4, 2) differs from that of (2, 0)")

    # Routing: ties go to the lowest id.
    tied = torch.tensor([[0.5, 1.0, 1.0, 1.0, 0.2]], dtype=torch.float64)
    if route(tied, 2).tolist() != [[1, 2]]:
        fail(f"route: ties picked {route(tied, 2).tolist()}, expected [[1, 2]]")

    # LBL: uniform probabilities and counts give exactly 1; its gradient (f constant) and the
    # z-loss's against finite differences. The logits keep a clear top-k margin so that the
    # finite-difference steps do not change the routing.
    uniform = torch.full((8, 4), 0.25, dtype=torch.float64)
    balanced = np.array([[0, 1], [2, 3]] * 4)
    if abs(float(load_balancing_loss(uniform, balanced, 4)) - 1) > 1e-15:
        fail("LBL of uniform routing is not 1")
    logits = torch.tensor(rng.standard_normal((6, 4)), dtype=torch.float64, requires_grad=True)

    def router_losses(z):
        probs = torch.softmax(z, dim=1)
        return (load_balancing_loss(probs, route(z, 2), 4),
                (torch.logsumexp(z, dim=1) ** 2).mean())
    if routing_margin(torch.softmax(logits, dim=1), 2) < 1e-3:
        fail("LBL gradcheck: the drawn logits have a near-tie (change the seed)")
    elif not torch.autograd.gradcheck(router_losses, (logits,), raise_exception=False):
        fail("LBL / z-loss: gradcheck failed")


def self_test_file(rng, scratch, fail):
    """A file written from the reference passes; corrupted ones fail or are skipped."""
    cfg = dict(SELF_TEST_CFG)
    for _ in range(20):  # redraw until the routing has a clear margin
        params = random_params(cfg, rng)
        ids = rng.integers(0, cfg["vocab"], (2, cfg["seq"]))
        targets = rng.integers(0, cfg["vocab"], (2, cfg["seq"]))
        targets[1, -1] = -1  # one unlabelled position
        results, grads, margin = reference(cfg, ids, targets, params)
        if margin > 1e-3:
            break
    else:
        fail("could not draw a self-test model with a clear routing margin")
        return

    # The whole loss's gradient against finite differences catches a gradient path lost to a
    # stray detach. Fast mode compares one random directional derivative instead of the full
    # Jacobian (thousands of parameters); the routing margin keeps the top-k fixed.
    names = list(params)
    inputs = tuple(torch.tensor(params[n], dtype=torch.float64, requires_grad=True)
                   for n in names)

    def loss_of(*tensors):
        return forward(dict(zip(names, tensors)), ids, targets, cfg)[0]["loss"]
    if not torch.autograd.gradcheck(loss_of, inputs, fast_mode=True, raise_exception=False):
        fail("whole model: gradcheck failed")

    def run(label, expected_rc, mutate=None):
        path = os.path.join(scratch, f"{label}.h5")
        write_file(path, cfg, ids, targets, params, results, grads)
        if mutate:
            with h5py.File(path, "r+") as f:
                mutate(f)
        lines = []
        rc, worst = check_file(path, DEFAULT_RTOL, DEFAULT_TIE_MARGIN, log=lines.append)
        if rc != expected_rc:
            fail(f"{label}: exit {rc}, expected {expected_rc}:\n  " + "\n  ".join(lines))
        return worst

    worst = run("clean", 0)
    if worst is None or not worst < 0.01:  # only the f32 rounding of the stored values differs
        fail(f"clean file: worst {worst} x tolerance, expected rounding only")
    else:
        print(f"model_ref self-test: clean file worst {worst:.3g} x tolerance; loss "
              f"{results['loss']:.6g} (ce {results['ce']:.6g}, lbl {results['lbl']:.6g}, "
              f"zloss {results['zloss']:.6g})")

    def bump(name, factor):
        def mutate(f):
            data = f[name][()]
            i = np.unravel_index(int(np.argmax(np.abs(data))), data.shape)
            data[i] += factor * DEFAULT_RTOL * np.abs(data).max()
            f[name][...] = data
        return mutate

    def bump_attr(f):
        f.attrs["lbl"] = f.attrs["lbl"] * (1 + 3 * DEFAULT_RTOL)

    def drop(name):
        return lambda f: f.__delitem__(name)

    def reshape(name):
        def mutate(f):
            data = f[name][()]
            del f[name]
            f.create_dataset(name, data=data[:-1])
        return mutate

    def tie(f):  # a zero router: every probability equal, the routing a pure tie
        f["params/layers.0.moe.router"][...] = 0
    run("grad-within", 0, bump("grads/layers.0.attn.wg", 0.5))
    run("grad-beyond", 1, bump("grads/layers.0.moe.router", 3))
    run("lbl-beyond", 1, bump_attr)
    run("missing-grad", 1, drop("grads/layers.1.attn.wk"))
    run("missing-attr", 1, lambda f: f.attrs.__delitem__("gate_scale"))
    run("short-param", 1, reshape("params/layers.1.ffn.w2"))
    run("near-tie", EXIT_SKIPPED, tie)


def self_test():
    failures = []

    def fail(msg):
        failures.append(msg)
        print("FAIL " + msg, flush=True)
    rng = np.random.default_rng(20250712)
    self_test_pieces(rng, fail)
    with tempfile.TemporaryDirectory() as scratch:
        self_test_file(rng, scratch, fail)
    if failures:
        print(f"model_ref self-test: {len(failures)} failure(s)")
        return 1
    print("model_ref self-test: passed")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="the file `weft check model` wrote")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="tolerance as a fraction of max|ref| per tensor (default 1e-4)")
    parser.add_argument("--tie-margin", type=float, default=DEFAULT_TIE_MARGIN,
                        help="skip when router probabilities of a token's k-th and (k+1)-th "
                             "expert differ by less (default 1e-6)")
    parser.add_argument("--self-test", action="store_true", help="test this script")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if args.out is None:
        parser.error("OUT.h5 is required (or --self-test)")
    return check_file(args.out, args.rtol, args.tie_margin)[0]


if __name__ == "__main__":
    sys.exit(main())
