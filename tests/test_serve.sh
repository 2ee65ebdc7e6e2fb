#!/usr/bin/env bash
# test_serve.sh QLORA SOURCE_DIR: qlora serve on the project's tiny model with
# two trained adapters, driven by curl.
#  - greedy answers over HTTP (completions and chat, streamed and not, and a mix
#    of concurrent requests on the base and both adapters) equal `qlora infer
#    --requests`'s for the same prompt and adapter;
#  - the `adapters` fan-out, n, seeds, stop strings, usage, /v1/models, /metrics;
#  - every bad input of the issue gets its status and a message naming the field;
#  - names cannot leave the store (.., /, absolute paths, a symbolic link out);
#  - hot-loading: an adapter trained into the store while the server runs is
#    served at the next request, and a request streaming on another adapter
#    meanwhile is undisturbed; load/unload endpoints; a client that disconnects
#    frees its slot;
#  - --api-key: 401 without or with a wrong key, /health open; --max-loras evicts
#    the least recently used idle adapter (and reloads it when named); lora_scale;
#  - SIGTERM while a request runs: it finishes, the server exits 0.
q=$1; src=$2
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
command -v jq >/dev/null || { echo "SKIP: jq is not installed (setup.sh installs it)"; exit 77; }
source "$src/tests/store_lib.sh"
source "$src/tests/serve_lib.sh"
store_train pirate support
[ "$fails" = 0 ] || exit 1
g='"max_tokens": 12, "temperature": 0'
P='Tell me about the sea'
M='[{"role": "user", "content": "Where is my order?"}]'
# the references: qlora infer --requests, one line per (prompt, adapter)
cat >"$tmp/ref.jsonl" <<EOF
{"id": 1, "prompt": "$P", $g}
{"id": 2, "prompt": "$P", "adapter": "pirate", $g}
{"id": 3, "prompt": "$P", "adapter": "support", $g}
{"id": 4, "messages": $M, "adapter": "support", $g}
{"id": 5, "messages": $M, $g}
{"id": 6, "prompt": "$P", "adapter": "pirate", "max_tokens": 12, "temperature": 0.9, "top_k": 0, "top_p": 1, "seed": 7}
{"id": 7, "prompt": "$P", "adapter": "pirate", "max_tokens": 12, "temperature": 0.9, "top_k": 0, "top_p": 1, "seed": 8}
EOF
"$q" infer --base "$model" --adapter-dir "$tmp/store" --threads 2 --requests "$tmp/ref.jsonl" >"$tmp/ref.out" 2>"$tmp/ref.log" \
    || fail "infer --requests: $(tail -2 "$tmp/ref.log")"
ref() { sed -n "$1p" "$tmp/ref.out" | sed 's/.*"text": "\(.*\)", "tokens".*/\1/'; }
for i in 1 2 3; do [ -n "$(ref $i)" ] || fail "reference $i is empty: $(sed -n "${i}p" "$tmp/ref.out")"; done
[ "$(ref 1)" != "$(ref 2)" ] || fail "the pirate adapter does not change the answer; the test would prove nothing"

# a long drain: the request in flight at SIGTERM (below) must finish even on a loaded machine or under ASan
serve_start "$tmp/serve.log" --base "$model" --adapter-dir "$tmp/store" --threads 2 --max-batch 4 --drain-timeout 300 || exit 1
# every body and every server-sent event must be valid JSON to jq (a parser we did not write)
json_ok() { jq -e . >/dev/null 2>&1 <<<"$1" || fail "not valid JSON ($2): $1"; }
sse_ok() {
    local l; while IFS= read -r l; do
        case $l in "data: [DONE]" | "") ;; "data: "*) json_ok "${l#data: }" "$2" ;; *) fail "not an SSE line ($2): $l" ;; esac
    done <<<"$1"
}
body_text() { sed -n 's/.*"\(text\|content\)": "\(.*\)"}*, "logprobs".*/\2/p' | head -1; }
status() { tail -1; }

