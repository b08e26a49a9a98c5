// matmul.cuh - the linear layer on top of the GEMM wrapper, and its bias gradient.
//
// Layout: inp (N, C), weight (OC, C) as PyTorch's nn.Linear, out (N, OC):
//   forward   out  = inp @ W^T + b               (cuBLASLt, bias epilogue)
//   backward  dinp = dout @ W  (or += when accumulating onto a residual gradient)
//             dW  += dout^T @ inp                (gradient accumulation across micro-steps)
//             db  += sum over rows of dout       (bias_backward below, deterministic)
//
// Bias gradient: grid (column blocks of 32, row splits); block (32, 8): thread (x, y) sums
// the rows y, y+8, ... of its split for column x; the 8 sums meet in shared memory and are
// added in order into partial[split][c]. A second kernel adds the splits in order onto db.
#pragma once

#include <algorithm>

#include "common.cuh"
#include "cublas_wrap.cuh"

constexpr int BIAS_BX = 32, BIAS_BY = 8, BIAS_ROWS_PER_SPLIT = 256, BIAS_MAX_SPLITS = 256;

template <typename T>
__global__ void __launch_bounds__(BIAS_BX* BIAS_BY)
    bias_grad_partial_kernel(float* __restrict__ partial, const T* __restrict__ dout, int N, int OC, int rows_per_split) {
    __shared__ float s[BIAS_BY][BIAS_BX];
    const int c = blockIdx.x * BIAS_BX + threadIdx.x;
    const int r0 = blockIdx.y * rows_per_split, r1 = min(N, r0 + rows_per_split);
    float acc = 0.0f;
    if (c < OC)
        for (int r = r0 + threadIdx.y; r < r1; r += BIAS_BY) acc += to_float(dout[(size_t)r * OC + c]);
    s[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < OC) {
        float t = 0.0f;
        for (int y = 0; y < BIAS_BY; y++) t += s[y][threadIdx.x];
        partial[(size_t)blockIdx.y * OC + c] = t;
    }
}
template <typename T>
__global__ void bias_grad_reduce_kernel(T* __restrict__ dbias, const float* __restrict__ partial, int nsplit, int OC) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < OC; c += gridDim.x * blockDim.x) {
        float t = 0.0f;
        for (int s = 0; s < nsplit; s++) t += partial[(size_t)s * OC + c];
        dbias[c] = from_float<T>(to_float(dbias[c]) + t);
    }
}

inline int bias_grad_splits(int N) { return std::max(1, std::min(BIAS_MAX_SPLITS, ceil_div(N, BIAS_ROWS_PER_SPLIT))); }
// float scratch the bias gradient needs for N rows and OC columns
inline size_t bias_grad_scratch_floats(int N, int OC) { return (size_t)bias_grad_splits(N) * OC; }

template <typename T>
void bias_backward(T* dbias, float* scratch, const T* dout, int N, int OC, cudaStream_t st) {
    const int nsplit = bias_grad_splits(N), rps = ceil_div(N, nsplit);
    launch_kernel(bias_grad_partial_kernel<T>, dim3(ceil_div(OC, BIAS_BX), nsplit), dim3(BIAS_BX, BIAS_BY), 0, st, scratch, dout, N, OC,
                  rps);
    launch_kernel(bias_grad_reduce_kernel<T>, grid_stride_blocks(OC, EW_BLOCK), EW_BLOCK, 0, st, dbias, scratch, nsplit, OC);
}

// out (N, OC) = inp (N, C) @ W^T (+ bias)
template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int N, int C, int OC, cudaStream_t st) {
    gemm<T>(out, inp, W, bias, N, OC, C, false, true, false, st);
}
// dinp (= or += with accumulate_dinp; skipped when null) dout @ W; dW += dout^T inp;
// db += colsum(dout) (when non-null). bias_scratch: bias_grad_scratch_floats(N, OC).
template <typename T>
void linear_backward(T* dinp, T* dW, T* db, float* bias_scratch, const T* dout, const T* inp, const T* W, int N, int C, int OC,
                     bool accumulate_dinp, cudaStream_t st) {
    if (dinp) gemm<T>(dinp, dout, W, nullptr, N, C, OC, false, false, accumulate_dinp, st);
    gemm<T>(dW, dout, inp, nullptr, OC, C, N, true, false, true, st);
    if (db) bias_backward(db, bias_scratch, dout, N, OC, st);
}
