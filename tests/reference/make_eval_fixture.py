#!/usr/bin/python3
"""make_eval_fixture.py: the losses `qlora eval` must report on the small data
files of tests/fixtures/eval/ (one per training format, and a plain text file),
for tiny_gqa alone and with the fixture adapters, computed without any qlora
code. Writes tests/fixtures/eval/expected.txt; tests/test_eval_ref.sh compares.

    /usr/bin/python3 tests/reference/make_eval_fixture.py [--check]

What is independent of qlora, and what is not:
  - rendering: each record becomes token ids and a loss mask here, from the
    layouts written in docs/datasets.md (text: BOS enc(text) EOS, all but BOS
    trained; prompt/completion: BOS enc(prompt) | enc(completion) EOS;
    messages, alpaca and sharegpt through llama2: per user/assistant pair
    BOS enc("[INST] {user} [/INST]") | enc("{assistant}") EOS, the part after
    | trained; plain text: BOS enc(line), all but BOS trained, no EOS), not
    from datasets/;
  - tokenization: enc(s) is Debian's `spm_encode --output_format=id` with
    tests/fixtures/tokenizer/tiny.model (tiny_gqa's tokenizer.model). That is
    the same libsentencepiece that common/spm.cc calls, so the SentencePiece
    library itself is shared; our wrapper is not. spm_encode reads one input per
    line, so no text part here holds a newline (llama2 without a system
    message, alpaca without "input");
  - the model: llama_ref.py's float64 forward, weights as stored (BF16 upcast:
    --base-dtype f32) or with the projections through nf4_ref.quant_dequant
    (--base-dtype nf4), each adapted projection merged as W + s * B @ A from
    the adapter files read here (A, B as stored; s = lora_alpha / r, or / sqrt(r)
    with use_rslora, times the --adapters scale);
  - the loss: the sum over targets t with mask[t] = 1 of
    -log softmax(logits[t-1])[ids[t]], over every sample, divided by the number
    of such targets (training's definition), each sample run alone from
    position 0; a sample longer than seq_len keeps its first seq_len tokens.

--check also reruns each case with the adapter on its own path in float32
(make_adapter_fixtures.unmerged, train_ref's forward) and prints the largest
|loss_f32 - loss_f64|: the drift fp32 arithmetic alone causes, from which the
test's tolerance comes. Deterministic (one torch thread): the same bytes on
every rerun.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_ref as L  # noqa: E402
import nf4_ref as N  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(REPO, "tests", "fixtures")
MODEL_DIR = os.path.join(FIX, "models", "tiny_gqa")
DATA_DIR = os.path.join(FIX, "eval")
SPM_MODEL = os.path.join(MODEL_DIR, "tokenizer.model")

torch.set_num_threads(1)

# (data file, seq_len (0: max_position_embeddings), train_on_inputs)
CASES = [
    ("text.jsonl", 0, 0),
    ("text.jsonl", 8, 0),
    ("prompt.jsonl", 0, 0),
    ("prompt.jsonl", 0, 1),
    ("messages.jsonl", 0, 0),
    ("messages.jsonl", 0, 1),
    ("alpaca.jsonl", 0, 0),
    ("sharegpt.jsonl", 0, 0),
    ("plain.txt", 0, 0),
    ("plain.txt", 6, 0),
]
# (name in the output, adapter directory under tests/fixtures/adapters or None, scale)
TARGETS = [
    ("base", None, 0.0),
    ("tiny_gqa_bf16_r2", "tiny_gqa_bf16_r2", 1.0),
    ("tiny_gqa_f32_rslora", "tiny_gqa_f32_rslora", 1.0),
    ("tiny_gqa_f32_rslora", "tiny_gqa_f32_rslora", 0.5),
]
DTYPES = ("f32", "nf4")


def spm_encode(texts):
    """Token ids of each text (no BOS/EOS), by Debian's spm_encode."""
    for t in texts:
        assert "\n" not in t and "\r" not in t, "spm_encode reads one input per line: %r" % t
    out = subprocess.run(["spm_encode", "--model=" + SPM_MODEL, "--output_format=id"],
                         input="".join(t + "\n" for t in texts), capture_output=True, text=True, check=True)
    lines = out.stdout.split("\n")
    assert len(lines) == len(texts) + 1 and lines[-1] == "", "spm_encode: %d lines for %d inputs" % (len(lines), len(texts))
    return [[int(x) for x in ln.split()] for ln in lines[:-1]]


def parts_of(rec, fmt):
    """A record -> list of (text or token id, trained) parts, per docs/datasets.md
    (llama2 for every chat format; the tiny model has no chat template)."""
    if fmt == "text":
        return [(BOS, 0), (rec["text"], 1), (EOS, 1)]
    if fmt == "prompt":
        return [(BOS, 0), (rec["prompt"], 0), (rec["completion"], 1), (EOS, 1)]
    if fmt == "messages":
        turns = [(m["role"], m["content"]) for m in rec["messages"]]
    elif fmt == "alpaca":
        assert not rec.get("input"), "an alpaca input adds \"\\n\\n\": spm_encode cannot read it"
        turns = [("user", rec["instruction"]), ("assistant", rec["output"])]
    elif fmt == "sharegpt":
        role = {"human": "user", "gpt": "assistant"}
        turns = [(role[m["from"]], m["value"]) for m in rec["conversations"]]
    assert len(turns) % 2 == 0 and all(r == ("user" if i % 2 == 0 else "assistant") for i, (r, _) in enumerate(turns))
    parts = []
    for i in range(0, len(turns), 2):
        parts += [(BOS, 0), ("[INST] %s [/INST]" % turns[i][1], 0), (turns[i + 1][1], 1), (EOS, 1)]
    return parts


