#!/usr/bin/env bash
# BLAS threads per rank and what decided them, as the start-up line says: [train] threads over
# OPENBLAS_NUM_THREADS over OMP_NUM_THREADS over the rank's share of the cores in its affinity mask;
# a variable that is no thread count is one error on every rank, at 1 and 2 ranks.
. "$(dirname "$0")/lib.sh"
need "$bin"

make_synth "$tmp/syn.h5" 200 50 8 3 1
small_config "$tmp/c.ini" layer.0.units=8 layer.1.units=3 train.batch_size=50 train.epochs=1 train.max_steps=2 \
  train.log_every= train.out_dir="$tmp/run"

# The variables of the caller's shell must not decide for the cases that leave them unset.
clean=(env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS)

# expect NAME PATTERN COMMAND...: the start-up line of COMMAND matches PATTERN (a fresh run: its
# out_dir is removed first).
expect() {
  local name=$1 want=$2 line
  shift 2
  rm -rf "$tmp/run"
  timeout --kill-after=2 60 "$@" > "$tmp/out.txt" 2>&1
  line=$(grep -m1 '^dptrain: .* BLAS thread' "$tmp/out.txt")
  if grep -q -- "$want" <<< "$line"; then ok "$name: $line"; else bad "$name: want '$want', got: $(head -3 "$tmp/out.txt")"; fi
}

cores=$(nproc)
expect "1 rank on one core" '1 BLAS thread per rank (from the affinity mask: 1 core;' \
  "${clean[@]}" taskset -c 0 "$bin" train "$tmp/c.ini"
if [ "$cores" -ge 2 ]; then
  expect "1 rank on two cores" '2 BLAS threads per rank (from the affinity mask: 2 cores;' \
    "${clean[@]}" taskset -c 0,1 "$bin" train "$tmp/c.ini"
  expect "2 unbound ranks share two cores" '1 BLAS thread per rank (from the affinity mask: 2 cores shared by 2 ranks;' \
    "${clean[@]}" taskset -c 0,1 "${mpi[@]}" -np 2 --bind-to none "$bin" train "$tmp/c.ini"
  expect "2 ranks bound to a core each" '1 BLAS thread per rank (from the affinity mask: 1 core;' \
    "${clean[@]}" "${mpi[@]}" -np 2 --bind-to core "$bin" train "$tmp/c.ini"
fi
expect "OPENBLAS_NUM_THREADS decides over the mask" '3 BLAS threads per rank (set by OPENBLAS_NUM_THREADS;' \
  "${clean[@]}" OPENBLAS_NUM_THREADS=3 taskset -c 0 "$bin" train "$tmp/c.ini"
expect "OMP_NUM_THREADS, its first level" '2 BLAS threads per rank (set by OMP_NUM_THREADS;' \
  "${clean[@]}" OMP_NUM_THREADS=2,1 taskset -c 0 "$bin" train "$tmp/c.ini"
expect "OPENBLAS_NUM_THREADS over OMP_NUM_THREADS" '1 BLAS thread per rank (set by OPENBLAS_NUM_THREADS;' \
  "${clean[@]}" OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 "$bin" train "$tmp/c.ini"
expect "[train] threads over the variables" '2 BLAS threads per rank (set by \[train\] threads;' \
  "${clean[@]}" OPENBLAS_NUM_THREADS=1 "$bin" train "$tmp/c.ini" --set train.threads=2
expect "2 ranks: the variable through mpirun" '2 BLAS threads per rank (set by OPENBLAS_NUM_THREADS;' \
  "${clean[@]}" "${mpi[@]}" -np 2 -x OPENBLAS_NUM_THREADS=2 "$bin" train "$tmp/c.ini"
expect "2 ranks with different counts: the range" '1 to 2 BLAS threads per rank (rank 0: 1, set by OPENBLAS_NUM_THREADS;' \
  "${clean[@]}" "${mpi[@]}" -np 1 -x OPENBLAS_NUM_THREADS=1 "$bin" train "$tmp/c.ini" : \
  -np 1 -x OPENBLAS_NUM_THREADS=2 "$bin" train "$tmp/c.ini"

# A bad value: exit 2 and one line naming the variable, at 1 rank and when only rank 1 has it.
bad_value() {
  local name=$1 code n
  shift
  timeout --kill-after=2 30 "$@" > "$tmp/out.txt" 2>&1
  code=$?
  n=$(grep -c "^dptrain: error: OPENBLAS_NUM_THREADS='x4': expected a number of BLAS threads" "$tmp/out.txt")
  if [ "$code" = 2 ] && [ "$n" = 1 ] && ! grep -q '^dptrain: [0-9]* rank' "$tmp/out.txt"; then
    ok "$name: exit 2, one error line"
  else
    bad "$name: exit $code, $n error lines: $(head -5 "$tmp/out.txt")"
  fi
}
bad_value "bad OPENBLAS_NUM_THREADS" "${clean[@]}" OPENBLAS_NUM_THREADS=x4 "$bin" train "$tmp/c.ini"
bad_value "bad OPENBLAS_NUM_THREADS on rank 1 only" "${clean[@]}" "${mpi[@]}" -np 1 "$bin" train "$tmp/c.ini" : \
  -np 1 -x OPENBLAS_NUM_THREADS=x4 "$bin" train "$tmp/c.ini"

finish
