#!/usr/bin/env bash
# The inference library from outside: installed into a temporary PREFIX (make install-lib), a C and a
# Fortran program built through pkg-config against the installed files give `dptrain predict`'s
# outputs within 1e-6 for an MLP with batch norm, one with layer norm, an mse regression with
# per-feature standardisation and a CNN whose dropout is off (predict at 2 ranks, whose passes start at
# other rows and would draw other masks, agrees); a missing, truncated or foreign checkpoint, NaN and
# Inf rows, n = 0, a Fortran array of the wrong width; two handles in two threads equal the sequential
# outputs; the static library; a program that is an MPI program itself, at 2 ranks.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/infer_lib.sh"
need "$bin" "$build/libdptrain.so"
build_abs=$(cd "$build" && pwd)
prefix=$tmp/prefix

# -o lib: `make tests` built the library; the tree may be mid-edit since.
if make -C "$root" -s --no-print-directory -o lib BUILD="$build_abs" PREFIX="$prefix" install-lib > "$tmp/install.log" 2>&1 &&
  [ -f "$prefix/include/dptrain/infer.h" ] && [ -f "$prefix/lib/libdptrain.so" ] && [ -f "$prefix/lib/libdptrain.a" ] &&
  [ -f "$prefix/include/dptrain/fortran/dptrain.mod" ]; then
  ok "make install-lib PREFIX=... installs the header, the libraries and the Fortran module"
else
  bad "make install-lib: $(cat "$tmp/install.log")"
  finish
fi
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# A library built by `make asan` or `make ubsan` needs its sanitizer's runtime in the programs too.
san=()
nm -D "$build/libdptrain.so" | grep -q ' __asan_' && san+=(-fsanitize=address)
nm -D "$build/libdptrain.so" | grep -q ' __ubsan_' && san+=(-fsanitize=undefined)
grep -qx "libdir=$prefix/lib" "$prefix/lib/pkgconfig/dptrain.pc" && ok "the installed dptrain.pc points at PREFIX" ||
  bad "dptrain.pc: $(cat "$prefix/lib/pkgconfig/dptrain.pc")"

# shellcheck disable=SC2046 # pkg-config's flags are words
if cc "${san[@]}" -std=c11 -Wall -Wextra -Werror -o "$tmp/infer_csv" "$root/tests/infer/infer_csv.c" $(pkg-config --cflags --libs dptrain) &&
  cc "${san[@]}" -std=c11 -Wall -Wextra -Werror -pthread -o "$tmp/infer_checks" "$root/tests/infer/infer_checks.c" \
    $(pkg-config --cflags --libs dptrain) -lm; then
  ok "C programs build with pkg-config --cflags --libs dptrain"
else
  bad "C programs do not build against the installed library"
fi
# shellcheck disable=SC2046
cc "${san[@]}" -std=c11 -Wall -Werror -o "$tmp/infer_static" "$root/tests/infer/infer_csv.c" $(pkg-config --cflags dptrain) \
  "$prefix/lib/libdptrain.a" $(pkg-config --libs ompi openblas hdf5-openmpi inih zlib) -lm -pthread &&
  ! ldd "$tmp/infer_static" | grep -q libdptrain && ok "the README's static link against libdptrain.a" ||
  bad "static link against $prefix/lib/libdptrain.a"
# shellcheck disable=SC2046
mpicc "${san[@]}" -std=c11 -Wall -Werror -o "$tmp/infer_mpi" "$root/tests/infer/infer_mpi.c" $(pkg-config --cflags --libs dptrain) ||
  bad "an MPI program does not build against the library"
ldd "$tmp/infer_csv" | grep -q "$prefix/lib/libdptrain.so" && ok "they load the installed libdptrain.so" ||
  bad "infer_csv does not load $prefix/lib/libdptrain.so: $(ldd "$tmp/infer_csv" | grep dptrain)"
# shellcheck disable=SC2046
if gfortran "${san[@]}" -std=f2008 -Wall -Werror -o "$tmp/infer_f" "$root/tests/infer/infer_csv.f90" \
  $(pkg-config --cflags --libs dptrain-fortran) 2> "$tmp/gf.log"; then
  ok "the Fortran program builds with pkg-config --cflags --libs dptrain-fortran"
else
  bad "gfortran: $(cat "$tmp/gf.log")"
fi