def format_of(rec):
    for key, fmt in (("text", "text"), ("prompt", "prompt"), ("messages", "messages"), ("instruction", "alpaca"),
                     ("conversations", "sharegpt")):
        if key in rec:
            return fmt
    raise ValueError("no format: %r" % rec)


def samples_of(path, seq_len, train_on_inputs):
    """[(ids, mask)] of a data file, cut at seq_len."""
    with open(path, encoding="utf-8") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    if path.endswith(".jsonl"):
        recs = [json.loads(ln) for ln in lines if ln.strip()]
        parts = [parts_of(r, format_of(r)) for r in recs]
    else:  # plain text: BOS enc(line), every token after the first trained, no EOS
        parts = [[(BOS, 0), (ln, 1)] for ln in lines if ln.strip(" \t")]
    texts = sorted({p for ps in parts for p, _ in ps if isinstance(p, str)})
    enc = dict(zip(texts, spm_encode(texts)))
    out = []
    for ps in parts:
        ids, mask = [], []
        for p, trained in ps:
            toks = enc[p] if isinstance(p, str) else [p]
            ids += toks
            mask += [trained] * len(toks)
        mask[0] = 0  # nothing predicts the first token
        if train_on_inputs:
            mask = [0] + [1] * (len(ids) - 1)
        if len(ids) > seq_len:
            ids, mask = ids[:seq_len], mask[:seq_len]
        assert any(mask), "a sample with nothing trained"
        out.append((ids, mask))
    return out


def adapter(name, cfg):
    """(scaling, {hf weight name: B @ A float64}) of a PEFT adapter directory."""
    d = os.path.join(FIX, "adapters", name)
    with open(os.path.join(d, "adapter_config.json")) as f:
        ac = json.load(f)
    r = ac["r"]
    s = ac["lora_alpha"] / (math.sqrt(r) if ac.get("use_rslora") else r)
    raw, _ = L.st_read(os.path.join(d, "adapter_model.safetensors"))
    delta = {}
    for k, (dt, a) in raw.items():
        if not k.endswith(".lora_A.weight"):
            continue
        stem = k[len("base_model.model."):-len(".lora_A.weight")]
        A = L.to_f64(dt, a)
        dtb, b = raw[k.replace("lora_A", "lora_B")]
        delta[stem + ".weight"] = L.to_f64(dtb, b) @ A
    return s, delta


def pairs_of(name):
    """{(layer, module): (A, B)} float64, for train_ref's unmerged forward."""
    import train_ref as R
    raw, _ = L.st_read(os.path.join(FIX, "adapters", name, "adapter_model.safetensors"))
    out = {}
    for l in range(16):
        for m in R.MODULES:
            k = "base_model.model.model.layers.%d.%s.lora_A.weight" % (l, R.HF[m])
            if k in raw:
                out[(l, m)] = (L.to_f64(*raw[k]), L.to_f64(*raw[k.replace("lora_A", "lora_B")]))
    return out


def nll(model, samples):
    """(sum of -log p over trained targets, their count)."""
    tot, cnt = 0.0, 0
    for ids, mask in samples:
        lp = torch.log_softmax(model([ids])[0], dim=-1)  # (T,V)
        for t in range(1, len(ids)):
            if mask[t]:
                tot -= float(lp[t - 1, ids[t]])
                cnt += 1
    return tot, cnt


def main():
    global BOS, EOS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="also measure the float32 drift")
    args = ap.parse_args()
    cfg, raw = L.load_model_dir(MODEL_DIR)
    BOS, EOS = cfg["bos_token_id"], cfg["eos_token_id"]
    bases = {"f32": L.weights_f64(raw), "nf4": L.weights_nf4(raw, N.quant_dequant)}
    adapters = {a: adapter(a, cfg) for _, a, _ in TARGETS if a}
    lines = ["# tests/fixtures/eval/expected.txt: written by tests/reference/make_eval_fixture.py (do not edit).",
             "# One case per line: data (in tests/fixtures/eval), seq_len (0: max_position_embeddings),",
             "# train_on_inputs, base_dtype, adapter (base or a folder of tests/fixtures/adapters), scale,",
             "# loss (float64 mean NLL over trained targets), tokens (trained targets), samples."]
    drift = 0.0
    for data, seq_len, tio in CASES:
        samples = samples_of(os.path.join(DATA_DIR, data), seq_len or cfg["max_position_embeddings"], tio)
        for dt in DTYPES:
            for name, ad, scale in TARGETS:
                w = dict(bases[dt])
                if ad:
                    s, delta = adapters[ad]
                    for k, dw in delta.items():
                        w[k] = w[k] + scale * s * dw
                model = L.Llama(cfg, w).forward
                tot, cnt = nll(model, samples)
                loss = tot / cnt
                lines.append("data=%s seq_len=%d train_on_inputs=%d base_dtype=%s adapter=%s scale=%g loss=%.9f "
                             "tokens=%d samples=%d" % (data, seq_len, tio, dt, name, scale if ad else 0, loss, cnt,
                                                       len(samples)))
                if args.check:
                    import make_adapter_fixtures as MA
                    pairs = pairs_of(ad) if ad else {}
                    sc = scale * adapters[ad][0] if ad else 0.0

                    def f32(tokens, pairs=pairs, sc=sc, dt=dt):
                        t = np.asarray(tokens, dtype=np.int64)
                        return MA.unmerged(cfg, bases[dt], pairs, sc, t, torch.float32).double()
                    t32, _ = nll(f32, samples)
                    d = abs(t32 / cnt - loss)
                    drift = max(drift, d / loss)
                print(lines[-1])
    if args.check:
        print("largest |loss_f32 - loss_f64| / loss_f64: %.2e" % drift)
    with open(os.path.join(DATA_DIR, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
