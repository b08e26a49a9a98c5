// bug_stream_order.cu - PLANTED BUGS in the order between two streams, expected to fail in the
// emulation's deferred stream modes (CUDA_EMU_STREAMS, dev/cuda_emu/README.md). The pattern is
// the data-parallel trainer's (train_gpt.cu reduce_bucket / wait_reductions): a kernel on the
// legacy default stream writes x; a non-blocking side stream computes y = 2 x from it; the
// legacy stream then computes z = 3 y and the host checks z = 6 x.
//   --missing none      correct: the side stream waits for an event recorded after the
//                       producer, the legacy stream for one recorded after the side stream's
//                       kernel (passes in every mode: tests/kernels.sh kernels/streams/*)
//   --missing producer  the side stream does not wait for the producer: with
//                       CUDA_EMU_STREAMS=early it runs first and reads the poison
//   --missing consumer  the legacy stream does not wait for the side stream: with
//                       CUDA_EMU_STREAMS=late the side stream has not run when z is computed
// With the emulation's default (every call synchronous) both bugs pass unseen; on a GPU they
// are races that may or may not show.
#include <cstring>

#include "../../kernels/common.cuh"
#include "test_util.h"

__global__ void fill_kernel(float* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = 1.0f + (float)i;
}
__global__ void scale_kernel(float* out, const float* in, int n, float a) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a * in[i];
}

int main(int argc, char** argv) {
    skip_without_device("bug_stream_order");
    const char* missing = argc == 3 && !strcmp(argv[1], "--missing") ? argv[2] : nullptr;
    if (!missing || (strcmp(missing, "none") && strcmp(missing, "producer") && strcmp(missing, "consumer"))) {
        fprintf(stderr, "usage: bug_stream_order --missing none|producer|consumer\n");
        return 2;
    }
    const char* mode = getenv("CUDA_EMU_STREAMS");
    printf("stream order, missing wait: %s (CUDA_EMU_STREAMS=%s)\n", missing, mode ? mode : "");
    const int n = 1000, threads = 128, blocks = ceil_div(n, threads);
    DeviceBuffer<float> d_x(n), d_y(n), d_z(n);
    d_x.poison();
    d_y.poison();
    d_z.poison();
    cudaStream_t side;
    cudaEvent_t x_ready, y_ready;
    cudaCheck(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    cudaCheck(cudaEventCreateWithFlags(&x_ready, cudaEventDisableTiming));
    cudaCheck(cudaEventCreateWithFlags(&y_ready, cudaEventDisableTiming));

    launch_kernel(fill_kernel, blocks, threads, 0, 0, d_x.ptr, n);
    cudaCheck(cudaEventRecord(x_ready, 0));
    if (strcmp(missing, "producer")) cudaCheck(cudaStreamWaitEvent(side, x_ready, 0));
    launch_kernel(scale_kernel, blocks, threads, 0, side, d_y.ptr, (const float*)d_x.ptr, n, 2.0f);
    cudaCheck(cudaEventRecord(y_ready, side));
    if (strcmp(missing, "consumer")) cudaCheck(cudaStreamWaitEvent(0, y_ready, 0));
    launch_kernel(scale_kernel, blocks, threads, 0, 0, d_z.ptr, (const float*)d_y.ptr, n, 3.0f);
    // a synchronous copy on the legacy stream: it does not wait for the non-blocking side stream
    std::vector<float> z = d_z.download();
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (!(z[i] == 6.0f * (1.0f + (float)i))) bad++;
    cudaCheck(cudaStreamSynchronize(side));
    cudaCheck(cudaEventDestroy(x_ready));
    cudaCheck(cudaEventDestroy(y_ready));
    cudaCheck(cudaStreamDestroy(side));
    if (bad) {
        printf("MISMATCH: z != 6 x in %d of %d elements (a missing wait between the streams)\n", bad, n);
        return 1;
    }
    printf("z = 6 x in all %d elements -> PASS\n", n);
    return 0;
}
