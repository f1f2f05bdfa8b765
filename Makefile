# dptrain — build, test and run. `make run` and `make test` are all a fresh Debian machine needs.
PREFIX ?= /usr/local
BUILD  ?= build
NP     ?= 2
CONFIG ?= configs/fashion_mlp.ini

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
ALL_CFLAGS = $(WARN) $(OPT) $(VECT) -g $(DEFS) -Iinclude $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
LDLIBS_ALL = $(PKG_LIBS) -lm $(LDLIBS)

LIB_SRCS  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJS  := $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TOOL_SRCS := $(wildcard tests/tools/*.c)
TOOL_BINS := $(TOOL_SRCS:tests/tools/%.c=$(BUILD)/tests/%)

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

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

tests: $(BUILD)/dptrain $(TEST_BINS) $(TOOL_BINS)

# The whole suite: cmocka unit tests, multi-rank tests under mpirun, command-line tests.
check: tests
	@tests/run.sh $(BUILD)

test: deps
	@$(MAKE) --no-print-directory check

data: all
	@scripts/prepare-data.sh $(BUILD)/dptrain

# The live progress bar when this is a terminal (mpirun hides that from the ranks); run.png from
# scripts/plot.py when matplotlib is available.
run: deps
	@$(MAKE) --no-print-directory data
	@if [ -t 1 ]; then export DPTRAIN_PROGRESS=bar; else export DPTRAIN_PROGRESS=lines; fi; \
	  echo "mpirun -np $(NP) --bind-to core $(BUILD)/dptrain train $(CONFIG)"; \
	  mpirun -np $(NP) --bind-to core -x DPTRAIN_PROGRESS $(BUILD)/dptrain train $(CONFIG)
	@dir=$$(sed -n 's/^[[:space:]]*out_dir[[:space:]]*=[[:space:]]*\([^;[:space:]]*\).*/\1/p' $(CONFIG) | head -1); \
	  if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then \
	    scripts/plot.py "$${dir:-runs/default}" -o run.png && echo "wrote run.png"; \
	  else echo "(no run.png: matplotlib missing; scripts/install-deps.sh --plots installs it)"; fi

# Throughput against references measured in the same run; writes bench.json (see README).
bench: deps
	@$(MAKE) --no-print-directory data
	@scripts/bench.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/dptrain/configs
	install -m 755 $(BUILD)/dptrain $(DESTDIR)$(PREFIX)/bin/dptrain
	install -m 644 configs/*.ini $(DESTDIR)$(PREFIX)/share/dptrain/configs/

clean:
	rm -rf $(BUILD)

.SECONDARY:
-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/tests/*.d)
