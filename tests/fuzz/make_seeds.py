#!/usr/bin/env python3
"""Writes the seed corpus of every harness under tests/fuzz/corpus/<harness>/seed-*.

Small valid files and edge cases, written here so that the corpus does not depend
on anything but this script and tests/fixtures. Fuzzing adds its own files
(minimized with -merge=1) and each crash reproducer (crash-<what>) beside these.
Run from anywhere: python3 tests/fuzz/make_seeds.py
"""
import json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
SEP = b"\n--qlora-fuzz-file--\n"


def put(harness, name, data):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def fixture(*p):
    with open(os.path.join(FIX, *p), "rb") as f:
        return f.read()


DT = {"F32": ("<f", 4), "F16": ("<e", 2), "U8": ("B", 1), "I32": ("<i", 4), "BF16": (None, 2), "I64": ("<q", 8), "I8": ("b", 1)}


def safetensors(tensors, metadata=None, align=1, prefix_len=0):
    """tensors: [(name, dtype, shape, raw bytes)] in data order."""
    hdr, off, data = {}, 0, b""
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    if metadata is not None:
        hdr["__metadata__"] = metadata
    h = json.dumps(hdr, separators=(",", ":")).encode()
    while (prefix_len + 8 + len(h)) % align:
        h += b" "
    return struct.pack("<Q", len(h)) + h + data


def floats(vals, fmt="<f"):
    return b"".join(struct.pack(fmt, v) for v in vals)


# ---- safetensors ----
put("safetensors", "one_f32", safetensors([("w", "F32", [2, 3], floats(range(6)))]))
put("safetensors", "dtypes", safetensors([("a", "F16", [4], floats([1, 2, 3, 4], "<e")), ("b", "BF16", [2], b"\x80\x3f\x00\x40"),
                                          ("c", "U8", [3], b"abc"), ("d", "I32", [1], b"\x01\x00\x00\x00"),
                                          ("e", "I64", [1], b"\x02" + b"\x00" * 7), ("f", "I8", [2], b"\xff\x01")],
                                         {"format": "pt", "note": "x"}))
put("safetensors", "empty", safetensors([]))
put("safetensors", "zero_dim", safetensors([("s", "F32", [], floats([1.5])), ("z", "F32", [0, 4], b"")]))
put("safetensors", "meta_only", safetensors([], {"format": "qlora-base"}))
put("safetensors", "bad_offsets", b"\x30\x00\x00\x00\x00\x00\x00\x00" + b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}'[:48])
put("safetensors", "short", b"\x08\x00\x00")
put("safetensors", "adapter_fixture", fixture("adapters", "tiny_gqa_bf16_r2", "adapter_model.safetensors"))

# ---- model.safetensors.index.json ----
idx = fixture("models", "tiny_f16_sharded", "model.safetensors.index.json")
put("st_index", "fixture", idx)
put("st_index", "empty_map", '{"metadata": {"total_size": 0}, "weight_map": {}}')
j = json.loads(idx)
first = sorted(j["weight_map"])[0]
put("st_index", "one", json.dumps({"weight_map": {first: j["weight_map"][first]}}))
put("st_index", "outside", json.dumps({"weight_map": {first: "../x.safetensors"}}))
put("st_index", "wrong_shard", json.dumps({"weight_map": {first: "model-00002-of-00002.safetensors" if j["weight_map"][first].startswith("model-00001") else "model-00001-of-00002.safetensors"}}))

# ---- config.json ----
for m in ("tiny_gqa", "tiny_mha", "tiny_f16_sharded"):
    put("config", m, fixture("models", m, "config.json"))
base = json.loads(fixture("models", "tiny_gqa", "config.json"))
c = dict(base, architectures=["MistralForCausalLM"], model_type="mistral", rope_scaling=None, eos_token_id=[2, 3])
put("config", "mistral", json.dumps(c))
c = dict(base, hidden_act="gelu")
put("config", "gelu", json.dumps(c))
c = dict(base, attention_bias=True, mlp_bias=True)
put("config", "bias", json.dumps(c))
put("config", "minimal", '{"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,'
    '"num_attention_heads":2,"vocab_size":16}')
