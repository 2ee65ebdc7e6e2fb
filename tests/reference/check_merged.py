#!/usr/bin/env python3
"""check_merged.py: a merged model directory written by `qlora export --format
merged` (from tests/fixtures/models/tiny_gqa and an adapter of
tests/fixtures/adapters), loaded by this PyTorch reference, against the
fixture's logits of base + adapter (expected.safetensors).

    python3 tests/reference/check_merged.py DIR logits_f32_rslora [--atol 1e-4]
    python3 tests/reference/check_merged.py DIR --config-only

First (and alone with --config-only, which needs no torch) its config.json: the
keys transformers' AutoConfig and LlamaConfig / MistralConfig read, each with the
right JSON type, model_type agreeing with architectures, the shapes they imply
agreeing with the tensors, and torch_dtype naming the dtype every tensor of the
safetensors files has. Then prints the largest logits difference and exits 1 when
it is above --atol. Not part of ctest (the suite needs no Python):
docs/benchmarks.md records its runs.
"""
import argparse
import glob
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# transformers' names: safetensors dtype -> torch_dtype
TORCH_DTYPE = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}
ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
# key -> JSON type(s) AutoConfig + LlamaConfig expect (bool is not an int here)
REQUIRED = {"model_type": str, "architectures": list, "torch_dtype": str, "hidden_act": str, "hidden_size": int,
            "intermediate_size": int, "num_hidden_layers": int, "num_attention_heads": int,
            "num_key_value_heads": int, "rms_norm_eps": float, "rope_theta": float,
            "max_position_embeddings": int, "vocab_size": int, "tie_word_embeddings": bool,
            "bos_token_id": (int, type(None)), "eos_token_id": (int, list, type(None))}


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def check_config(d):
    """Returns a list of problems with d/config.json (empty: AutoConfig's needs met)."""
    bad = []
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    for k, t in REQUIRED.items():
        if k not in c:
            bad.append("missing %s" % k)
        elif type(c[k]) is bool and t is not bool or not isinstance(c[k], t):
            bad.append("%s: %r is not %s" % (k, c[k], t))
    if bad:
        return bad
    if c["model_type"] not in ARCH or c["architectures"] != [ARCH[c["model_type"]]]:
        bad.append("model_type %r with architectures %r" % (c["model_type"], c["architectures"]))
    if c["hidden_act"] != "silu":
        bad.append("hidden_act %r" % c["hidden_act"])
    if "dtype" in c:
        bad.append("a 'dtype' key beside torch_dtype: %r" % c["dtype"])
    rs = c.get("rope_scaling")
    if rs is not None and not (rs.get("rope_type") == "llama3" and all(
            k in rs for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"))):
        bad.append("rope_scaling %r" % rs)
    tensors = {}
    for p in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        tensors.update(st_header(p))
    dtypes = sorted({t["dtype"] for t in tensors.values()})
    if dtypes != [k for k, v in TORCH_DTYPE.items() if v == c["torch_dtype"]]:
        bad.append("torch_dtype %r but the tensors are %s" % (c["torch_dtype"], dtypes))
    hd = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
    want = {"model.embed_tokens.weight": [c["vocab_size"], c["hidden_size"]],
            "model.layers.0.self_attn.q_proj.weight": [c["num_attention_heads"] * hd, c["hidden_size"]],
            "model.layers.0.self_attn.k_proj.weight": [c["num_key_value_heads"] * hd, c["hidden_size"]],
            "model.layers.0.mlp.down_proj.weight": [c["hidden_size"], c["intermediate_size"]],
            "model.layers.%d.input_layernorm.weight" % (c["num_hidden_layers"] - 1): [c["hidden_size"]]}
    for k, shape in want.items():
        if k not in tensors or tensors[k]["shape"] != shape:
            bad.append("%s: %s, config.json implies %s" % (k, tensors.get(k, {}).get("shape"), shape))
    if c["tie_word_embeddings"] == ("lm_head.weight" in tensors):
        bad.append("tie_word_embeddings %s with lm_head.weight %s" % (c["tie_word_embeddings"],
                                                                    "present" if "lm_head.weight" in tensors else "absent"))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("key", nargs="?", help="the expected logits: logits_f32_rslora, logits_bf16_r2, ...")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--config-only", action="store_true", help="check config.json and the tensors' dtypes only")
    a = ap.parse_args()
    bad = check_config(a.dir)
    print("%s/config.json: %s" % (a.dir, "; ".join(bad) if bad else "AutoConfig's keys present, torch_dtype matches"))
    if bad:
        sys.exit(1)
    if a.config_only:
        return
    if not a.key:
        ap.error("give the expected logits' key, or --config-only")
    import torch
    sys.path.insert(0, HERE)
    import llama_ref as L
    ex, _ = L.st_read(os.path.join(REPO, "tests", "fixtures", "adapters", "expected.safetensors"))
    tokens = ex["tokens"][1]
    want = torch.as_tensor(L.to_f64(*ex[a.key]))
    cfg, raw = L.load_model_dir(a.dir)
    got = L.Llama(cfg, L.weights_f64(raw)).forward(tokens[None, :])[0]
    d = (got - want).abs().max().item()
    print("%s vs %s: max |d| %.3g over %d logits (atol %g)" % (a.dir, a.key, d, want.numel(), a.atol))
    sys.exit(0 if d <= a.atol else 1)


if __name__ == "__main__":
    main()