# ---- equality with qlora infer: each alone ----
for a in tiny_gqa:1 pirate:2 support:3; do
    name=${a%:*}; i=${a#*:}
    out=$(post /v1/completions "{\"model\": \"$name\", \"prompt\": \"$P\", $g}")
    [ "$(status <<<"$out")" = 200 ] || fail "$name: status $(status <<<"$out"): $out"
    [ "$(head -1 <<<"$out" | body_text)" = "$(ref $i)" ] || fail "$name: '$(head -1 <<<"$out" | body_text)' vs infer '$(ref $i)'"
    json_ok "$(head -1 <<<"$out")" "$name"
    s=$(curl -sN "$url/v1/completions" -d "{\"model\": \"$name\", \"prompt\": \"$P\", $g, \"stream\": true}")
    sse_ok "$s" "$name streamed"
    [ "$(sse_text <<<"$s")" = "$(ref $i)" ] || fail "$name streamed: '$(sse_text <<<"$s")' vs infer '$(ref $i)'"
    tail -c 14 <<<"$s" | grep -q 'data: \[DONE\]' || fail "$name streamed: no [DONE] at the end"
done
out=$(post /v1/chat/completions "{\"model\": \"support\", \"messages\": $M, $g}")
head -1 <<<"$out" | grep -q '"object": "chat.completion", .*"message": {"role": "assistant", "content": ' || fail "chat shape: $out"
[ "$(head -1 <<<"$out" | body_text)" = "$(ref 4)" ] || fail "chat: '$(head -1 <<<"$out" | body_text)' vs infer '$(ref 4)'"
s=$(curl -sN "$url/v1/chat/completions" -d "{\"model\": \"support\", \"messages\": $M, $g, \"stream\": true, \"stream_options\": {\"include_usage\": true}}")
[ "$(sse_text <<<"$s")" = "$(ref 4)" ] || fail "chat streamed: '$(sse_text <<<"$s")' vs '$(ref 4)'"
json_ok "$(head -1 <<<"$out")" chat
sse_ok "$s" "chat streamed"
grep -q '"delta": {"role": "assistant", "content": ""}' <<<"$s" || fail "chat stream: no role chunk first"
grep -q '"choices": \[\], "usage": {"prompt_tokens": [0-9]*, "completion_tokens": 12, "total_tokens": [0-9]*}' <<<"$s" \
    || fail "chat stream: no usage chunk: $(tail -c 400 <<<"$s")"

# ---- a mix of concurrent requests, streamed and not, on the base and both adapters ----
k=0
for rep in 1 2; do
    for a in tiny_gqa:1 pirate:2 support:3; do
        name=${a%:*}
        curl -s "$url/v1/completions" -d "{\"model\": \"$name\", \"prompt\": \"$P\", $g}" >"$tmp/mix_$k.plain" &
        curl -sN "$url/v1/completions" -d "{\"model\": \"$name\", \"prompt\": \"$P\", $g, \"stream\": true}" >"$tmp/mix_$k.sse" &
        curl -sN "$url/v1/chat/completions" -d "{\"model\": \"support\", \"messages\": $M, $g, \"stream\": $([ $rep = 1 ] && echo true || echo false)}" >"$tmp/mix_$k.chat" &
        echo "${a#*:}" >"$tmp/mix_$k.ref"
        k=$((k + 1))
    done
done
wait_curls() { for p in $(jobs -p); do [ "$p" = "$spid" ] || wait "$p"; done; }
wait_curls
for ((i = 0; i < k; i++)); do
    r=$(ref "$(cat "$tmp/mix_$i.ref")")
    [ "$(body_text <"$tmp/mix_$i.plain")" = "$r" ] || fail "concurrent $i: '$(body_text <"$tmp/mix_$i.plain")' vs '$r'"
    [ "$(sse_text <"$tmp/mix_$i.sse")" = "$r" ] || fail "concurrent streamed $i: '$(sse_text <"$tmp/mix_$i.sse")' vs '$r'"
    c=$(grep -q '^data:' "$tmp/mix_$i.chat" && sse_text <"$tmp/mix_$i.chat" || body_text <"$tmp/mix_$i.chat")
    [ "$c" = "$(ref 4)" ] || fail "concurrent chat $i: '$c' vs '$(ref 4)'"
done

# ---- fan-out, n, seeds, stop, usage ----
out=$(post /v1/completions "{\"model\": \"tiny_gqa\", \"prompt\": \"$P\", $g, \"adapters\": [\"base\", \"pirate\", \"support\"]}")
b=$(head -1 <<<"$out")
json_ok "$b" fan-out
for a in "0 base 1 0" "1 pirate 2 1" "2 support 3 1"; do
    set -- $a
    grep -q "{\"index\": $1, \"text\": \"$(ref $3 | sed 's/[][\.*^$]/\\&/g')\", \"logprobs\": null, \"finish_reason\": \"length\", \"adapter\": \"$2\", \"scale\": $4}" <<<"$b" \
        || fail "fan-out choice $1 ($2): $b"
done
out=$(post /v1/completions "{\"model\": \"tiny_gqa\", \"prompt\": \"$P\", $g, \"adapters\": [\"support\", \"support:0\"]}")
grep -q "\"index\": 1, \"text\": \"$(ref 1 | sed 's/[][\.*^$]/\\&/g')\", .*\"adapter\": \"support\", \"scale\": 0}" <<<"$out" \
    || fail "fan-out: support at scale 0 is not the base: $out"
grep -q '"usage": {"prompt_tokens": [0-9]*, "completion_tokens": 36,' <<<"$b" || fail "fan-out usage: $b"
out=$(post /v1/completions "{\"model\": \"pirate\", \"prompt\": \"$P\", \"max_tokens\": 12, \"temperature\": 0.9, \"seed\": 7, \"n\": 2}")
b=$(head -1 <<<"$out")
[ "$(sed 's/.*"index": 0, "text": "\(.*\)", "logprobs".*"index": 1.*/\1/' <<<"$b")" = "$(ref 6)" ] || fail "n=2 choice 0 (seed 7): $b vs '$(ref 6)'"
[ "$(sed 's/.*"index": 1, "text": "\(.*\)", "logprobs".*/\1/' <<<"$b")" = "$(ref 7)" ] || fail "n=2 choice 1 (seed 8): $b vs '$(ref 7)'"
r2=$(ref 2)
stop=${r2:3:4}  # a piece of the greedy answer: the answer is cut before it
if [ -n "$stop" ] && ! grep -q '\\' <<<"$stop"; then
    out=$(post /v1/completions "{\"model\": \"pirate\", \"prompt\": \"$P\", $g, \"stop\": [\"$stop\"]}")
    b=$(head -1 <<<"$out")
    [ "$(body_text <<<"$b")" = "${r2%%"$stop"*}" ] || fail "stop '$stop': $(body_text <<<"$b") vs '${r2%%"$stop"*}'"
    grep -q '"finish_reason": "stop"' <<<"$b" || fail "stop: finish_reason: $b"
fi
out=$(post /v1/completions "{\"model\": \"pirate\", \"prompt\": \"$P\", \"max_tokens\": 0}")
grep -q '"text": "", "logprobs": null, "finish_reason": "length"' <<<"$out" || fail "max_tokens 0: $out"

# ---- /v1/models and /metrics ----
m=$(curl -s "$url/v1/models")
json_ok "$m" models
[ "$(jq -r '[.data[].id] | join(" ")' <<<"$m")" = "tiny_gqa pirate support" ] || fail "models: ids $(jq -c '[.data[].id]' <<<"$m")"
grep -q '"id": "tiny_gqa", "object": "model", .*"parent": null' <<<"$m" || fail "models: the base: $m"
for a in pirate support; do
    grep -q "\"id\": \"$a\", .*\"parent\": \"tiny_gqa\", \"rank\": 4, \"targets\": \[\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"\], \"loaded\": true" <<<"$m" \
        || fail "models: $a: $m"
