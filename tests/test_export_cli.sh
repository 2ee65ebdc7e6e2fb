#!/usr/bin/env bash
# test_export_cli.sh QLORA SOURCE_DIR: qlora export's command line on the tiny
# models: each format writes its output (peft converts another writer's F32
# rsLoRA adapter, and in F32 answers exactly as the original); bad input (an unknown format, missing
# options, an adapter whose base does not match, an unwritable or existing output,
# a --type that is not q8_0/q4_0 or not for gguf-base)
# fails with a clear message and leaves nothing behind; merging from a qlora base
# file (NF4) says plainly that it merged into dequantized NF4 weights; merged
# config.json's torch_dtype follows --dtype; gguf-base --type q8_0/q4_0 logs the
# matrices it keeps in f16; base_model_name_or_path names the model (tiny_gqa),
# not a path, after train and export peft with a directory or a base file as --base.
q=$1; src=$2
source "$src/tests/store_lib.sh"
store_train pirate
ad=$tmp/store/pirate
"$q" quantize --base "$model" --out "$tmp/base.qlb" 2>/dev/null || fail "quantize failed"
expect() {  # expect CODE PATTERN -- command...: exit code and a stderr pattern
    local code=$1 pat=$2; shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    [ $rc = "$code" ] || fail "'$*': exit $rc, want $code ($(tail -1 "$tmp/err"))"
    grep -q -- "$pat" "$tmp/err" || fail "'$*': stderr lacks '$pat': $(tail -1 "$tmp/err")"
}
name_is() {  # name_is ADAPTER_DIR: base_model_name_or_path is "tiny_gqa"
    grep -q '"base_model_name_or_path": "tiny_gqa",' "$1/adapter_config.json" \
        || fail "$1: $(grep base_model_name_or_path "$1/adapter_config.json"), want \"tiny_gqa\""
}
name_is "$ad"
"$q" train --base "$tmp/base.qlb" --data "$src/datasets/samples/pirate.jsonl" --out "$tmp/from_qlb" --max-steps 1 \
    --batch-size 1 --seq-len 64 --rank 2 --threads 2 2>"$tmp/tq.log" || fail "training on base.qlb: $(tail -1 "$tmp/tq.log")"
name_is "$tmp/from_qlb"
# the formats
"$q" export --base "$model" --adapter "$ad" --format gguf --out "$tmp/a.gguf" 2>/dev/null || fail "gguf failed"
[ "$(head -c 4 "$tmp/a.gguf")" = GGUF ] || fail "a.gguf is not GGUF"
"$q" export --base "$model" --format gguf-base --dtype bf16 --out "$tmp/b.gguf" 2>/dev/null || fail "gguf-base failed"
for t in q8_0 q4_0; do  # tiny_gqa's ffn_down rows are 172 values: f16, said in the log
    "$q" export --base "$model" --format gguf-base --type $t --out "$tmp/b_$t.gguf" 2>"$tmp/b_$t.log" \
        || fail "gguf-base --type $t: $(tail -1 "$tmp/b_$t.log")"
    [ "$(grep -c "ffn_down.weight: rows of 172 values, not a multiple of 32: written as F16" "$tmp/b_$t.log")" = 3 ] \
        || fail "gguf-base --type $t: the F16 fallback of 3 ffn_down is not logged: $(cat "$tmp/b_$t.log")"
done
[ "$(stat -c %s "$tmp/b_q4_0.gguf")" -lt "$(stat -c %s "$tmp/b_q8_0.gguf")" ] || fail "q4_0 is not smaller than q8_0"
"$q" export --base "$model" --adapter "$ad" --format merged --out "$tmp/m" >"$tmp/m.txt" 2>/dev/null || fail "merged failed"
grep -q "into the original weights" "$tmp/m.txt" || fail "merged does not say it used the original weights: $(cat "$tmp/m.txt")"
[ -f "$tmp/m/model.safetensors" ] && [ -f "$tmp/m/config.json" ] && [ -f "$tmp/m/tokenizer.model" ] || fail "merged dir incomplete"
"$q" infer --base "$tmp/m" --prompt hi --max-tokens 2 >/dev/null 2>&1 || fail "the merged directory does not load"
"$q" export --base "$tmp/base.qlb" --adapter "$ad" --format merged --out "$tmp/m4" >"$tmp/m4.txt" 2>/dev/null || fail "merged from NF4 failed"
grep -q "NF4-DEQUANTIZED" "$tmp/m4.txt" || fail "merging into NF4 is not said plainly: $(cat "$tmp/m4.txt")"
"$q" export --base "$model" --adapter "$ad" --format merged --dtype f32 --out "$tmp/m32" >/dev/null 2>&1 || fail "merged f32 failed"
for d in m:float16 m4:float16 m32:float32; do  # tiny_gqa's own config.json says bfloat16
    grep -q "\"torch_dtype\": \"${d#*:}\"" "$tmp/${d%%:*}/config.json" && grep -q '"model_type": "llama"' "$tmp/${d%%:*}/config.json" \
        || fail "${d%%:*}/config.json: $(grep -E 'torch_dtype|model_type' "$tmp/${d%%:*}/config.json")"
