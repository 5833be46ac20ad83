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

CFLAGS_BASE := -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -Wall -Wextra -Werror \
               -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CURL_CFLAGS := $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS   := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)

ifeq ($(SANITIZE),1)
  BUILD   := build/$(LUA_VERSION)-asan
  OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDSAN   := -fsanitize=address,undefined
endif

SRCS := $(wildcard src/*.c)
OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
SO   := $(BUILD)/portone/link/core.so

LUA54_PATH := lua/?.lua;lua/?/init.lua;;

.PHONY: all build deps test test-unit test-luajit test-asan test-valgrind lint \
        demo sandbox bench bench-encode bench-openresty bench-bulk clean

all: $(SO)
build: $(SO)

$(BUILD)/obj/%.o: src/%.c src/*.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) -I$(LUA_INC) $(CURL_CFLAGS) $(CFLAGS) -c $< -o $@

$(SO): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDSAN) $(OPT) -o $@ $(OBJS) $(CURL_LIBS) $(LDFLAGS)

deps:
	@scripts/deps

# The whole gate: lint, specs under Lua 5.4 and LuaJIT, then the C core
# under ASan+UBSan and under valgrind. Each suite leaves TAP in build/results.
test: deps
	@scripts/test-all

lint: deps
	luacheck -q lua spec bin bench examples

demo: deps
	@$(MAKE) -s build
	@LUA_PATH='$(LUA54_PATH)' LUA_CPATH='build/5.4/?.so;;' lua5.4 scripts/demo.lua

sandbox: deps
	@$(MAKE) -s build
	@LUA_PATH='$(LUA54_PATH)' LUA_CPATH='build/5.4/?.so;;' lua5.4 bin/portone-link sandbox $(ARGS)

bench: bench-encode

bench-encode: deps
	@$(MAKE) -s build
	@LUA_PATH='$(LUA54_PATH)' LUA_CPATH='build/5.4/?.so;;' lua5.4 bench/encode.lua

clean:
	rm -rf build
