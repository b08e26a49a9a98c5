// rope.cuh - rotary position embedding (llama), rotate-half convention, in place on the q and
// k parts of qkv.
//
// Layout: qkv (N = B*T, 3C) row-major, a row [q | k | v], head h owning columns
// [h*hd, (h+1)*hd) of each part. cos/sin tables (max_seq_len, hd/2) fp32, precomputed on the
// host in double: angle(t, i) = t * theta^(-2i/hd).
//
//   forward   for i < hd/2:  (a, b) = (x[i], x[i + hd/2])  ->  (a cos - b sin,  b cos + a sin)
//   backward  the transposed rotation (angle -> -angle) applied to dq, dk in place:
//             (da, db)  ->  (da cos + db sin,  db cos - da sin)
//
// One thread per rotated pair (n, part, head, i): reads 2 values, writes 2.
#pragma once

#include "common.cuh"

template <typename T>
__global__ void rope_kernel(T* qkv, const float* __restrict__ cos_t, const float* __restrict__ sin_t, int N, int T_, int C, int NH,
                            float sign) {
    const int hd = C / NH, half = hd / 2;
    const size_t total = (size_t)N * 2 * NH * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        size_t r = idx / half;
        const int h = (int)(r % NH);
        r /= NH;
        const int part = (int)(r % 2);  // 0: q, 1: k
        const int n = (int)(r / 2);
        const int t = n % T_;
        T* x = qkv + (size_t)n * 3 * C + part * C + h * hd;
        const float c = cos_t[(size_t)t * half + i], s = sign * sin_t[(size_t)t * half + i];
        const float a = to_float(x[i]), b = to_float(x[i + half]);
        x[i] = from_float<T>(a * c - b * s);
        x[i + half] = from_float<T>(b * c + a * s);
    }
}

template <typename T>
void rope_forward(T* qkv, const float* cos_t, const float* sin_t, int B, int T_, int C, int NH, cudaStream_t stream) {
    const size_t total = (size_t)B * T_ * C;  // = N * 2 * NH * half
    launch_kernel(rope_kernel<T>, grid_stride_blocks(total, EW_BLOCK), EW_BLOCK, 0, stream, qkv, cos_t, sin_t, B * T_, T_, C, NH, 1.0f);
}
template <typename T>
void rope_backward(T* dqkv, const float* cos_t, const float* sin_t, int B, int T_, int C, int NH, cudaStream_t stream) {
    const size_t total = (size_t)B * T_ * C;
    launch_kernel(rope_kernel<T>, grid_stride_blocks(total, EW_BLOCK), EW_BLOCK, 0, stream, dqkv, cos_t, sin_t, B * T_, T_, C, NH, -1.0f);
}
