// bug_divergent.cu - PLANTED BUG, expected to fail: llm.c's layernorm_backward_kernel10
// pattern. Warps loop over rows (row = warp, warp + 8, ...) with a __syncthreads() inside
// the loop and another after it; when N is not a multiple of the 8 warps, some warps leave
// the loop while others wait at the in-loop barrier, so threads of one phase wait at
// different barriers (undefined behaviour on a GPU: a hang or silent garbage). The
// emulation must abort with "divergent __syncthreads()" and both file:line sites
// (tests/kernels.sh: kernels/bug_divergent/gxx).
#include "../../kernels/common.cuh"
#include "test_util.h"

__global__ void row_sums_divergent_kernel(float* out, const float* inp, int N, int C) {
    __shared__ float acc[32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    if (threadIdx.x < 32) acc[threadIdx.x] = 0.0f;
    __syncthreads();
    for (int row = warp; row < N; row += nwarps) {
        float s = 0.0f;
        for (int i = lane; i < C; i += 32) s += inp[(size_t)row * C + i];
        s = warp_reduce_sum(s);
        if (lane == 0) out[row] = s;
        __syncthreads();  // BUG: reached a different number of times by different warps
    }
    __syncthreads();
    if (threadIdx.x == 0) acc[0] += 1.0f;
}

int main() {
    skip_without_device("bug_divergent");
    printf("planted bug: __syncthreads() inside a loop with warp-dependent trip counts (the emulation must abort: divergent __syncthreads)\n");
    const int N = 13, C = 64;
    Rng rng(test_seed());
    std::vector<float> x = rng.normal((size_t)N * C);
    DeviceBuffer<float> d_x((size_t)N * C), d_out(N);
    d_x.upload(x);
    d_out.poison();
    launch_kernel(row_sums_divergent_kernel, dim3(1), dim3(256), 0, 0, d_out.ptr, d_x.ptr, N, C);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<double> ref(N, 0.0);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++) ref[r] += x[(size_t)r * C + c];
    Checker ck;
    ck.check("row sums", d_out.download(), ref, 1e-4, 1e-5);
    return ck.finish("bug_divergent");
}
