// matmul.cuh - the linear layer on top of the GEMM wrapper, and its bias gradient.
//
// Layout: inp (N, C), weight (OC, C) as PyTorch's nn.Linear, out (N, OC):
//   forward   out  = inp @ W^T + b               (cuBLASLt, bias epilogue)
//   backward  dinp = dout @ W  (or += when accumulating onto a residual gradient)
//             dW  += dout^T @ inp                (gradient accumulation across micro-steps)
//             db  += sum over rows of dout       (deterministic, two ways below)
//
// The MLP of GPT-2, fc (C -> F) then GELU then proj (F -> C), has two fused forms (cuBLASLt
// epilogues, kernels/cublas_wrap.cuh; GELU = the tanh approximation of activation.cuh):
//   linear_gelu_forward    act = GELU(inp @ W^T + b) and pre = inp @ W^T + b (kept for the
//                          backward) in one GEMM (GELU_AUX_BIAS) instead of a GEMM into pre
//                          plus gelu_forward
//   linear_dgelu_backward  the proj layer's backward with the GELU between the layers: dpre =
//                          (dout @ W) * GELU'(pre) and db_pre += colsum(dpre) (the fc bias
//                          gradient) in the dinp GEMM (DGELU_BGRAD), instead of a GEMM into
//                          dact, gelu_backward and a bias reduction of dpre (--gelu_fusion 2
//                          only: on an H200 cuBLASLt runs this epilogue as a separate kernel,
//                          3.9 ms per gpt2-124m T=1024 step against gelu_backward's 0.9)
//
// Bias gradient, two ways (both in a fixed order, deterministic):
//  - fused (epilogue): the dW GEMM also reduces dout over its rows (cuBLASLt BGRADB, whose
//    "B" is our dout: cublas_wrap.cuh explains the swap) or the DGELU GEMM reduces its
//    output. cuBLASLt writes that vector (type T) and cannot accumulate it, while the
//    trainer accumulates gradients over micro-steps, so it goes to the scratch and
//    bias_grad_add_kernel adds it onto db (db = round(db + g), one thread per entry).
//  - kernels (--gelu_fusion 0): grid (column blocks of 32, row splits); block (32, 8): thread
//    (x, y) sums the rows y, y+8, ... of its split for column x; the 8 sums meet in shared
//    memory and are added in order into partial[split][c]. A second kernel adds the splits in
//    order onto db.
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

template <typename T>
__global__ void bias_grad_add_kernel(T* __restrict__ dbias, const T* __restrict__ g, int OC) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < OC; c += gridDim.x * blockDim.x)
        dbias[c] = from_float<T>(to_float(dbias[c]) + to_float(g[c]));
}

inline int bias_grad_splits(int N) { return std::max(1, std::min(BIAS_MAX_SPLITS, ceil_div(N, BIAS_ROWS_PER_SPLIT))); }
// float scratch the bias gradient needs for N rows and OC columns: the kernels' partial sums,
// or (fused) the epilogue's vector of OC values of T, which fits in the first split's OC floats
inline size_t bias_grad_scratch_floats(int N, int OC) { return (size_t)bias_grad_splits(N) * OC; }

template <typename T>
void bias_backward(T* dbias, float* scratch, const T* dout, int N, int OC, cudaStream_t st) {
    const int nsplit = bias_grad_splits(N), rps = ceil_div(N, nsplit);
    launch_kernel(bias_grad_partial_kernel<T>, dim3(ceil_div(OC, BIAS_BX), nsplit), dim3(BIAS_BX, BIAS_BY), 0, st, scratch, dout, N, OC,
                  rps);
    launch_kernel(bias_grad_reduce_kernel<T>, grid_stride_blocks(OC, EW_BLOCK), EW_BLOCK, 0, st, dbias, scratch, nsplit, OC);
}

// db += g, where g (OC values of T) came from a GEMM epilogue
template <typename T>
void bias_grad_add(T* dbias, const T* g, int OC, cudaStream_t st) {
    launch_kernel(bias_grad_add_kernel<T>, grid_stride_blocks(OC, EW_BLOCK), EW_BLOCK, 0, st, dbias, g, OC);
}

// dW += dout^T inp, and db += colsum(dout) when db is non-null: fused into the GEMM (BGRADB,
// then bias_grad_add) or with bias_backward's kernels. scratch: bias_grad_scratch_floats(N, OC).
template <typename T>
void weight_bias_backward(T* dW, T* db, float* scratch, const T* dout, const T* inp, int N, int C, int OC, bool fused,
                          cudaStream_t st) {
    if (db && fused) {
        T* g = reinterpret_cast<T*>(scratch);
        gemm_bgradb<T>(dW, g, dout, inp, OC, C, N, true, false, true, st);
        bias_grad_add(db, g, OC, st);
        return;
    }
    gemm<T>(dW, dout, inp, nullptr, OC, C, N, true, false, true, st);
    if (db) bias_backward(db, scratch, dout, N, OC, st);
}

// out (N, OC) = inp (N, C) @ W^T (+ bias)
template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int N, int C, int OC, cudaStream_t st) {
    gemm<T>(out, inp, W, bias, N, OC, C, false, true, false, st);
}
// act (N, OC) = GELU(pre), pre (N, OC) = inp (N, C) @ W^T + bias, one GEMM; OC % 8 == 0
template <typename T>
void linear_gelu_forward(T* act, T* pre, const T* inp, const T* W, const T* bias, int N, int C, int OC, cudaStream_t st) {
    gemm_gelu_aux_bias<T>(act, pre, inp, W, bias, N, OC, C, false, true, st);
}
// dinp (= or += with accumulate_dinp; skipped when null) dout @ W; dW += dout^T inp;
// db += colsum(dout) (when non-null; fused: in the dW GEMM's epilogue, else bias_backward).
// bias_scratch: bias_grad_scratch_floats(N, OC).
template <typename T>
void linear_backward(T* dinp, T* dW, T* db, float* bias_scratch, const T* dout, const T* inp, const T* W, int N, int C, int OC,
                     bool accumulate_dinp, bool fused, cudaStream_t st) {
    if (dinp) gemm<T>(dinp, dout, W, nullptr, N, C, OC, false, false, accumulate_dinp, st);
    weight_bias_backward(dW, db, bias_scratch, dout, inp, N, C, OC, fused, st);
}
// Backward of a linear layer whose input is act = GELU(pre) (the MLP's proj, pre (N, C) kept
// by linear_gelu_forward), the GELU included: dpre = (dout @ W) * GELU'(pre) (overwritten) and
// db_pre += colsum(dpre) in one GEMM; then dW += dout^T act, db += colsum(dout) (when
// non-null), fused. C % 8 == 0. scratch: bias_grad_scratch_floats(N, max(C, OC)).
template <typename T>
void linear_dgelu_backward(T* dpre, T* db_pre, T* dW, T* db, float* scratch, const T* dout, const T* act, const T* pre, const T* W,
                           int N, int C, int OC, cudaStream_t st) {
    T* g = reinterpret_cast<T*>(scratch);
    gemm_dgelu_bgrad<T>(dpre, g, pre, dout, W, N, C, OC, false, false, st);
    bias_grad_add(db_pre, g, C, st);
    weight_bias_backward(dW, db, scratch, dout, act, N, C, OC, true, st);
}
