"""train_ref.py: float64 PyTorch-autograd reference for QLoRA training on the
tiny_gqa fixture model; writes tests/fixtures/train/tiny_gqa_lora.safetensors.

    /usr/bin/python3 tests/reference/train_ref.py [--check]

The frozen base is tiny_gqa with its seven projections per layer replaced by
their NF4 round trip (nf4_ref.quant_dequant of the BF16 weight upcast to fp32,
as llama_ref.weights_nf4); embeddings, norms and the tied head as stored. LoRA
(rank R, alpha) on q,k,v,o,gate,up,down:

    y = x W^T + (alpha/R) * (x A^T) B^T        A (R,in), B (out,R)

Packed micro-batches (tokens, targets, pos, seg_start, each (B,T)):
  - RoPE angle of token t is pos[b,t] * inv_freq (pos restarts at 0 for every
    packed sample);
  - query t of row b attends to keys j of the same row with
    seg_start[b,t] <= j <= t (causal, never across samples);
  - targets[b,t] is the id token t must predict, -1 where it is not trained.
One optimizer step = the micro-batches of the step; its loss is
    sum over all trained tokens of all micro-batches of -log p(target)
    / (number of trained tokens of all micro-batches),
gradients are those of that loss. Then torch.nn.utils.clip_grad_norm_ (global
L2 norm over every A and B, max_norm) and torch.optim.AdamW, all in float64.

--check also runs the independent checks (packed attention vs llama_ref's
forward, finite differences, AdamW by hand, merged-weights forward).
Deterministic: fixed seeds, one torch thread.
"""
import argparse
import hashlib
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import llama_ref as L  # noqa: E402
import nf4_ref as N  # noqa: E402

torch.set_num_threads(1)

MODEL_DIR = os.path.join(ROOT, "tests", "fixtures", "models", "tiny_gqa")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "train")
OUT = os.path.join(OUT_DIR, "tiny_gqa_lora.safetensors")

RANK, ALPHA = 4, 8
SCALING = ALPHA / RANK
LR, BETA1, BETA2, EPS, WD = 1e-2, 0.9, 0.999, 1e-8, 0.01
MAX_GRAD_NORM = 1.0
STEPS = 10
SEED = 1234
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HF = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
      "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
      "down_proj": "mlp.down_proj"}
BOS, PAD = 1, 0


def module_shape(cfg, m):
    """(out, in) of a projection."""
    C, I = cfg["hidden_size"], cfg["intermediate_size"]
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], L.head_dim(cfg)
    return {"q_proj": (H * D, C), "k_proj": (Hkv * D, C), "v_proj": (Hkv * D, C),
            "o_proj": (C, H * D), "gate_proj": (I, C), "up_proj": (I, C),
            "down_proj": (C, I)}[m]


# ---------------------------------------------------------------- model

