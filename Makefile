# Mix-LN trainer build.  `make` builds what this machine can; `make test` builds
# and runs every test (scripts/run_tests.sh prints "N passed, N failed").
#
# Pieces of the build that belong to one part of the project live next to it
# and are included here (each adds to ALL_TARGETS / TEST_DEPS):
#   dev/test/kernels.mk   CUDA kernel tests: emulated (g++, TSan, ASan+UBSan) and nvcc gates

BUILD    ?= build
CXX      ?= g++
CXXFLAGS ?= -O3 -march=native -std=c++17 -Wall -Wextra -Wno-unused-parameter
OMPFLAGS ?= -fopenmp
NVCC     ?= $(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc))
PYTHON   ?= /usr/bin/python3

ALL_TARGETS :=
TEST_DEPS   :=

.PHONY: all test clean
all: all-targets

-include dev/test/kernels.mk

all-targets: $(ALL_TARGETS)

test: $(ALL_TARGETS) $(TEST_DEPS)
	bash scripts/run_tests.sh

clean:
	rm -rf $(BUILD)