put("config", "dup_key", '{"architectures":["LlamaForCausalLM"],"rope_theta":1e4,"rope_theta":5e5}')
put("config", "deep", "[" * 200 + "]" * 200)

# ---- generation_config.json / tokenizer_config.json ----
put("generation_config", "list", '{"bos_token_id": 1, "eos_token_id": [2, 3], "do_sample": true, "temperature": 0.6}')
put("generation_config", "one", '{"eos_token_id": 2}')
put("generation_config", "null", '{"eos_token_id": null}')
put("generation_config", "big", '{"eos_token_id": [1000000]}')
put("tokenizer_config", "fixture", fixture("models", "tiny_gqa", "tokenizer_config.json"))
put("tokenizer_config", "no_bos", '{"add_bos_token": false, "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}')
put("tokenizer_config", "null", '{"add_bos_token": null, "bos_token": {"content": "<s>", "lstrip": false}}')
put("tokenizer_config", "escapes", '{"chat_template": "\\u003c|im_start|\\u003e\\n\\ud83d\\ude00\\t\\"x\\"", "add_bos_token": true}')

# ---- adapter directory: adapter_config.json SEP adapter_model.safetensors ----
for a in ("tiny_gqa_bf16_r2", "tiny_gqa_f32_rslora"):
    put("adapter", a, fixture("adapters", a, "adapter_config.json") + SEP + fixture("adapters", a, "adapter_model.safetensors"))
put("adapter", "config_only", fixture("adapters", "tiny_gqa_bf16_r2", "adapter_config.json"))
cfg = {"peft_type": "LORA", "r": 1, "lora_alpha": 2, "target_modules": ["q_proj"], "use_rslora": False, "bias": "none",
       "task_type": "CAUSAL_LM", "fan_in_fan_out": False}
qa = [("base_model.model.model.layers.%d.self_attn.q_proj.lora_%s.weight" % (l, w), "F32", s, floats([0.01] * (s[0] * s[1])))
      for l in range(3) for w, s in (("A", [1, 96]), ("B", [96, 1]))]
put("adapter", "rank1_q", json.dumps(cfg).encode() + SEP + safetensors(qa, {"format": "pt"}))

# ---- training JSONL: the five formats ----
put("dataset", "text", '{"text": "Once upon a time there was a cat."}\n{"text": "The end."}\n')
put("dataset", "prompt", '{"prompt": "Say hi", "completion": " hi"}\n\n{"prompt": "2+2=", "completion": "4"}\r\n')
put("dataset", "messages", '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, '
    '{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye."}]}\n')
put("dataset", "alpaca", '{"instruction": "Add", "input": "1 and 2", "output": "3"}\n{"instruction": "Greet", "output": "Hi"}\n')
put("dataset", "sharegpt", '{"conversations": [{"from": "system", "value": "Be terse."}, {"from": "human", "value": "Hi"}, '
    '{"from": "gpt", "value": "Hello."}]}\n{"conversations": [{"from": "user", "value": "x"}, {"from": "assistant", "value": "y"}]}\n')
for f in sorted(os.listdir(os.path.join(FIX, "datasets"))):
    put("dataset", "fixture_" + f.replace(".jsonl", ""), fixture("datasets", f))

# ---- --requests JSONL ----
put("requests", "mixed", '{"id": 1, "prompt": "Tell me about the sea", "adapter": "pirate", "max_tokens": 8}\n'
    '{"id": "two", "messages": [{"role": "user", "content": "Where is my order?"}], "temperature": 0.9, "seed": 7}\n'
    '\n{"id": 3, "prompt": "x", "stop": ["\\n", "."], "top_p": 0.5, "top_k": 4, "scale": 0.5}\n'
    '{"id": 4, "prompt": "x", "stop": "END", "adapter": null}\n')
