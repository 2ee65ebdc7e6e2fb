#!/usr/bin/env bash
# test_outputs.sh QLORA SOURCE_DIR: what the commands may write over. train --out
# refuses an existing adapter without --overwrite and, even with it, a directory
# with other files, an adapter_config.json that is not a LoRA one, a file or a
# symbolic link; a second writer of the same --out gets an error naming the
# directory and the holder's pid (the lock held here by flock(1), no timing);
# export --format gguf refuses an existing file without --overwrite and an input
# (the base) even with it; infer refuses --out equal to --requests. Each refusal
# exits 2 and leaves what was there byte for byte.
q=$1; src=$2
export LC_ALL=C
fails=0
tmp=$(mktemp -d /tmp/qlora_outputs_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
model=$src/tests/fixtures/models/tiny_gqa
c=(--base "$model" --data "$src/datasets/samples/pirate.jsonl" --max-steps 3 --batch-size 1 --seq-len 64 --rank 2 --threads 1)
# expect CODE TEXT -- command: the exit code and a piece of the message
expect() {
    local code=$1 text=$2; shift 3
    "$@" >/dev/null 2>"$tmp/err.log"; local rc=$?
    [ $rc -eq "$code" ] || fail "exit $rc (want $code): $* : $(tail -1 "$tmp/err.log")"
    grep -qF -- "$text" "$tmp/err.log" || fail "message lacks '$text': $(tail -1 "$tmp/err.log")"
    echo "  $(tail -1 "$tmp/err.log")"
}
sum() { (cd "$1" && find . -type f | sort | xargs md5sum) 2>/dev/null; }

"$q" train "${c[@]}" --out "$tmp/store/a" 2>/dev/null || fail "first training"
before=$(sum "$tmp/store/a")
expect 2 "already holds an adapter; give --overwrite" -- "$q" train "${c[@]}" --out "$tmp/store/a"
[ "$(sum "$tmp/store/a")" = "$before" ] || fail "a refused train changed the adapter"
"$q" train "${c[@]}" --seed 9 --out "$tmp/store/a" --overwrite 2>/dev/null || fail "--overwrite of an adapter failed"
[ "$(sum "$tmp/store/a")" != "$before" ] || fail "--overwrite did not replace the adapter"
[ "$(ls -A "$tmp/store" | tr '\n' ' ')" = "a " ] || fail "the store holds $(ls -A "$tmp/store" | tr '\n' ' ')"
# not adapters: never replaced
mkdir "$tmp/notes" && echo keep >"$tmp/notes/notes.txt" && cp "$tmp/store/a/adapter_config.json" "$tmp/notes/"
expect 2 "holds notes.txt, which qlora does not write" -- "$q" train "${c[@]}" --out "$tmp/notes" --overwrite
mkdir "$tmp/cfg" && echo '{"model_type": "llama"}' >"$tmp/cfg/adapter_config.json"
expect 2 "not an adapter directory" -- "$q" train "${c[@]}" --out "$tmp/cfg" --overwrite
expect 2 "exists and is not a directory" -- "$q" train "${c[@]}" --out "$tmp/notes/notes.txt" --overwrite
ln -s "$tmp/store/a" "$tmp/link"
expect 2 "is a symbolic link" -- "$q" train "${c[@]}" --out "$tmp/link" --overwrite
expect 2 "is a symbolic link" -- "$q" train "${c[@]}" --out "$tmp/link/" --overwrite
expect 2 "no checkpoint" -- "$q" train "${c[@]}" --out "$tmp/store/a" --resume
[ "$(cat "$tmp/notes/notes.txt")" = keep ] && [ "$(cat "$tmp/cfg/adapter_config.json")" = '{"model_type": "llama"}' ] ||
    fail "a refused --out changed"
# the lock: held by another process (pid 4242 written in it), the second writer is refused
(
    exec 9>"$tmp/store/.a.lock"
    flock -n 9 || exit 3
    echo 4242 >&9
    expect 2 "another qlora process (pid 4242) is writing it" -- "$q" train "${c[@]}" --out "$tmp/store/a" --overwrite
    exit $fails
) || fail "the lock test"
# export gguf over a file
"$q" export --base "$model" --adapter "$tmp/store/a" --format gguf --out "$tmp/a.gguf" 2>/dev/null || fail "gguf export"
gb=$(md5sum <"$tmp/a.gguf")
expect 2 "already exists; give --overwrite" -- "$q" export --base "$model" --adapter "$tmp/store/a" --format gguf --out "$tmp/a.gguf"
"$q" export --base "$model" --adapter "$tmp/store/a" --format gguf --dtype f32 --out "$tmp/a.gguf" --overwrite 2>/dev/null || fail "gguf --overwrite"
[ "$(md5sum <"$tmp/a.gguf")" != "$gb" ] || fail "gguf --overwrite did not replace the file"
"$q" quantize --base "$model" --out "$tmp/base.qlb" 2>/dev/null || fail "quantize"
qb=$(md5sum <"$tmp/base.qlb")
expect 2 "is an input of this export" -- "$q" export --base "$tmp/base.qlb" --format gguf-base --out "$tmp/base.qlb" --overwrite
expect 2 "is an input of this export" -- "$q" export --base "$model" --adapter "$tmp/store/a" --format gguf --out "$tmp/store/a/adapter_model.safetensors" --overwrite
expect 2 "is an input of this export" -- "$q" export --base "$model" --adapter "$tmp/store/a" --format gguf --out "$model/config.json" --overwrite
expect 2 "is not a regular file" -- "$q" export --base "$model" --adapter "$tmp/store/a" --format gguf --out "$tmp/notes" --overwrite
[ "$(md5sum <"$tmp/base.qlb")" = "$qb" ] || fail "the base file changed"
# infer: the results never replace the requests
printf '{"id": 1, "prompt": "Hi", "max_tokens": 2}\n' >"$tmp/req.jsonl"
rb=$(md5sum <"$tmp/req.jsonl")
expect 2 "is the --requests file" -- "$q" infer --base "$model" --requests "$tmp/req.jsonl" --out "$tmp/req.jsonl"
expect 2 "is the --requests file" -- "$q" infer --base "$model" --requests "$tmp/req.jsonl" --out "$tmp/../$(basename "$tmp")/req.jsonl"
[ "$(md5sum <"$tmp/req.jsonl")" = "$rb" ] || fail "the requests file changed"

[ $fails -eq 0 ] && echo "test_outputs: passed" || echo "test_outputs: $fails failed checks"
[ $fails -eq 0 ]
