#!/usr/bin/env bash
# test_store_cli.sh QLORA SOURCE_DIR: the LoRA store is a boundary, through every
# command that names adapters (issue 18; test_store_boundary.c has the library
# side). On the tiny model with one trained adapter, "pirate", in a store that also
# holds a link out of it ("sneaky"), a link inside it ("alias") and a hidden folder
# being written (".pirate.tmp-1"):
#  - infer --adapters refuses every name that is not one folder of the store
#    (exit 2, nothing printed on stdout: ".." no longer loads the store's parent);
#  - fan-out over the store skips the hidden folder, refuses the link out alone
#    (the others answer) with how to allow it, and --follow-symlinks allows it;
#    a linked store is fine;
#  - --requests: a line with a bad name fails alone with its own error;
#  - chat: --adapter, /load and /adapter refuse bad names; --follow-symlinks;
#  - serve (needs curl and jq): "model", "adapters", /v1/load_lora_adapter,
#    /v1/models; --follow-symlinks.
q=$1; src=$2
source "$src/tests/store_lib.sh"
store_train pirate
[ "$fails" = 0 ] || exit 1
S=$tmp/store
mkdir -p "$tmp/outside" && cp -r "$S/pirate" "$tmp/outside/pirate" && ln -s "$tmp/outside/pirate" "$S/sneaky"
out_real=$(realpath "$tmp/outside/pirate")
ln -s pirate "$S/alias"
ln -s store "$tmp/storelink"
mkdir "$S/.pirate.tmp-1" && echo '{"peft_type": "LORA"' >"$S/.pirate.tmp-1/adapter_config.json"
rule="a name is one folder of the store"
link_msg="$S/sneaky is a symbolic link to $out_real outside the store; pass --follow-symlinks to use it"
gen=(--base "$model" --prompt "Tell me about the sea" --max-tokens 6 --temperature 0 --ignore-eos --threads 2)
block() { awk -v h="$2" '$0 ~ "^=== " {on = index($0, "=== " h " ") == 1; next} on && NF {print}' "$1"; }

# ---- infer --adapters: names only ----
for name in .. . /etc ../store/pirate a/b .hidden ",pirate" "pirate,,alias" "pirate," $'a\tb' ":0.5"; do
    "$q" infer "${gen[@]}" --adapter-dir "$S" --adapters "$name" >"$tmp/o.txt" 2>"$tmp/e.txt"
    rc=$?
    [ $rc = 2 ] || fail "--adapters '$name': want exit 2, got $rc"
    [ ! -s "$tmp/o.txt" ] || fail "--adapters '$name' printed answers: $(head -3 "$tmp/o.txt")"
    grep -q "is not an adapter name" "$tmp/e.txt" && grep -q "$rule" "$tmp/e.txt" \
        || fail "--adapters '$name': message: $(tail -1 "$tmp/e.txt")"
    echo "--adapters '$name': $(grep 'error:' "$tmp/e.txt")"
done

# ---- fan-out over the store ----
"$q" infer "${gen[@]}" --adapter-dir "$S" >"$tmp/fan.txt" 2>"$tmp/fan.log" && fail "a link out of the store: exit 0"
[ "$(grep '^=== ' "$tmp/fan.txt" | cut -d' ' -f2 | tr '\n' ' ')" = "alias pirate sneaky: " ] \
    || fail "fan-out blocks: $(grep '^===' "$tmp/fan.txt" | tr '\n' ' ')"
grep -qF "$link_msg" "$tmp/fan.txt" || fail "sneaky's reason: $(cat "$tmp/fan.txt")"
[ -n "$(block "$tmp/fan.txt" pirate)" ] && [ "$(block "$tmp/fan.txt" alias)" = "$(block "$tmp/fan.txt" pirate)" ] \
    || fail "alias (a link inside the store) differs from pirate"
"$q" infer "${gen[@]}" --adapter-dir "$S" --adapters sneaky >"$tmp/o.txt" 2>/dev/null && fail "--adapters sneaky: exit 0"
grep -qF "$link_msg" "$tmp/o.txt" || fail "--adapters sneaky: $(cat "$tmp/o.txt")"
"$q" infer "${gen[@]}" --adapter-dir "$S" --follow-symlinks >"$tmp/follow.txt" 2>"$tmp/e.txt" \
    || fail "--follow-symlinks: $(tail -2 "$tmp/e.txt")"
[ "$(block "$tmp/follow.txt" sneaky)" = "$(block "$tmp/fan.txt" pirate)" ] || fail "--follow-symlinks: sneaky differs from pirate"
"$q" infer "${gen[@]}" --adapter-dir "$tmp/storelink" --adapters pirate,alias >"$tmp/o.txt" 2>"$tmp/e.txt" \
    || fail "a linked store: $(tail -2 "$tmp/e.txt")"