put("requests", "bad", '{"id": 9, "prompt": "Tell me", "max_tokns": 3}\n{"id": 10, "prompt": "Tell me", "temperature": "hot"}\n'
    '{"id": [1], "prompt": "a"}\n{"prompt": "a", "messages": []}\n{"adapter": "../x", "prompt": "a"}\nnot json\n')
put("requests", "blank", "\n  \n\t\n")

# ---- the quantized base file ----
NF4_BLOCK, NF4_BLOCK2 = 64, 256


def nf4(name, n):
    nb = (n + NF4_BLOCK - 1) // NF4_BLOCK
    ng = (nb + NF4_BLOCK2 - 1) // NF4_BLOCK2
    return [(name + ".nf4_codes", "U8", [(n + 1) // 2], bytes((i * 37) & 255 for i in range((n + 1) // 2))),
            (name + ".nf4_absmax_q", "U8", [nb], bytes(range(nb))),
            (name + ".nf4_absmax_scale", "F32", [ng], floats([0.01] * ng)),
            (name + ".nf4_absmax_offset", "F32", [1], floats([0.05]))]


def qlb(base_dtype, tie=True, chat=None):
    C, F, L, H, Hkv, D, V = 8, 16, 1, 2, 1, 4, 16
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": C, "intermediate_size": F, "num_hidden_layers": L,
           "num_attention_heads": H, "num_key_value_heads": Hkv, "head_dim": D, "vocab_size": V,
           "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000, "tie_word_embeddings": tie,
           "bos_token_id": 1, "eos_token_id": [2], "rope_scaling": None}
    lin = [("self_attn.q_proj", H * D, C), ("self_attn.k_proj", Hkv * D, C), ("self_attn.v_proj", Hkv * D, C),
           ("self_attn.o_proj", C, H * D), ("mlp.gate_proj", F, C), ("mlp.up_proj", F, C), ("mlp.down_proj", C, F)]
    f32, b16, u8 = [], [], []
    f32.append(("model.norm.weight", "F32", [C], floats([1.0] * C)))
    b16.append(("model.embed_tokens.weight", "F16", [V, C], floats([0.02] * (V * C), "<e")))
    if not tie:
        b16.append(("lm_head.weight", "F16", [V, C], floats([0.01] * (V * C), "<e")))
    for l in range(L):
        p = "model.layers.%d." % l
        f32.append((p + "input_layernorm.weight", "F32", [C], floats([1.0] * C)))
        f32.append((p + "post_attention_layernorm.weight", "F32", [C], floats([1.0] * C)))
        for nm, r, c in lin:
            if base_dtype == "nf4":
                for t in nf4(p + nm + ".weight", r * c):
                    (f32 if t[1] == "F32" else u8).append(t)
            else:
                b16.append((p + nm + ".weight", "F16", [r, c], floats([0.01] * (r * c), "<e")))
    u8.append(("tokenizer.model", "U8", [4], b"\x0a\x02\x08\x01"))
    meta = {"format": "qlora-base", "config": json.dumps(cfg, separators=(",", ":")), "base_dtype": base_dtype,
            "add_bos_token": "true"}
    if chat:
        meta["chat_template"] = chat
    img = safetensors(f32 + b16 + u8, meta, align=64, prefix_len=32)
    return b"QLORABAS" + struct.pack("<IIQQ", 1, 0, len(img), 0) + img


put("qlb", "nf4", qlb("nf4"))
put("qlb", "f16_untied", qlb("f16", tie=False, chat="{{ bos_token }}[INST]"))
put("qlb", "truncated", qlb("nf4")[:200])
put("qlb", "bad_magic", b"QLORABAZ" + qlb("nf4")[8:64])

# ---- tokenizer.json (byte-level BPE) ----
def gpt2_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b), cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


G = gpt2_chars()


def bl(s):
    return "".join(G[b] for b in s.encode())


