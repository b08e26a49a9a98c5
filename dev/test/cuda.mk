# dev/test/cuda.mk - the CUDA trainer (train_gpt.cu) and its test (test_gpt.cu); included by
# dev/test/kernels.mk (which also gates both sources with nvcc for sm_80 + sm_90).
#
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
