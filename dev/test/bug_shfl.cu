// bug_shfl.cu - PLANTED BUG, expected to fail: a row-per-warp LayerNorm forward whose warp
// reduction stops one shuffle early (offsets 16, 8, 4, 2 - the xor with 1 is missing), so
// every lane holds the sum of only half the warp. No tool flags this; the numeric check
// against the fp64 reference must (tests/kernels.sh: kernels/bug_shfl/gxx, and on a GPU
// kernels/bug_shfl/gpu).
#include "../../kernels/common.cuh"
#include "test_util.h"

__device__ float warp_sum_wrong(float v) {
    for (int offset = 16; offset > 1; offset >>= 1)  // BUG: must be offset > 0
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__global__ void layernorm_shfl_kernel(float* out, const float* inp, const float* weight, const float* bias, int N, int C, float eps) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;
    const float* x = inp + (size_t)row * C;
    float sum = 0.0f;
    for (int i = lane; i < C; i += 32) sum += x[i];
    const float m = warp_sum_wrong(sum) / C;
    float var = 0.0f;
    for (int i = lane; i < C; i += 32) var += (x[i] - m) * (x[i] - m);
    const float s = rsqrtf(warp_sum_wrong(var) / C + eps);
    for (int i = lane; i < C; i += 32) out[(size_t)row * C + i] = (x[i] - m) * s * weight[i] + bias[i];
}

int main() {
    skip_without_device("bug_shfl");
    printf("planted bug: warp reduction misses the last shuffle offset (the numeric check must report a MISMATCH)\n");
    const int N = 16, C = 96;
    Rng rng(test_seed());
    std::vector<float> x = rng.normal((size_t)N * C, 0.5f, 1.0f), w = rng.normal(C, 1.0f, 0.2f), b = rng.normal(C, 0.0f, 0.2f);
    DeviceBuffer<float> d_x((size_t)N * C), d_w(C), d_b(C), d_out((size_t)N * C);
    d_x.upload(x);
    d_w.upload(w);
    d_b.upload(b);
    d_out.poison();
    launch_kernel(layernorm_shfl_kernel, dim3(ceil_div(N, 8)), dim3(256), 0, 0, d_out.ptr, d_x.ptr, d_w.ptr, d_b.ptr, N, C, 1e-5f);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<double> ref((size_t)N * C);
    for (int r = 0; r < N; r++) {
        const float* xr = &x[(size_t)r * C];
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += xr[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
        double s = 1.0 / std::sqrt(v / C + 1e-5);
        for (int c = 0; c < C; c++) ref[(size_t)r * C + c] = (xr[c] - m) * s * w[c] + b[c];
    }
    Checker ck;
    ck.check("out", d_out.download(), ref, 1e-5, 1e-5);
    return ck.finish("bug_shfl");
}
