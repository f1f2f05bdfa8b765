#!/usr/bin/env bash
# `make bench`, using a trained model: `dptrain predict` rows/s at 1 and 2 ranks on Fashion-MNIST's
# 60,000 training rows (best of 3, interleaved; wall time of the whole command, start-up included),
# and the inference library's latency for 1 and 1,000 rows (tests/infer/latency.c, 1 BLAS thread).
# Needs the checkpoint of a finished fashion_mlp run: $BENCH_DIR/fashion_mlp from scripts/bench.sh.
# Usage: scripts/bench_infer.sh [BUILD_DIR]
set -u
build=${1:-build}
out=${BENCH_DIR:-bench}
ckpt=$(ls -t "$out"/fashion_mlp/checkpoints/ckpt-*.h5 2> /dev/null | head -1)
[ -n "$ckpt" ] || { echo "bench: no checkpoint in $out/fashion_mlp (run scripts/bench.sh first)" >&2; exit 1; }
read -ra extra <<< "${MPIRUN_FLAGS:-}"
mpi=(mpirun --bind-to core "${extra[@]}")
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
export OPENBLAS_NUM_THREADS=1

best=(0 0)
for r in 1 2 3; do
  for np in 1 2; do
    launch=("$build/dptrain")
    [ $np = 1 ] || launch=("${mpi[@]}" -np $np "$build/dptrain")
    t0=$(date +%s.%N)
    "${launch[@]}" predict "$ckpt" data/fashion_mnist.h5 --split train -o "$out/predict.h5" > /dev/null ||
      { echo "bench: predict at np $np failed" >&2; exit 1; }
    rate=$(python3 -c "import sys; print(60000 / (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)")
    i=$((np - 1))
    best[$i]=$(python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "${best[$i]}" "$rate")
  done
done
rm -f "$out/predict.h5"
printf 'predict, 60000 rows, wall time with start-up: %.0f rows/s at 1 rank, %.0f at 2 ranks (1 thread each)\n' \
  "${best[0]}" "${best[1]}" >&2
cc tests/infer/latency.c $(PKG_CONFIG_PATH=$build pkg-config --cflags --libs dptrain) -o "$out/latency" ||
  { echo "bench: cannot build tests/infer/latency.c against $build/dptrain.pc" >&2; exit 1; }
"$out/latency" "$ckpt" 2000 >&2
