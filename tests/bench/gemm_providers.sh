#!/usr/bin/env bash
# gemm_providers.sh [ROUNDS]: builds tests/bench/gemm_providers.c against OpenBLAS,
# BLIS and oneDNN (Debian libopenblas-dev, libblis-dev, libdnnl-dev; a provider
# whose package is missing is left out, said on stderr) and runs them in turn,
# ROUNDS times (default 3), at the fp32 GEMM shapes of qlora's prefill (n = 128
# and 512 tokens; TinyLlama's 2048 x 2048, 5632 x 2048 and 2048 x 5632), 2 threads.
# OpenBLAS also runs with OPENBLAS_CORETYPE=Haswell as a control of its own core
# choice. One key=value line per provider, shape and round (best of 5 calls);
# docs/benchmarks.md (issue 13, part 0) records a run. Not part of ctest.
set -u
src=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /tmp/gemm_providers_XXXXXX)
trap 'rm -rf "$out"' EXIT
rounds=${1:-3}
shapes="128:2048:2048 128:5632:2048 128:2048:5632 512:2048:2048"
build() {  # name, cc arguments...
    local name=$1; shift
    if cc -O2 "$@" -o "$out/$name" 2>"$out/$name.log"; then echo "$name"; else echo "gemm_providers: $name not built: $(head -1 "$out/$name.log")" >&2; fi
}
have=$(
    build openblas -DPROVIDER_OPENBLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread "$src/gemm_providers.c" -lopenblas
    build blis -DPROVIDER_BLIS -I/usr/include/x86_64-linux-gnu/blis-openmp "$src/gemm_providers.c" \
        -L/usr/lib/x86_64-linux-gnu/blis-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/blis-openmp -lblis -fopenmp
    build onednn -DPROVIDER_DNNL "$src/gemm_providers.c" -ldnnl
)
for r in $(seq "$rounds"); do
    for p in $have; do
        OMP_NUM_THREADS=2 BLIS_NUM_THREADS=2 "$out/$p" 2 5 $shapes | sed "s/^/round=$r /"
        [ "$p" = openblas ] && OPENBLAS_CORETYPE=Haswell "$out/$p" 2 5 $shapes | sed "s/^/round=$r /"
    done
done
