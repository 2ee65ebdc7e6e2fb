#!/usr/bin/env bash
# test_serve_openai.sh QLORA SOURCE_DIR: qlora serve driven by a client we did
# not write, the official openai npm package (tests/serve/openai_client.mjs):
# models.list, completions and chat completions, plain and streamed, for the base
# and two trained adapters; greedy answers equal `qlora infer`'s byte for byte;
# errors arrive as the package's NotFoundError/BadRequestError; the "adapters"
# extension fans one prompt out to three labelled choices. SIGTERM stops the
# server with exit 0. Skips (77) without node or without tests/serve/node_modules
# (./setup.sh test runs `npm ci --prefix tests/serve`).
q=$1; src=$2
command -v node >/dev/null 2>&1 || { echo "SKIP: node is not installed"; exit 77; }
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)
[ "${node_major:-0}" -ge 18 ] 2>/dev/null || { echo "SKIP: node $(node --version 2>&1) is older than 18"; exit 77; }
[ -f "$src/tests/serve/node_modules/openai/package.json" ] \
    || { echo "SKIP: the openai npm package is not installed (npm ci --prefix $src/tests/serve)"; exit 77; }
source "$src/tests/store_lib.sh"
source "$src/tests/serve_lib.sh"
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT
store_train pirate support

# the references: plain `qlora infer` for the base and each adapter (the raw prompt,
# as /v1/completions takes it: --chat-template none), and `qlora infer --requests`
# for a chat request (rendered with the adapter's recorded template)
prompt="Tell me about the sea"
mkdir -p "$tmp/ref"
for a in base pirate support; do
    opt=(); [ "$a" = base ] || opt=(--adapter "$tmp/store/$a")
    "$q" infer --base "$model" "${opt[@]}" --chat-template none --prompt "$prompt" --max-tokens 10 --temperature 0 --threads 2 \
        >"$tmp/ref/$a.txt" 2>"$tmp/ref_$a.log" || fail "reference infer ($a) failed: $(tail -2 "$tmp/ref_$a.log")"
done
echo '{"id": 1, "messages": [{"role": "user", "content": "Where is my order?"}], "adapter": "support", "max_tokens": 10, "temperature": 0}' \
    >"$tmp/chat_req.jsonl"
"$q" infer --base "$model" --adapter-dir "$tmp/store" --requests "$tmp/chat_req.jsonl" --threads 2 \
    >"$tmp/ref/chat_support.jsonl" 2>"$tmp/ref_chat.log" || fail "reference infer --requests failed: $(tail -2 "$tmp/ref_chat.log")"

# the server, on a free port
serve_start "$tmp/serve.log" --base "$model" --adapter-dir "$tmp/store" --threads 2 || exit 1

# the client (a stuck server fails here rather than at ctest's timeout)
timeout 60 node "$src/tests/serve/openai_client.mjs" "$port" "$(basename "$model")" "$tmp/ref"
rc=$?
[ "$rc" = 0 ] || fail "the openai client's checks failed (exit $rc)"

# SIGTERM: a clean stop
serve_stop "$tmp/serve.log"
spid=
grep -q 'serve: stopped' "$tmp/serve.log" || fail "no 'serve: stopped' in the log: $(tail -3 "$tmp/serve.log")"

[ $fails = 0 ] && echo "test_serve_openai: passed" || echo "test_serve_openai: $fails failures"
[ $fails = 0 ]
