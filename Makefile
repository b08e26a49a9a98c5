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
# The CUDA trainer's own rules follow them below.

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

# ---------------------------------------------------------------------------------------
# The CUDA trainer (train_gpt.cu) and its test (test_gpt.cu), built with the emulation and
# nvcc settings of dev/test/kernels.mk (which also gates both sources with nvcc for sm_80 +
# sm_90: $(KBUILD)/nvcc/gate/<name>.o):
#   $(BUILD)/cuda/test_gpt_cuda_emu    test_gpt.cu through the CPU emulation (g++ -O2)
#   $(BUILD)/cuda/train_gpt_cuda_emu   train_gpt.cu through the CPU emulation (bad-input tests, tiny runs)
#   $(BUILD)/cuda/test_nccl_emu_mpi    dev/test/test_nccl.cu with MPI, for mpirun -np N in the emulation
#   $(BUILD)/cuda/train_gpt_nvcc       nvcc builds, linked against cudart, cuBLASLt, NCCL (and MPI for
#   $(BUILD)/cuda/test_gpt_nvcc        the trainer where installed); no NVML, no driver library: on a
#                                      machine without a GPU they say so
# tests/cuda.sh runs them; scripts/gpu_check.sh runs the nvcc builds on a GPU.
CUDA_BUILD := $(BUILD)/cuda

# MPI for the trainer's data-parallel launch (kernels/nccl_wrap.cuh), where Open MPI's
# headers are installed (Debian: libopenmpi-dev; found through `mpicxx --showme`); without
# them the trainer is built for one process.
MPI_CXX := $(shell command -v mpicxx 2>/dev/null)
ifneq ($(MPI_CXX),)
  MPI_INC_DIRS := $(patsubst -I%,%,$(filter -I%,$(shell $(MPI_CXX) --showme:compile 2>/dev/null)))
  ifneq ($(wildcard $(addsuffix /mpi.h,$(MPI_INC_DIRS))),)
    MPI_FLAGS := -DUSE_MPI $(addprefix -isystem ,$(MPI_INC_DIRS))
    MPI_LIBS  := $(filter -L%,$(shell $(MPI_CXX) --showme:link 2>/dev/null)) -lmpi
  endif
endif

ifneq ($(filter gxx,$(KEMU_FLAVORS)),)
CUDA_EMU_BINS := $(CUDA_BUILD)/test_gpt_cuda_emu $(CUDA_BUILD)/train_gpt_cuda_emu
TEST_DEPS += $(CUDA_EMU_BINS)
$(CUDA_BUILD)/test_gpt_cuda_emu: test_gpt.cu $(KBUILD)/gxx/cuda_emu.o
	@mkdir -p $(@D)
	$(EMU_GXX) $(EMU_INCLUDE) -x c++ $< -x none $(KBUILD)/gxx/cuda_emu.o -o $@
$(CUDA_BUILD)/train_gpt_cuda_emu: train_gpt.cu $(KBUILD)/gxx/cuda_emu.o
	@mkdir -p $(@D)
	$(EMU_GXX) $(MPI_FLAGS) $(EMU_INCLUDE) -x c++ $< -x none $(KBUILD)/gxx/cuda_emu.o -o $@ $(MPI_LIBS)
ifneq ($(MPI_FLAGS),)
# the trainer as built where MPI is absent (its refusal of a several-process launch is tested)
CUDA_EMU_BINS += $(CUDA_BUILD)/train_gpt_cuda_emu_nompi $(CUDA_BUILD)/test_nccl_emu_mpi
TEST_DEPS += $(CUDA_BUILD)/train_gpt_cuda_emu_nompi $(CUDA_BUILD)/test_nccl_emu_mpi
$(CUDA_BUILD)/train_gpt_cuda_emu_nompi: train_gpt.cu $(KBUILD)/gxx/cuda_emu.o
	@mkdir -p $(@D)
	$(EMU_GXX) $(EMU_INCLUDE) -x c++ $< -x none $(KBUILD)/gxx/cuda_emu.o -o $@
# the collectives' test with MPI, for mpirun -np N (the kernel-test builds are single-process)
$(CUDA_BUILD)/test_nccl_emu_mpi: dev/test/test_nccl.cu $(KBUILD)/gxx/cuda_emu.o
	@mkdir -p $(@D)
	$(EMU_GXX) $(MPI_FLAGS) $(EMU_INCLUDE) -x c++ $< -x none $(KBUILD)/gxx/cuda_emu.o -o $@ $(MPI_LIBS)
endif
endif

ifneq ($(NVCC),)
CUDA_NVCC_BINS := $(CUDA_BUILD)/train_gpt_nvcc $(CUDA_BUILD)/test_gpt_nvcc
TEST_DEPS += $(CUDA_NVCC_BINS)
ALL_TARGETS += $(CUDA_BUILD)/train_gpt_nvcc
$(KBUILD)/nvcc/gate/train_gpt.o: NVCC_FLAGS += $(MPI_FLAGS)
$(CUDA_BUILD)/train_gpt_nvcc: CUDA_LINK_MPI = $(MPI_LIBS)
$(CUDA_BUILD)/%_nvcc: $(KBUILD)/nvcc/gate/%.o
	@mkdir -p $(@D)
	$(NVCC) $(NVCC_ARCHS) $< -o $@ -lcublasLt -lnccl -Xcompiler -fopenmp $(CUDA_LINK_MPI)
endif

-include $(wildcard $(CUDA_BUILD)/*.d)

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