class LoraLlama:
    """Frozen float64 base (a llama_ref.Llama's weights) + LoRA adapters
    (dict (layer, module) -> (A, B) float64 tensors), packed forward."""

    def __init__(self, base, dtype=torch.float64):
        self.b = base
        self.dt = dtype

    def forward(self, tokens, pos, seg_start, lora):
        """tokens, pos, seg_start (B,T) int -> logits (B,T,V) float64."""
        m, w = self.b, self.b.w
        H, Hkv, D = m.H, m.Hkv, m.D
        tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        pos = torch.as_tensor(np.asarray(pos), dtype=self.dt)
        seg = torch.as_tensor(np.asarray(seg_start), dtype=torch.long)
        B, T = tokens.shape
        x = w["model.embed_tokens.weight"][tokens]
        ang = pos[:, :, None] * m.inv_freq.to(self.dt)[None, None, :]             # (B,T,D/2)
        ang = torch.cat([ang, ang], dim=-1)[:, None]                  # (B,1,T,D)
        cos, sin = torch.cos(ang), torch.sin(ang)
        t_idx = torch.arange(T)
        allowed = (t_idx[None, None, :] <= t_idx[None, :, None]) & \
                  (t_idx[None, None, :] >= seg[:, :, None])           # (B,Tq,Tk)
        blocked = ~allowed[:, None]                                   # (B,1,Tq,Tk)

        def lin(h, l, mod):
            W = w["model.layers.%d.%s.weight" % (l, HF[mod])]
            y = h @ W.T
            if lora is not None and (l, mod) in lora:
                A, Bm = lora[(l, mod)]
                y = y + SCALING * ((h @ A.T) @ Bm.T)
            return y

        for l in range(m.L):
            p = "model.layers.%d." % l
            h = L.rmsnorm(x, w[p + "input_layernorm.weight"], m.eps)
            q = lin(h, l, "q_proj").view(B, T, H, D).transpose(1, 2)
            k = lin(h, l, "k_proj").view(B, T, Hkv, D).transpose(1, 2)
            v = lin(h, l, "v_proj").view(B, T, Hkv, D).transpose(1, 2)
            q, k = L.apply_rope(q, cos, sin), L.apply_rope(k, cos, sin)
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
            att = att.masked_fill(blocked, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, H * D)
            x = x + lin(y, l, "o_proj")
            h = L.rmsnorm(x, w[p + "post_attention_layernorm.weight"], m.eps)
            g = lin(h, l, "gate_proj")
            u = lin(h, l, "up_proj")
            x = x + lin(g * torch.sigmoid(g) * u, l, "down_proj")
        x = L.rmsnorm(x, w["model.norm.weight"], m.eps)
        return x @ m.lm_head.T

    def nll_sum(self, mb, lora):
        """(sum of -log p(target) over trained tokens, their count) of one micro-batch."""
        logits = self.forward(mb["tokens"], mb["pos"], mb["seg_start"], lora)
        tgt = torch.as_tensor(np.asarray(mb["targets"]), dtype=torch.long)
        mask = tgt >= 0
        lp = torch.log_softmax(logits, dim=-1)
        picked = lp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0]
        return -(picked * mask).sum(), int(mask.sum())


# ---------------------------------------------------------------- data

def make_data(V):
    """Two micro-batches (B=2, T=16) of packed samples. A sample is
    (length, prompt_len): tokens BOS + random ids; positions p_len-1 .. len-2
    predict the response tokens (targets = next token), the rest are -1; the
    last token of every sample has target -1. Padding: token PAD, target -1,
    its own segment (pos from 0)."""
    rng = np.random.default_rng(SEED)
    T = 16
    layout = [  # micro -> row -> samples (length, prompt_len); the rest of the row is padding
        [[(9, 3), (7, 2)], [(14, 5)]],           # 6 + 5, 9 -> 20 trained
        [[(16, 12)], [(6, 1), (5, 5)]],          # 4, 5 + 0 -> 9 trained
    ]
    shp = (len(layout), 2, T)
    tokens = np.full(shp, PAD, np.int32)
    targets = np.full(shp, -1, np.int32)
    pos = np.zeros(shp, np.int32)
    seg = np.zeros(shp, np.int32)
    for mi, rows in enumerate(layout):
        for r, samples in enumerate(rows):
            s0 = 0
            for n, p in samples:
                ids = np.concatenate([[BOS], rng.integers(3, V, size=n - 1)])
                tokens[mi, r, s0:s0 + n] = ids
                pos[mi, r, s0:s0 + n] = np.arange(n)
                seg[mi, r, s0:s0 + n] = s0
                for t in range(p - 1, n - 1):
                    targets[mi, r, s0 + t] = ids[t + 1]
                s0 += n
            if s0 < T:  # padding segment
                pos[mi, r, s0:] = np.arange(T - s0)
                seg[mi, r, s0:] = s0
    return {"tokens": tokens, "targets": targets, "pos": pos, "seg_start": seg, "layout": layout}


def micro(data, i):
    return {k: data[k][i] for k in ("tokens", "targets", "pos", "seg_start")}


def init_lora(cfg):
    """A: U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a=sqrt(5)); B: N(0,1)*0.01;
    drawn from one torch.Generator(SEED) in order layer, module, A then B; rounded to fp32."""
    g = torch.Generator().manual_seed(SEED)
    out = {}
    for l in range(cfg["num_hidden_layers"]):
        for m in MODULES:
            o, i = module_shape(cfg, m)
            bound = 1.0 / math.sqrt(i)
            A = (torch.rand(RANK, i, generator=g, dtype=torch.float64) * 2 - 1) * bound
            B = torch.randn(o, RANK, generator=g, dtype=torch.float64) * 0.01
            out[(l, m)] = (A.to(torch.float32).numpy(), B.to(torch.float32).numpy())
    return out


# ---------------------------------------------------------------- training

