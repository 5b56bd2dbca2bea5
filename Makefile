# dsinfer — make | make CUDA=1 | make test | make bench | make asan | make fuzz | make demo
CC      ?= gcc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
SAN     ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Iinclude -Isrc -pthread $(SAN)
LDLIBS  += -lm -pthread $(SAN) -lcjson
BUILD   ?= build

SRC     := $(wildcard src/*.c)
OBJ     := $(SRC:src/%.c=$(BUILD)/src/%.o)
TESTSRC := $(wildcard tests/test_*.c)
TESTOBJ := $(TESTSRC:tests/%.c=$(BUILD)/tests/%.o)
LIB     := $(BUILD)/libdsinfer.a
BIN     ?= dsinfer
# CLI-side helpers (eval task generators, plot writer): public API only, linked into the CLI
# and the test binary.
TOOLSRC := $(filter-out tools/dsinfer.c,$(wildcard tools/*.c))
TOOLOBJ := $(TOOLSRC:tools/%.c=$(BUILD)/tools/%.o)

ifeq ($(CUDA),1)
NVCC    ?= nvcc
CUDA_HOME ?= $(abspath $(dir $(shell which $(NVCC)))..)
CUSRC   := $(wildcard src/cuda/*.cu)
CUOBJ   := $(CUSRC:src/cuda/%.cu=$(BUILD)/cuda/%.o)
CFLAGS  += -DDS_CUDA=1
LDLIBS  += -L$(CUDA_HOME)/lib64 -lcudart -lcublas -lstdc++
NVFLAGS ?= -O3 -std=c++17 -Iinclude -Isrc -gencode arch=compute_90,code=sm_90 \
           -gencode arch=compute_90,code=compute_90
endif

.PHONY: all test asan fuzz clean demo bench gpu-check gpu-build FORCE
all: $(BIN)

# $(call build_commit,PATHS): the short HEAD, plus "+changes" when PATHS differ from it (shell
# text for a recipe; version.h and gpu-build's COMMIT both use it)
build_commit = $$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$$(git diff --quiet HEAD -- $(1) 2>/dev/null || echo +changes)

# The commit this build comes from ("+changes" when src/include/tools differ from it), for
# `dsinfer --version` and the result files eval writes. Rewritten only when it changes, so a
# new commit recompiles the few files that include it and nothing else.
$(BUILD)/version.h: FORCE
	@mkdir -p $(dir $@)
	@v="$(call build_commit,src include tools)"; \
	printf '#define DS_BUILD_COMMIT "%s"\n' "$$v" > $@.tmp; cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
FORCE:

$(BUILD)/src/%.o: src/%.c $(wildcard src/*.h) include/dsinfer.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/cuda/%.o: src/cuda/%.cu $(wildcard src/*.h src/cuda/*.h src/cuda/*.cuh)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(LIB): $(OBJ) $(CUOBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/tools/%.o: tools/%.c $(wildcard tools/*.h) include/dsinfer.h $(BUILD)/version.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(BUILD) -c $< -o $@

$(BIN): tools/dsinfer.c $(TOOLOBJ) $(LIB) $(BUILD)/version.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itools -I$(BUILD) $< $(TOOLOBJ) $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/%.o: tests/%.c tests/test.h $(wildcard src/*.h tools/*.h) include/dsinfer.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -Itools -c $< -o $@

$(BUILD)/test_dsinfer: $(TESTOBJ) $(BUILD)/tests/test_main.o $(TOOLOBJ) $(LIB)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

# The one test command (README, .ci/run): unit + integration tests, then the numpy reference
# checks; ends with the combined "N passed, N failed" line.
test: $(BIN) $(BUILD)/test_dsinfer
	@tests/run.sh $(BUILD) $(BIN)

# Whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	$(MAKE) BUILD=build-asan BIN=build-asan/dsinfer OPT=-O1 \
	        SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

# libFuzzer target for the GGUF reader; FUZZ_SECONDS=600 for the acceptance run.
FUZZ_SECONDS ?= 60
fuzz:
	@mkdir -p build-fuzz
	clang -g -O1 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -fsanitize=fuzzer,address,undefined \
	      tests/fuzz/fuzz_gguf.c src/gguf.c src/util.c src/quant.c src/quant_avx2.c src/quant_avx512.c \
	      -fno-sanitize-recover=undefined -lm -o build-fuzz/fuzz_gguf
	@mkdir -p build-fuzz/corpus
	build-fuzz/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -max_len=65536 build-fuzz/corpus tests/fuzz/seeds

demo: dsinfer
	scripts/setup
	./dsinfer run -p "The capital of France is" -n 32 --temp 0

bench: dsinfer
	bench/vs-llamacpp.sh

# gpu-build: everything the GPU machine runs (build here, carry build-cuda/ there).
# gpu-check: every GPU kernel against the CPU path on random inputs (needs a GPU).
gpu-build:
	$(MAKE) CUDA=1 BUILD=build-cuda BIN=build-cuda/dsinfer build-cuda/dsinfer build-cuda/gpu_check build-cuda/e2e_bench \
	        build-cuda/libdsattn.so build-cuda/libdsattn-trace.so build-cuda/read_bw \
	        build-cuda/gather_bw
	@# the GPU machine has no libcjson: carry the library beside the binaries (LD_LIBRARY_PATH)
	@mkdir -p build-cuda/lib && cp -L $$(ldconfig -p | awk '/libcjson.so.1 /{print $$NF; exit}') build-cuda/lib/
	@# the commit the build came from (the GPU machine's copy of the tree has no current history)
	@echo "$(call build_commit,src include tools tests bench)" > build-cuda/COMMIT
gpu-check: gpu-build
	build-cuda/gpu_check

ifeq ($(CUDA),1)
$(BUILD)/gpu_check: tests/gpu/gpu_check.c $(LIB) $(wildcard src/*.h)
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include $< $(LIB) $(LDLIBS) -o $@
$(BUILD)/e2e_bench: bench/gpu/e2e_bench.c $(LIB) $(wildcard src/*.h)
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/read_bw: bench/gpu/read_bw.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $< -o $@
$(BUILD)/gather_bw: bench/gpu/gather_bw.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $< -o $@

# The attention kernels alone as a shared library, for bench/gpu/op_bench.py (ctypes), which
# times them beside torch SDPA and the paper's kernels in one process.
ATTN_CU := src/cuda/attn.cu src/cuda/attn_fused.cu src/cuda/attn_mma.cu
ATTN_DEPS := $(ATTN_CU) src/cuda/attn_impl.cuh src/cuda/label.cuh src/cuda/pdl.cuh src/backend.h src/common.h
$(BUILD)/libdsattn.so: $(ATTN_DEPS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -shared -Xcompiler -fPIC $(ATTN_CU) -o $@
# The same with per-block phase timestamps (op_bench.py --trace).
$(BUILD)/libdsattn-trace.so: $(ATTN_DEPS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -DDS_TRACE -shared -Xcompiler -fPIC $(ATTN_CU) -o $@
endif

clean:
	rm -rf build build-asan build-fuzz dsinfer
