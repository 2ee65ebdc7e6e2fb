#!/usr/bin/env bash
# screenshot.sh [QLORA [PNG]]: the picture of the playground in docs/ and the
# README. Trains the demo's two style adapters (support, victorian; as
# `./setup.sh demo` does) on ../shared/models/stories260K, serves them, runs one
# greedy comparison through the page in headless Chromium (completion mode;
# SHOT_MODE=chat, SHOT_PROMPT and SHOT_TOKENS change it) and saves the window as
# PNG (default docs/playground.png). Not a test: run it by hand after a change to
# the page. Needs what test_playground.sh needs, and the real model.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
q=${1:-$src/build/qlora}
png=${2:-$src/docs/playground.png}
chromium=${QLORA_CHROMIUM:-/usr/bin/chromium}
base=${QLORA_TEST_MODELS:-$src/../shared/models}/stories260K
[ -f "$base/model.safetensors" ] || { echo "screenshot.sh: $base is absent" >&2; exit 1; }
[ -x "$chromium" ] || { echo "screenshot.sh: $chromium is not installed" >&2; exit 1; }
[ -d "$here/node_modules/puppeteer-core" ] || { echo "screenshot.sh: npm ci --prefix $here first" >&2; exit 1; }
tmp=$(mktemp -d /tmp/qlora_shot_XXXXXX)
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT
for d in support victorian; do
    "$q" train --base "$base" --data "$src/datasets/samples/$d.jsonl" --out "$tmp/store/$d" --max-steps 150 \
        --batch-size 4 --seq-len 128 --lr 2e-3 --rank 8 --alpha 16 --eval-every 50 --log-every 25 2>"$tmp/train_$d.log"
done
"$q" serve --base "$base" --adapter-dir "$tmp/store" --port 0 2>"$tmp/serve.log" &
spid=$!
port=
for _ in $(seq 300); do
    port=$(sed -n 's/.*serve: listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/serve.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "screenshot.sh: the server did not start: $(tail -3 "$tmp/serve.log")" >&2; exit 1; }
XDG_CONFIG_HOME="$tmp/xdg" XDG_CACHE_HOME="$tmp/xdg" \
    node "$here/playground.mjs" --url "http://127.0.0.1:$port" --chromium "$chromium" --out "$tmp/browser" \
    --screenshot "$png" --mode "${SHOT_MODE:-completion}" --adapters support,victorian --max-tokens "${SHOT_TOKENS:-64}" \
    --prompt "${SHOT_PROMPT:-Once upon a time, there was a little dog}"
kill -TERM "$spid"
wait "$spid" || true
spid=