done
m=$(curl -s "$url/v1/models/pirate")
grep -q '^{"id": "pirate", "object": "model", .*"parent": "tiny_gqa", "rank": 4, .*"loaded": true}$' <<<"$m" || fail "models/pirate: $m"
json_ok "$m" models/pirate
m=$(curl -s "$url/v1/models/tiny_gqa")
grep -q '^{"id": "tiny_gqa", "object": "model", .*"max_model_len": [0-9]*, "loaded": true}$' <<<"$m" || fail "models/tiny_gqa: $m"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/models/nope")" = 404 ] || fail "models/nope is not 404"
mt=$(curl -s "$url/metrics")
for k in 'qlora_requests_total{endpoint="/v1/completions",status="200"} [1-9]' 'qlora_generation_tokens_total [1-9]' \
    'qlora_time_to_first_token_seconds_count [1-9]' 'qlora_inter_token_latency_seconds_bucket{le="+Inf"} [1-9]' \
    'qlora_adapters_loaded 2' 'qlora_requests_running 0'; do
    grep -q "^$k" <<<"$mt" || fail "metrics: no '$k'"
done

# ---- bad input: status and message ----
want() {  # want STATUS 'message pattern' PATH BODY
    local out; out=$(post "$3" "$4")
    [ "$(status <<<"$out")" = "$1" ] || fail "$4: want $1, got $(status <<<"$out"): $(head -1 <<<"$out")"
    [ "$1" = 200 ] && grep -q 'successfully' <<<"$out" || json_ok "$(head -1 <<<"$out")" "$4"
    head -1 <<<"$out" | grep -q "$2" || fail "$4: want message '$2': $(head -1 <<<"$out")"
}
C=/v1/completions
want 400 'invalid JSON' $C '{"model": "tiny_gqa", "prompt": '
want 400 'invalid JSON at line 1 column 36: a comma before' $C '{"model": "tiny_gqa", "prompt": "x",}'
want 400 'unexpected text after the JSON value' $C '{"model": "tiny_gqa", "prompt": "x"} {}'
want 400 '"param": "temperature"' $C '{"model": "tiny_gqa", "prompt": "x", "temperature": "hot"}'
want 400 "field 'temperature': expected a number, found a string" $C '{"model": "tiny_gqa", "prompt": "x", "temperature": "hot"}'
want 400 "field 'max_tokens': expected a value in" $C '{"model": "tiny_gqa", "prompt": "x", "max_tokens": -1}'
want 400 "field 'top_p'" $C '{"model": "tiny_gqa", "prompt": "x", "top_p": 0}'
want 400 "field 'prompt' is missing" $C '{"model": "tiny_gqa"}'
want 400 "field 'model' is missing" $C '{"prompt": "x"}'
want 400 'unknown field \\"max_tokns\\"' $C '{"model": "tiny_gqa", "prompt": "x", "max_tokns": 3}'
want 400 "field 'stop': at most 4" $C '{"model": "tiny_gqa", "prompt": "x", "stop": ["a","b","c","d","e"]}'
want 400 "expected a JSON object, found an array" $C '[1, 2]'
want 400 "messages" /v1/chat/completions '{"model": "tiny_gqa", "messages": [{"role": "assistant", "content": "hi"}]}'
want 400 "field 'messages' is missing" /v1/chat/completions '{"model": "tiny_gqa"}'
want 400 'unknown field \\"prompt\\" for /v1/chat/completions' /v1/chat/completions '{"model": "tiny_gqa", "prompt": "x"}'
want 404 '"code": "model_not_found"' $C '{"model": "nope", "prompt": "x"}'
want 404 "the model 'nope' does not exist" $C '{"model": "nope", "prompt": "x"}'
want 404 "adapter 'nope'" $C '{"model": "tiny_gqa", "prompt": "x", "adapters": ["pirate", "nope"]}'
want 400 "context is [0-9]* tokens: the prompt has [0-9]* and max_tokens asks for 100000 more" $C '{"model": "tiny_gqa", "prompt": "x", "max_tokens": 100000}'
want 400 '"param": "max_tokens"' $C '{"model": "tiny_gqa", "prompt": "x", "max_tokens": 100000}'
long=$(printf 'word %.0s' $(seq 400))
want 400 "the prompt alone has" $C "{\"model\": \"tiny_gqa\", \"prompt\": \"$long\", \"max_tokens\": 1}"
# names that would leave the store
want 400 "a name is one folder" $C '{"model": "../store/pirate", "prompt": "x"}'
want 400 "a name is one folder" $C '{"model": "/etc", "prompt": "x"}'
want 400 "not a folder name" $C '{"model": "..", "prompt": "x"}'
want 400 "a name is one folder" $C '{"model": "tiny_gqa", "prompt": "x", "adapters": ["../pirate"]}'
mkdir -p "$tmp/outside" && cp "$tmp/store/pirate/"* "$tmp/outside/" && ln -s "$tmp/outside" "$tmp/store/sneaky"
want 400 "is a symbolic link to [^ ]*/outside outside the store; pass --follow-symlinks to use it" $C '{"model": "sneaky", "prompt": "x"}'
rm "$tmp/store/sneaky"
# a bad adapter directory: 400 naming the file; the others keep serving
mkdir -p "$tmp/store/broken" && cp "$tmp/store/pirate/adapter_config.json" "$tmp/store/broken/" && echo junk >"$tmp/store/broken/adapter_model.safetensors"
want 400 "adapter_model.safetensors" $C '{"model": "broken", "prompt": "x"}'
want 200 '"text"' $C "{\"model\": \"pirate\", \"prompt\": \"$P\", $g}"
rm -rf "$tmp/store/broken"
# body over the limit, unknown endpoint, wrong method
head -c 1100000 /dev/zero | tr '\0' 'a' >"$tmp/big"
out=$(curl -s -w '\n%{http_code}' "$url$C" --data-binary @"$tmp/big")
[ "$(status <<<"$out")" = 413 ] && grep -q "over the limit of 1048576 bytes" <<<"$out" || fail "big body: $out"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/nothing")" = 404 ] || fail "unknown endpoint is not 404"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/completions")" = 405 ] || fail "GET /v1/completions is not 405"

