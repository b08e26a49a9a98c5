// bug_oob.cu - PLANTED BUG, expected to fail: a row-per-warp RMSNorm forward (the pattern of
// kernels/norm.cuh) whose out-of-bounds guard is off by one (`row > N` instead of
// `row >= N`). With N not a multiple of the warps per block, one warp normalises row N,
// one past the end: AddressSanitizer must report a heap-buffer-overflow on the emulated
// build, because cudaMalloc is emulated with allocations of the exact size
// (tests/kernels.sh: kernels/bug_oob/asan). llm.c's fused_residual_forward_kernel5 had this bug.
#include "../../kernels/common.cuh"
#include "test_util.h"

__global__ void rmsnorm_oob_kernel(float* out, const float* inp, const float* weight, int N, int C, float eps) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row > N) return;  // BUG: must be row >= N
    const float* x = inp + (size_t)row * C;
    float ss = 0.0f;
    for (int i = lane; i < C; i += 32) ss += x[i] * x[i];
    ss = warp_reduce_sum(ss);
    const float s = rsqrtf(ss / C + eps);
    for (int i = lane; i < C; i += 32) out[(size_t)row * C + i] = x[i] * s * weight[i];
}

int main() {
    skip_without_device("bug_oob");
    printf("planted bug: out-of-bounds guard `row > N` (AddressSanitizer must report a heap-buffer-overflow)\n");
    const int N = 13, C = 48;
    Rng rng(test_seed());
    std::vector<float> x = rng.normal((size_t)N * C), w = rng.normal(C, 1.0f, 0.2f);
    DeviceBuffer<float> d_x((size_t)N * C), d_w(C), d_out((size_t)N * C);
    d_x.upload(x);
    d_w.upload(w);
    d_out.poison();
    launch_kernel(rmsnorm_oob_kernel, dim3(ceil_div(N, 8)), dim3(256), 0, 0, d_out.ptr, d_x.ptr, d_w.ptr, N, C, 1e-6f);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<double> ref((size_t)N * C);
    for (int r = 0; r < N; r++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[(size_t)r * C + c] * x[(size_t)r * C + c];
        double s = 1.0 / std::sqrt(ss / C + 1e-6);
        for (int c = 0; c < C; c++) ref[(size_t)r * C + c] = x[(size_t)r * C + c] * s * w[c];
    }
    Checker ck;
    ck.check("out", d_out.download(), ref, 1e-5, 1e-5);
    return ck.finish("bug_oob");
}