def tokjson(post=None, added=True, pair=False, ignore=False):
    vocab = {G[b]: b for b in range(256)}
    extra = ["He", "ll", "llo", "Hello", " w", "or", " wor", " world", "12", "123"]
    merges = [("H", "e"), ("l", "l"), ("ll", "o"), ("He", "llo"), (" ", "w"), ("o", "r"), (" w", "or"), (" wor", "ld"),
              ("1", "2"), ("12", "3")]
    for k, e in enumerate(extra):
        vocab[bl(e)] = 256 + k
    ms = [[bl(a), bl(b)] if pair else bl(a) + " " + bl(b) for a, b in merges]
    doc = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": 300, "content": "<|eot_id|>", "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True},
                            {"id": 301, "content": "<|begin_of_text|>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}] if added else [],
           "normalizer": None,
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
                "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
           "post_processor": post,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore,
                     "vocab": vocab, "merges": ms}}
    return json.dumps(doc, ensure_ascii=False)


put("tokenizer_json", "bytelevel", tokjson({"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}))
put("tokenizer_json", "template", tokjson({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
    {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [301], "tokens": ["<|begin_of_text|>"]}}},
    pair=True, ignore=True))
put("tokenizer_json", "no_added", tokjson(None, added=False))

# ---- HTTP request bodies (both endpoints) ----
put("openai", "completion", '{"model": "pirate", "prompt": "Tell me", "max_tokens": 8, "temperature": 0.5, "top_p": 0.9, '
    '"top_k": 4, "seed": 1, "stop": ["\\n"], "stream": true, "stream_options": {"include_usage": true}, "n": 2}')
put("openai", "chat", '{"model": "base", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], '
    '"max_tokens": 4, "ignore_eos": true, "lora_scale": 0.5}')
put("openai", "adapters", '{"model": "m", "prompt": "x", "adapters": ["pirate", "support:0.5", "base"], "stop": "END"}')
put("openai", "bad", '{"model": 1, "prompt": ["a", "b"], "max_tokens": -1, "temperature": "hot"}')

# ---- training recipes ----
put("recipe", "full", '{"_note": "a recipe", "comment": "x", "rank": 8, "alpha": 16.5, "rslora": true, "lr": 2e-4, '
    '"batch_size": 2, "seq-len": 128, "targets": "q_proj,v_proj", "schedule": "linear", "resume": false, '
    '"chat_template": "chatml", "base_dtype": "nf4"}')
put("recipe", "wrong_types", '{"rank": "8", "lr": true, "resume": 1}')
put("recipe", "help", '{"help": true}')
put("recipe", "unknown", '{"ranks": 8, "recipe": "other.json"}')
put("recipe", "empty", "{}")

# ---- checkpoints: written by ckpt_write itself (fuzz_checkpoint.c built with
# -DFZ_WRITE_SEEDS against a normal build's library), when QLORA_BUILD names it ----
build = os.environ.get("QLORA_BUILD")
if build:
    import subprocess, tempfile
    root = os.path.abspath(os.path.join(HERE, "..", ".."))
    out = os.path.join(HERE, "corpus", "checkpoint")
    os.makedirs(out, exist_ok=True)
    exe = os.path.join(tempfile.mkdtemp(), "write_seeds")
    subprocess.check_call(["cc", "-std=c11", "-D_GNU_SOURCE", "-DFZ_WRITE_SEEDS", '-DQL_SOURCE_DIR="%s"' % root, "-I", root,
                           "-I", "/usr/include/x86_64-linux-gnu/openblas-pthread", os.path.join(HERE, "fuzz_checkpoint.c"),
                           os.path.join(build, "libqlora_lib.a"), "-fopenmp", "-lopenblas", "-lsentencepiece",
                           "-lmicrohttpd", "-lpcre2-8", "-lstdc++", "-lm", "-o", exe])
    subprocess.check_call([exe, out])

# ---- dictionaries: JSON's tokens plus each format's keys and words ----
JSON_TOKENS = ["{", "}", "[", "]", ":", ",", '"', "true", "false", "null", "-0", "1e5", "0.5", "\\u0000", "\\ud83d\\ude00",
               "\\\"", "\\\\", "\\n", "\xc3\xa9", "\xff"]
KEYS = {
    "safetensors": ["dtype", "shape", "data_offsets", "__metadata__", "F32", "F16", "BF16", "I32", "I64", "U8", "I8",
                    "F64", "format"],
    "st_index": ["weight_map", "metadata", "total_size", "model-00001-of-00002.safetensors",
                 "model-00002-of-00002.safetensors", "model.embed_tokens.weight", "lm_head.weight"],
    "config": ["architectures", "LlamaForCausalLM", "MistralForCausalLM", "model_type", "llama", "mistral", "hidden_size",
               "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
               "bos_token_id", "eos_token_id", "rope_scaling", "rope_type", "type", "llama3", "default", "factor",
               "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", "hidden_act", "silu",
               "attention_bias", "mlp_bias"],
    "generation_config": ["eos_token_id", "bos_token_id", "pad_token_id", "do_sample"],
    "tokenizer_config": ["add_bos_token", "add_eos_token", "bos_token", "chat_template", "content", "name", "template"],
    "adapter": ["peft_type", "LORA", "r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "bias", "none",
                "fan_in_fan_out", "init_lora_weights", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                "down_proj", "base_model.model.model.layers.", ".self_attn.", ".mlp.", ".lora_A.weight", ".lora_B.weight",
                "dtype", "shape", "data_offsets", "F32", "F16", "BF16", SEP.decode()],
    "dataset": ["text", "prompt", "completion", "messages", "role", "content", "system", "user", "assistant",
                "instruction", "input", "output", "\n"],
    "requests": ["id", "prompt", "messages", "adapter", "scale", "max_tokens", "temperature", "top_p", "top_k", "seed",
                 "stop", "role", "content", "user", "\n"],
    "qlb": ["QLORABAS", "qlora-base", "config", "base_dtype", "nf4", "f16", "add_bos_token", "chat_template",
            ".nf4_codes", ".nf4_absmax_q", ".nf4_absmax_scale", ".nf4_absmax_offset", "tokenizer.model", "tokenizer.json"],
    "tokenizer_json": ["model", "BPE", "vocab", "merges", "added_tokens", "special", "content", "id", "pre_tokenizer",
                       "post_processor", "decoder", "normalizer", "Sequence", "Split", "ByteLevel", "TemplateProcessing",
                       "SpecialToken", "single", "pattern", "Regex", "ignore_merges", "byte_fallback", "dropout",
                       "\\p{L}+", "(?i:", "[^\\s]"],
    "openai": ["model", "prompt", "messages", "role", "content", "max_tokens", "temperature", "top_p", "top_k", "seed",
               "stop", "stream", "stream_options", "include_usage", "n", "ignore_eos", "lora_scale", "adapters", "base"],
    "recipe": ["rank", "alpha", "lr", "batch_size", "seq-len", "targets", "resume", "chat_template", "comment", "_note",
               "help", "recipe", "base_dtype"],
    "checkpoint": ["qlora-checkpoint", "step", "val_count", "fingerprint", "losses", "val_loss", "layers.0.q_proj.A.w",
                   "__metadata__", "F32", "data_offsets"],
}
for h, words in KEYS.items():
    lines = ['# %s: JSON tokens and the keys and words of the format (make_seeds.py)' % h]
    for w in JSON_TOKENS + words + ['"%s"' % k for k in words]:
        lines.append('"%s"' % "".join(c if 0x20 <= ord(c) < 0x7f and c not in '"\\' else "\\x%02X" % ord(c)
                                       for c in w.encode("latin-1", "backslashreplace").decode("latin-1")))
    with open(os.path.join(HERE, h + ".dict"), "w") as f:
        f.write("\n".join(lines) + "\n")
