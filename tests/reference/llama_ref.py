"""llama_ref.py: an independent float64 PyTorch model of Hugging Face's
LlamaForCausalLM (and MistralForCausalLM, the same maths without a sliding
window at these lengths), plus a minimal safetensors reader/writer.

Written from the maths of huggingface/transformers
  src/transformers/models/llama/modeling_llama.py   (LlamaRMSNorm, rotate_half,
      apply_rotary_pos_emb, repeat_kv, eager attention, LlamaMLP)
  src/transformers/modeling_rope_utils.py           (_compute_default_rope_parameters,
      _compute_llama3_parameters)
Everything is computed in float64 from the stored weights upcast from their
dtype (F32, F16 or BF16); the inverse frequencies too (HF computes them in
fp32, which differs by ~1e-7 relative).

Shapes: tokens (B,T) int; hidden (B,T,C); q (B,H,T,D); k, v (B,Hkv,T,D);
weights (out,in) as stored by HF.
"""
import json
import math
import os
import struct

import numpy as np
import torch

# ---------------------------------------------------------------- safetensors
# File: u64 little-endian header length N, N bytes of JSON
# {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
# then the data; offsets are relative to the first byte after the header.

_NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32,
       "I64": np.int64, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "BF16": np.uint16}


def bf16_to_f32(u16):
    """uint16 bit patterns of bfloat16 -> float32 (exact)."""
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    """float32 -> uint16 bit patterns of bfloat16, round to nearest even
    (what torch's .to(torch.bfloat16) does for finite values)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def st_read(path):
    """Read a safetensors file -> (dict name -> (dtype string, numpy array), metadata).
    BF16 tensors come back as their uint16 bit patterns."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(buf[base + b:base + e], dtype=_NP[info["dtype"]]).reshape(info["shape"])
        out[name] = (info["dtype"], arr.copy())
    return out, meta


def st_read_f64(path):
    """Read a safetensors file with every float tensor upcast to float64 torch tensors."""
    raw, _ = st_read(path)
    return {k: to_f64(dt, a) for k, (dt, a) in raw.items()}


def to_f64(dtype, arr):
    if dtype == "BF16":
        arr = bf16_to_f32(arr)
    return torch.from_numpy(np.asarray(arr, dtype=np.float64))


def st_write(path, tensors, metadata=None):
    """Write tensors: dict name -> (dtype string, numpy array), in insertion
    order. For BF16 pass the uint16 bit patterns. The header is padded with
    spaces to a multiple of 8 bytes."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    off = 0
    for name, (dt, arr) in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=_NP[dt])
        data = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def load_model_dir(d):
    """config dict and float64 weights of a HF model directory (single file or
    sharded with model.safetensors.index.json)."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    idx = os.path.join(d, "model.safetensors.index.json")
    raw = {}
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        for fn in sorted(set(wm.values())):
            r, _ = st_read(os.path.join(d, fn))
            raw.update(r)
    else:
        raw, _ = st_read(os.path.join(d, "model.safetensors"))
    return cfg, raw


# ---------------------------------------------------------------- model maths

