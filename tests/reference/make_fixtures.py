#!/usr/bin/python3
"""make_fixtures.py: writes the committed test fixtures under tests/fixtures/
(see tests/reference/README.md). Deterministic: fixed seeds, no clock.

    /usr/bin/python3 tests/reference/make_fixtures.py [--models DIR]

DIR holds stories260K (default: <repo>/../shared/models). Needs torch, numpy,
sentencepiece, and spm_train on PATH only when tests/fixtures/tokenizer/tiny.model
is missing.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_ref as L  # noqa: E402
import nf4_ref as N  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(REPO, "tests", "fixtures")

torch.set_num_threads(1)  # the same sums in the same order on every machine


def rel(p):
    return os.path.relpath(p, REPO)


# ------------------------------------------------------------------ NF4 cases

def nf4_inputs():
    """The list of (description, f32 input) cases."""
    rng = np.random.default_rng(20240601)
    f = np.float32

    def gauss(n, std):
        return (rng.standard_normal(n) * std).astype(f)

    def heavy(n, std):
        # per-block lognormal scale so the absmax values spread out and the
        # second-level 8-bit quantization has something to do
        nb = (n + 63) // 64
        s = np.exp(rng.standard_normal(nb) * 0.7).repeat(64)[:n]
        return (rng.standard_normal(n) * std * s).astype(f)

    cases = [
        ("n=1", np.array([-0.37], f)),
        ("n=63", gauss(63, 0.02)),
        ("n=64", gauss(64, 0.02)),
        ("n=65", gauss(65, 0.05)),
        ("n=11008 (172 blocks)", heavy(172 * 64, 0.05)),
        ("n=19200 (300 blocks, 2 groups)", heavy(64 * 300, 0.02)),
        ("n=82247 (odd, 1286 blocks, 6 groups)", heavy(5 * 64 * 257 + 7, 0.03)),
    ]
    # zero block + huge outlier, partial last block
    x = gauss(5 * 64 + 40, 0.03)
    x[64:128] = 0
    x[128 + 17] = 1.0e4
    x[256:320] = -np.abs(x[256:320])  # an all-negative block
    cases.append(("zero block, outlier 1e4, negative block, n=360", x))
    cases.append(("all zero, n=130 (every block and the group have max 0)", np.zeros(130, f)))
    # threshold probes: absmax exactly 1, so xn = x exactly
    t = N.NF4_THRESH
    probe = np.concatenate([[1.0, -1.0], t, np.nextafter(t, f(2)), np.nextafter(t, f(-2)),
                            N.NF4_TABLE, [0.0]]).astype(f)
    assert probe.shape[0] == 64
    cases.append(("NF4 threshold probes (absmax 1: thresholds, their fp32 neighbours, table)", probe))
    # three blocks with the same absmax: every a = 0, group max 0, nonzero offset
    x = gauss(192, 0.1)
    for b in range(3):
        blk = x[64 * b:64 * b + 64]
        blk /= np.abs(blk).max() * 2
        blk[5 + b] = 0.5 if b != 1 else -0.5
    x = np.clip(x, -0.5, 0.5).astype(f)
    cases.append(("3 blocks with equal absmax 0.5 (a = 0, scale2 = 0)", x))
    return cases


def make_nf4():
    out = {}
    cases = nf4_inputs()
    out["ncases"] = ("I32", np.array([len(cases)], np.int32))
    out["code8"] = ("F32", N.CODE8)
    out["nf4_table"] = ("F32", N.NF4_TABLE)
    meta = {"format": "qlora-nf4-cases", "version": "1"}
    worst = 0.0
    half4 = float(np.max(np.diff(N.NF4_TABLE))) / 2
    half8 = float(np.max(np.diff(N.CODE8))) / 2
    for k, (desc, x) in enumerate(cases):
        q = N.quantize(x)
        amx = N.dequantize_absmax(q["absmax_q"], q["absmax_scale"], q["absmax_offset"])
        deq = N.dequantize(q["codes"], amx, q["n"])
        p = "case%d." % k
        out[p + "x"] = ("F32", x)
        out[p + "codes"] = ("U8", q["codes"])
        out[p + "absmax"] = ("F32", q["absmax"])
        out[p + "absmax_q"] = ("U8", q["absmax_q"])
        out[p + "absmax_scale"] = ("F32", q["absmax_scale"])
        out[p + "absmax_offset"] = ("F32", np.array([q["absmax_offset"]], np.float32))
        out[p + "absmax_dq"] = ("F32", amx)
        out[p + "deq"] = ("F32", deq)
        meta[p + "desc"] = desc
        # sanity bounds: the absmax error is at most half the widest gap of
        # the 8-bit map times scale2; an element's error is at most half the
        # widest NF4 gap times the true absmax plus the absmax error.
        g = np.arange(amx.shape[0]) // N.BLOCK2
        am_err = np.abs(amx - q["absmax"])
        assert np.all(am_err <= half8 * q["absmax_scale"][g] * 1.0001 + 1e-6 * np.abs(q["absmax_offset"])), desc
        b = np.arange(q["n"]) // N.BLOCK
        bound = half4 * q["absmax"][b] + am_err[b]
        assert np.all(np.abs(deq - x) <= bound * 1.0001 + 1e-30), desc
        worst = max(worst, float(np.max(np.abs(deq - x) / np.maximum(bound, 1e-30))))
    d = os.path.join(FIX, "nf4")
    os.makedirs(d, exist_ok=True)
    L.st_write(os.path.join(d, "nf4_cases.safetensors"), out, meta)
    print("nf4: %d cases, max |deq-x| / bound = %.3f" % (len(cases), worst))


# ------------------------------------------------------------------ tiny models

TINY = {
    "tiny_mha": dict(arch="LlamaForCausalLM", model_type="llama", hidden=64, inter=128, layers=2,
                     heads=4, kv=4, head_dim=16, vocab=384, dtype="F32", tie=False, lm_head=True,
                     theta=10000.0, scaling=None, max_pos=128, eps=1e-5, shards=1, seed=11),
    "tiny_gqa": dict(arch="LlamaForCausalLM", model_type="llama", hidden=96, inter=172, layers=3,
                     heads=6, kv=2, head_dim=16, vocab=384, dtype="BF16", tie=True, lm_head=False,
                     theta=500000.0,
                     scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                     max_pos=256, eps=1e-5, shards=1, seed=20),
    # head_dim 24: 5 heads * 24 = 120 != hidden 80
    "tiny_f16_sharded": dict(arch="MistralForCausalLM", model_type="mistral", hidden=80, inter=200,
                             layers=2, heads=5, kv=1, head_dim=24, vocab=400, dtype="F16", tie=True,
                             lm_head=True, theta=10000.0, scaling=None, max_pos=128, eps=1e-6,
                             shards=2, seed=18),
}

DT_NAME = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def tiny_config(s):
    cfg = {
        "architectures": [s["arch"]],
        "model_type": s["model_type"],
        "hidden_size": s["hidden"],
        "intermediate_size": s["inter"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv"],
        "head_dim": s["head_dim"],
        "vocab_size": s["vocab"],
        "max_position_embeddings": s["max_pos"],
        "rms_norm_eps": s["eps"],
        "rope_theta": s["theta"],
        "rope_scaling": s["scaling"],
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": s["tie"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": DT_NAME[s["dtype"]],
    }
    if s["model_type"] == "mistral":
        cfg["sliding_window"] = None
    return cfg


def tiny_weights(s):
    """HF-named f32 weights in file order."""
    rng = np.random.default_rng(s["seed"])
    C, I, D, H, Hkv, V = s["hidden"], s["inter"], s["head_dim"], s["heads"], s["kv"], s["vocab"]

    def mat(o, i, std):
        return (rng.standard_normal((o, i)) * std).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(V, C, 0.1)}
    for l in range(s["layers"]):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = norm(C)
        w[p + "self_attn.q_proj.weight"] = mat(H * D, C, 0.08)
        w[p + "self_attn.k_proj.weight"] = mat(Hkv * D, C, 0.08)
        w[p + "self_attn.v_proj.weight"] = mat(Hkv * D, C, 0.08)
        w[p + "self_attn.o_proj.weight"] = mat(C, H * D, 0.06)
        w[p + "post_attention_layernorm.weight"] = norm(C)
        w[p + "mlp.gate_proj.weight"] = mat(I, C, 0.08)
        w[p + "mlp.up_proj.weight"] = mat(I, C, 0.08)
        w[p + "mlp.down_proj.weight"] = mat(C, I, 0.06)
    w["model.norm.weight"] = norm(C)
    if s["lm_head"]:
        w["lm_head.weight"] = w["model.embed_tokens.weight"].copy() if s["tie"] else mat(V, C, 0.1)
    return w


def stored(arr, dt):
    """(dtype, array as written) of an f32 array in the storage dtype."""
    if dt == "F32":
        return ("F32", arr)
    if dt == "F16":
        return ("F16", arr.astype(np.float16))
    return ("BF16", L.f32_to_bf16(arr))


def tiny_tokenizer():
    """Path of the tokenizer.model every tiny model carries."""
    tiny = os.path.join(FIX, "tokenizer", "tiny.model")
    if os.path.exists(tiny):
        return tiny, "tests/fixtures/tokenizer/tiny.model"
    # fallback: a 320-piece byte-fallback BPE model trained on eval.txt
    tmp = tempfile.mkdtemp()
    subprocess.run(["spm_train", "--input=" + os.path.join(FIX, "stories260K", "eval.txt"),
                    "--model_prefix=" + os.path.join(tmp, "tok"), "--vocab_size=320",
                    "--model_type=bpe", "--byte_fallback=true", "--character_coverage=1.0",
                    "--num_threads=1", "--random_seed=1", "--normalization_rule_name=identity",
                    "--minloglevel=2"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.path.join(tmp, "tok.model"), "spm_train on tests/fixtures/stories260K/eval.txt"


def write_tiny(name, s, tok_path):
    d = os.path.join(FIX, "models", name)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        if old.endswith(".safetensors") or old.endswith(".json") or old.endswith(".model"):
            os.remove(os.path.join(d, old))
    cfg = tiny_config(s)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}, f, indent=2)
        f.write("\n")
    shutil.copyfile(tok_path, os.path.join(d, "tokenizer.model"))

    w32 = tiny_weights(s)
    raw = {k: stored(v, s["dtype"]) for k, v in w32.items()}
    if s["shards"] == 1:
        L.st_write(os.path.join(d, "model.safetensors"), raw, {"format": "pt"})
    else:
        names = list(raw)
        cut = len(names) // 2
        files = ["model-%05d-of-%05d.safetensors" % (i + 1, s["shards"]) for i in range(2)]
        parts = [names[:cut], names[cut:]]
        wm = {}
        for fn, part in zip(files, parts):
            L.st_write(os.path.join(d, fn), {k: raw[k] for k in part}, {"format": "pt"})
            wm.update({k: fn for k in part})
        total = sum(np.asarray(a).nbytes for _, a in raw.values())
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}, f, indent=2)
            f.write("\n")

    # reference outputs, from the files just written
    cfg2, raw2 = L.load_model_dir(d)
    assert cfg2 == cfg and set(raw2) == set(raw)
    m = L.Llama(cfg, L.weights_f64(raw2))
    mq = L.Llama(cfg, L.weights_nf4(raw2, N.quant_dequant))
    rng = np.random.default_rng(1000 + s["seed"])
    V = s["vocab"]
    tokens = rng.integers(3, V, size=(2, 12)).astype(np.int32)
    logits = m.forward(tokens)
    logits_nf4 = mq.forward(tokens)
    prompt = np.concatenate([[1], rng.integers(3, V, size=5)]).astype(np.int32)
    greedy, gaps = m.greedy(prompt.tolist(), 16)
    ppl_tokens = np.concatenate([np.ones((3, 1), np.int64), rng.integers(3, V, size=(3, 15))], 1).astype(np.int32)
    loss = m.nll(ppl_tokens.tolist())
    ref = {
        "tokens": ("I32", tokens),
        "logits": ("F32", logits.numpy().astype(np.float32)),
        "logits_nf4": ("F32", logits_nf4.numpy().astype(np.float32)),
        "greedy_prompt": ("I32", prompt),
        "greedy": ("I32", np.array(greedy, np.int32)),
        "greedy_margin": ("F32", np.array(gaps, np.float32)),
        "ppl_tokens": ("I32", ppl_tokens),
        "ppl_loss": ("F32", np.array([loss], np.float32)),
        "ppl": ("F32", np.array([math.exp(loss)], np.float32)),
    }
    L.st_write(os.path.join(d, "ref.safetensors"), ref, {"format": "qlora-ref", "model": name})
    dq = (logits_nf4 - logits).abs().max().item()
    print("%s: logits std %.3f, |nf4-f| max %.4f, min greedy margin %.4f, ppl %.2f" % (
        name, logits.std().item(), dq, min(gaps), math.exp(loss)))


# ------------------------------------------------------------------ stories260K

PROMPT = "Once upon a time, there was a little girl"


def make_stories(models_dir):
    import sentencepiece as spm
    src = os.path.join(models_dir, "stories260K")
    if not os.path.exists(os.path.join(src, "model.safetensors")):
        print("stories260K: %s not found, skipped" % src)
        return
    sp = spm.SentencePieceProcessor(model_file=os.path.join(src, "tokenizer.model"))
    cfg, raw = L.load_model_dir(src)
    m = L.Llama(cfg, L.weights_f64(raw))
    mq = L.Llama(cfg, L.weights_nf4(raw, N.quant_dequant))
    prompt = [1] + sp.encode(PROMPT)
    greedy, gaps = m.greedy(prompt, 64)
    logits_prompt = m.forward([prompt])[0]
    logits_prompt_nf4 = mq.forward([prompt])[0]
    with open(os.path.join(FIX, "stories260K", "eval.txt")) as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    samples = [[1] + sp.encode(ln) for ln in lines]
    loss = m.nll(samples)
    loss_nf4 = mq.nll(samples)
    flat = np.array([t for s in samples for t in s], np.int32)
    offs = np.cumsum([0] + [len(s) for s in samples]).astype(np.int32)
    ref = {
        "greedy_prompt": ("I32", np.array(prompt, np.int32)),
        "greedy": ("I32", np.array(greedy, np.int32)),
        "greedy_margin": ("F32", np.array(gaps, np.float32)),
        "logits_prompt": ("F32", logits_prompt.numpy().astype(np.float32)),
        "logits_prompt_nf4": ("F32", logits_prompt_nf4.numpy().astype(np.float32)),
        "ppl_tokens": ("I32", flat),
        "ppl_offsets": ("I32", offs),
        "ppl_loss": ("F32", np.array([loss], np.float32)),
        "ppl": ("F32", np.array([math.exp(loss)], np.float32)),
        "ppl_loss_nf4": ("F32", np.array([loss_nf4], np.float32)),
        "ppl_nf4": ("F32", np.array([math.exp(loss_nf4)], np.float32)),
    }
    L.st_write(os.path.join(FIX, "stories260K", "ref.safetensors"), ref,
               {"format": "qlora-ref", "model": "stories260K", "prompt": PROMPT})
    print("stories260K: ppl %.4f, ppl_nf4 %.4f over %d tokens, min greedy margin %.4f" % (
        math.exp(loss), math.exp(loss_nf4), int(offs[-1]) - len(samples), min(gaps)))
    print("stories260K greedy: %r" % sp.decode(greedy))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=os.path.join(REPO, "..", "shared", "models"),
                    help="directory holding stories260K")
    args = ap.parse_args()
    N.nf4_selftest()
    make_nf4()
    tok, how = tiny_tokenizer()
    print("tiny tokenizer: " + how)
    for name, s in TINY.items():
        write_tiny(name, s, tok)
    make_stories(args.models)


if __name__ == "__main__":
    main()