def to_params(lora32, dtype=torch.float64):
    return {k: (torch.tensor(A, dtype=dtype, requires_grad=True),
                torch.tensor(B, dtype=dtype, requires_grad=True))
            for k, (A, B) in lora32.items()}


def flat(params):
    return [t for k in sorted(params, key=key_order) for t in params[k]]


def key_order(k):
    return (k[0], MODULES.index(k[1]))


def loss_and_grads(model, data, params):
    """Gradient accumulation over the micro-batches: backward of each
    micro-batch's nll_sum / total trained count. -> float loss."""
    ntot = int((data["targets"] >= 0).sum())
    for t in flat(params):
        t.grad = None
    tot = 0.0
    for i in range(data["tokens"].shape[0]):
        s, _ = model.nll_sum(micro(data, i), params)
        (s / ntot).backward()
        tot += float(s)
    return tot / ntot


def train(model, data, lora32):
    params = to_params(lora32, model.dt)
    plist = flat(params)
    opt = torch.optim.AdamW(plist, lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=WD)
    losses, norms, grad0 = [], [], None
    for step in range(STEPS):
        loss = loss_and_grads(model, data, params)
        if step == 0:
            grad0 = {k: (A.grad.clone(), B.grad.clone()) for k, (A, B) in params.items()}
        n = float(torch.nn.utils.clip_grad_norm_(plist, MAX_GRAD_NORM))
        losses.append(loss)
        norms.append(n)
        opt.step()
    final = {k: (A.detach().clone(), B.detach().clone()) for k, (A, B) in params.items()}
    return losses, norms, grad0, final


# ---------------------------------------------------------------- checks

