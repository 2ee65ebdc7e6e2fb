# store_lib.sh: sourced by the shell tests of multi-adapter inference. Sets tmp
# (removed on exit), fails and fail(), and model (the tiny fixture); store_train
# trains a quick adapter per sample set into $tmp/store (tiny_gqa: 8 steps,
# rank 4; seconds).
fails=0
tmp=$(mktemp -d /tmp/qlora_store_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
model=$src/tests/fixtures/models/tiny_gqa
store_train() {
    for d in "$@"; do
        "$q" train --base "$model" --data "$src/datasets/samples/$d.jsonl" --out "$tmp/store/$d" --max-steps 8 \
            --batch-size 2 --seq-len 160 --rank 4 --alpha 8 --lr 1e-2 --threads 2 2>"$tmp/train_$d.log" \
            || fail "training $d failed: $(tail -2 "$tmp/train_$d.log")"
    done
}
