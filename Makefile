# portone-link — build, test, demo, benchmarks.
#
#   make                      build/5.4/portone/link/core.so (Lua 5.4)
#   make LUA_VERSION=5.1      build/5.1/portone/link/core.so (Lua 5.1 / LuaJIT)
#   make test                 every gate CI runs (deps installed first)
#   make demo                 the whole flow against a local sandbox
#
LUA_VERSION ?= 5.4
LUA_INC     ?= /usr/include/lua$(LUA_VERSION)
CC          ?= cc
BUILD       := build/$(LUA_VERSION)
SANITIZE    ?=
OPT         ?= -O2 -g

# -fno-plt where the compiler has it: the module calls the Lua API a few
# hundred times an encode, each through a PLT stub otherwise (bench-encode:
# 1.5% of an encode's instructions on 5.4, 1% on LuaJIT).
NOPLT       := $(shell $(CC) -fno-plt -x c -c /dev/null -o /dev/null 2>/dev/null && echo -fno-plt)
CFLAGS_BASE := -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden -Wall -Wextra -Werror \
               -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter $(NOPLT)
CURL_CFLAGS := $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS   := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl) \
               $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)

ifeq ($(SANITIZE),1)
  BUILD   := build/$(LUA_VERSION)-asan
  OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDSAN   := -fsanitize=address,undefined
endif

