# dev/test/cuda.mk - the CUDA trainer (train_gpt.cu) and its test (test_gpt.cu); included by
# dev/test/kernels.mk (which also gates both sources with nvcc for sm_80 + sm_90).
#
#   $(BUILD)/cuda/test_gpt_cuda_emu    test_gpt.cu through the CPU emulation (g++ -O2)
#   $(BUILD)/cuda/train_gpt_cuda_emu   train_gpt.cu through the CPU emulation (bad-input tests, tiny runs)
#   $(BUILD)/cuda/train_gpt_nvcc       nvcc builds, linked against cudart + cuBLASLt only (no NVML,
#   $(BUILD)/cuda/test_gpt_nvcc        no driver library): on a machine without a GPU they say so
# tests/cuda.sh runs them; scripts/gpu_check.sh runs the nvcc builds on a GPU.

CUDA_BUILD := $(BUILD)/cuda

ifneq ($(filter gxx,$(KEMU_FLAVORS)),)
CUDA_EMU_BINS := $(CUDA_BUILD)/test_gpt_cuda_emu $(CUDA_BUILD)/train_gpt_cuda_emu
TEST_DEPS += $(CUDA_EMU_BINS)
$(CUDA_BUILD)/test_gpt_cuda_emu: test_gpt.cu $(KBUILD)/gxx/cuda_emu.o
	@mkdir -p $(@D)
	$(EMU_GXX) $(EMU_INCLUDE) -x c++ $< -x none $(KBUILD)/gxx/cuda_emu.o -o $@
$(CUDA_BUILD)/train_gpt_cuda_emu: train_gpt.cu $(KBUILD)/gxx/cuda_emu.o
	@mkdir -p $(@D)
	$(EMU_GXX) $(EMU_INCLUDE) -x c++ $< -x none $(KBUILD)/gxx/cuda_emu.o -o $@
endif

ifneq ($(NVCC),)
CUDA_NVCC_BINS := $(CUDA_BUILD)/train_gpt_nvcc $(CUDA_BUILD)/test_gpt_nvcc
TEST_DEPS += $(CUDA_NVCC_BINS)
ALL_TARGETS += $(CUDA_BUILD)/train_gpt_nvcc
$(CUDA_BUILD)/%_nvcc: $(KBUILD)/nvcc/gate/%.o
	@mkdir -p $(@D)
	$(NVCC) $(NVCC_ARCHS) $< -o $@ -lcublasLt -Xcompiler -fopenmp
endif

-include $(wildcard $(CUDA_BUILD)/*.d)