# ---- --requests: a bad name fails its line only ----
g='"max_tokens": 6, "temperature": 0'
cat >"$tmp/req.jsonl" <<EOF
{"id": 1, "prompt": "Tell me about the sea", "adapter": "pirate", $g}
{"id": 2, "prompt": "x", "adapter": "..", $g}
{"id": 3, "prompt": "x", "adapter": "/etc", $g}
{"id": 4, "prompt": "x", "adapter": "a/b", $g}
{"id": 5, "prompt": "x", "adapter": "a\u0000b", $g}
{"id": 6, "prompt": "x", "adapter": ".pirate.tmp-1", $g}
{"id": 7, "prompt": "Tell me about the sea", "adapter": "sneaky", $g}
{"id": 8, "prompt": "x", "adapter": "nope", $g}
{"id": 9, "prompt": "x", "adapter": "a\tb", $g}
{"id": 10, "prompt": "Tell me about the sea", "adapter": "alias", $g}
EOF
"$q" infer --base "$model" --adapter-dir "$S" --threads 2 --requests "$tmp/req.jsonl" >"$tmp/res.jsonl" 2>"$tmp/log"
[ $? = 1 ] || fail "--requests with bad lines: want exit 1: $(tail -2 "$tmp/log")"
grep -q "8 requests failed" "$tmp/log" || fail "--requests summary: $(tail -2 "$tmp/log")"
[ "$(wc -l <"$tmp/res.jsonl")" = 10 ] || fail "--requests: want 10 results, got $(wc -l <"$tmp/res.jsonl")"
res() { sed -n "$1p" "$tmp/res.jsonl"; }
line_want() {  # line_want N PATTERN
    res "$1" | grep -qF -- "$2" || fail "requests line $1: want '$2': $(res "$1")"
    echo "requests line $1: $(res "$1" | sed 's/.*"error": //')"
}
res 1 | grep -q '"text": ' || fail "line 1 (pirate) did not run: $(res 1)"
line_want 2 "req.jsonl:2: field 'adapter': '..' is not an adapter name (not a folder name): $rule"
line_want 3 "req.jsonl:3: field 'adapter': '/etc' is not an adapter name (an absolute path)"
line_want 4 "req.jsonl:4: field 'adapter': 'a/b' is not an adapter name (a path, not a name)"
line_want 5 "NUL"
line_want 6 "'.pirate.tmp-1' is not an adapter name (names starting with '.' are hidden)"
line_want 7 "req.jsonl:7: adapter 'sneaky' not loaded: $link_msg"
line_want 8 "req.jsonl:8: adapter 'nope' not loaded: $S/nope: no such adapter directory"
line_want 9 "(a control byte 0x09)"
[ "$(res 10 | sed 's/.*"text": //')" = "$(res 1 | sed 's/.*"text": //')" ] || fail "alias's answer differs from pirate's"
"$q" infer --base "$model" --adapter-dir "$S" --threads 2 --requests "$tmp/req.jsonl" --follow-symlinks \
    >"$tmp/res2.jsonl" 2>/dev/null
[ "$(sed -n 7p "$tmp/res2.jsonl" | sed 's/.*"text": //')" = "$(res 1 | sed 's/.*"text": //')" ] \
    || fail "--requests --follow-symlinks: sneaky: $(sed -n 7p "$tmp/res2.jsonl")"

# ---- chat ----
chat=(--base "$model" --threads 2 --adapter-dir "$S" --adapters pirate)
printf '/load ..\n/load /etc\n/load ../store/pirate\n/load .pirate.tmp-1\n/load sneaky\n/adapter ..\n/adapter a/b\n/load alias\n' \
    | "$q" chat "${chat[@]}" >"$tmp/chat.txt" 2>"$tmp/chat.log" || fail "chat: $(tail -2 "$tmp/chat.log")"
cat >"$tmp/chat_want.txt" <<EOF
(adapter: '..' is not an adapter name (not a folder name): $rule: 1 to 127 bytes, not starting with '.', without '/', '\\', ',', ':', NUL or control bytes)
(adapter: '/etc' is not an adapter name (an absolute path): $rule: 1 to 127 bytes, not starting with '.', without '/', '\\', ',', ':', NUL or control bytes)
(adapter: '../store/pirate' is not an adapter name (a path, not a name): $rule: 1 to 127 bytes, not starting with '.', without '/', '\\', ',', ':', NUL or control bytes)
(adapter: '.pirate.tmp-1' is not an adapter name (names starting with '.' are hidden): $rule: 1 to 127 bytes, not starting with '.', without '/', '\\', ',', ':', NUL or control bytes)
(sneaky: not loaded: $link_msg)
('..' is not an adapter name (not a folder name): $rule: 1 to 127 bytes, not starting with '.', without '/', '\\', ',', ':', NUL or control bytes)
('a/b' is not an adapter name (a path, not a name): $rule: 1 to 127 bytes, not starting with '.', without '/', '\\', ',', ':', NUL or control bytes)
EOF
head -7 "$tmp/chat.txt" | diff "$tmp/chat_want.txt" - >"$tmp/chat.diff" || fail "chat answers: $(cat "$tmp/chat.diff")"
grep -q "^(loaded alias: r 4" "$tmp/chat.txt" || fail "chat /load alias: $(cat "$tmp/chat.txt")"
cat "$tmp/chat.txt"
echo /quit | "$q" chat "${chat[@]}" --adapter .. >/dev/null 2>"$tmp/e.txt"
[ $? = 2 ] && grep -q "error: --adapter: '..' is not an adapter name" "$tmp/e.txt" || fail "chat --adapter ..: $(tail -1 "$tmp/e.txt")"
grep 'error:' "$tmp/e.txt"
echo '/load sneaky' | "$q" chat "${chat[@]}" --follow-symlinks >"$tmp/chat2.txt" 2>/dev/null
grep -q "^(loaded sneaky: r 4" "$tmp/chat2.txt" || fail "chat --follow-symlinks /load sneaky: $(cat "$tmp/chat2.txt")"
# Ctrl-C while an answer is generated (a SIGINT before the 3rd decoding step): the
# answer stops, marked "(stopped)"; the chat goes on and the next answer is whole
# (the same message then answers as a fresh chat would); end of input leaves, exit 0
printf 'Tell me about the sea\n/reset\nTell me about the sea\n' \
    | QLORA_CRASH_AT=decode:3 QLORA_CRASH_SIGNAL=INT "$q" chat "${chat[@]}" --adapter pirate --temperature 0 \
        --max-tokens 12 >"$tmp/chat3.txt" 2>"$tmp/chat3.log" || fail "chat after Ctrl-C: exit $?: $(tail -2 "$tmp/chat3.log")"