# ---- hot-loading: qlora train writes an adapter while the server runs; the request naming
# it arrives while a long job runs on another adapter (64 sequences of 200 tokens on 4 slots),
# and is served; the job's answers are not disturbed ----
"$q" train --base "$model" --data "$src/datasets/samples/victorian.jsonl" --out "$tmp/store/victorian" --max-steps 8 \
    --batch-size 2 --seq-len 160 --rank 4 --alpha 8 --lr 1e-2 --threads 1 2>"$tmp/train_victorian.log" || fail "training victorian"
curl -s "$url$C" -d "{\"model\": \"support\", \"prompt\": \"$P\", \"max_tokens\": 200, \"temperature\": 0, \"ignore_eos\": true, \"n\": 64}" \
    >"$tmp/busy.json" &
for i in $(seq 100); do curl -s "$url/metrics" | grep -q '^qlora_requests_running [1-9]' && break; sleep 0.01; done
running=$(curl -s "$url/metrics" | sed -n 's/^qlora_requests_running //p')
[ "${running:-0}" -ge 1 ] || fail "the long job was not running when the new adapter was asked for"
out=$(post $C "{\"model\": \"victorian\", \"prompt\": \"$P\", $g}")
[ "$(status <<<"$out")" = 200 ] || fail "the adapter trained while serving: $out"
grep -q "adapter victorian: loaded from" "$tmp/serve.log" || fail "no load of victorian in the log"
"$q" infer --base "$model" --adapter "$tmp/store/victorian" --prompt "$P" --max-tokens 12 --temperature 0 --threads 1 >"$tmp/vic.txt" 2>/dev/null
if ! head -1 <<<"$out" | body_text | grep -q '\\'; then
    [ "$(head -1 <<<"$out" | body_text)" = "$(cat "$tmp/vic.txt")" ] || fail "hot-loaded: '$(head -1 <<<"$out" | body_text)' vs '$(cat "$tmp/vic.txt")'"