def check_all(cfg, raw, model, data, lora32, losses, norms, grad0, final):
    V = cfg["vocab_size"]
    base = model.b
    rng = np.random.default_rng(99)
    # 1. plain sequences (seg_start 0, pos = arange, no adapter) == llama_ref.forward
    toks = rng.integers(3, V, size=(2, 16))
    z = np.zeros((2, 16), np.int64)
    ar = np.tile(np.arange(16), (2, 1))
    d = (model.forward(toks, ar, z, None) - base.forward(toks)).abs().max().item()
    print("check plain == llama_ref.forward: max|diff| %.3g" % d)
    assert d < 1e-11
    # 1b. and the committed logits_nf4 of ref.safetensors (f32-rounded)
    ref, _ = L.st_read(os.path.join(MODEL_DIR, "ref.safetensors"))
    rt = ref["tokens"][1]
    T = rt.shape[1]
    d = (model.forward(rt, np.tile(np.arange(T), (2, 1)), np.zeros_like(rt), None)
         - torch.from_numpy(ref["logits_nf4"][1].astype(np.float64))).abs().max().item()
    print("check vs ref.safetensors logits_nf4: max|diff| %.3g" % d)
    assert d < 1e-5
    # 2. every packed sample == the sample alone from position 0 (with the adapter)
    lora = {k: (torch.from_numpy(A.astype(np.float64)), torch.from_numpy(B.astype(np.float64)))
            for k, (A, B) in lora32.items()}
    worst = 0.0
    for mi in range(data["tokens"].shape[0]):
        mb = micro(data, mi)
        full = model.forward(mb["tokens"], mb["pos"], mb["seg_start"], lora)
        for r in range(2):
            starts = sorted(set(mb["seg_start"][r].tolist()))
            for s0 in starts:
                s1 = s0 + int((mb["seg_start"][r] == s0).sum())
                piece = mb["tokens"][r, s0:s1][None]
                n = s1 - s0
                alone = model.forward(piece, np.arange(n)[None], np.zeros((1, n), np.int64), lora)
                worst = max(worst, (full[r, s0:s1] - alone[0]).abs().max().item())
    print("check packed sample == sample alone: max|diff| %.3g" % worst)
    assert worst < 1e-11
    # 2b. the mask matters: ignoring seg_start changes sample 2 of micro 0 row 0
    mb = micro(data, 0)
    wrong = model.forward(mb["tokens"], np.tile(np.arange(16), (2, 1)), np.zeros((2, 16), np.int64), lora)
    print("   (causal-only, pos=arange differs by %.3g)" % (wrong[0, 9:] - full_mb0(model, mb, lora)[0, 9:]).abs().max().item())
    # 3. finite differences of the normalized loss, a few entries
    params = to_params(lora32)
    ntot = int((data["targets"] >= 0).sum())

    def L_of(pp):
        with torch.no_grad():
            return sum(float(model.nll_sum(micro(data, i), pp)[0]) for i in range(data["tokens"].shape[0])) / ntot

    h = 1e-5
    picks = [((0, "q_proj"), 0, (1, 5)), ((0, "q_proj"), 1, (7, 2)), ((1, "down_proj"), 0, (3, 100)),
             ((2, "v_proj"), 1, (20, 3)), ((2, "gate_proj"), 0, (2, 40)), ((1, "o_proj"), 1, (50, 0))]
    for key, which, idx in picks:
        t = params[key][which]
        old = t.data[idx].item()
        t.data[idx] = old + h
        lp = L_of(params)
        t.data[idx] = old - h
        lm = L_of(params)
        t.data[idx] = old
        fd = (lp - lm) / (2 * h)
        ag = grad0[key][which][idx].item()
        print("check fd %s.%s%s: autograd %.10e fd %.10e rel %.2g" % (
            key, "AB"[which], idx, ag, fd, abs(ag - fd) / max(abs(fd), 1e-300)))
        assert abs(ag - fd) <= 1e-6 * abs(fd) + 1e-10
    # 4. AdamW + clipping by hand (decoupled decay, bias corrections) vs torch
    params = to_params(lora32)
    plist = flat(params)
    m_ = [torch.zeros_like(p) for p in plist]
    v_ = [torch.zeros_like(p) for p in plist]
    hl = []
    for step in range(STEPS):
        hl.append(loss_and_grads(model, data, params))
        gn = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in plist))
        c = min(1.0, MAX_GRAD_NORM / (gn + 1e-6))
        t = step + 1
        with torch.no_grad():
            for p, m1, v1 in zip(plist, m_, v_):
                g = p.grad * c
                p.mul_(1 - LR * WD)
                m1.mul_(BETA1).add_((1 - BETA1) * g)
                v1.mul_(BETA2).add_((1 - BETA2) * g * g)
                mhat = m1 / (1 - BETA1 ** t)
                vhat = v1 / (1 - BETA2 ** t)
                p.sub_(LR * mhat / (vhat.sqrt() + EPS))
    d = max(abs(a - b) for a, b in zip(hl, losses))
    dp = max((params[k][j].detach() - final[k][j]).abs().max().item() for k in params for j in (0, 1))
    print("check AdamW by hand: max|loss diff| %.3g, max|param diff| %.3g" % (d, dp))
    assert d < 1e-12 and dp < 1e-12
    # 5. sensitivity, for the tolerance rule: the same training entirely in float32
    w32 = {k: v.to(torch.float32) for k, v in base.w.items()}
    b32 = L.Llama(cfg, w32)
    b32.inv_freq = base.inv_freq.to(torch.float32)
    l32, n32, g32, f32_ = train(LoraLlama(b32, torch.float32), data, lora32)
    print("float32 run vs float64 reference:")
    worst_rel = 0.0
    for k in grad0:
        for j in (0, 1):
            a, b = g32[k][j].double(), grad0[k][j]
            worst_rel = max(worst_rel, ((a - b).norm() / b.norm()).item())
    print("   grad0: worst per-tensor relative L2 error %.3g" % worst_rel)
    gmax = max(max(g.abs().max().item() for g in v) for v in grad0.values())
    gabs = max(max((g32[k][j].double() - grad0[k][j]).abs().max().item() for j in (0, 1)) for k in grad0)
    print("   grad0: max abs error %.3g (max |grad| %.3g)" % (gabs, gmax))
    ratio = 0.0
    for k in grad0:
        for j in (0, 1):
            a, b = g32[k][j].double(), grad0[k][j]
            ratio = max(ratio, ((a - b).abs() / (1e-3 * b.abs() + 1e-4 * b.abs().max())).max().item())
    print("   grad0: worst |d| / (1e-3|g| + 1e-4 max|g_tensor|) = %.3g (rule: <= 1)" % ratio)
    fd = max((f32_[k][j].double() - final[k][j]).abs().max().item() for k in final for j in (0, 1))
    print("   final A/B (before fp16 rounding): max abs diff %.3g" % fd)
    for i in range(STEPS):
        print("   step %d loss %.9f vs %.9f  diff %.3g   norm diff %.3g" % (
            i, l32[i], losses[i], l32[i] - losses[i], n32[i] - norms[i]))


