#!/usr/bin/env bash
# Installs, with apt-get, only the Debian packages dptrain needs that are missing.
# Idempotent: a machine that has everything is left untouched and nothing is printed but a summary.
#   --plots   also python3-matplotlib, for scripts/plot.py (not needed to build, train or test)
#   --test    also what the test suite needs beyond the build: python3-h5py, python3-torch and
#             python3-onnx for scripts/export.py and its test (`make test` passes it)
set -euo pipefail

plots=0 test=0
for arg in "$@"; do
  case $arg in
    --plots) plots=1 ;;
    --test) test=1 ;;
    *) echo "usage: scripts/install-deps.sh [--plots] [--test]" >&2; exit 2 ;;
  esac
done

packages=(
  gcc make pkg-config
  gfortran # the Fortran module of the inference library
  libopenmpi-dev openmpi-bin
  libopenblas-dev
  libhdf5-openmpi-dev hdf5-tools
  libcmocka-dev
  libinih-dev
  zlib1g-dev
  dataset-fashion-mnist
  python3 iproute2 # the tests' JSON checks and bench report; make cluster-test's namespaces
)
if [ $plots = 1 ]; then packages+=(python3-matplotlib); fi
if [ $test = 1 ]; then packages+=(python3-h5py python3-torch python3-onnx); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The package lists on a fresh machine are empty or stale; refresh them once before installing.
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}"
echo "install-deps: done"
