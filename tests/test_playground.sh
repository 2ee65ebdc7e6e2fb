#!/usr/bin/env bash
# test_playground.sh QLORA SOURCE_DIR: the playground page of qlora serve (GET /)
# in a real browser: headless Chromium driven by tests/playground/playground.mjs
# (puppeteer-core over the DevTools protocol) against a server on loopback with
# two adapters trained on the project's tiny model. One greedy comparison
# through the page's own controls equals `qlora infer --chat-template none` for
# each column byte for byte; the history's JSONL export, run through `qlora infer
# --requests`, gives the same texts again; an unknown adapter's error shows in its
# column in words; a dropped connection is survived; a chat comparison equals
# `qlora infer --requests` in the adapter's own template; an adapter trained while
# the page is open appears without a reload. Also here, without a browser: the
# store listing and loss.svg endpoints, their boundary rules and errors.
# Skips (77) without node >= 18, Debian's chromium (setup.sh test installs it)
# or tests/playground/node_modules (setup.sh test runs npm ci there).
q=$1; src=$2
chromium=${QLORA_CHROMIUM:-/usr/bin/chromium}
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
command -v jq >/dev/null || { echo "SKIP: jq is not installed (setup.sh installs it)"; exit 77; }
command -v node >/dev/null 2>&1 || { echo "SKIP: node is not installed"; exit 77; }
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)
[ "${node_major:-0}" -ge 18 ] 2>/dev/null || { echo "SKIP: node $(node --version 2>&1) is older than 18"; exit 77; }
[ -x "$chromium" ] || { echo "SKIP: $chromium is not installed (Debian's chromium package; ./setup.sh test installs it)"; exit 77; }
[ -f "$src/tests/playground/node_modules/puppeteer-core/package.json" ] \
    || { echo "SKIP: the puppeteer-core npm package is not installed (npm ci --prefix $src/tests/playground)"; exit 77; }
t_start=$(date +%s)
source "$src/tests/store_lib.sh"
source "$src/tests/serve_lib.sh"
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT
store_train pirate support
[ "$fails" = 0 ] || exit 1

# the references: `qlora infer` on the raw prompt, as /v1/completions takes it
prompt="Tell me about the sea"
mkdir -p "$tmp/ref"
for a in base pirate support; do
    opt=(); [ "$a" = base ] || opt=(--adapter "$tmp/store/$a")
    "$q" infer --base "$model" "${opt[@]}" --chat-template none --prompt "$prompt" --max-tokens 12 --temperature 0 \
        --threads 2 >"$tmp/ref/$a.txt" 2>"$tmp/ref_$a.log" || fail "reference infer ($a) failed: $(tail -2 "$tmp/ref_$a.log")"
done
# a chat: `qlora infer --requests` renders it in support's recorded template, as the server does
echo '{"id": 1, "messages": [{"role": "user", "content": "Where is my order?"}], "adapter": "support", "max_tokens": 12, "temperature": 0}' \
    >"$tmp/chat_req.jsonl"
"$q" infer --base "$model" --adapter-dir "$tmp/store" --requests "$tmp/chat_req.jsonl" --threads 2 >"$tmp/chat_ref.jsonl" \
    2>"$tmp/ref_chat.log" || fail "reference infer --requests (chat) failed: $(tail -2 "$tmp/ref_chat.log")"
jq -j .text "$tmp/chat_ref.jsonl" >"$tmp/ref/chat_support.txt"
[ -s "$tmp/ref/chat_support.txt" ] || fail "the chat reference is empty: $(cat "$tmp/chat_ref.jsonl")"
# the third adapter, trained by the browser test while the page is open
cat >"$tmp/train_third.sh" <<EOF
exec "$q" train --base "$model" --data "$src/datasets/samples/victorian.jsonl" --out "$tmp/store/victorian" \
    --max-steps 4 --batch-size 2 --seq-len 160 --rank 4 --alpha 8 --lr 1e-2 --threads 2 2>"$tmp/train_victorian.log"
EOF

serve_start "$tmp/serve.log" --base "$model" --adapter-dir "$tmp/store" --threads 2 || exit 1

# ---- the endpoints the page reads, without a browser ----
get() { curl -s -w '\n%{http_code}' "$url$1" "${@:2}"; }
out=$(get /v1/qlora/store)
[ "$(tail -1 <<<"$out")" = 200 ] || fail "/v1/qlora/store: $out"
s=$(head -n -1 <<<"$out")
jq -e . >/dev/null <<<"$s" || fail "/v1/qlora/store is not JSON: $s"
jq -e '.object == "qlora.store" and .base.id == "tiny_gqa" and (.adapters | map(.name)) == ["pirate", "support"]' >/dev/null <<<"$s" \
    || fail "/v1/qlora/store: base or names: $s"
jq -e '.adapters[0] | .rank == 4 and .alpha == 8 and .scaling == 2 and .data == "pirate.jsonl" and .steps == 8
       and (.train_loss | type) == "number" and (.val_loss | type) == "number" and .loaded == false and .curve == true
       and (.targets | length) == 7 and .chat_template == "llama2" and .format == "prompt/completion"' >/dev/null <<<"$s" \
    || fail "/v1/qlora/store: pirate's entry: $(jq -c '.adapters[0]' <<<"$s")"
