// bug_deadlock.cu - PLANTED BUG, expected to fail: a warp reduction inside a branch that only
// part of the warp takes. warp_reduce_sum shuffles with the full mask, so lanes 0-15 wait for
// lanes 16-31, which have gone on to the __syncthreads() after the branch and wait there for
// lanes 0-15 (undefined behaviour on a GPU: a hang or silent garbage). The emulation must
// abort with "deadlock" and show where each group of threads waits (tests/kernels.sh:
// kernels/bug_deadlock/gxx). It also checks the emulator's deadlock detector itself, which
// must tell this apart from a block whose threads have all exited.
#include "../../kernels/common.cuh"
#include "test_util.h"

__global__ void partial_warp_sum_kernel(float* out, const float* inp, int n) {
    __shared__ float total;
    const int lane = threadIdx.x;
    float v = lane < n ? inp[lane] : 0.0f;
    if (lane < n) v = warp_reduce_sum(v);  // BUG: the full-mask shuffles need all 32 lanes
    __syncthreads();
    if (lane == 0) total = v;
    __syncthreads();
    out[lane] = total;
}

int main() {
    skip_without_device("bug_deadlock");
    printf("planted bug: a full-mask warp reduction taken by 16 of 32 lanes (the emulation must abort: deadlock)\n");
    const int n = 16;
    Rng rng(test_seed());
    std::vector<float> x = rng.normal(32);
    DeviceBuffer<float> d_x(32), d_out(32);
    d_x.upload(x);
    d_out.poison();
    launch_kernel(partial_warp_sum_kernel, dim3(1), dim3(32), 0, 0, d_out.ptr, d_x.ptr, n);
    cudaCheck(cudaDeviceSynchronize());
    double sum = 0;
    for (int i = 0; i < n; i++) sum += x[i];
    Checker ck;
    ck.check("sum of the first 16", d_out.download(), std::vector<double>(32, sum), 1e-5, 1e-5);
    return ck.finish("bug_deadlock");
}
