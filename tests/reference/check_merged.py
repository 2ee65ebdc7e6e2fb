#!/usr/bin/env python3
"""check_merged.py: a merged model directory written by `qlora export --format
merged` (from tests/fixtures/models/tiny_gqa and an adapter of
tests/fixtures/adapters), loaded by this PyTorch reference, against the
fixture's logits of base + adapter (expected.safetensors).

    python3 tests/reference/check_merged.py DIR logits_f32_rslora [--atol 1e-4]

Prints the largest difference and exits 1 when it is above --atol. Not part of
ctest (the suite needs no Python): docs/benchmarks.md records its runs.
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_ref as L  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("key", help="the expected logits: logits_f32_rslora, logits_bf16_r2, ...")
    ap.add_argument("--atol", type=float, default=1e-4)
    a = ap.parse_args()
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