jq -e '.adapters[1] | .chat_template == "llama2" and .template_from == "training_record.json"' >/dev/null <<<"$s" \
    || fail "/v1/qlora/store: support's template: $(jq -c '.adapters[1]' <<<"$s")"
h=$(curl -s -D - -o "$tmp/curve.svg" "$url/v1/qlora/store/pirate/loss.svg")
grep -q '^HTTP/1.1 200' <<<"$h" && grep -qi '^Content-Type: image/svg+xml' <<<"$h" || fail "loss.svg: $h"
grep -qi '^Content-Security-Policy: .*sandbox' <<<"$h" || fail "loss.svg without a sandboxing CSP: $h"
cmp -s "$tmp/curve.svg" "$tmp/store/pirate/loss.svg" || fail "loss.svg differs from the file"
h=$(curl -s -D - -o /dev/null "$url/")
grep -qi "^Content-Security-Policy: default-src 'none'" <<<"$h" || fail "GET /: no CSP: $h"
# loaded: true once used
curl -s "$url/v1/completions" -d '{"model": "support", "prompt": "x", "max_tokens": 1}' >/dev/null
[ "$(get /v1/qlora/store | head -n -1 | jq -r '.adapters[1].loaded')" = true ] || fail "support is not loaded after a request"
# the boundary: names, escapes, links out of the store, non-regular files
want() {  # want STATUS TEXT PATH [CURL ARGS]
    local o; o=$(get "$3" "${@:4}")
    [ "$(tail -1 <<<"$o")" = "$1" ] && grep -qF -- "$2" <<<"$o" || fail "GET $3: want $1 with '$2', got: $o"
}
want 404 "no adapter called 'nope'" /v1/qlora/store/nope/loss.svg
want 400 "a name is one folder" "/v1/qlora/store/..%2Fpirate/loss.svg"
want 400 "a name is one folder" "/v1/qlora/store/.hidden/loss.svg"
mkdir -p "$tmp/outside" "$tmp/store/linked" && cp "$tmp/store/pirate/"adapter_* "$tmp/store/linked/"
echo '<svg xmlns="http://www.w3.org/2000/svg">secret</svg>' >"$tmp/outside/loss.svg"
ln -s "$tmp/outside/loss.svg" "$tmp/store/linked/loss.svg"
want 400 "symbolic link out of the store" /v1/qlora/store/linked/loss.svg
rm "$tmp/store/linked/loss.svg" && mkfifo "$tmp/store/linked/loss.svg"
want 400 "not a regular file" /v1/qlora/store/linked/loss.svg
rm "$tmp/store/linked/loss.svg" && head -c $((5 << 20)) /dev/zero >"$tmp/store/linked/loss.svg"
want 400 "over the limit" /v1/qlora/store/linked/loss.svg
rm -rf "$tmp/store/linked" "$tmp/outside"
want 405 "takes GET" /v1/qlora/store -X POST
# a fan-out error names its column; a stream's finish names its tokens
o=$(curl -s "$url/v1/completions" -d '{"model": "tiny_gqa", "prompt": "x", "max_tokens": 2, "adapters": ["base", "nope"]}')
jq -e '.error.adapter == "nope" and .error.index == 1 and .error.param == "adapters"' >/dev/null <<<"$o" \
    || fail "fan-out error without its adapter and index: $o"
o=$(curl -sN "$url/v1/completions" -d '{"model": "tiny_gqa", "prompt": "x", "max_tokens": 3, "ignore_eos": true, "stream": true, "adapters": ["base", "pirate"]}')
[ "$(grep -c '"completion_tokens": 3}' <<<"$o")" = 2 ] || fail "stream: no completion_tokens per finished choice: $o"

# ---- the page, in Chromium ----
export XDG_CONFIG_HOME="$tmp/xdg" XDG_CACHE_HOME="$tmp/xdg"
timeout 300 node "$src/tests/playground/playground.mjs" --url "$url" --chromium "$chromium" --ref "$tmp/ref" \
    --out "$tmp/browser" --train "$tmp/train_third.sh" --third victorian
rc=$?
[ "$rc" = 0 ] || fail "the browser's checks failed (exit $rc)"

# the exported history is a --requests file: run it, the texts are the page's again
if [ -f "$tmp/browser/export.jsonl" ]; then
    "$q" infer --base "$model" --adapter-dir "$tmp/store" --threads 2 --requests "$tmp/browser/export.jsonl" \
        >"$tmp/rerun.jsonl" 2>"$tmp/rerun.log" || fail "infer --requests on the export failed: $(tail -2 "$tmp/rerun.log")"
    [ "$(jq -c -s 'map(.text)' "$tmp/rerun.jsonl")" = "$(jq -c . "$tmp/browser/columns.json")" ] \
        || fail "the export, rerun by qlora infer --requests, differs: $(cat "$tmp/rerun.jsonl") vs $(cat "$tmp/browser/columns.json")"
else
    fail "the browser test wrote no export"
fi

serve_stop "$tmp/serve.log"
spid=
echo "test_playground: $(( $(date +%s) - t_start )) s"
[ $fails = 0 ] && echo "test_playground: passed" || echo "test_playground: $fails failures"
[ $fails = 0 ]
