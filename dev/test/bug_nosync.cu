// bug_nosync.cu - PLANTED BUG, expected to fail: the weight-gradient reduce kernel of
// kernels/norm.cuh with its __syncthreads() removed. Thread y == 0 then reads the partial
// sums of threads y = 1..7 from shared memory without waiting for them: a data race that
// ThreadSanitizer must report on the emulated build (tests/kernels.sh: kernels/bug_nosync/tsan).
#include "../../kernels/norm.cuh"
#include "test_util.h"

constexpr int BX = NORM_REDUCE_BX, BY = NORM_REDUCE_BY;

__global__ void reduce_nosync_kernel(float* dweight, const float* __restrict__ partial, int nparts, int C) {
    __shared__ float sw[BY][BX];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * BX + tx;
    float aw = 0.0f;
    if (c < C)
        for (int p = ty; p < nparts; p += BY) aw += partial[(size_t)p * C + c];
    sw[ty][tx] = aw;
    // BUG: __syncthreads() missing here
    if (ty == 0 && c < C) {
        float tw = 0.0f;
        for (int y = 0; y < BY; y++) tw += sw[y][tx];
        dweight[c] += tw;
    }
}

int main() {
    skip_without_device("bug_nosync");
    printf("planted bug: __syncthreads() removed from the weight-gradient reduction (ThreadSanitizer must report a data race)\n");
    const int C = 40, nparts = 16;
    Rng rng(test_seed());
    std::vector<float> part = rng.normal((size_t)nparts * C);
    std::vector<double> ref(C, 0.0);
    for (int p = 0; p < nparts; p++)
        for (int c = 0; c < C; c++) ref[c] += part[(size_t)p * C + c];
    DeviceBuffer<float> d_part((size_t)nparts * C), d_w(C);
    d_part.upload(part);
    cudaCheck(cudaMemset(d_w, 0, C * sizeof(float)));
    launch_kernel(reduce_nosync_kernel, dim3(ceil_div(C, BX)), dim3(BX, BY), 0, 0, d_w.ptr, d_part.ptr, nparts, C);
    cudaCheck(cudaDeviceSynchronize());
    Checker ck;
    ck.check("dweight", d_w.download(), ref, 1e-5, 1e-5);
    return ck.finish("bug_nosync");
}