fi
wait_curls
echo "{\"prompt\": \"$P\", \"adapter\": \"support\", \"max_tokens\": 200, \"temperature\": 0}" >"$tmp/long.jsonl"
"$q" infer --base "$model" --adapter-dir "$tmp/store" --requests "$tmp/long.jsonl" --ignore-eos --threads 1 >"$tmp/long.out" 2>/dev/null
[ "$(jq '[.choices[].text] | unique | length' "$tmp/busy.json")" = 1 ] && [ "$(jq '.choices | length' "$tmp/busy.json")" = 64 ] \
    && [ "$(jq -c '.choices[0].text' "$tmp/busy.json")" = "$(jq -c '.text' "$tmp/long.out")" ] \
    || fail "the job running during the hot-load changed: $(jq -c '[.choices[].text] | unique | .[0:2]' "$tmp/busy.json") vs $(jq -c .text "$tmp/long.out")"
# load and unload (vLLM's endpoints)
want 200 "added successfully" /v1/load_lora_adapter "{\"lora_name\": \"pirate2\", \"lora_path\": \"$tmp/store/pirate\"}"
want 400 "not inside --adapter-dir" /v1/load_lora_adapter "{\"lora_name\": \"x\", \"lora_path\": \"$tmp/outside\"}"
want 400 "a name is one folder" /v1/load_lora_adapter "{\"lora_name\": \"a/b\", \"lora_path\": \"$tmp/store/pirate\"}"
out=$(post $C "{\"model\": \"pirate2\", \"prompt\": \"$P\", $g}")
[ "$(head -1 <<<"$out" | body_text)" = "$(ref 2)" ] || fail "loaded as pirate2: $out"
want 200 "removed successfully" /v1/unload_lora_adapter '{"lora_name": "pirate2"}'
want 404 "no adapter called 'pirate2' is loaded" /v1/unload_lora_adapter '{"lora_name": "pirate2"}'
want 404 "model_not_found" $C '{"model": "pirate2", "prompt": "x"}'
# clients that disconnect: a long job (a fan-out of 3 adapters x 64 choices of 200 tokens: 192
# sequences for 4 slots, seconds of work) runs, streamed and not; two more requests queue
# behind. Every client leaves early. While they are connected the server is busy (4 running,
# some waiting); once they leave it must free the slots and the queue, and keep serving.
busy='"max_tokens": 200, "temperature": 0, "ignore_eos": true, "n": 64, "adapters": ["base", "pirate", "support"]'
curl -sN --max-time 2 "$url$C" -d "{\"model\": \"tiny_gqa\", \"prompt\": \"$P\", $busy, \"stream\": true}" >"$tmp/cut.sse" 2>/dev/null &
sleep 0.2  # the streamed one first in the queue: it runs, the rest wait behind it
curl -s --max-time 2 "$url$C" -d "{\"model\": \"tiny_gqa\", \"prompt\": \"$P\", $busy}" >/dev/null 2>&1 &
sleep 0.2
curl -s --max-time 1 "$url$C" -d "{\"model\": \"support\", \"prompt\": \"$P\", $g}" >/dev/null 2>&1 &
curl -sN --max-time 1 "$url/v1/chat/completions" -d "{\"model\": \"support\", \"messages\": $M, $g, \"stream\": true}" >/dev/null 2>&1 &
sleep 0.4
mt=$(curl -s "$url/metrics")
grep -q '^qlora_requests_running 4$' <<<"$mt" && grep -q '^qlora_requests_waiting [1-9]' <<<"$mt" \
    || fail "the long jobs did not keep the server busy: $(grep -E '^qlora_requests_(running|waiting)' <<<"$mt" | tr '\n' ' ')"
