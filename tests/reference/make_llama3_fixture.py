"""make_llama3_fixture.py MODEL_DIR: the reference logits of the small Llama 3-shape
model that tests/real/test_llama3_real.c writes (vocabulary 128256, tied embeddings,
grouped-query attention, RoPE theta 500000 with llama3 scaling), by llama_ref.py's
float64 model, into tests/fixtures/llama3_model/ref.safetensors. The model's weights
come from the test's seeded generator, so the test writes the same model again and
compares; only the logits are committed (a subset of the vocabulary: every 61st id
and the special ids the tokens use), not the 33 MB of weights.

  QLORA_TEST_KEEP=1 build/tests/test_llama3_real     # prints "files kept in /tmp/qlora_llama3_XXXXXX"
  python3 tests/reference/make_llama3_fixture.py /tmp/qlora_llama3_XXXXXX/l3

Needs Debian's python3-torch and python3-numpy (/usr/bin/python3).
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_ref as L  # noqa: E402
import nf4_ref as N  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(REPO, "tests", "fixtures", "llama3_model", "ref.safetensors")

# <|begin_of_text|> "Hello world" <|eot_id|> <|start_header_id|> "user" <|end_header_id|> "\n\n" "Where is the treasure?"
TOKENS = [128000, 9906, 1917, 128009, 128006, 882, 128007, 271, 9241, 374, 279, 32726, 30]


def main():
    d = sys.argv[1]
    cfg, raw = L.load_model_dir(d)
    assert cfg["vocab_size"] == 128256 and cfg["rope_scaling"]["rope_type"] == "llama3"
    m = L.Llama(cfg, L.weights_f64(raw))
    mq = L.Llama(cfg, L.weights_nf4(raw, N.quant_dequant))
    tokens = np.array([TOKENS], np.int32)
    ids = sorted(set(range(0, cfg["vocab_size"], 61)) | set(TOKENS))
    ids = np.array(ids, np.int64)
    logits = m.forward(tokens)[0][:, ids]
    logits_nf4 = mq.forward(tokens)[0][:, ids]
    ref = {
        "tokens": ("I32", tokens),
        "vocab_ids": ("I32", ids.astype(np.int32)),
        "logits": ("F32", logits.numpy().astype(np.float32)),
        "logits_nf4": ("F32", logits_nf4.numpy().astype(np.float32)),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    L.st_write(OUT, ref, {"format": "qlora-ref", "model": "llama3-small (test_llama3_real, seed 7)"})
    print("%s: %d tokens x %d vocabulary ids; logits std %.4f, |nf4 - f| max %.4f" % (
        OUT, len(TOKENS), len(ids), logits.std().item(), (logits_nf4 - logits).abs().max().item()))


if __name__ == "__main__":
    main()
