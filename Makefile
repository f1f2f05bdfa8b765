# dptrain — build, test and run. `make run` and `make test` are all a fresh Debian machine needs.
PREFIX ?= /usr/local
BUILD  ?= build
NP     ?= 2
CONFIG ?= configs/fashion_mlp.ini
# Extra options for every mpirun that make starts (run, valgrind, and through the environment the
# benchmark, soak and test scripts): `make run NP=3 MPIRUN_FLAGS=--oversubscribe` for more ranks
# than cores, `MPIRUN_FLAGS="--mca btl_tcp_if_include ib0"` for a network.
MPIRUN_FLAGS ?=
export MPIRUN_FLAGS

PKGS := ompi openblas hdf5-openmpi inih zlib
# Evaluated once, on first use, so targets that only install packages never call pkg-config.
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $$(shell pkg-config --libs $(PKGS)))$(PKG_LIBS)
CMOCKA_CFLAGS = $(eval CMOCKA_CFLAGS := $$(shell pkg-config --cflags cmocka))$(CMOCKA_CFLAGS)
CMOCKA_LIBS   = $(eval CMOCKA_LIBS := $$(shell pkg-config --libs cmocka))$(CMOCKA_LIBS)

CC      ?= cc
OPT     ?= -O2
# GCC 12's -O2 vectorises only loops that need no runtime checks; the optimizer, activation and
# reduction loops need the dynamic cost model, and sqrtf only vectorises without errno.
VECT    := -fvect-cost-model=dynamic -fno-math-errno
CFLAGS  ?=
WARN    := -std=c11 -Wall -Wextra -Werror
DEFS    := -D_POSIX_C_SOURCE=200809L -D_XOPEN_SOURCE=700
ALL_CFLAGS = $(WARN) $(OPT) $(VECT) -g -pthread $(DEFS) -Iinclude $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
LDLIBS_ALL = $(PKG_LIBS) -lm -pthread $(LDLIBS)

