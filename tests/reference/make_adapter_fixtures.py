#!/usr/bin/python3
"""make_adapter_fixtures.py: LoRA adapter directories written the way Hugging
Face PEFT writes them (not by qlora's own writer), and the float64 logits of
the base model with each adapter merged in; tests/test_adapter_fixture.c loads
them with lora_load_peft. Writes tests/fixtures/adapters/ (see
tests/reference/README.md). Deterministic: fixed seeds, one torch thread.

    /usr/bin/python3 tests/reference/make_adapter_fixtures.py [--check]

--check also runs each case through train_ref.py's forward, where the adapter
goes through its own path x W^T + s (x A^T) B^T instead of being merged: in
float64 (it must equal the merged logits to 1e-12) and in float32 (how far
fp32 arithmetic drifts, which is where the C test's tolerance comes from).

Where the formats come from (huggingface/peft, files named by their path in
that repository; we write the files from these facts, no PEFT code is used):
  - src/peft/config.py, PeftConfigMixin.save_pretrained: adapter_config.json is
    `json.dumps(to_dict(), indent=2, sort_keys=True)` with no trailing newline;
    set-valued fields are turned into lists first. to_dict is
    dataclasses.asdict, so every field of the config class is written,
    including PeftConfigMixin's auto_mapping (null).
  - src/peft/tuners/lora/config.py, LoraConfig: the fields written below
    (r, lora_alpha, lora_dropout, target_modules, bias, use_rslora,
    fan_in_fan_out, init_lora_weights, layers_to_transform, layers_pattern,
    rank_pattern, alpha_pattern, modules_to_save, megatron_config,
    megatron_core "megatron.core", loftq_config {}, use_dora,
    layer_replication) with their defaults; __post_init__ turns a
    target_modules list into a set, so the saved list comes out in set order,
    not sorted: we write it unsorted on purpose.
  - src/peft/utils/save_and_load.py, get_peft_model_state_dict: the saved
    state dict keeps the `lora_` tensors (bias "none") and drops the adapter
    name, so names are base_model.model.model.layers.{l}.{self_attn|mlp}.
    {module}.lora_{A|B}.weight; PeftModel.save_pretrained writes them with
    safetensors' save_file and metadata {"format": "pt"}.
  - src/peft/tuners/lora/layer.py, LoraLayer.update_layer: lora_A is
    nn.Linear(in, r) and lora_B nn.Linear(r, out), so A is [r, in] and B is
    [out, r]; scaling is lora_alpha / r, or lora_alpha / sqrt(r) with
    use_rslora. The layer computes x W^T + scaling * (x A^T) B^T, which equals
    the merged weight W + scaling * B @ A.
  - safetensors (huggingface/safetensors, README "Format"): the library
    serializes tensors sorted by dtype alignment then by name; every tensor of
    a file here has one dtype, so they are written sorted by name.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_ref as L  # noqa: E402
import train_ref as R  # noqa: E402  (module names and shapes, the unmerged forward)

REPO = os.path.dirname(os.path.dirname(HERE))
MODEL_DIR = os.path.join(REPO, "tests", "fixtures", "models", "tiny_gqa")
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "adapters")

torch.set_num_threads(1)  # the same sums in the same order on every machine

T = 8  # tokens of the fixed sequence

# name -> what the adapter is; "targets" in the (unsorted) order written to
# adapter_config.json
ADAPTERS = {
    "tiny_gqa_f32_rslora": dict(dtype="F32", r=4, alpha=8, rslora=True, dropout=0.05,
                                targets=["v_proj", "q_proj", "down_proj"], seed=31),
    "tiny_gqa_bf16_r2": dict(dtype="BF16", r=2, alpha=16, rslora=False, dropout=0.1,
                             targets=["up_proj", "q_proj", "o_proj", "down_proj", "k_proj", "gate_proj",
                                      "v_proj"], seed=32),
}


def scaling(s):
    return s["alpha"] / (math.sqrt(s["r"]) if s["rslora"] else s["r"])


def peft_config(s):
    """adapter_config.json as LoraConfig.save_pretrained writes it."""
    cfg = {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": "tests/fixtures/models/tiny_gqa",
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": s["alpha"],
        "lora_dropout": s["dropout"],
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": s["r"],
        "rank_pattern": {},
        "revision": None,
        "target_modules": list(s["targets"]),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": s["rslora"],
    }
    return json.dumps(cfg, indent=2, sort_keys=True)


def make_adapter(cfg, s):
    """-> (tensors as written: name -> (dtype, array), the same values as
    float64: (layer, module) -> (A, B)). A ~ U(-1/sqrt(in), 1/sqrt(in)) (the
    bound of PEFT's default init of A), B ~ N(0, 0.5/sqrt(r)) (PEFT starts B
    at 0; a trained adapter's B is not, and a zero B would test nothing)."""
    rng = np.random.default_rng(s["seed"])
    r = s["r"]
    stored, f64 = {}, {}
    for l in range(cfg["num_hidden_layers"]):
        for m in R.MODULES:
            if m not in s["targets"]:
                continue
            out, inn = R.module_shape(cfg, m)
            A = rng.uniform(-1, 1, size=(r, inn)).astype(np.float32) / np.float32(math.sqrt(inn))
            B = (rng.standard_normal((out, r)) * (0.5 / math.sqrt(r))).astype(np.float32)
            p = "base_model.model.model.layers.%d.%s." % (l, R.HF[m])
            if s["dtype"] == "BF16":
                A, B = L.f32_to_bf16(A), L.f32_to_bf16(B)
            stored[p + "lora_A.weight"] = (s["dtype"], A)
            stored[p + "lora_B.weight"] = (s["dtype"], B)
            f64[(l, m)] = (L.to_f64(s["dtype"], A), L.to_f64(s["dtype"], B))
    return {k: stored[k] for k in sorted(stored)}, f64


def merged(base, pairs, scale):
    """Float64 weights with W + scale * B @ A for every adapted projection."""
    w = dict(base)
    for (l, m), (A, B) in pairs.items():
        name = "model.layers.%d.%s.weight" % (l, R.HF[m])
        w[name] = base[name] + scale * (B @ A)
    return w


def unmerged(cfg, w64, pairs, scale, tokens, dtype):
    """train_ref's forward, where each adapter goes through its own path
    y = x W^T + 2 (x A^T) B^T (as qlora computes it, never merged), with B
    carrying scale/2; in dtype (float64, or float32 for the drift)."""
    m = L.Llama(cfg, {k: v.to(dtype) for k, v in w64.items()})
    m.inv_freq = m.inv_freq.to(dtype)
    lora = {k: (A.to(dtype), (B * (scale / R.SCALING)).to(dtype)) for k, (A, B) in pairs.items()}
    zeros = np.zeros_like(tokens)
    return R.LoraLlama(m, dtype).forward(tokens, np.arange(tokens.shape[-1])[None, :] + zeros, zeros, lora)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="also measure the float32 drift")
    args = ap.parse_args()
    cfg, raw = L.load_model_dir(MODEL_DIR)
    base = L.weights_f64(raw)
    rng = np.random.default_rng(30)
    tokens = np.concatenate([[1], rng.integers(3, cfg["vocab_size"], size=T - 1)]).astype(np.int32)
    out = {"tokens": ("I32", tokens)}
    variants = [("logits_base", {}, 0.0)]
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, s in ADAPTERS.items():
        d = os.path.join(OUT_DIR, name)
        os.makedirs(d, exist_ok=True)
        tensors, pairs = make_adapter(cfg, s)
        L.st_write(os.path.join(d, "adapter_model.safetensors"), tensors, {"format": "pt"})
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            f.write(peft_config(s))
        key = "logits_" + name[len("tiny_gqa_"):]
        variants.append((key, pairs, scaling(s)))
        if name == "tiny_gqa_f32_rslora":
            variants.append(("logits_half_scale", pairs, 0.5 * scaling(s)))
        print("%s: %d tensors, scaling %g" % (name, len(tensors), scaling(s)))
    ref = None
    for key, pairs, scale in variants:
        w = merged(base, pairs, scale)
        lg = L.Llama(cfg, w).forward(tokens[None, :])[0]  # (T,V)
        out[key] = ("F32", lg.numpy().astype(np.float32))
        if ref is None:
            ref = lg
        line = "%-20s logits |max| %.3f, max |d - base| %.4f" % (key, lg.abs().max().item(),
                                                                 (lg - ref).abs().max().item())
        if args.check:
            t2 = tokens[None, :]
            d64 = (unmerged(cfg, base, pairs, scale, t2, torch.float64)[0] - lg).abs().max().item()
            d32 = (unmerged(cfg, base, pairs, scale, t2, torch.float32)[0].double() - lg).abs().max().item()
            assert d64 < 1e-12, key
            line += ", unmerged f64 %.1e, f32 %.2e" % (d64, d32)
        print(line)
    L.st_write(os.path.join(OUT_DIR, "expected.safetensors"), out,
               {"format": "qlora-ref", "model": "tiny_gqa", "adapters": ",".join(ADAPTERS)})


if __name__ == "__main__":
    main()
