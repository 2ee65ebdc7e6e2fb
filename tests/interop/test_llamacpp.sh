#!/usr/bin/env bash
# test_llamacpp.sh QLORA SOURCE_DIR MODELS: what `qlora export` writes, loaded by
# llama.cpp itself. On the real stories260K model with an adapter trained by
# `qlora train` on all seven modules (q and k included, so the RoPE row
# permutation of lora_b is exercised):
#   - llama.cpp with our base GGUF (F32) alone gives the same greedy text as
#     `qlora infer --base-dtype f32`, for 32 tokens on several prompts;
#   - llama.cpp with our base GGUF plus our GGUF LoRA (--lora) gives the same
#     greedy text as `qlora infer --base-dtype f32 --adapter`.
# llama.cpp is not ours to build in CI: set QLORA_LLAMACPP to a llama.cpp build
# directory holding bin/llama-completion (tests/interop/README.md shows how).
# Without it, or without ../shared/models, the test skips (77) and says why.
q=$1; src=$2; models=$3
base=$models/stories260K
[ -f "$base/model.safetensors" ] || { echo "skip: $base is absent"; exit 77; }
lc=${QLORA_LLAMACPP:+$QLORA_LLAMACPP/bin/llama-completion}
[ -n "$lc" ] && [ -x "$lc" ] || { echo "skip: set QLORA_LLAMACPP to a llama.cpp build dir with bin/llama-completion (tests/interop/README.md)"; exit 77; }
fails=0
tmp=$(mktemp -d /tmp/qlora_interop_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
"$q" train --base "$base" --data "$src/datasets/samples/pirate.jsonl" --out "$tmp/pirate" --max-steps 80 --batch-size 4 \
    --seq-len 128 --lr 2e-3 --rank 8 --alpha 16 --threads 2 2>"$tmp/train.log" || fail "training failed: $(tail -2 "$tmp/train.log")"
"$q" export --base "$base" --format gguf-base --dtype f32 --out "$tmp/base.gguf" 2>"$tmp/e1.log" || fail "gguf-base: $(cat "$tmp/e1.log")"
"$q" export --base "$base" --adapter "$tmp/pirate" --format gguf --dtype f32 --out "$tmp/pirate.gguf" 2>"$tmp/e2.log" \
    || fail "gguf: $(cat "$tmp/e2.log")"
# the text with newlines shown as |, without the whitespace around it
trim() { tr '\n' '|' | sed -e 's/^[[:space:]|]*//' -e 's/[[:space:]|]*$//'; }
n=0
for p in "Where is the library?" "Once upon a time" "The little dog ran to the park and" "Any advice about the garden?"; do
    for mode in base lora; do
        n=$((n + 1))
        ours=(--adapter "$tmp/pirate"); theirs=(--lora "$tmp/pirate.gguf")
        [ $mode = base ] && ours=() && theirs=()
        "$q" infer --base "$base" --base-dtype f32 "${ours[@]}" --prompt "$p" --max-tokens 32 --temperature 0 \
            --ignore-eos --threads 2 >"$tmp/q$n.txt" 2>"$tmp/q$n.log" || fail "qlora infer: $(tail -1 "$tmp/q$n.log")"
        "$lc" -m "$tmp/base.gguf" "${theirs[@]}" -p "$p" -n 32 --temp 0 --ignore-eos --no-display-prompt --no-warmup \
            --no-repack -t 2 -s 1 --simple-io </dev/null >"$tmp/l$n.txt" 2>"$tmp/l$n.log" || fail "llama.cpp: $(tail -3 "$tmp/l$n.log")"
        a=$(trim <"$tmp/q$n.txt"); b=$(trim <"$tmp/l$n.txt")
        echo "[$mode] '$p'"; echo "  qlora:     $a"; echo "  llama.cpp: $b"
        [ -n "$a" ] && [ "$a" = "$b" ] || fail "[$mode] '$p': the answers differ"
    done
done
grep -q "lora" "$tmp/l2.log" || fail "llama.cpp's log does not mention the adapter"
[ $fails = 0 ] && echo "test_llamacpp: passed" || echo "test_llamacpp: $fails failures"
[ $fails = 0 ]