SRCS := $(wildcard src/*.c)
OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
SO   := $(BUILD)/portone/link/core.so
# The CLI's own small modules (src/cli/: the signal counter, fsync), not part
# of the core, so embedding hosts never get signal handlers they did not ask for.
CLI_SRCS := $(wildcard src/cli/*.c)
SIG_SO   := $(patsubst src/cli/%.c,$(BUILD)/portone/cli/%.so,$(CLI_SRCS))

LUA54_PATH := lua/?.lua;lua/?/init.lua;;

# rock, rock-install: see the rockspec
.PHONY: rock rock-install all build deps test test-unit test-luajit test-asan test-valgrind lint \
        demo sandbox bench bench-encode bench-openresty bench-bulk bench-poll bench-http bench-cold clean

all: $(SO) $(SIG_SO)
build: $(SO) $(SIG_SO)

$(BUILD)/obj/%.o: src/%.c src/*.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) -I$(LUA_INC) $(CURL_CFLAGS) $(CFLAGS) -c $< -o $@

$(SO): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDSAN) $(OPT) -o $@ $(OBJS) $(CURL_LIBS) $(LDFLAGS)

$(BUILD)/portone/cli/%.so: src/cli/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) -I$(LUA_INC) $(CFLAGS) -shared $(LDSAN) -o $@ $< $(LDFLAGS)

# A Lua 5.4 interpreter linked with ASan+UBSan, for the sanitizer suite.
build/sanlua: spec/tools/sanlua.c
	@mkdir -p build
	$(CC) -std=c99 -Wall -Wextra -Werror -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	  -I/usr/include/lua5.4 $< -o $@ -llua5.4 -lm

# luarocks builds with these two (the rockspec's `make` build type): one
# compiler call a module, straight into build/rock-*/, which rock-install
# removes once it has copied the files: `luarocks make` leaves no objects
# or .so files in the source tree. luarocks passes
# CFLAGS, LIBFLAG, LUA_INC, CURL_INCDIR, CURL_LIBDIR, then INST_LIBDIR,
# INST_LUADIR.
ROCK_DIR := build/rock$(subst /,-,$(LUA_INC))
LIBFLAG  ?= -shared
rock:
	rm -rf $(ROCK_DIR)
	mkdir -p $(ROCK_DIR)/portone/link $(ROCK_DIR)/portone/cli
	$(CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(CFLAGS) $(NOPLT) -I$(LUA_INC) -I$(CURL_INCDIR) $(LIBFLAG) \
	  -o $(ROCK_DIR)/portone/link/core.so $(SRCS) -L$(CURL_LIBDIR) -lcurl -lssl -lcrypto
	for c in $(CLI_SRCS); do \
	  $(CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(CFLAGS) -I$(LUA_INC) $(LIBFLAG) \
	    -o $(ROCK_DIR)/portone/cli/$$(basename $$c .c).so $$c || exit 1; done

rock-install:
	mkdir -p $(INST_LIBDIR)/portone/link $(INST_LIBDIR)/portone/cli
	cp $(ROCK_DIR)/portone/link/core.so $(INST_LIBDIR)/portone/link/core.so
	cp $(ROCK_DIR)/portone/cli/*.so $(INST_LIBDIR)/portone/cli/
	cd lua && find portone -name '*.lua' | while read -r f; do \
	  mkdir -p "$(INST_LUADIR)/$$(dirname "$$f")" && cp "$$f" "$(INST_LUADIR)/$$f" || exit 1; done
	rm -rf $(ROCK_DIR)

deps:
	@scripts/deps

# The whole gate: lint, specs under Lua 5.4 and LuaJIT, then the C core
# under ASan+UBSan and under valgrind. Each suite leaves TAP in build/results.
test: deps
	@scripts/test-all

lint: deps
	luacheck -q lua spec bin bench examples bin/portone-link scripts/check-doc-links

demo: deps
	@$(MAKE) -s build
	@LUA_PATH='$(LUA54_PATH)' LUA_CPATH='build/5.4/?.so;;' lua5.4 scripts/demo.lua

sandbox: deps
	@$(MAKE) -s build
	@LUA_PATH='$(LUA54_PATH)' LUA_CPATH='build/5.4/?.so;;' lua5.4 bin/portone-link sandbox $(ARGS)

bench: bench-encode

# bench-encode: Lua 5.4, then LuaJIT (build/5.1), each in one process; the
# walk-floor helper (bench/walkfloor.c) is built here only, never shipped.
# BENCH_SECONDS per interpreter; BASELINE=older-checkout/build races an older core.
BENCH_SECONDS ?= 5
build/%/bench/walkfloor.so: bench/walkfloor.c
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -O2 -fPIC -shared -Wall -Wextra -Werror -I/usr/include/lua$* $< -o $@

bench-encode: deps
	@$(MAKE) -s build
	@$(MAKE) -s LUA_VERSION=5.1 build
	@$(MAKE) -s build/5.4/bench/walkfloor.so build/5.1/bench/walkfloor.so
	@LUA_PATH='$(LUA54_PATH);spec/?.lua;bench/?.lua' LUA_CPATH='build/5.4/?.so;build/5.4/bench/?.so;;' \
	  lua5.4 bench/encode.lua $(BENCH_SECONDS)
	@LUA_PATH='$(LUA54_PATH);spec/?.lua;bench/?.lua' LUA_CPATH='build/5.1/?.so;build/5.1/bench/?.so;;' \
	  luajit bench/encode.lua $(BENCH_SECONDS)

# poll(0) durations of a game loop over HTTPS (bench/poll.lua; the slow
# resolver run needs root for a private resolv.conf).
bench-poll: deps
	@$(MAKE) -s build
	@LUA_PATH='$(LUA54_PATH);spec/?.lua' LUA_CPATH='build/5.4/?.so;;' lua5.4 bench/poll.lua $(ARGS)

# client:create vs a raw libcurl loop (bench/raw_curl.c) vs LuaSec, over
# HTTPS and plain HTTP (bench/http.lua).
build/raw_curl: bench/raw_curl.c
	@mkdir -p build
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror $(CURL_CFLAGS) $< -o $@ $(CURL_LIBS)

bench-http: deps
	@$(MAKE) -s build build/raw_curl
	@LUA_PATH='$(LUA54_PATH);spec/?.lua' LUA_CPATH='build/5.4/?.so;;' lua5.4 bench/http.lua $(ARGS)

# Where client:create's time over raw libcurl goes with cold caches: a
# callgrind cache model of raw-same, c-path and the client (bench/cold.lua).
build/%/bench/evict.so: bench/evict.c
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -O2 -fPIC -shared -Wall -Wextra -Werror -I/usr/include/lua$* $< -o $@

bench-cold: deps
	@$(MAKE) -s build build/raw_curl build/5.4/bench/evict.so
	@LUA_PATH='$(LUA54_PATH);spec/?.lua' LUA_CPATH='build/5.4/?.so;build/5.4/bench/?.so;;' lua5.4 bench/cold.lua

clean:
	rm -rf build

# ---------------------------------------------------------------- hardening
# make fuzz [FUZZ_SECONDS=60] [FUZZ_HARNESSES="codec response webhook"]
#   libFuzzer harnesses (fuzz/), core built with clang and ASan+UBSan. Each
#   runs FUZZ_SECONDS on a copy of its seed corpus (fuzz/corpus/<h>/) under
#   build/fuzz/corpus/, so the repository's corpus only grows on purpose.
#   Crashes land in build/fuzz/crashes/<h>/.
# make soak [SOAK_ENCODES=1000000 SOAK_CREATES=100000]
# make static                cppcheck + clang-tidy on src/
# make docs                  LDoc guides + reference into build/docs (config.ld), links checked
FUZZ_SECONDS   ?= 60
FUZZ_HARNESSES ?= codec response webhook
FUZZ_CC        ?= clang
FUZZ_DIR       := build/fuzz
FUZZ_SAN       := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS    := -std=c99 -D_POSIX_C_SOURCE=200809L -g -O1 -fno-omit-frame-pointer \
                  -Wall -Wextra -Wno-unused-parameter $(FUZZ_SAN) -I/usr/include/lua5.4 $(CURL_CFLAGS)
FUZZ_OBJS      := $(patsubst src/%.c,$(FUZZ_DIR)/obj/%.o,$(SRCS))
FUZZ_BINS      := $(patsubst %,$(FUZZ_DIR)/%,$(FUZZ_HARNESSES))
SOAK_ENCODES   ?= 1000000
SOAK_CREATES   ?= 100000

.PHONY: fuzz fuzz-build soak static docs
.SECONDARY: $(FUZZ_OBJS)

$(FUZZ_DIR)/obj/%.o: src/%.c src/*.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/%: fuzz/driver.c $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -DFUZZ_HARNESS='"$*"' \
	  -DFUZZ_ROOT='"$(CURDIR)"' fuzz/driver.c $(FUZZ_OBJS) -o $@ -llua5.4 $(CURL_LIBS) -lm

fuzz-build:
	@scripts/deps fuzz
	@$(MAKE) -s $(FUZZ_BINS)

fuzz: fuzz-build
	@scripts/run-fuzz $(FUZZ_SECONDS) $(FUZZ_HARNESSES)

soak: deps
	@$(MAKE) -s build
	@SOAK_ENCODES=$(SOAK_ENCODES) SOAK_CREATES=$(SOAK_CREATES) LUA_PATH='$(LUA54_PATH)' \
	  LUA_CPATH='build/5.4/?.so;;' lua5.4 bench/soak.lua

static:
	@scripts/deps static
	@scripts/suite-static

# Guides (docs/guide/*.md) and the reference of the public modules; then
# every local link of the result is checked (scripts/check-doc-links).
docs:
	@scripts/deps docs
	@rm -rf build/docs
	ldoc -q .
	@lua5.4 scripts/check-doc-links build/docs
	@echo "docs: build/docs/index.html"

# Cosocket vs blocking curl transport in one nginx worker (not a test).
bench-openresty: deps
	@$(MAKE) -s build
	@$(MAKE) -s LUA_VERSION=5.1 build
	@LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' LUA_CPATH='build/5.4/?.so;;' lua5.4 bench/openresty.lua

# 10,000 creates at concurrency 64 against the sandbox with 20 ms latency,
# and the sequential loop (bounded, extrapolated) for comparison.
bench-bulk: deps
	@$(MAKE) -s build
	@LUA_PATH='$(LUA54_PATH)' LUA_CPATH='build/5.4/?.so;;' lua5.4 bench/bulk.lua $(ARGS)