grep -q "^pirate> .* (stopped)$" "$tmp/chat3.txt" || fail "chat: the interrupted answer is not marked: $(cat "$tmp/chat3.txt")"
a1=$(grep "^pirate> " "$tmp/chat3.txt" | sed -n 1p | sed 's/ (stopped)$//'); a2=$(grep "^pirate> " "$tmp/chat3.txt" | sed -n 2p)
[ -n "$a2" ] && [ "$a1" != "$a2" ] && [ "${a2#"$a1"}" != "$a2" ] || fail "chat: '$a1' is not a prefix of the whole answer '$a2'"

# ---- serve ----
if command -v curl >/dev/null && command -v jq >/dev/null; then
    source "$src/tests/serve_lib.sh"
    C=/v1/completions
    want() {  # want STATUS 'message' PATH BODY
        local out; out=$(post "$3" "$4")
        [ "$(tail -1 <<<"$out")" = "$1" ] || fail "serve $4: want $1, got $(tail -1 <<<"$out"): $(head -1 <<<"$out")"
        [ "$1" = 200 ] || head -1 <<<"$out" | jq -e . >/dev/null || fail "serve $4: not JSON: $(head -1 <<<"$out")"
        head -1 <<<"$out" | grep -qF -- "$2" || fail "serve $4: want message '$2': $(head -1 <<<"$out")"
        [ "$1" = 200 ] || echo "serve $4: $(head -1 <<<"$out" | jq -r .error.message)"
    }
    if serve_start "$tmp/serve.log" --base "$model" --adapter-dir "$S" --threads 2; then
        want 400 "'..' is not an adapter name (not a folder name)" $C '{"model": "..", "prompt": "x"}'
        want 400 "'/etc' is not an adapter name (an absolute path)" $C '{"model": "/etc", "prompt": "x"}'
        want 400 "NUL" $C '{"model": "a\u0000b", "prompt": "x"}'
        want 400 "(names starting with '.' are hidden)" $C '{"model": ".pirate.tmp-1", "prompt": "x"}'
        want 400 "adapter 'sneaky': $link_msg" $C '{"model": "sneaky", "prompt": "x"}'
        want 400 "'..' is not an adapter name" $C '{"model": "tiny_gqa", "prompt": "x", "adapters": ["pirate", ".."]}'
        want 400 "'a,b' is not an adapter name" $C '{"model": "tiny_gqa", "prompt": "x", "adapters": ["a,b"]}'
        want 400 "lora_path: $link_msg" /v1/load_lora_adapter "{\"lora_name\": \"x\", \"lora_path\": \"$S/sneaky\"}"
        want 400 "lora_name: '..' is not an adapter name" /v1/load_lora_adapter "{\"lora_name\": \"..\", \"lora_path\": \"$S/pirate\"}"
        want 200 '"text"' $C '{"model": "alias", "prompt": "x", "max_tokens": 2}'
        ids=$(curl -s "$url/v1/models" | jq -r '.data[].id' | tr '\n' ' ')
        [ "$ids" = "tiny_gqa alias pirate " ] || fail "/v1/models: $ids"
        serve_stop "$tmp/serve.log"
    fi
    if serve_start "$tmp/serve2.log" --base "$model" --adapter-dir "$S" --threads 2 --follow-symlinks; then
        want 200 '"text"' $C '{"model": "sneaky", "prompt": "x", "max_tokens": 2}'
        want 200 'added successfully' /v1/load_lora_adapter "{\"lora_name\": \"x\", \"lora_path\": \"$S/sneaky\"}"
        serve_stop "$tmp/serve2.log"
    fi
else
    echo "serve part skipped: curl or jq is not installed"
fi
[ $fails = 0 ] && echo "test_store_cli: passed" || echo "test_store_cli: $fails failures"
[ $fails = 0 ]
