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
// Bias gradient db += colsum(dout), two ways, chosen per call (BiasGrad), both deterministic
// (a fixed summation order, no atomics: the same bits on every run):
//  - BiasGrad::Epilogue: the dW GEMM also reduces dout over its rows (cuBLASLt BGRADB, whose
//    "B" is our dout: cublas_wrap.cuh explains the swap). cuBLASLt writes that vector (type T,
//    so a bf16 sum is rounded before it is added) and cannot accumulate it, while the trainer
//    accumulates gradients over micro-steps, so it goes to the scratch and
//    bias_grad_add_kernel adds it onto db (db = round(db + g), one thread per entry); so does
//    linear_dgelu_backward's DGELU_BGRAD vector. On an H200 cuBLASLt runs BGRADB as a
//    separate kernel (1.14 ms per gpt2-124m T=1024 step, ~2.4 TB/s).
//  - BiasGrad::Kernel: bias_backward, the column sum of common.cuh (colsum_launch): 16-byte
//    loads (a thread owns 16 / sizeof(T) consecutive columns; scalar fallback when OC is not a
//    multiple of that or dout is not 16-byte aligned, same bits), rows split across the warps
//    of a block and across blocks, fp32 sums, the partial sums of the row splits added in order
//    by a second kernel onto db (db = round(db + sum)). One read of dout.
// GPT-2's fc bias gradient needs no separate reduction in the kernel mode:
// activation.cuh's gelu_backward_bias computes dpre = GELU'(pre) * dact and sums the dpre it
// writes, in one pass (then the fc layer's linear_backward gets db = null).
// Scratch for either way: bias_grad_scratch_floats(N, OC) floats (the partial sums, or the
// epilogue's OC values of T), non-decreasing in N and OC: one buffer sized for the widest
// layer serves all.
#pragma once

#include <algorithm>

#include "activation.cuh"
#include "common.cuh"
#include "cublas_wrap.cuh"

enum class BiasGrad {
    Kernel,     // bias_backward's kernels (colsum_launch)
    Epilogue,   // cuBLASLt BGRADB in the dW GEMM, then bias_grad_add
};

template <typename T>
__global__ void bias_grad_add_kernel(T* __restrict__ dbias, const T* __restrict__ g, int OC) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < OC; c += gridDim.x * blockDim.x)
        dbias[c] = from_float<T>(to_float(dbias[c]) + to_float(g[c]));
}

inline size_t bias_grad_scratch_floats(int N, int OC) { return colsum_scratch_floats(N, OC); }

// db (OC) += sum over the N rows of dout (N, OC); scratch: bias_grad_scratch_floats(N, OC)
template <typename T>
void bias_backward(T* dbias, float* scratch, const T* dout, int N, int OC, cudaStream_t st) {
    constexpr int VEC = 16 / sizeof(T);
    if (OC % VEC == 0 && is_aligned(dout, 16))
        colsum_launch<VEC>(dbias, scratch, ColsumRead<T, VEC>{dout}, N, OC, st);
    else
        colsum_launch<1>(dbias, scratch, ColsumRead<T, 1>{dout}, N, OC, st);
}

// db += g, where g (OC values of T) came from a GEMM epilogue
template <typename T>
void bias_grad_add(T* dbias, const T* g, int OC, cudaStream_t st) {
    launch_kernel(bias_grad_add_kernel<T>, grid_stride_blocks(OC, EW_BLOCK), EW_BLOCK, 0, st, dbias, g, OC);
}

// dW += dout^T inp, and db += colsum(dout) when db is non-null, the way `bg` says (the
// kernels also where cuBLASLt has no BGRADB algorithm at this shape).
// scratch: bias_grad_scratch_floats(N, OC).
template <typename T>
void weight_bias_backward(T* dW, T* db, float* scratch, const T* dout, const T* inp, int N, int C, int OC, BiasGrad bg, cudaStream_t st) {
    if (db && bg == BiasGrad::Epilogue) {
        T* g = reinterpret_cast<T*>(scratch);
        if (gemm_bgradb<T>(dW, g, dout, inp, OC, C, N, true, false, true, st)) {
            bias_grad_add(db, g, OC, st);
            return;
        }
    }
    gemm<T>(dW, dout, inp, nullptr, OC, C, N, true, false, true, st);
    if (db) bias_backward(db, scratch, dout, N, OC, st);
}