wait_curls
sleep 0.5
mt=$(curl -s "$url/metrics")
grep -q '^qlora_requests_running 0$' <<<"$mt" && grep -q '^qlora_requests_waiting 0$' <<<"$mt" \
    || fail "clients that left still hold slots or the queue: $(grep -E '^qlora_requests_(running|waiting)' <<<"$mt" | tr '\n' ' ')"
grep -q '^qlora_requests_total{endpoint="/v1/completions",status="499"} [1-9]' <<<"$mt" || fail "no 499 counted for a client that left"
grep -q '^data: {' "$tmp/cut.sse" || fail "the cut stream had not started"
out=$(post $C "{\"model\": \"pirate\", \"prompt\": \"$P\", $g}")
[ "$(head -1 <<<"$out" | body_text)" = "$(ref 2)" ] || fail "after clients left: $out"
# SIGTERM with a request in flight (16 sequences of 120 tokens on 4 slots): it finishes, exit 0
curl -s "$url$C" -d "{\"model\": \"tiny_gqa\", \"prompt\": \"$P\", \"max_tokens\": 120, \"temperature\": 0, \"ignore_eos\": true, \"n\": 8, \"adapters\": [\"base\", \"pirate\"]}" >"$tmp/last.json" &
lpid=$!
for i in $(seq 100); do curl -s "$url/metrics" | grep -q '^qlora_requests_running [1-9]' && break; sleep 0.01; done
serve_stop "$tmp/serve.log"
wait $lpid
grep -q 'SIGTERM: no new connections; [1-9][0-9]* requests still running or queued' "$tmp/serve.log" \
    || fail "the request was not in flight at SIGTERM: $(grep SIGTERM "$tmp/serve.log")"
