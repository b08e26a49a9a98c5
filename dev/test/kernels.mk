# dev/test/kernels.mk - CUDA kernel tests, included by the top-level Makefile.
#
# Every test source dev/test/<name>.cu is built up to four ways:
#   $(BUILD)/kernels/gxx/<name>    g++, CPU emulation (dev/cuda_emu)
#   $(BUILD)/kernels/tsan/<name>   clang++ -fsanitize=thread, CPU emulation
#   $(BUILD)/kernels/asan/<name>   clang++ -fsanitize=address,undefined, CPU emulation
#   $(BUILD)/kernels/nvcc/<name>   nvcc for sm_80 + sm_90 (the "nvcc gate": -Werror, ptxas -v
#                                  with --warn-on-spills as errors); runs only on a real GPU
# tests/kernels.sh runs them. Adding a test or a CUDA binary: add its name to KTEST_NAMES /
# KBUG_NAMES (tests) or NVCC_GATE_SRCS (any other .cu to gate, e.g. train_gpt.cu).

CUDA_HOME   ?= /usr/local/cuda
CUDA_INC    := $(CUDA_HOME)/include
CLANGXX     ?= $(shell command -v clang++-14 2>/dev/null || command -v clang++ 2>/dev/null)
KBUILD      := $(BUILD)/kernels

# tests that must pass (every flavour), and planted-bug tests that must be caught, each
# built in the flavour whose tool must catch it (see tests/kernels.sh)
KTEST_NAMES := test_norm test_gemm test_emu test_attention test_classifier test_flash_attention test_activation test_embedding test_rope \
               test_matmul test_adamw test_gradnorm test_nccl
KBUG_NAMES  := bug_nosync bug_oob bug_shfl bug_divergent bug_deadlock bug_stream_order
KBUG_FLAVOR_bug_nosync    := tsan
KBUG_FLAVOR_bug_oob       := asan
KBUG_FLAVOR_bug_shfl      := gxx
KBUG_FLAVOR_bug_divergent := gxx
KBUG_FLAVOR_bug_deadlock  := gxx
KBUG_FLAVOR_bug_stream_order := gxx
# CUDA sources gated with nvcc besides the tests (one line each; they must exist)
NVCC_GATE_SRCS := $(wildcard train_gpt.cu test_gpt.cu)

# ---------------------------------------------------------------------------------------
# emulated builds
EMU_FLAGS   := -std=c++17 -g -Wall -Wextra -Werror -Wno-unknown-pragmas -DCUDA_EMU -pthread \
               -Idev/cuda_emu/include -isystem $(CUDA_INC) -MMD -MP
EMU_INCLUDE := -include dev/cuda_emu/cuda_emu.h
EMU_GXX      = g++ -O2 $(EMU_FLAGS)
EMU_TSAN     = $(CLANGXX) -O1 -fsanitize=thread $(EMU_FLAGS)
EMU_ASAN     = $(CLANGXX) -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer $(EMU_FLAGS)

KEMU_FLAVORS :=
ifneq ($(wildcard $(CUDA_INC)/cuda_bf16.h),)
KEMU_FLAVORS += gxx
ifneq ($(CLANGXX),)
KEMU_FLAVORS += tsan asan
endif
endif

KALL_NAMES := $(KTEST_NAMES) $(KBUG_NAMES)
KEMU_BINS  := $(foreach f,$(KEMU_FLAVORS),$(addprefix $(KBUILD)/$(f)/,$(KTEST_NAMES))) \
              $(foreach b,$(KBUG_NAMES),$(if $(filter $(KBUG_FLAVOR_$(b)),$(KEMU_FLAVORS)),$(KBUILD)/$(KBUG_FLAVOR_$(b))/$(b)))
TEST_DEPS  += $(KEMU_BINS)

define KEMU_RULES
$(KBUILD)/$(1)/cuda_emu.o: dev/cuda_emu/cuda_emu.cpp
	@mkdir -p $$(@D)
	$$(EMU_$(2)) -c $$< -o $$@
$(KBUILD)/$(1)/%: dev/test/%.cu $(KBUILD)/$(1)/cuda_emu.o
	@mkdir -p $$(@D)
	$$(EMU_$(2)) $(EMU_INCLUDE) -x c++ $$< -x none $(KBUILD)/$(1)/cuda_emu.o -o $$@
endef
$(eval $(call KEMU_RULES,gxx,GXX))
$(eval $(call KEMU_RULES,tsan,TSAN))
$(eval $(call KEMU_RULES,asan,ASAN))

-include $(wildcard $(KBUILD)/*/*.d $(KBUILD)/nvcc/gate/*.d)

# ---------------------------------------------------------------------------------------
# nvcc gates: each .cu compiles once (host once, device for both archs) to a cached object;
# ptxas -v output (registers, shared memory, spills) is kept next to it in <name>.ptxas.txt
# and summarised by `make kernels-ptxas-report`.
NVCC_ARCHS  := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVCC_FLAGS  := -std=c++17 -O3 $(NVCC_ARCHS) -Werror all-warnings -Xptxas -v,--warn-on-spills,--warning-as-error \
               -Xcompiler -Wall,-Wextra,-Werror,-Wno-unknown-pragmas,-fopenmp -MMD -MP
NVCC_LIBS   := -lcublasLt -lnccl -Xcompiler -fopenmp

ifneq ($(NVCC),)
KNVCC_BINS := $(addprefix $(KBUILD)/nvcc/,$(KALL_NAMES))
KNVCC_GATES := $(patsubst %.cu,$(KBUILD)/nvcc/gate/%.o,$(NVCC_GATE_SRCS))
TEST_DEPS  += $(KNVCC_BINS) $(KNVCC_GATES)

$(KBUILD)/nvcc/%.o: dev/test/%.cu
	@mkdir -p $(@D)
	@echo "nvcc gate $< (sm_80, sm_90)"
	@$(NVCC) $(NVCC_FLAGS) -c $< -o $@ > $(@:.o=.ptxas.txt) 2>&1 || { cat $(@:.o=.ptxas.txt); rm -f $@; exit 1; }
$(KBUILD)/nvcc/gate/%.o: %.cu
	@mkdir -p $(@D)
	@echo "nvcc gate $< (sm_80, sm_90)"
	@$(NVCC) $(NVCC_FLAGS) -c $< -o $@ > $(@:.o=.ptxas.txt) 2>&1 || { cat $(@:.o=.ptxas.txt); rm -f $@; exit 1; }
$(KBUILD)/nvcc/%: $(KBUILD)/nvcc/%.o
	$(NVCC) $(NVCC_ARCHS) $< -o $@ $(NVCC_LIBS)
.PRECIOUS: $(KBUILD)/nvcc/%.o
endif

# (the CUDA trainer and its test: the top-level Makefile)

.PHONY: kernels kernels-ptxas-report
kernels: $(KEMU_BINS) $(KNVCC_BINS) $(KNVCC_GATES)
kernels-ptxas-report: $(KNVCC_BINS) $(KNVCC_GATES)
	@bash dev/test/ptxas_report.sh $(KBUILD)/nvcc

# the kernel test names, for scripts (scripts/gpu_check.sh)
print-ktests:
	@echo $(KTEST_NAMES)
.PHONY: print-ktests
