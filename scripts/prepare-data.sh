#!/bin/sh
# Converts Debian's Fashion-MNIST (dataset-fashion-mnist) into data/fashion_mnist.h5, once.
# Usage: scripts/prepare-data.sh [path/to/dptrain]
set -eu
DPTRAIN=${1:-build/dptrain}
SRC=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
OUT=${DATA_DIR:-data}/fashion_mnist.h5

if [ -f "$OUT" ]; then
  exit 0
fi
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  if [ ! -r "$SRC/$f" ]; then
    echo "prepare-data: $SRC/$f is missing (install the package dataset-fashion-mnist: scripts/install-deps.sh)" >&2
    exit 1
  fi
done
mkdir -p "$(dirname "$OUT")"
echo "prepare-data: converting $SRC to $OUT"
"$DPTRAIN" convert idx "$SRC/train-images-idx3-ubyte.gz" "$SRC/train-labels-idx1-ubyte.gz" \
  "$SRC/t10k-images-idx3-ubyte.gz" "$SRC/t10k-labels-idx1-ubyte.gz" -o "$OUT"