[ "$(jq '[.choices[] | select(.finish_reason == "length")] | length' "$tmp/last.json" 2>/dev/null)" = 16 ] \
    || fail "the request in flight at SIGTERM did not finish: $(head -c 300 "$tmp/last.json")"

# ---- --api-key, --max-loras, lora_scale ----
QLORA_API_KEY=s3cret serve_start "$tmp/serve2.log" --base "$model" --adapter-dir "$tmp/store" --threads 2 --max-loras 1 || exit 1
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ] || fail "/health needs no key"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/models")" = 401 ] || fail "no key: not 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong' "$url/v1/models")" = 401 ] || fail "wrong key: not 401"
curl -s -H 'Authorization: Bearer wrong' "$url/v1/models" | grep -q '"type": "authentication_error"' || fail "401 body"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer s3cret' "$url/v1/models")" = 200 ] || fail "right key: not 200"
K=(-H 'Authorization: Bearer s3cret')
# past --max-loras 1 the idle least recently used adapter is unloaded, and loaded again when named
for a in pirate:2 support:3 pirate:2; do
    out=$(post $C "{\"model\": \"${a%:*}\", \"prompt\": \"$P\", $g}" "${K[@]}")
    [ "$(head -1 <<<"$out" | body_text)" = "$(ref ${a#*:})" ] || fail "--max-loras 1: ${a%:*}: $out"
done
mt=$(curl -s "${K[@]}" "$url/metrics")
grep -q '^qlora_adapters_loaded 1$' <<<"$mt" || fail "--max-loras 1: $(grep adapters_loaded <<<"$mt")"
[ "$(curl -s "${K[@]}" "$url/v1/models" | jq -c '[.data[] | select(.loaded) | .id]')" = '["tiny_gqa","pirate"]' ] \
    || fail "--max-loras 1: loaded: $(curl -s "${K[@]}" "$url/v1/models" | jq -c '[.data[] | select(.loaded) | .id]')"
grep -q "adapter support: unloaded (least recently used; --max-loras 1)" "$tmp/serve2.log" || fail "no eviction in the log"
# lora_scale 0 gives the base's answer; 1 the adapter's
out=$(post $C "{\"model\": \"pirate\", \"prompt\": \"$P\", $g, \"lora_scale\": 0}" "${K[@]}")
[ "$(head -1 <<<"$out" | body_text)" = "$(ref 1)" ] || fail "lora_scale 0 is not the base: $out"
out=$(post $C "{\"model\": \"pirate\", \"prompt\": \"$P\", $g, \"lora_scale\": 1}" "${K[@]}")
[ "$(head -1 <<<"$out" | body_text)" = "$(ref 2)" ] || fail "lora_scale 1 is not the adapter: $out"
serve_stop "$tmp/serve2.log"
# bad options
"$q" serve --base "$model" --port 70000 2>"$tmp/err" && fail "--port 70000 accepted"
"$q" serve --base "$model" --adapter-dir "$tmp/nothing" --port 0 2>"$tmp/err" && fail "a missing --adapter-dir accepted"
grep -q "not a readable directory" "$tmp/err" || fail "missing --adapter-dir: $(cat "$tmp/err")"
"$q" serve --base "$model" --host 1.2.3.999 --port 0 2>"$tmp/err" && fail "a bad --host accepted"
grep -q "expected an IPv4 or IPv6 address" "$tmp/err" || fail "bad --host: $(cat "$tmp/err")"

[ "$fails" = 0 ] || { echo "$fails checks failed"; exit 1; }
echo "ok"