LIB_SRCS  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJS  := $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TOOL_SRCS := $(wildcard tests/tools/*.c)
TOOL_BINS := $(TOOL_SRCS:tests/tools/%.c=$(BUILD)/tests/%)
# The test build, $(BUILD)/test/dptrain: every source again with -DDP_FAULTS, so the fault-injection
# hooks (src/faults.h) and the variables that trigger them exist only there, never in $(BUILD)/dptrain.
FAULT_OBJS := $(patsubst src/%.c,$(BUILD)/test/obj/%.o,$(wildcard src/*.c))

# Open MPI refuses to run as root unless told; CI and containers run as root.
ifeq ($(shell id -u),0)
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
endif

.PHONY: all deps run test check clean install tests data bench

all: $(BUILD)/dptrain

deps:
	@scripts/install-deps.sh

$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libdptrain.a: $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/dptrain: $(BUILD)/obj/main.o $(BUILD)/libdptrain.a
	$(CC) $(OPT) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/tests/%.o: tests/%.c | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) $(CMOCKA_CFLAGS) -Itests -c $< -o $@

$(BUILD)/tests/%.o: tests/tools/%.c | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Itests -c $< -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libdptrain.a
	$(CC) $(OPT) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS_ALL)

$(BUILD)/test/obj/%.o: src/%.c | $(BUILD)/test/obj
	$(CC) $(ALL_CFLAGS) -DDP_FAULTS -c $< -o $@

$(BUILD)/test/dptrain: $(FAULT_OBJS)
	$(CC) $(OPT) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/obj $(BUILD)/tests $(BUILD)/test/obj $(BUILD)/pic/obj $(BUILD)/fortran:
	mkdir -p $@

# ---- The inference library (include/dptrain/infer.h, README "Using a trained model"): libdptrain.a
# (the objects above), libdptrain.so (the same sources again with -fPIC) and dptrain.pc for this build
# tree; the Fortran module (src/fortran/dptrain.f90) as libdptrain_fortran.a with its dptrain.mod,
# apart because it needs libgfortran, and dptrain-fortran.pc. `make install` installs them with .pc
# files pointing at PREFIX.
ifeq ($(origin FC),default)
FC := gfortran
endif
FFLAGS  ?= -O2
VERSION := $(shell sed -n 's/^\#define DP_VERSION "\(.*\)"/\1/p' src/main.c)
PIC_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/pic/obj/%.o)
LIB_FILES := $(BUILD)/libdptrain.a $(BUILD)/libdptrain.so $(BUILD)/dptrain.pc $(BUILD)/libdptrain_fortran.a \
             $(BUILD)/dptrain-fortran.pc
# The .pc bodies, printed after the lines that say where the files are (includedir, libdir, moddir).
PC_C = Name: dptrain\nDescription: inference with models trained by dptrain\nVersion: $(VERSION)\nRequires.private: $(PKGS)\nCflags: -I$${includedir}\nLibs: -L$${libdir} -Wl,-rpath,$${libdir} -ldptrain\nLibs.private: -lm -pthread\n
PC_F = Name: dptrain-fortran\nDescription: the Fortran module dptrain over the dptrain inference library\nVersion: $(VERSION)\nRequires: dptrain\nCflags: -I$${moddir}\nLibs: -L$${libdir} -ldptrain_fortran\n

.PHONY: lib
lib: $(LIB_FILES)

$(BUILD)/pic/obj/%.o: src/%.c | $(BUILD)/pic/obj
	$(CC) $(ALL_CFLAGS) -fPIC -c $< -o $@

$(BUILD)/libdptrain.so: $(PIC_OBJS)
	$(CC) $(OPT) -shared -Wl,-soname,libdptrain.so -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/libdptrain_fortran.a: src/fortran/dptrain.f90 | $(BUILD)/fortran
	$(FC) -std=f2008 -Wall -Wextra -Werror $(FFLAGS) -fPIC -J$(BUILD)/fortran -c $< -o $(BUILD)/fortran/dptrain.o
	rm -f $@
	ar rcs $@ $(BUILD)/fortran/dptrain.o

$(BUILD)/dptrain.pc: Makefile | $(BUILD)/obj
	printf 'includedir=%s\nlibdir=%s\n\n$(PC_C)' '$(CURDIR)/include' '$(abspath $(BUILD))' > $@

$(BUILD)/dptrain-fortran.pc: Makefile | $(BUILD)/obj
	printf 'libdir=%s\nmoddir=%s\n\n$(PC_F)' '$(abspath $(BUILD))' '$(abspath $(BUILD))/fortran' > $@

tests: $(BUILD)/dptrain $(BUILD)/test/dptrain $(TEST_BINS) $(TOOL_BINS) $(LIB_FILES)

# The whole suite: cmocka unit tests, multi-rank tests under mpirun, command-line tests.
check: tests
	@tests/run.sh $(BUILD)

test:
	@scripts/install-deps.sh --test
	@$(MAKE) --no-print-directory check

data: all
	@scripts/prepare-data.sh $(BUILD)/dptrain

# The live progress bar when this is a terminal (mpirun hides that from the ranks); run.png from
# scripts/plot.py when matplotlib is available. Ctrl-C: mpirun gives the ranks 2 x 5 s to checkpoint.
run: deps
	@$(MAKE) --no-print-directory data
	@if [ -t 1 ]; then export DPTRAIN_PROGRESS=bar; else export DPTRAIN_PROGRESS=lines; fi; \
	  flags="$(MPIRUN_FLAGS)"; cores=$$(nproc); \
	  case " $$flags " in \
	    *" --oversubscribe "*|*" --bind-to "*) ;; \
	    *) if [ "$(NP)" -gt "$$cores" ]; then flags="--oversubscribe $$flags"; \
	         echo "(NP=$(NP) ranks on $$cores cores: --oversubscribe, ranks not bound to cores)"; \
	       else flags="--bind-to core $$flags"; fi ;; \
	  esac; \
	  echo "mpirun -np $(NP) $$flags $(BUILD)/dptrain train $(CONFIG) --overwrite"; \
	  mpirun -np $(NP) $$flags --mca odls_base_sigkill_timeout 5 -x DPTRAIN_PROGRESS $(BUILD)/dptrain train $(CONFIG) --overwrite
	@dir=$$(sed -n 's/^[[:space:]]*out_dir[[:space:]]*=[[:space:]]*\([^;[:space:]]*\).*/\1/p' $(CONFIG) | head -1); \
	  if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then \
	    scripts/plot.py "$${dir:-runs/default}" -o run.png; \
	  else echo "(no run.png: matplotlib missing; scripts/install-deps.sh --plots installs it)"; fi

# Throughput against references measured in the same run; writes bench.json (see README).
bench: deps
	@$(MAKE) --no-print-directory data
	@scripts/bench.sh $(BUILD)

# Relative paths in a config resolve against the current directory, so the installed configs name
# the installed data file by its absolute path and work from any directory; the data is copied from
# data/ or converted there (a missing dataset package is only a warning: the configs then say so).
SHARE = $(abspath $(PREFIX))/share/dptrain
install: all install-lib
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SHARE)/configs $(DESTDIR)$(SHARE)/data
	install -m 755 $(BUILD)/dptrain $(DESTDIR)$(PREFIX)/bin/dptrain
	@for f in configs/*.ini; do \
	  sed 's|^\(path[[:space:]]*=[[:space:]]*\)data/|\1$(SHARE)/data/|' $$f > $(DESTDIR)$(SHARE)/$$f.tmp && \
	  chmod 644 $(DESTDIR)$(SHARE)/$$f.tmp && mv $(DESTDIR)$(SHARE)/$$f.tmp $(DESTDIR)$(SHARE)/$$f || exit 1; \
	done; echo "installed configs/*.ini into $(DESTDIR)$(SHARE)/configs (data path $(SHARE)/data/)"
	@if [ -f data/fashion_mnist.h5 ]; then install -m 644 data/fashion_mnist.h5 $(DESTDIR)$(SHARE)/data/; \
	  else DATA_DIR=$(DESTDIR)$(SHARE)/data scripts/prepare-data.sh $(BUILD)/dptrain > /dev/null || \
	    echo "make install: warning: no data/fashion_mnist.h5 to install (make data, then make install again)"; fi

# The library alone: header, libraries, Fortran module, .pc files pointing at PREFIX.
LIBDIR = $(abspath $(PREFIX))/lib
.PHONY: install-lib
install-lib: lib
	install -d $(DESTDIR)$(PREFIX)/include/dptrain/fortran $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/dptrain/infer.h include/dptrain/error.h $(DESTDIR)$(PREFIX)/include/dptrain/
	install -m 644 $(BUILD)/fortran/dptrain.mod $(DESTDIR)$(PREFIX)/include/dptrain/fortran/
	install -m 644 $(BUILD)/libdptrain.a $(BUILD)/libdptrain_fortran.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/libdptrain.so $(DESTDIR)$(LIBDIR)/
	printf 'includedir=%s\nlibdir=%s\n\n$(PC_C)' '$(abspath $(PREFIX))/include' '$(LIBDIR)' > $(DESTDIR)$(LIBDIR)/pkgconfig/dptrain.pc
	printf 'libdir=%s\nmoddir=%s\n\n$(PC_F)' '$(LIBDIR)' '$(abspath $(PREFIX))/include/dptrain/fortran' \
	  > $(DESTDIR)$(LIBDIR)/pkgconfig/dptrain-fortran.pc

clean:
	rm -rf $(BUILD)

.SECONDARY:
-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/tests/*.d $(BUILD)/test/obj/*.d $(BUILD)/pic/obj/*.d)

# ---- Sanitizers and valgrind. `make asan` / `make ubsan` build everything into build-asan/ and
# build-ubsan/ and run the whole suite there (tests/run.sh and tests/cli/*.sh take the build dir).
# The sanitizer flags go into CFLAGS (compile) and LDLIBS (link: the link line does not use CFLAGS).
# Open MPI, OpenBLAS and HDF5 are not built with ASan. Leak checking is off: Open MPI unloads its
# components at MPI_Finalize, so their leaks show as one-frame "<unknown module>" stacks that no
# suppression can name (tests/sanitizers/lsan.supp is there for ASAN_OPTIONS=detect_leaks=1 by
# hand). ASan's ODR check, which trips over the libraries' duplicate globals, is off too, and
# allocator_may_return_null=1 lets an impossible allocation fail as malloc does (the huge_units case).
# `make valgrind` runs a short 2-rank training under valgrind with Open MPI's suppressions.
ASAN_BUILD   ?= build-asan
UBSAN_BUILD  ?= build-ubsan
SAN_DIR      := $(CURDIR)/tests/sanitizers
ASAN_CFLAGS  := -fsanitize=address -fno-omit-frame-pointer
UBSAN_CFLAGS := -fsanitize=undefined -fno-sanitize-recover=undefined
ASAN_ENV     := ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0:allocator_may_return_null=1:abort_on_error=0:exitcode=1 \
                LSAN_OPTIONS=suppressions=$(SAN_DIR)/lsan.supp:print_suppressions=0
UBSAN_ENV    := UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(SAN_DIR)/ubsan.supp
OMPI_VG_SUPP ?= /usr/share/openmpi/openmpi-valgrind.supp
VALGRIND_DIR ?= /tmp/dptrain-valgrind

.PHONY: asan ubsan valgrind soak bad-input

# The whole bad-input corpus at 1 and 2 ranks (make test runs every case at 1 rank and a
# representative subset at 2, to stay fast); CI runs this.
bad-input: tests
	@DPTRAIN_BAD_NP2=all bash tests/cli/test_bad_input.sh $(BUILD)

# Random SIGTERM/resume cycles at 2 ranks, against an uninterrupted run (not in CI).
soak: tests
	@scripts/soak.sh $(BUILD) $(or $(SOAK_CYCLES),30)

asan:
	@start=$$(date +%s); $(ASAN_ENV) $(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) \
	  CFLAGS="$(CFLAGS) $(ASAN_CFLAGS)" LDLIBS="$(LDLIBS) $(ASAN_CFLAGS)" check; rc=$$?; \
	  echo "make asan: $$([ $$rc = 0 ] && echo clean || echo FAILED) in $$(($$(date +%s) - start)) s"; exit $$rc

ubsan:
	@start=$$(date +%s); $(UBSAN_ENV) $(MAKE) --no-print-directory BUILD=$(UBSAN_BUILD) \
	  CFLAGS="$(CFLAGS) $(UBSAN_CFLAGS)" LDLIBS="$(LDLIBS) $(UBSAN_CFLAGS)" check; rc=$$?; \
	  echo "make ubsan: $$([ $$rc = 0 ] && echo clean || echo FAILED) in $$(($$(date +%s) - start)) s"; exit $$rc

valgrind: tests
	@command -v valgrind > /dev/null || { echo "make valgrind: valgrind is not installed"; exit 1; }
	@test -f $(OMPI_VG_SUPP) || { echo "make valgrind: $(OMPI_VG_SUPP) missing (Debian's openmpi-common ships it)"; exit 1; }
	@rm -rf $(VALGRIND_DIR) && mkdir -p $(VALGRIND_DIR) && \
	  $(BUILD)/tests/make_synth $(VALGRIND_DIR)/syn.h5 256 64 16 4 1 && \
	  printf '[data]\npath = %s\n[layer]\nunits = 16\n[layer]\nunits = 4\nactivation = identity\n[optimizer]\nname = adam\n[train]\nbatch_size = 32\nepochs = 1\nmax_steps = 6\nlog_every = 2\nout_dir = %s\n[checkpoint]\nevery_steps = 3\n' \
	    $(VALGRIND_DIR)/syn.h5 $(VALGRIND_DIR)/run > $(VALGRIND_DIR)/tiny.ini
	@start=$$(date +%s); \
	  DPTRAIN_NO_KERNEL_FIX=1 OPENBLAS_NUM_THREADS=1 timeout 600 mpirun -np 2 --oversubscribe $(MPIRUN_FLAGS) \
	    valgrind -q --error-exitcode=1 --suppressions=$(OMPI_VG_SUPP) --suppressions=$(SAN_DIR)/valgrind.supp \
	    --log-file=$(VALGRIND_DIR)/vg.%q{OMPI_COMM_WORLD_RANK}.log \
	    $(BUILD)/dptrain train $(VALGRIND_DIR)/tiny.ini --quiet; rc=$$?; \
	  for f in $(VALGRIND_DIR)/vg.*.log; do [ -s $$f ] && { echo "--- $$f"; head -60 $$f; }; done; \
	  echo "make valgrind: $$([ $$rc = 0 ] && echo clean || echo "NOT clean (exit $$rc)") in $$(($$(date +%s) - start)) s"; \
	  exit $$rc

# ---- Fuzzing (tests/fuzz/). `make fuzz FUZZ_SECONDS=60` builds the library and every target in
# tests/fuzz/fuzz_*.c with clang -fsanitize=fuzzer,address into build-fuzz/ and runs each target for
# FUZZ_SECONDS from its seeds (tests/fuzz/corpus/<t>; new inputs go to build-fuzz/corpus/<t>),
# crashes to build-fuzz/crashes/<t>/, then prints execs/s and total execs per target.
# FUZZ_TARGETS=h5 runs one. The same targets also build with the normal compiler, linked with
# tests/fuzz/run_inputs.c instead of libFuzzer, as $(BUILD)/tests/fuzzrun_<t> (part of `make tests`):
# tests/cli/test_fuzz_regressions.sh replays the corpus and tests/fuzz/regressions/ with them.
FUZZ_BUILD   ?= build-fuzz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_ALL     := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_SAN     := -fsanitize=address -fno-omit-frame-pointer
# clang 14 rejects GCC's -fvect-cost-model: the fuzz library build gets VECT=-fno-math-errno.
FUZZ_WNO     := -Wno-ignored-optimization-argument -Wno-unknown-warning-option
FUZZ_OPTS    ?= -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
FUZZ_ENV     := ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0:allocator_may_return_null=1
FUZZ_RUNNERS := $(FUZZ_ALL:%=$(BUILD)/tests/fuzzrun_%)

.PHONY: fuzz fuzz-build

tests: $(FUZZ_RUNNERS)

$(BUILD)/tests/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/fuzz -c $< -o $@

$(BUILD)/tests/fuzzrun_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/run_inputs.o $(BUILD)/libdptrain.a
	$(CC) $(OPT) -o $@ $^ $(LDLIBS_ALL)

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_BUILD)/libdptrain.a
	$(FUZZ_CC) $(WARN) $(FUZZ_WNO) -O1 -g $(DEFS) -Iinclude -Itests/fuzz $(PKG_CFLAGS) \
	  -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< $(FUZZ_BUILD)/libdptrain.a $(LDLIBS_ALL)

# The library with the fuzzer's coverage instrumentation, by this Makefile with another BUILD and CC.
fuzz-build:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) VECT=-fno-math-errno \
	  CFLAGS="$(CFLAGS) $(FUZZ_WNO) -fsanitize=fuzzer-no-link $(FUZZ_SAN)" $(FUZZ_BUILD)/libdptrain.a
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

fuzz: fuzz-build
	@rc=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/crashes/$$t $(FUZZ_BUILD)/logs; \
	  log=$(FUZZ_BUILD)/logs/$$t.log; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s (log $$log)"; \
	  $(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t $(FUZZ_OPTS) \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_BUILD)/crashes/$$t/ > $$log 2>&1; st=$$?; \
	  [ $$st = 0 ] || rc=1; \
	  printf '%s\t%s\n' $$t "$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log) execs, $$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log) execs/s, $$(ls $(FUZZ_BUILD)/crashes/$$t | wc -l) crash files, exit $$st" >> $(FUZZ_BUILD)/summary.tmp; \
	  [ $$st = 0 ] || grep -m1 -A12 '^==[0-9]*==ERROR\|^==[0-9]*== ERROR\|deadly signal\|^fuzz_' $$log; \
	done; \
	echo "--- make fuzz ($(FUZZ_SECONDS) s per target)"; column -t -s '	' $(FUZZ_BUILD)/summary.tmp 2> /dev/null || cat $(FUZZ_BUILD)/summary.tmp; \
	rm -f $(FUZZ_BUILD)/summary.tmp; exit $$rc

-include $(wildcard $(BUILD)/tests/fuzz/*.d)

# ---- Multi-host runs over TCP on this machine: 2 network-namespace hosts joined by a bridge, mpirun
# launching through scripts/netns-agent.sh (an ssh stand-in), pml ob1 + btl tcp over the veths.
# Loss trajectory vs one machine, the start-up topology line, a checkpoint resumed on one host, a
# host's ranks SIGKILLed, [train] comm = node across the hosts against flat. Root only: prints
# "cluster-test: SKIPPED: <reason>" and passes otherwise.
.PHONY: cluster-test
cluster-test: all tests
	@scripts/cluster-test.sh $(BUILD)
