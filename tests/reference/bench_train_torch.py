#!/usr/bin/env python3
"""The PyTorch peer of `qlora bench --train`: one LoRA training step (forward,
backward, AdamW) on one sequence of T tokens, all trained, at a Llama shape,
with an fp32 frozen base and LoRA rank R on all seven projections.

Run with Debian's python3-torch:  /usr/bin/python3 bench_train_torch.py --shape tinyllama-1.1b --threads 2
Prints one line: bench_train_torch shape=... trained_tok/s=... peak_rss_MB=...
Not a test: docs/benchmarks.md records its figures beside qlora's."""
import argparse, math, resource, time
import torch
import torch.nn.functional as F

SHAPES = {  # the published configs (TinyLlama-1.1B; stories260K)
    "tinyllama-1.1b": dict(C=2048, F=5632, L=22, H=32, Hkv=4, D=64, V=32000),
    "stories260K": dict(C=64, F=172, L=5, H=8, Hkv=4, D=8, V=512),
}


class LoRALinear(torch.nn.Module):
    def __init__(self, inp, out, r, alpha):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(out, inp) * 0.02, requires_grad=False)
        self.A = torch.nn.Parameter(torch.empty(r, inp).uniform_(-1 / math.sqrt(inp), 1 / math.sqrt(inp)))
        self.B = torch.nn.Parameter(torch.zeros(out, r))
        self.s = alpha / r

    def forward(self, x):
        return F.linear(x, self.w) + self.s * F.linear(F.linear(x, self.A), self.B)


def rope(x, pos, D, theta=10000.0):
    inv = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
    ang = pos[:, None].float() * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1)[:, None, :], torch.cat([ang.sin()] * 2, -1)[:, None, :]  # (T,1,D)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Model(torch.nn.Module):
    def __init__(self, s, r):
        super().__init__()
        self.s = s
        C, Fd, H, Hkv, D, V = s["C"], s["F"], s["H"], s["Hkv"], s["D"], s["V"]
        self.emb = torch.nn.Parameter(torch.randn(V, C) * 0.02, requires_grad=False)
        self.layers = torch.nn.ModuleList()
        for _ in range(s["L"]):
            self.layers.append(torch.nn.ModuleDict(dict(
                q=LoRALinear(C, H * D, r, 2 * r), k=LoRALinear(C, Hkv * D, r, 2 * r), v=LoRALinear(C, Hkv * D, r, 2 * r),
                o=LoRALinear(H * D, C, r, 2 * r), g=LoRALinear(C, Fd, r, 2 * r), u=LoRALinear(C, Fd, r, 2 * r),
                d=LoRALinear(Fd, C, r, 2 * r))))

    def forward(self, tok):
        s = self.s
        T, H, Hkv, D = tok.shape[0], s["H"], s["Hkv"], s["D"]
        pos = torch.arange(T)
        x = self.emb[tok]
        norm = lambda t: t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5)
        for ly in self.layers:
            h = norm(x)
            q = rope(ly["q"](h).view(T, H, D), pos, D).transpose(0, 1)
            k = rope(ly["k"](h).view(T, Hkv, D), pos, D).transpose(0, 1).repeat_interleave(H // Hkv, 0)
            v = ly["v"](h).view(T, Hkv, D).transpose(0, 1).repeat_interleave(H // Hkv, 0)
            att = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(D) + torch.triu(torch.full((T, T), -1e30), 1), -1)
            x = x + ly["o"]((att @ v).transpose(0, 1).reshape(T, H * D))
            h = norm(x)
            x = x + ly["d"](F.silu(ly["g"](h)) * ly["u"](h))
        return F.linear(norm(x), self.emb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="tinyllama-1.1b", choices=sorted(SHAPES))
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    m = Model(SHAPES[a.shape], a.rank)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    tok = torch.randint(3, SHAPES[a.shape]["V"], (a.seq + 1,))
    best = 0.0
    for r in range(a.reps + 1):  # the first step warms up
        t0 = time.time()
        loss = F.cross_entropy(m(tok[:-1]), tok[1:])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.requires_grad], 1.0)
        opt.step()
        tps = a.seq / (time.time() - t0)
        if r > 0:
            best = max(best, tps)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("bench_train_torch shape=%s seq=%d rank=%d threads=%d trained_tok/s=%.2f peak_rss_MB=%.1f torch=%s"
          % (a.shape, a.seq, a.rank, a.threads, best, rss, torch.__version__))


if __name__ == "__main__":
    main()