// out (N, OC) = inp (N, C) @ W^T (+ bias)
template <typename T>
void linear_forward(T* out, const T* inp, const T* W, const T* bias, int N, int C, int OC, cudaStream_t st) {
    gemm<T>(out, inp, W, bias, N, OC, C, false, true, false, st);
}
// out (N, OC) = resid (N, OC) + inp (N, C) @ W^T (+ bias): a layer whose output is added to a
// residual stream, in one GEMM (cuBLASLt's C = resid, D = out), from the fp32 accumulator
// with one rounding (as copying resid into out and accumulating, without the copy)
template <typename T>
void linear_forward_residual(T* out, const T* resid, const T* inp, const T* W, const T* bias, int N, int C, int OC, cudaStream_t st) {
    gemm_add<T>(out, resid, inp, W, bias, N, OC, C, false, true, st);
}
// act (N, OC) = GELU(pre), pre (N, OC) = inp (N, C) @ W^T + bias, one GEMM; OC % 8 == 0.
// Where cuBLASLt has no GELU_AUX_BIAS algorithm at this shape: the GEMM into pre, then
// gelu_forward (the GELU of the stored, rounded pre: in bf16 not bitwise the fused result).
template <typename T>
void linear_gelu_forward(T* act, T* pre, const T* inp, const T* W, const T* bias, int N, int C, int OC, cudaStream_t st) {
    if (gemm_gelu_aux_bias<T>(act, pre, inp, W, bias, N, OC, C, false, true, st)) return;
    gemm<T>(pre, inp, W, bias, N, OC, C, false, true, false, st);
    gelu_forward(act, pre, (size_t)N * OC, st);
}
// dinp (= or += with accumulate_dinp; skipped when null) dout @ W; dW += dout^T inp;
// db += colsum(dout) (when non-null; the way `bg` says: BiasGrad::Epilogue in the dW GEMM,
// BiasGrad::Kernel with bias_backward). bias_scratch: bias_grad_scratch_floats(N, OC).
template <typename T>
void linear_backward(T* dinp, T* dW, T* db, float* bias_scratch, const T* dout, const T* inp, const T* W, int N, int C, int OC,
                     bool accumulate_dinp, BiasGrad bg, cudaStream_t st) {
    if (dinp) gemm<T>(dinp, dout, W, nullptr, N, C, OC, false, false, accumulate_dinp, st);
    weight_bias_backward(dW, db, bias_scratch, dout, inp, N, C, OC, bg, st);
}
// Backward of a linear layer whose input is act = GELU(pre) (the MLP's proj, pre (N, C) kept
// by linear_gelu_forward), the GELU included: dpre = (dout @ W) * GELU'(pre) (overwritten) and
// db_pre += colsum(dpre) in one GEMM; then dW += dout^T act, db += colsum(dout) (when
// non-null), fused. C % 8 == 0. scratch: bias_grad_scratch_floats(N, max(C, OC)).
// Where cuBLASLt has no DGELU_BGRAD algorithm at this shape: the GEMM into dpre (as dact),
// then gelu_backward_bias in place (it reads each element of dact before writing dpre there).
template <typename T>
void linear_dgelu_backward(T* dpre, T* db_pre, T* dW, T* db, float* scratch, const T* dout, const T* act, const T* pre, const T* W,
                           int N, int C, int OC, cudaStream_t st) {
    T* g = reinterpret_cast<T*>(scratch);
    if (gemm_dgelu_bgrad<T>(dpre, g, pre, dout, W, N, C, OC, false, false, st)) {
        bias_grad_add(db_pre, g, C, st);
    } else {
        gemm<T>(dpre, dout, W, nullptr, N, C, OC, false, false, false, st);
        gelu_backward_bias(dpre, db_pre, scratch, pre, dpre, N, C, st);
    }
    weight_bias_backward(dW, db, scratch, dout, act, N, C, OC, BiasGrad::Epilogue, st);
}
