// dev/cuda/gelu_bias_grad.cuh - GPT-2's MLP backward with the fc bias gradient fused, two
// kernel paths that train_gpt.cu does not use (it runs gelu_backward, and the bias gradient
// in the dW GEMM's epilogue, BGRADB):
//   gelu_backward_bias     a candidate: the bias gradient summed inside the GELU backward, one
//                          pass. No GPU measurement times it against the shipped path; one
//                          decides whether it is promoted.
//   linear_dgelu_backward  the GELU gradient and the fc bias gradient in the proj layer's dinp
//                          GEMM (cuBLASLt DGELU_BGRAD): on an H200 cuBLASLt runs that epilogue
//                          as a separate kernel, 3.9 ms per gpt2-124m T=1024 step against
//                          gelu_backward's 0.9, so it is kept here as a reference only.
// tests/kernels.sh keeps both correct (dev/test/test_activation.cu, dev/test/test_matmul.cu).
//
// GELU backward with the fc bias gradient (GPT-2's MLP, when bias gradients are not left to
// cuBLASLt epilogues): pre, dact, dpre (N, F) row-major, dbias (F):
//   dpre = GELU'(pre) * dact                (gelu_backward_elem: the same bits as gelu_backward)
//   dbias[f] += sum over rows of dpre[r][f]  (the dpre values as stored, i.e. rounded to T)
// in one pass: gelu_backward_bias runs matmul.cuh's deterministic column sum (colsum_launch)
// with a source (GeluBackwardColsum) that loads pre and dact, computes and stores dpre, and
// hands the stored values to the column sums, so the bias gradient reads no extra byte. A
// thread owns VEC = 16 / sizeof(T) consecutive columns (scalar fallback as above when F % VEC
// != 0 or a pointer is not 16-byte aligned), warps and blocks take different rows, fp32 partial
// sums per row split are added in a fixed order: dbias gets the same bits on every run, on
// both paths, and the same bits as gelu_backward followed by matmul.cuh's bias_backward of dpre.
#pragma once

#include "../../kernels/activation.cuh"
#include "../../kernels/matmul.cuh"

// the column-sum source of gelu_backward_bias (matmul.cuh, colsum_partial_kernel): at flat
// index i (row * F + column) it loads VEC elements of pre and dact, stores VEC of dpre and
// yields them (as stored) for the sums
template <typename T, int VEC>
struct GeluBackwardColsum {
    static constexpr int UNROLL = 2;   // rows in flight per thread: 2 x 2 x 16 bytes (64 registers at most)
    T* dinp;
    const T* inp;
    const T* dout;
    struct Raw {
        Packed<T, VEC> x, dy;
    };
    __device__ __forceinline__ Raw load(size_t i) const { return {load_packed<T, VEC>(inp + i), load_packed<T, VEC>(dout + i)}; }
    __device__ __forceinline__ void values(const Raw& a, size_t i, float (&v)[VEC]) const {
        Packed<T, VEC> dx;
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            dx.v[k] = from_float<T>(gelu_backward_elem(to_float(a.x.v[k]), to_float(a.dy.v[k])));
            v[k] = to_float(dx.v[k]);
        }
        store_packed<T, VEC>(dinp + i, dx);
    }
};

// dpre (N, F) = GELU'(pre) * dact and dbias (F) += colsum(dpre), one pass (see the top).
// dpre may be dact (in place: each element of dact is read, by the thread that writes it,
// before dpre is written there; GeluBackwardColsum's pointers are not __restrict__).
// scratch: gelu_backward_bias_scratch_floats(N, F) floats (the same count as matmul.cuh's
// bias_grad_scratch_floats(N, F): one buffer serves both).
inline size_t gelu_backward_bias_scratch_floats(int N, int F) { return colsum_scratch_floats(N, F); }
template <typename T>
void gelu_backward_bias(T* dpre, T* dbias, float* scratch, const T* pre, const T* dact, int N, int F, cudaStream_t st) {
    constexpr int VEC = 16 / sizeof(T);
    if (F % VEC == 0 && is_aligned(dpre, 16) && is_aligned(pre, 16) && is_aligned(dact, 16))
        colsum_launch<VEC>(dbias, scratch, GeluBackwardColsum<T, VEC>{dpre, pre, dact}, N, F, st);
    else
        colsum_launch<1>(dbias, scratch, GeluBackwardColsum<T, 1>{dpre, pre, dact}, N, F, st);
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