def full_mb0(model, mb, lora):
    return model.forward(mb["tokens"], mb["pos"], mb["seg_start"], lora)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="run the independent checks too")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()

    cfg, raw = L.load_model_dir(MODEL_DIR)
    V = cfg["vocab_size"]
    base = L.Llama(cfg, L.weights_nf4(raw, N.quant_dequant))
    model = LoraLlama(base)
    data = make_data(V)
    lora32 = init_lora(cfg)

    losses, norms, grad0, final = train(model, data, lora32)

    # merge: W_nf4 + scaling * B16 @ A16, run through llama_ref's own forward
    final16 = {k: (A.numpy().astype(np.float16).astype(np.float32), B.numpy().astype(np.float16).astype(np.float32))
               for k, (A, B) in final.items()}
    merged_w = dict(base.w)
    for (l, m), (A, B) in final16.items():
        name = "model.layers.%d.%s.weight" % (l, HF[m])
        merged_w[name] = base.w[name] + SCALING * (torch.from_numpy(B.astype(np.float64)) @ torch.from_numpy(A.astype(np.float64)))
    merged = L.Llama(cfg, merged_w)
    rng = np.random.default_rng(SEED + 1)
    merge_tokens = np.concatenate([[BOS], rng.integers(3, V, size=11)]).astype(np.int32)[None]
    logits_merged = merged.forward(merge_tokens)
    # the unmerged adapter through the LoRA path gives the same logits
    l16 = {k: (torch.from_numpy(A.astype(np.float64)), torch.from_numpy(B.astype(np.float64))) for k, (A, B) in final16.items()}
    d = (model.forward(merge_tokens, np.arange(12)[None], np.zeros((1, 12), np.int64), l16) - logits_merged).abs().max().item()
    print("merged (llama_ref) vs base+adapter (LoRA path): max|diff| %.3g" % d)
    assert d < 1e-11

    if args.check:
        check_all(cfg, raw, model, data, lora32, losses, norms, grad0, final)

    f32 = lambda t: ("F32", np.asarray(t, dtype=np.float32))  # noqa: E731
    i32 = lambda t: ("I32", np.asarray(t, dtype=np.int32))    # noqa: E731
    keys = sorted(lora32, key=key_order)
    out = {}
    for l, m in keys:
        A, B = lora32[(l, m)]
        out["init.layers.%d.%s.A" % (l, m)] = f32(A)
        out["init.layers.%d.%s.B" % (l, m)] = f32(B)
    for k in ("tokens", "targets", "pos", "seg_start"):
        out[k] = i32(data[k])
    for l, m in keys:
        A, B = grad0[(l, m)]
        out["grad0.layers.%d.%s.A" % (l, m)] = f32(A.numpy())
        out["grad0.layers.%d.%s.B" % (l, m)] = f32(B.numpy())
    out["losses"] = f32(losses)
    out["grad_norms"] = f32(norms)
    for l, m in keys:
        A, B = final16[(l, m)]
        out["final.layers.%d.%s.A" % (l, m)] = f32(A)
        out["final.layers.%d.%s.B" % (l, m)] = f32(B)
    out["merge_tokens"] = i32(merge_tokens)
    out["logits_merged"] = f32(logits_merged.numpy())
    ntrained = [int((data["targets"][i] >= 0).sum()) for i in range(data["targets"].shape[0])]
    meta = {"format": "qlora-train-ref", "rank": RANK, "alpha": ALPHA, "lr": LR, "beta1": BETA1,
            "beta2": BETA2, "eps": EPS, "weight_decay": WD, "max_grad_norm": MAX_GRAD_NORM,
            "steps": STEPS, "base": "tiny_gqa", "base_dtype": "nf4", "micro_batches": len(ntrained),
            "trained_tokens": ",".join(map(str, ntrained))}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    L.st_write(args.out, out, meta)

    print("trained tokens per micro-batch:", ntrained)
    print("step  loss                 grad_norm(pre-clip)")
    for i, (a, b) in enumerate(zip(losses, norms)):
        print("%4d  %.15f  %.15f" % (i, a, b))
    with open(args.out, "rb") as f:
        blob = f.read()
    print("wrote %s (%d bytes, sha256 %s)" % (args.out, len(blob), hashlib.sha256(blob).hexdigest()))


if __name__ == "__main__":
    main()
