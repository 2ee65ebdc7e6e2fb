#!/usr/bin/env bash
# test_serve_load.sh QLORA SOURCE_DIR MODELS [SERVER]: a bounded load test of
# qlora serve on loopback. 32 curl clients send 10 requests each (320 in all),
# mixing the base and two adapters, two prompts, completions and chat, streamed
# and not; every fifth client's fourth request disconnects mid-stream. The queue
# is kept small (--max-queue 6) so that 503s happen: a client that gets one waits
# and retries, as Retry-After asks. Checks: no status but 200 and 503, every
# greedy answer equal to the same request alone (qlora infer --requests), the
# server alive and idle afterwards, and a clean exit on SIGTERM. SERVER (default
# QLORA) is the binary that serves: CI runs this test a second time with the
# AddressSanitizer/UBSan build, where any report fails it.
q=$1; src=$2; server=${4:-$1}
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
source "$src/tests/store_lib.sh"
source "$src/tests/serve_lib.sh"
store_train pirate support
[ "$fails" = 0 ] || exit 1
prompts=("Tell me about the sea" "Where is the library")
adapters=(base pirate support)
g='"max_tokens": 16, "temperature": 0'
: >"$tmp/ref.jsonl"
for a in 0 1 2; do
    ad=$([ $a = 0 ] && echo null || echo "\"${adapters[$a]}\"")
    for p in 0 1; do
        echo "{\"prompt\": \"${prompts[$p]}\", \"adapter\": $ad, $g}" >>"$tmp/ref.jsonl"
        echo "{\"messages\": [{\"role\": \"user\", \"content\": \"${prompts[$p]}\"}], \"adapter\": $ad, $g}" >>"$tmp/ref.jsonl"
    done
done
"$q" infer --base "$model" --adapter-dir "$tmp/store" --threads 2 --requests "$tmp/ref.jsonl" >"$tmp/ref.out" 2>"$tmp/ref.log" \
    || fail "infer --requests: $(tail -2 "$tmp/ref.log")"
ref() { sed -n "$1p" "$tmp/ref.out" | sed 's/.*"text": "\(.*\)", "tokens".*/\1/'; }

q=$server
serve_start "$tmp/serve.log" --base "$model" --adapter-dir "$tmp/store" --threads 2 --max-batch 8 --max-queue 6 || exit 1
# client C: 10 requests; request J's line in ref.out is 1 + 4a + 2p + chat
client() {
    local c=$1 j a p chat stream body path line tries code
    for j in $(seq 0 9); do
        a=$(((c + j) % 3)); p=$(((c / 3 + j) % 2)); chat=$(((c + 2 * j) % 2)); stream=$(((c + j / 2) % 2))
        local name=${adapters[$a]}; [ $a = 0 ] && name=tiny_gqa
        line=$((1 + 4 * a + 2 * p + chat))
        if [ $chat = 1 ]; then
            path=/v1/chat/completions
            body="{\"model\": \"$name\", \"messages\": [{\"role\": \"user\", \"content\": \"${prompts[$p]}\"}], $g"
        else
            path=/v1/completions
            body="{\"model\": \"$name\", \"prompt\": \"${prompts[$p]}\", $g"
        fi
        if [ $((c % 5)) = 0 ] && [ $j = 3 ]; then  # disconnect mid-stream
            # a fan-out of 2 x 4 choices of 200 tokens (within the context), cut 0.5 s after it is accepted
            for tries in $(seq 200); do
                code=$(curl -sN --max-time 0.5 -o "$tmp/cut_$c" -w '%{http_code}' "$url/v1/completions" -d "{\"model\": \"$name\", \"prompt\": \"${prompts[$p]}\", \"max_tokens\": 200, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true, \"n\": 4, \"adapters\": [\"$name\", \"base\"]}" 2>/dev/null)
                [ "$code" = 503 ] || break
                sleep 0.1
            done
            echo "$c $j disconnect" >>"$tmp/log_$c"
            continue
        fi
        [ $stream = 1 ] && body="$body, \"stream\": true"
        for tries in $(seq 200); do
            code=$(curl -sN -o "$tmp/r_${c}_$j" -w '%{http_code}' "$url$path" -d "$body}")
            [ "$code" = 503 ] || break
            echo "$c $j 503" >>"$tmp/log_$c"
            sleep 0.1
        done
        echo "$c $j $code $line $stream" >>"$tmp/log_$c"
    done
}
# under ASan+UBSan (QLORA_TEST_SANITIZED) half the clients, with the same checks
nc=32; [ -n "${QLORA_TEST_SANITIZED:-}" ] && nc=16
t0=$(date +%s.%N)
for c in $(seq 0 $((nc - 1))); do client "$c" & done
for p in $(jobs -p); do [ "$p" = "$spid" ] || wait "$p"; done
t1=$(date +%s.%N)
n503=0; nok=0; ndis=0
for c in $(seq 0 $((nc - 1))); do
    while read -r cc j code line stream; do
        case $code in
        503) n503=$((n503 + 1)); continue ;;
        disconnect) ndis=$((ndis + 1)); continue ;;
        200) ;;
        *) fail "client $cc request $j: status $code: $(head -c 300 "$tmp/r_${cc}_$j")"; continue ;;
        esac
        if [ "$stream" = 1 ]; then got=$(sse_text <"$tmp/r_${cc}_$j")
        else got=$(sed -n 's/.*"\(text\|content\)": "\(.*\)"}*, "logprobs".*/\2/p' "$tmp/r_${cc}_$j"); fi
        [ "$got" = "$(ref "$line")" ] || fail "client $cc request $j (ref line $line, stream $stream): '$got' vs '$(ref "$line")'"
        nok=$((nok + 1))
    done <"$tmp/log_$c"
done
wdis=$(((nc + 4) / 5))  # clients 0, 5, 10, ...
[ "$nok" = $((10 * nc - wdis)) ] || fail "expected $((10 * nc - wdis)) answered requests, got $nok"
[ "$ndis" = $wdis ] || fail "expected $wdis disconnects (clients 0, 5, ...), got $ndis"
ncut=$(grep -l '^data: {' "$tmp"/cut_* 2>/dev/null | wc -l)
[ "$ncut" -gt 0 ] || fail "no disconnecting client got a chunk before leaving: their requests did not run"
echo "disconnects: $ncut of $wdis left after their stream had started"
echo "load: $nok requests answered and checked, $ndis disconnects, $n503 x 503 (retried) in $(awk "BEGIN {print $t1 - $t0}") s"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ] || fail "the server is not healthy after the load"
sleep 0.3
m=$(curl -s "$url/metrics")
grep -q '^qlora_requests_running 0' <<<"$m" || fail "sequences still running after the load: $(grep running <<<"$m")"
grep -q '^qlora_requests_waiting 0' <<<"$m" || fail "sequences still queued after the load"
serve_stop "$tmp/serve.log"
if grep -q "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" "$tmp/serve.log"; then
    fail "sanitizer report: $(grep -A12 "ERROR: \|runtime error:" "$tmp/serve.log" | head -40)"
fi
[ "$fails" = 0 ] || { echo "$fails checks failed"; exit 1; }
echo "ok"