def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_inv_freq(cfg):
    """Inverse frequencies f64[D/2]: theta^(-2i/D), then the llama3 rescaling
    when rope_scaling says so: wavelengths 2*pi/f longer than
    original_max/low_freq_factor are divided by factor, shorter than
    original_max/high_freq_factor are kept, and in between
    f' = (1-s) f/factor + s f with s = (original_max/wavelen - low)/(high - low)."""
    D = head_dim(cfg)
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    rs = cfg.get("rope_scaling")
    if rs is None:
        return inv
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return inv
    if kind != "llama3":
        raise ValueError("rope_scaling type %r not modelled" % kind)
    factor = float(rs["factor"])
    lo, hi = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
    old = float(rs["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    out = torch.where(wavelen > old / lo, inv / factor, inv)
    s = (old / wavelen - lo) / (hi - lo)
    smooth = (1 - s) * out / factor + s * out
    medium = (wavelen >= old / hi) & (wavelen <= old / lo)
    return torch.where(medium, smooth, out)


def rmsnorm(x, w, eps):
    """x * 1/sqrt(mean(x^2) + eps) * w over the last axis."""
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    """x (B,H,T,D); cos, sin (T,D) with each frequency repeated on both halves."""
    return x * cos + rotate_half(x) * sin


class Llama:
    """Float64 Llama. weights: dict HF name -> f64 tensor. linear_override maps
    names of (out,in) projection weights to replacement tensors (e.g. NF4
    round-tripped)."""

    def __init__(self, cfg, weights):
        self.cfg = cfg
        self.w = weights
        self.C = cfg["hidden_size"]
        self.L = cfg["num_hidden_layers"]
        self.H = cfg["num_attention_heads"]
        self.Hkv = cfg.get("num_key_value_heads") or self.H
        self.D = head_dim(cfg)
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.inv_freq = rope_inv_freq(cfg)
        if cfg.get("tie_word_embeddings", False) or "lm_head.weight" not in weights:
            self.lm_head = weights["model.embed_tokens.weight"]
        else:
            self.lm_head = weights["lm_head.weight"]

    def forward(self, tokens):
        """tokens (B,T) int, each row a sequence starting at position 0
        -> logits (B,T,V) f64."""
        w, H, Hkv, D = self.w, self.H, self.Hkv, self.D
        tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        B, T = tokens.shape
        x = w["model.embed_tokens.weight"][tokens]                   # (B,T,C)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * self.inv_freq[None, :]
        ang = torch.cat([ang, ang], dim=-1)                           # (T,D)
        cos, sin = torch.cos(ang), torch.sin(ang)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        for l in range(self.L):
            p = "model.layers.%d." % l
            h = rmsnorm(x, w[p + "input_layernorm.weight"], self.eps)
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            # grouped-query: query head h reads kv head h // (H/Hkv)
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(D)           # (B,H,T,T)
            att = att.masked_fill(causal, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, H * D)
            x = x + y @ w[p + "self_attn.o_proj.weight"].T
            h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], self.eps)
            g = h @ w[p + "mlp.gate_proj.weight"].T
            u = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (g * torch.sigmoid(g) * u) @ w[p + "mlp.down_proj.weight"].T
        x = rmsnorm(x, w["model.norm.weight"], self.eps)
        return x @ self.lm_head.T

    def greedy(self, prompt, steps):
        """Greedy continuation (argmax over f64 logits, recomputed from scratch
        each step; never stops early). -> (tokens[steps], top1-top2 gaps[steps])."""
        seq = list(prompt)
        toks, gaps = [], []
        for _ in range(steps):
            last = self.forward([seq])[0, -1]
            top = torch.topk(last, 2)
            t = int(top.indices[0])
            toks.append(t)
            gaps.append(float(top.values[0] - top.values[1]))
            seq.append(t)
        return toks, gaps

    def nll(self, samples):
        """Mean negative log-likelihood over every predicted token of every
        sample (a list of token lists; position t predicts token t+1)."""
        tot, cnt = 0.0, 0
        for s in samples:
            lp = torch.log_softmax(self.forward([s])[0], dim=-1)
            tgt = torch.as_tensor(s[1:], dtype=torch.long)
            tot += float(-lp[torch.arange(len(s) - 1), tgt].sum())
            cnt += len(s) - 1
        return tot / cnt


QUANTIZED = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def weights_f64(raw):
    """dict name -> (dtype, array) as stored -> dict name -> f64 tensor."""
    return {k: to_f64(dt, a) for k, (dt, a) in raw.items()}


def weights_nf4(raw, quant_dequant):
    """Float64 weights where every layer projection went through
    quant_dequant (f32 array -> f32 array) after upcasting its stored dtype to f32."""
    out = weights_f64(raw)
    for k, (dt, a) in raw.items():
        if any(("." + q + ".weight") in k for q in QUANTIZED):
            a32 = bf16_to_f32(a) if dt == "BF16" else np.asarray(a, dtype=np.float32)
            out[k] = torch.from_numpy(quant_dequant(a32).astype(np.float64))
    return out
