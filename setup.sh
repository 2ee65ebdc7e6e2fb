#!/usr/bin/env bash
# setup.sh: install what is missing (Debian packages), build, then run the demo
# or the test suite. The README's two commands are `./setup.sh demo` and
# `./setup.sh test`; CI (.ci/run) runs the second.
#
#   ./setup.sh demo    install, build, quantize a small model to NF4, train two style adapters, fan out one
#                      prompt to the base and both in one batch; last, print how to open the playground
#   ./setup.sh test    install, build, run every test (ctest); then the CPU tests again in a
#                      second tree built with ASan+UBSan (build-san), and the libFuzzer
#                      harnesses built with clang (build-fuzz) for a fixed number of runs each
#   ./setup.sh build   install and build only
#
# Environment: BUILD_DIR (default build), QLORA_CUDA (ON/OFF, default ON: the CUDA
# backend is built when nvcc is found), JOBS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-demo}
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

# ---- Debian packages ----
pkgs="build-essential cmake pkg-config libsentencepiece-dev sentencepiece libjsmn-dev libopenblas-dev libmicrohttpd-dev libpcre2-dev libedit-dev curl jq"
# the tests also build the fuzz harnesses, which need clang's libFuzzer
[ "$what" = test ] && pkgs="$pkgs clang libclang-rt-dev"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi
# headless Chromium for test_playground (the playground page in a real browser);
# without it that test skips, so a failed install only warns
if [ "$what" = test ] && [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing chromium (for test_playground)"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } >/tmp/setup_chromium.log 2>&1; then
        echo "setup: warning: chromium did not install; test_playground will skip" >&2
        tail -n 5 /tmp/setup_chromium.log >&2
    fi
fi

# ---- build ----
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DQLORA_CUDA="${QLORA_CUDA:-ON}"
cmake --build "$BUILD_DIR" -j "$JOBS"

case "$what" in
build) ;;
test)
    # the openai npm package for test_serve_openai, puppeteer-core for
    # test_playground (each skips without its package)
    if command -v npm >/dev/null 2>&1; then
        for d in serve:test_serve_openai playground:test_playground; do
            if ! npm_log=$(npm ci --prefix "tests/${d%%:*}" --no-audit --no-fund --loglevel=error 2>&1); then
                echo "setup: warning: npm ci in tests/${d%%:*} failed; ${d#*:} will skip" >&2
                printf '%s\n' "$npm_log" | tail -n 5 >&2
            fi
        done
    fi
    (cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS")
    # The same CPU tests again, with everything built under AddressSanitizer and
    # UBSan (any report fails the test); this also replays every fuzz corpus.
    cmake -S . -B "$BUILD_DIR-san" -DCMAKE_BUILD_TYPE=Release -DQLORA_CUDA=OFF -DQLORA_SANITIZE=ON
    cmake --build "$BUILD_DIR-san" -j "$JOBS"
    (cd "$BUILD_DIR-san" && ctest -L cpu --output-on-failure -j "$JOBS")
    # The libFuzzer harnesses (tests/fuzz), built with clang for coverage, each
    # run for a fixed number of inputs (label fuzz).
    CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR-fuzz" -DCMAKE_BUILD_TYPE=Release -DQLORA_CUDA=OFF -DQLORA_FUZZ=ON
    cmake --build "$BUILD_DIR-fuzz" -j "$JOBS"
    (cd "$BUILD_DIR-fuzz" && ctest -L fuzz --output-on-failure -j "$JOBS")
    ;;
demo)
    q="$BUILD_DIR/qlora"
    models=${QLORA_TEST_MODELS:-../shared/models}
    if [ -f "$models/stories260K/model.safetensors" ]; then
        base="$models/stories260K"
        echo "demo: base model $base (Karpathy's TinyStories stories260K)"
    else
        base=tests/fixtures/models/tiny_gqa
        echo "demo: $models/stories260K is absent; using the project's own tiny random model $base (its text is noise)"
    fi
    mkdir -p out
    rm -rf out/adapters
    echo "== qlora quantize: freeze the base in NF4 =="
    "$q" quantize --base "$base" --out out/demo-base.qlb
    # two style adapters into one LoRA store: a terse support agent (messages) and a
    # Victorian letter writer (Alpaca), both through the llama2 chat template
    for d in support victorian; do
        echo "== qlora train: the $d adapter from datasets/samples/$d.jsonl =="
        "$q" train --base out/demo-base.qlb --data "datasets/samples/$d.jsonl" --out "out/adapters/$d" \
            --max-steps 150 --batch-size 4 --seq-len 128 --lr 2e-3 --rank 8 --alpha 16 --eval-every 50 --log-every 25
    done
    for p in "The printer will not connect." "Thank a friend for a gift." "Where is the library?"; do
        echo "== qlora infer, fan-out: '$p' to the base and both adapters in one batch (greedy) =="
        "$q" infer --base out/demo-base.qlb --adapter-dir out/adapters --with-base --chat-template llama2 \
            --prompt "$p" --temperature 0 --max-tokens 32
    done
    echo "== qlora eval: NF4 vs f32 perplexity of the base =="
    "$q" eval --base out/demo-base.qlb --data tests/fixtures/stories260K/eval.txt
    "$q" eval --base "$base" --base-dtype f32 --data tests/fixtures/stories260K/eval.txt
    echo "== the LoRA store: one PEFT adapter directory per adapter =="
    ls -l out/adapters/*
    echo "== the playground: the base and both adapters side by side in a browser (docs/playground.md) =="
    echo "   $q serve --base out/demo-base.qlb --adapter-dir out/adapters --port 8080"
    echo "   then open http://127.0.0.1:8080/"
    ;;
*)
    echo "usage: ./setup.sh demo|test|build" >&2
    exit 2
    ;;
esac
