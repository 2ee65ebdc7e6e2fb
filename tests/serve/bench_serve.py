#!/usr/bin/env python3
"""Load generator for OpenAI-compatible completion servers: qlora serve and llama.cpp's llama-server.

A benchmark script run by hand (tests/serve/bench_serve.sh drives it), not a test. Python 3 standard
library only. Each run sends --requests streamed /v1/completions requests from --concurrency closed-loop
workers (a worker sends its next request when the previous one ends), every request with the same
prompt of about --prompt-tokens tokens, "temperature": 0 and "ignore_eos": true, so each generates
exactly --max-tokens tokens. It prints one line:

  serve_bench server=S case=C conc=N requests=R tok_s=X ttft_p50_ms=.. ttft_p99_ms=.. itl_p50_ms=.. itl_p99_ms=.. [extra fields]

tok_s: completion tokens of all requests / wall time of the run (first send to last byte).
TTFT: from sending a request to its first streamed chunk with text.
ITL: gaps between a request's later text chunks (a chunk that carries several tokens counts as one gap;
tpot_ms, (last chunk - first chunk) / (tokens - 1) averaged over requests, is the per-token view).

How --case picks the model per request:
  qlora:  base: "model" is the base id (--base-model); one: "model" is the first adapter name;
          distinct: request i uses adapter i mod N ("model": names[i % N]).
  llama:  base: "lora": [{"id": k, "scale": 0.0} for every k]; one: "lora": [{"id": 0, "scale": 1.0}];
          distinct: "lora": [{"id": i % N, "scale": 1.0}] (ids: the order of llama-server's --lora files;
          adapters a request does not list get scale 0). The base case must list the adapters: in this
          llama.cpp (34af94cd9) a request without "lora" runs with the server's global scales, and
          --lora-init-without-apply leaves those at 1.0 (GET /lora-adapters), i.e. every adapter at once.
          Also "cache_prompt": false, so no request reuses another's prompt KV (qlora serve has no prompt cache).
"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

WORDS = ("the quick brown fox jumps over the lazy dog and then runs back to the old red barn where "
         "a small cat sleeps in the warm sun all day long while birds sing in the tall green trees").split()


def make_prompt(n_tokens):
    # Common English words are one Llama-2 token each (plus the BOS the server adds), so n words ~ n tokens.
    n = max(1, n_tokens - 1)
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


def percentile(xs, p):
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fmt(x):
    return "nan" if x != x else "%.1f" % x


class Target:
    def __init__(self, url, timeout):
        u = urllib.parse.urlparse(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.timeout = timeout

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def get_json(self, path):
        c = self.conn()
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError("GET %s: HTTP %d: %s" % (path, r.status, body[:300]))
            return json.loads(body)
        finally:
            c.close()


def build_body(args, i, prompt, max_tokens, stream):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    n = len(args.adapter_list)
    if args.server == "qlora":
        if args.case == "base":
            body["model"] = args.base_model
        elif args.case == "one":
            body["model"] = args.adapter_list[0]
        else:
            body["model"] = args.adapter_list[i % n]
    else:
        body["cache_prompt"] = False
        if args.case == "base":
            body["lora"] = [{"id": k, "scale": 0.0} for k in range(n)]
        elif args.case == "one":
            body["lora"] = [{"id": 0, "scale": 1.0}]
        elif args.case == "distinct":
            body["lora"] = [{"id": i % n, "scale": 1.0}]
    return body


def one_request(target, body):
    """Send one streamed completion; return a dict of timings (seconds) and counts."""
    res = {"ok": False, "ttft": None, "gaps": [], "chunks": 0, "completion_tokens": None, "prompt_tokens": None,
           "err": None, "t_first": None, "t_last": None}
    data = json.dumps(body).encode()
    c = target.conn()
    t0 = time.perf_counter()
    try:
        c.request("POST", "/v1/completions", body=data, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            res["err"] = "HTTP %d: %s" % (r.status, r.read()[:300].decode(errors="replace"))
            return res
        prev = None
        done = False
        while not done:
            line = r.readline()
            if not line:
                break
            now = time.perf_counter()
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            ev = json.loads(payload)
            if "error" in ev:
                res["err"] = "stream error: %s" % json.dumps(ev["error"])[:300]
                return res
            u = ev.get("usage")
            if u:
                res["completion_tokens"] = u.get("completion_tokens")
                res["prompt_tokens"] = u.get("prompt_tokens")
            text = "".join((ch.get("text") or "") for ch in ev.get("choices") or [])
            if not text:
                continue
            res["chunks"] += 1
            if prev is None:
                res["ttft"] = now - t0
                res["t_first"] = now
            else:
                res["gaps"].append(now - prev)
            prev = now
            res["t_last"] = now
        res["ok"] = done
        if not done:
            res["err"] = "stream ended without [DONE]"
    except Exception as e:  # noqa: BLE001 - report and count any failure
        res["err"] = "%s: %s" % (type(e).__name__, e)
    finally:
        c.close()
    return res


def warmup(args, target, prompt):
    # One short request per model choice this run uses (qlora loads adapters on first use), untimed.
    n = len(args.adapter_list)
    count = 1 if args.case in ("base", "one") else min(n, args.requests)
    for i in range(count):
        body = build_body(args, i, prompt, 2, False)
        c = target.conn()
        try:
            c.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            out = r.read()
            if r.status != 200:
                sys.exit("bench_serve: warmup request failed: HTTP %d: %s" % (r.status, out[:300]))
        finally:
            c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="server root, e.g. http://127.0.0.1:8080")
    ap.add_argument("--server", choices=("qlora", "llama"), required=True,
                    help="how the model/adapter is chosen: qlora's \"model\" field or llama-server's \"lora\" field")
    ap.add_argument("--model-field", "--case", dest="case", choices=("base", "one", "distinct"), required=True,
                    help="base: every request on the base; one: every request on the first adapter; "
                         "distinct: request i on adapter i mod N")
    ap.add_argument("--adapters", default="a0,a1,a2,a3,a4,a5,a6,a7",
                    help="qlora: adapter names; llama: only their count matters (ids 0..N-1, in --lora order)")
    ap.add_argument("--base-model", default="tl", help="qlora: the base's id in GET /v1/models")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--label", default=None, help="server= in the output line (default: --server)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed request per model choice")
    ap.add_argument("--timeout", type=float, default=1800, help="socket timeout per request, seconds")
    ap.add_argument("--verbose", action="store_true", help="print each request's timings to stderr")
    args = ap.parse_args()
    args.adapter_list = [a for a in args.adapters.split(",") if a]
    if args.case != "base" and not args.adapter_list:
        sys.exit("bench_serve: --adapters is empty")

    target = Target(args.url, args.timeout)
    prompt = make_prompt(args.prompt_tokens)

    if args.server == "qlora":
        ids = [m.get("id") for m in target.get_json("/v1/models").get("data", [])]
        need = [args.base_model] if args.case == "base" else args.adapter_list
        missing = [m for m in need if m not in ids]
        if missing:
            sys.exit("bench_serve: %s not in GET /v1/models (%s)" % (", ".join(missing), ", ".join(map(str, ids))))
    else:
        loras = target.get_json("/lora-adapters")
        if len(loras) < len(args.adapter_list):
            sys.exit("bench_serve: llama-server has %d LoRA adapters, --adapters names %d"
                     % (len(loras), len(args.adapter_list)))

    if not args.no_warmup:
        warmup(args, target, prompt)

    results = [None] * args.requests
    lock = threading.Lock()
    nxt = [0]

    def worker():
        while True:
            with lock:
                i = nxt[0]
                if i >= args.requests:
                    return
                nxt[0] += 1
            results[i] = one_request(target, build_body(args, i, prompt, args.max_tokens, True))
            if args.verbose:
                r = results[i]
                print("req %d ok=%s ttft_ms=%s chunks=%d tokens=%s err=%s" % (
                    i, r["ok"], fmt((r["ttft"] or float("nan")) * 1e3), r["chunks"], r["completion_tokens"], r["err"]),
                    file=sys.stderr)

    t_start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, args.concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start

    ok = [r for r in results if r and r["ok"]]
    errors = [r for r in results if not r or not r["ok"]]
    for r in errors[:3]:
        print("bench_serve: request failed: %s" % (r["err"] if r else "not run"), file=sys.stderr)
    gen = sum((r["completion_tokens"] if r["completion_tokens"] is not None else r["chunks"]) for r in ok)
    short = sum(1 for r in ok if (r["completion_tokens"] or 0) != args.max_tokens)
    ttft = [r["ttft"] * 1e3 for r in ok if r["ttft"] is not None]
    itl = [g * 1e3 for r in ok for g in r["gaps"]]
    tpot = [(r["t_last"] - r["t_first"]) * 1e3 / (r["completion_tokens"] - 1)
            for r in ok if r["t_first"] is not None and (r["completion_tokens"] or 0) > 1]
    ptok = [r["prompt_tokens"] for r in ok if r["prompt_tokens"] is not None]
    print("serve_bench server=%s case=%s conc=%d requests=%d tok_s=%.2f ttft_p50_ms=%s ttft_p99_ms=%s "
          "itl_p50_ms=%s itl_p99_ms=%s tpot_ms=%s gen_tokens=%d prompt_tokens=%s chunks_per_req=%.1f "
          "wall_s=%.1f errors=%d not_max_tokens=%d" % (
              args.label or args.server, args.case, args.concurrency, args.requests, gen / wall if wall > 0 else 0,
              fmt(percentile(ttft, 50)), fmt(percentile(ttft, 99)), fmt(percentile(itl, 50)), fmt(percentile(itl, 99)),
              fmt(sum(tpot) / len(tpot) if tpot else float("nan")), gen, ptok[0] if ptok else "?",
              sum(r["chunks"] for r in ok) / max(1, len(ok)), wall, len(errors), short))
    sys.stdout.flush()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
