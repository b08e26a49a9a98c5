# Mix-LN trainer build.  `make` builds what this machine can; `make test` builds
# and runs every test (scripts/run_tests.sh ends with "N passed, N failed").
#
#   make                 build/train_gpt, build/test_gpt (+ CUDA pieces where nvcc exists)
#   make test            every test; ONLY=regex make test runs a subset
#   make reference       regenerate dev/reference/*.bin from the PyTorch reference
#   make bench           CPU benchmark: train_gpt vs PyTorch, and the machine's GEMM rate
#
# Pieces of the build that belong to one part of the project live next to it
# and are included here (each adds to ALL_TARGETS / TEST_DEPS):
#   dev/test/kernels.mk   CUDA kernel tests: emulated (g++, TSan, ASan+UBSan) and nvcc gates
#   data/data.mk          the tokenizer decode-file reader's unit tests

BUILD    ?= build
CXX      ?= g++
CXXFLAGS ?= -O3 -march=native -std=c++17 -Wall -Wextra -Wno-unused-parameter -Werror
OMPFLAGS ?= -fopenmp
NVCC     ?= $(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc))
PYTHON   ?= /usr/bin/python3

# BLAS: Debian's OpenMP build of OpenBLAS (libopenblas-openmp-dev), pinned with an
# rpath so the pthread build can't be picked up at run time. Without it the
# matmuls fall back to plain loops (-DNO_BLAS), correct but far slower.
OPENBLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
OPENBLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
ifneq ($(wildcard $(OPENBLAS_INC)/cblas.h),)
  BLAS_FLAGS := -I$(OPENBLAS_INC)
  BLAS_LIBS  := -L$(OPENBLAS_DIR) -Wl,-rpath,$(OPENBLAS_DIR) -lopenblas
else
  $(warning OpenBLAS (OpenMP build) not found: building with plain-loop matmuls; apt-get install libopenblas-openmp-dev)
  BLAS_FLAGS := -DNO_BLAS
  BLAS_LIBS  :=
endif

HOST_HEADERS := $(wildcard common/*.h) dev/test/tensor_checker.h
ALL_TARGETS := $(BUILD)/train_gpt $(BUILD)/test_gpt
TEST_DEPS   := $(BUILD)/test_gpt_noblas $(BUILD)/test_gpt_asan $(BUILD)/test_host $(BUILD)/test_host_asan

.PHONY: all test test-deps clean reference bench
all: all-targets

-include dev/test/kernels.mk
-include data/data.mk

all-targets: $(ALL_TARGETS)

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/train_gpt: train_gpt.cpp $(HOST_HEADERS) | $(BUILD)
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) $(BLAS_FLAGS) $< -o $@ $(BLAS_LIBS) -lm

$(BUILD)/test_gpt: test_gpt.cpp train_gpt.cpp $(HOST_HEADERS) | $(BUILD)
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) $(BLAS_FLAGS) $< -o $@ $(BLAS_LIBS) -lm

# the plain-loop matmul fallback, checked against the same reference states
$(BUILD)/test_gpt_noblas: test_gpt.cpp train_gpt.cpp $(HOST_HEADERS) | $(BUILD)
	$(CXX) $(CXXFLAGS) $(OMPFLAGS) -DNO_BLAS $< -o $@ -lm

# AddressSanitizer + UBSan build of the same test (catches overruns the numbers might not)
SAN_FLAGS := -O1 -g -std=c++17 -Wall -Wextra -Wno-unused-parameter -Werror -fsanitize=address,undefined -fno-sanitize-recover=all
$(BUILD)/test_gpt_asan: test_gpt.cpp train_gpt.cpp $(HOST_HEADERS) | $(BUILD)
	$(CXX) $(SAN_FLAGS) $(OMPFLAGS) $(BLAS_FLAGS) $< -o $@ $(BLAS_LIBS) -lm

# unit tests of the shared host code (shards, loader, checkpoints, flags, schedule)
$(BUILD)/test_host: dev/unit/test_host.cpp dev/unit/unit_test.h $(HOST_HEADERS) | $(BUILD)
	$(CXX) $(CXXFLAGS) $< -o $@
$(BUILD)/test_host_asan: dev/unit/test_host.cpp dev/unit/unit_test.h $(HOST_HEADERS) | $(BUILD)
	$(CXX) $(SAN_FLAGS) $< -o $@

# libFuzzer targets for the binary readers (clang; run by tests/reliability.sh)
CLANG_FUZZ := $(shell command -v clang++-14 2>/dev/null || command -v clang++ 2>/dev/null)
FUZZ_NAMES := checkpoint shard refstate tokenizer
ifneq ($(CLANG_FUZZ),)
TEST_DEPS += $(addprefix $(BUILD)/fuzz/fuzz_,$(FUZZ_NAMES))
endif
$(BUILD)/fuzz/fuzz_%: dev/fuzz/fuzz_readers.cpp $(HOST_HEADERS)
	@mkdir -p $(@D)
	$(CLANG_FUZZ) -O1 -g -std=c++17 -DFUZZING -DFUZZ_$(shell echo $* | tr a-z A-Z) -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined $< -o $@

test-deps: $(ALL_TARGETS) $(TEST_DEPS)

test: test-deps
	bash scripts/run_tests.sh

reference:
	$(PYTHON) dev/make_reference.py --out dev/reference

bench: $(BUILD)/train_gpt
	bash scripts/bench_cpu.sh

clean:
	rm -rf $(BUILD)