make_models && make_cnn || { bad "training the four models"; finish; }
for m in bn ln mse cnn; do
  data=$tmp/class.csv
  [ $m = mse ] && data=$tmp/reg.csv
  [ $m = cnn ] && data=$tmp/img.csv
  if ! "$bin" predict "$tmp/$m.h5" "$data" -o "$tmp/$m.pred.csv" 2> "$tmp/err"; then
    bad "$m: predict failed: $(cat "$tmp/err")"
    continue
  fi
  "$tmp/infer_csv" "$tmp/$m.h5" "$data" "$tmp/$m.c.csv" && d=$(max_diff "$tmp/$m.pred.csv" "$tmp/$m.c.csv") &&
    within "$d" 1e-6 && ok "$m: the C program equals predict (max difference $d)" || bad "$m: C vs predict: ${d:-failed}"
  "$tmp/infer_static" "$tmp/$m.h5" "$data" "$tmp/$m.s.csv" && cmp -s "$tmp/$m.c.csv" "$tmp/$m.s.csv" ||
    bad "$m: the statically linked program differs"
  "$tmp/infer_f" "$tmp/$m.h5" "$data" "$tmp/$m.f.csv" && d=$(max_diff "$tmp/$m.pred.csv" "$tmp/$m.f.csv") &&
    within "$d" 1e-6 && ok "$m: the Fortran program equals predict (max difference $d)" ||
    bad "$m: Fortran vs predict: ${d:-failed}"
done
# Inside an MPI program, 2 ranks each with its own handle and share of the rows.
at_np 2 60 "$tmp/infer_mpi" "$tmp/ln.h5" "$tmp/class.csv" "$tmp/ln.mpi.csv" 2> "$tmp/err" &&
  d=$(max_diff "$tmp/ln.pred.csv" "$tmp/ln.mpi.csv") && within "$d" 1e-6 &&
  ok "inside an MPI program at 2 ranks: predict's outputs (max difference $d)" || bad "MPI program: ${d:-$(cat "$tmp/err")}"
# The CNN's rows split across 2 ranks (each its own handle): the same outputs.
at_np 2 60 "$bin" predict "$tmp/cnn.h5" "$tmp/img.csv" -o "$tmp/cnn.np2.csv" 2> "$tmp/err" &&
  d=$(max_diff "$tmp/cnn.pred.csv" "$tmp/cnn.np2.csv") && within "$d" 1e-6 &&
  ok "cnn: predict at 2 ranks equals 1 rank (max difference $d)" || bad "cnn at 2 ranks: ${d:-$(cat "$tmp/err")}"
# The models learned something, so the comparisons compare outputs that mean something.
acc=$(awk -F, 'NR == FNR { if ($1 ~ /^y/) next; p[++n] = $NF; next } { h += (p[FNR] == $NF) } END { print h / n }' \
  "$tmp/bn.pred.csv" "$tmp/class.csv")
within "$(awk -v a="$acc" 'BEGIN { print 1 - a }')" 0.2 && ok "bn's predicted labels are right for $acc of the rows" ||
  bad "bn's labels: accuracy $acc"
acc=$(awk -F, 'NR == FNR { if ($1 ~ /^y/) next; p[++n] = $NF; next } { h += (p[FNR] == $NF) } END { print h / n }' \
  "$tmp/cnn.pred.csv" "$tmp/img.csv")
within "$(awk -v a="$acc" 'BEGIN { print 1 - a }')" 0.2 && ok "cnn's predicted labels are right for $acc of the rows" ||
  bad "cnn's labels: accuracy $acc"

out=$("$tmp/infer_f" "$tmp/bn.h5" "$tmp/class.csv" /dev/null --wrong-width 2> /dev/null)
case $out in
  "-6 dp_infer_predict: x is (7, 150)"*) ok "Fortran: an x of the wrong width is DP_ESHAPE with the shapes" ;;
  *) bad "Fortran wrong width: $out" ;;
esac

head -c 2000 "$tmp/bn.h5" > "$tmp/truncated.h5"
if "$tmp/infer_checks" "$tmp/bn.h5" "$tmp/ln.h5" "$tmp/class.csv" 150 "$tmp/truncated.h5" "$tmp/class.h5" > "$tmp/checks"; then
  ok "library checks: $(grep -c '^ok' "$tmp/checks") passed"
else
  bad "library checks: $(grep -v '^ok' "$tmp/checks")"
fi
finish