done
# peft: another writer's F32 rsLoRA adapter in canonical form; in F32 it answers exactly as the original
fx=$src/tests/fixtures/adapters/tiny_gqa_f32_rslora
"$q" export --adapter "$fx" --format peft --dtype f32 --out "$tmp/p32" 2>/dev/null || fail "peft f32 failed"
"$q" export --adapter "$fx" --base "$model" --format peft --out "$tmp/p16" 2>/dev/null || fail "peft f16 with --base failed"
grep -q '"use_rslora": true' "$tmp/p32/adapter_config.json" || fail "peft: rsLoRA lost"
gen=(--base "$model" --prompt "Tell me about the sea" --max-tokens 12 --temperature 0 --ignore-eos --threads 2)
"$q" infer "${gen[@]}" --adapter "$fx" >"$tmp/o1" 2>/dev/null && "$q" infer "${gen[@]}" --adapter "$tmp/p32" >"$tmp/o2" 2>/dev/null \
    || fail "infer with the converted adapter failed"
cmp -s "$tmp/o1" "$tmp/o2" || fail "the F32 conversion answers differently: $(cat "$tmp/o1") vs $(cat "$tmp/o2")"
"$q" infer "${gen[@]}" --adapter "$tmp/p16" >/dev/null 2>&1 || fail "the F16 conversion does not load"
name_is "$tmp/p16"  # the fixture adapter says "tests/fixtures/models/tiny_gqa"; --base names it
"$q" export --adapter "$fx" --base "$tmp/base.qlb" --format peft --out "$tmp/pq" 2>/dev/null || fail "peft with a base file failed"
name_is "$tmp/pq"
expect 1 "shape" -- "$q" export --adapter "$fx" --base "$src/tests/fixtures/models/tiny_mha" --format peft --out "$tmp/x"
expect 2 "already exists" -- "$q" export --adapter "$fx" --format peft --out "$tmp/p32"
# bad input
expect 2 "expected peft, gguf, merged or gguf-base" -- "$q" export --base "$model" --adapter "$ad" --format onnx --out "$tmp/x"
expect 2 "needs --adapter" -- "$q" export --base "$model" --format gguf --out "$tmp/x"
expect 2 "needs --base" -- "$q" export --adapter "$ad" --format gguf --out "$tmp/x"
expect 2 "expected f16, bf16 or f32" -- "$q" export --base "$model" --adapter "$ad" --format gguf --dtype f8 --out "$tmp/x"
expect 2 "--type: expected q8_0 or q4_0, found 'q4_k'" -- "$q" export --base "$model" --format gguf-base --type q4_k --out "$tmp/x"
expect 2 "only --format gguf-base quantizes (found --format gguf)" -- "$q" export --base "$model" --adapter "$ad" --format gguf --type q8_0 --out "$tmp/x"
expect 2 "--type q8_0 with --dtype bf16: give one of them" -- "$q" export --base "$model" --format gguf-base --type q8_0 --dtype bf16 --out "$tmp/x"
expect 1 "shape" -- "$q" export --base "$src/tests/fixtures/models/tiny_mha" --adapter "$ad" --format gguf --out "$tmp/x.gguf"
expect 1 "nowhere" -- "$q" export --base "$model" --adapter "$ad" --format gguf --out "$tmp/nowhere/x.gguf"
expect 2 "already exists" -- "$q" export --base "$model" --adapter "$ad" --format merged --out "$tmp/m"
expect 1 "nowhere" -- "$q" export --base "$model" --adapter "$ad" --format merged --out "$tmp/nowhere/m"
[ ! -e "$tmp/x" ] && [ ! -e "$tmp/x.gguf" ] || fail "a failed export left a file"
ls "$tmp" | grep -q "tmp\." && fail "a temp file was left: $(ls "$tmp")"
[ $fails = 0 ] && echo "test_export_cli: passed" || echo "test_export_cli: $fails failures"
[ $fails = 0 ]
