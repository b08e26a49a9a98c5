// matmul.cuh - the linear layer on top of the GEMM wrapper, and its bias gradient.
//
// Layout: inp (N, C), weight (OC, C) as PyTorch's nn.Linear, out (N, OC):
//   forward   out  = inp @ W^T + b               (cuBLASLt, bias epilogue)
//   backward  dinp = dout @ W  (or += when accumulating onto a residual gradient)
//             dW  += dout^T @ inp                (gradient accumulation across micro-steps)
//             db  += sum over rows of dout       (deterministic, two ways below)
//
// The MLP of GPT-2, fc (C -> F) then GELU then proj (F -> C), has a fused forward (a cuBLASLt
// epilogue, kernels/cublas_wrap.cuh; GELU = the tanh approximation of activation.cuh):
//   linear_gelu_forward    act = GELU(inp @ W^T + b) and pre = inp @ W^T + b (kept for the
//                          backward) in one GEMM (GELU_AUX_BIAS) instead of a GEMM into pre
//                          plus gelu_forward
// (the fused backward, DGELU_BGRAD, measured slower than gelu_backward: dev/cuda/gelu_bias_grad.cuh)
//
// Bias gradient db += colsum(dout), two ways, chosen per call (BiasGrad), both deterministic
// (a fixed summation order, no atomics: the same bits on every run):
//  - BiasGrad::Epilogue: the dW GEMM also reduces dout over its rows (cuBLASLt BGRADB, whose
//    "B" is our dout: cublas_wrap.cuh explains the swap). cuBLASLt writes that vector (type T,
//    so a bf16 sum is rounded before it is added) and cannot accumulate it, while the trainer
//    accumulates gradients over micro-steps, so it goes to the scratch and
//    bias_grad_add_kernel adds it onto db (db = round(db + g), one thread per entry). On an H200 cuBLASLt runs BGRADB as a
//    separate kernel (1.14 ms per gpt2-124m T=1024 step, ~2.4 TB/s).
//  - BiasGrad::Kernel: bias_backward, the column sum below (colsum_launch): 16-byte
//    loads (a thread owns 16 / sizeof(T) consecutive columns; scalar fallback when OC is not a
//    multiple of that or dout is not 16-byte aligned, same bits), rows split across the warps
//    of a block and across blocks, fp32 sums, the partial sums of the row splits added in order
//    by a second kernel onto db (db = round(db + sum)). One read of dout.
// (dev/cuda/gelu_bias_grad.cuh: the candidate that sums GPT-2's fc bias gradient inside the
// GELU backward, one pass.)
// Scratch for either way: bias_grad_scratch_floats(N, OC) floats (the partial sums, or the
// epilogue's OC values of T), non-decreasing in N and OC: one buffer sized for the widest
// layer serves all.
#pragma once

#include <algorithm>

#include "activation.cuh"
#include "common.cuh"
#include "cublas_wrap.cuh"

// ----------------------------------------------------------------------------
// Column sums, deterministic: db[c] += sum over rows r of x[r][c], x (N, OC) row-major, the
// bias gradient of a linear layer (bias_backward, below) or of the GELU backward's output
// computed on the fly (the candidate dev/cuda/gelu_bias_grad.cuh). Two kernels:
//  1. colsum_partial_kernel, grid (column blocks, row splits), block COLSUM_WARPS warps.
//     Thread `lane` of a warp owns VEC consecutive columns (VEC = 16 / sizeof(T): one 16-byte
//     load per row; VEC = 1, the same code with scalar loads, when OC % VEC != 0 or a pointer
//     is not 16-byte aligned), so a warp covers 32 * VEC contiguous columns of a row (512 B).
//     Warp w of the block reads rows r0 + w, r0 + w + COLSUM_WARPS, ... of its split
//     [r0, r0 + rows_per_split), Src::UNROLL rows' loads in flight before their adds, and
//     adds them in that (ascending) order into fp32 accumulators. The block's warps meet in
//     shared memory and are added in warp order into partial[split][c] (the scratch).
//  2. colsum_reduce_kernel, grid ceil(OC / 32), block (32, ry), ry = min(nsplit, 32): thread
//     (x, y) adds splits y, y + ry, ... in order for column x (a few loads per thread, not a
//     chain of nsplit: this kernel is latency bound); the ry sums are added in y order;
//     db[c] = round_T(db[c] + sum) (accumulates: gradient accumulation over micro-steps).
// Every column is summed in an order fixed by (N, OC) alone (colsum_plan): not by the run, the
// device or VEC (a column's rows, warps and splits are the same whether its thread holds 8
// columns or 1), so the vector and scalar paths and every rerun give the same bits. No atomics.
// The adds are __fadd_rn (never contracted into an FMA with the producer of the value).
// The source of the rows is a functor (ColsumRead below, or the candidate's
// GeluBackwardColsum): Raw load(size_t i) issues the loads of the VEC elements at flat index
// i = r * OC + c, values(raw, i, v) turns them into the VEC floats to add (and may store a
// result: the GELU backward writes dpre there), so the loads of UNROLL rows (the source's
// constant: 64 bytes per thread in flight) are issued before any of their math. The unroll
// does not change the order of the adds.
// Plan: COLSUM_MIN_ROWS rows per split at least; as many splits as bring the blocks to about
// colsum_target_blocks (4 blocks of 256 threads per SM of a 132-SM H200, all resident at once:
// the launch bounds keep the registers within 64 for 4 blocks per SM), counting 256-column
// blocks (bf16's width; fp32 and scalar launches have 2x / 8x the column blocks). gpt2-124m,
// N = 16384: OC 768 -> 175 splits of 94 rows; 2304 -> 59 of 278; 3072 -> 44 of 373. Partial
// sums: ~colsum_target_blocks * 256 floats, ~0.5 MB, 2% of a 25 MB dout.
constexpr int COLSUM_WARPS = 8, COLSUM_THREADS = 32 * COLSUM_WARPS;
constexpr int COLSUM_MIN_ROWS = 64;        // rows per split, at least (8 per warp)
constexpr int COLSUM_PLAN_COLS = 256;      // columns per block assumed by the plan (bf16 VEC 8 x 32 lanes)
constexpr int COLSUM_TARGET_BLOCKS = 132 * 4;
constexpr int COLSUM_REDUCE_MAX_Y = 32;    // split-threads per column in the reduce kernel
constexpr int COLSUM_MIN_BLOCKS_PER_SM = 4; // resident blocks the registers must allow (<= 64 per thread)
// the plan's target number of blocks; tests lower it (more rows per split than the minimum at
// small N), the bench sweeps it. The plan, the scratch size and the bits of the sums depend on it.
inline int colsum_target_blocks = COLSUM_TARGET_BLOCKS;

struct ColsumPlan {
    int nsplit, rows_per_split;   // nsplit = ceil(N / rows_per_split): no empty split
};
inline ColsumPlan colsum_plan(int N, int OC) {
    if (N <= 0 || OC <= 0) return {0, 0};
    const int blocks_per_split = ceil_div(OC, COLSUM_PLAN_COLS);
    const int ns = std::max(1, std::min(ceil_div(std::max(1, colsum_target_blocks), blocks_per_split), ceil_div(N, COLSUM_MIN_ROWS)));
    const int rps = ceil_div(N, ns);
    return {ceil_div(N, rps), rps};
}
// Floats of scratch a column sum of N rows and OC columns needs (nsplit * OC), bounded from
// above so that it never decreases with N or OC (a buffer sized for the widest layer serves
// every narrower one): nsplit <= ceil(N / MIN_ROWS), and nsplit <= ceil(target / cb) with cb =
// ceil(OC / 256), so nsplit * OC <= (target + cb - 1) * 256 <= target * 256 + OC.
inline size_t colsum_scratch_floats(int N, int OC) {
    if (OC <= 0) return 0;
    if (N <= 0) return OC;   // nothing to sum; at least OC (matmul.cuh's epilogue vector lives there)
    const size_t by_rows = (size_t)ceil_div(N, COLSUM_MIN_ROWS) * OC;
    const size_t by_blocks = (size_t)std::max(1, colsum_target_blocks) * COLSUM_PLAN_COLS + OC;
    return std::min(by_rows, by_blocks);
}

// the plain source: x (N, OC) itself
template <typename T, int VEC>
struct ColsumRead {
    static constexpr int UNROLL = 4;   // rows in flight per thread: 4 x 16 bytes
    const T* x;
    using Raw = Packed<T, VEC>;
    __device__ __forceinline__ Raw load(size_t i) const { return load_packed<T, VEC>(x + i); }
    __device__ __forceinline__ void values(const Raw& a, size_t, float (&v)[VEC]) const {
#pragma unroll
        for (int k = 0; k < VEC; k++) v[k] = to_float(a.v[k]);
    }
};

// VEC > 1 needs OC % VEC == 0 and the source's pointers 16-byte aligned
template <int VEC, class Src>
__global__ void __launch_bounds__(COLSUM_THREADS, COLSUM_MIN_BLOCKS_PER_SM)
    colsum_partial_kernel(float* __restrict__ partial, const Src src, int N, int OC, int rows_per_split) {
    constexpr int W = COLSUM_WARPS, U = Src::UNROLL;
    __shared__ Packed<float, VEC> s[W][32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int c0 = blockIdx.x * 32 * VEC, c = c0 + lane * VEC;   // the block's and the thread's first column
    const int r0 = blockIdx.y * rows_per_split, r1 = min(N, r0 + rows_per_split);
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; k++) acc[k] = 0.0f;
    if (c < OC) {   // OC % VEC == 0: all VEC columns of the thread exist
        auto add = [&](const typename Src::Raw& a, size_t i) {
            float v[VEC];
            src.values(a, i, v);
#pragma unroll
            for (int k = 0; k < VEC; k++) acc[k] = __fadd_rn(acc[k], v[k]);
        };
        int r = r0 + warp;
        for (; r + (U - 1) * W < r1; r += U * W) {   // U rows: all loads first, then the adds in row order
            typename Src::Raw a[U];
#pragma unroll
            for (int u = 0; u < U; u++) a[u] = src.load((size_t)(r + u * W) * OC + c);
#pragma unroll
            for (int u = 0; u < U; u++) add(a[u], (size_t)(r + u * W) * OC + c);
        }
        for (; r < r1; r += W) add(src.load((size_t)r * OC + c), (size_t)r * OC + c);
    }
#pragma unroll
    for (int k = 0; k < VEC; k++) s[warp][lane].v[k] = acc[k];
    __syncthreads();
    for (int j = threadIdx.x; j < 32 * VEC; j += blockDim.x) {   // column c0 + j, the warps in order
        if (c0 + j >= OC) break;
        float t = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) t = __fadd_rn(t, s[w][j / VEC].v[j % VEC]);
        partial[(size_t)blockIdx.y * OC + c0 + j] = t;
    }
}

template <typename T>
__global__ void __launch_bounds__(32 * COLSUM_REDUCE_MAX_Y)
    colsum_reduce_kernel(T* __restrict__ db, const float* __restrict__ partial, int nsplit, int OC) {
    __shared__ float s[COLSUM_REDUCE_MAX_Y][32];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float t = 0.0f;
    if (c < OC) {
#pragma unroll 4
        for (int k = threadIdx.y; k < nsplit; k += blockDim.y) t = __fadd_rn(t, partial[(size_t)k * OC + c]);
    }
    s[threadIdx.y][threadIdx.x] = t;
    __syncthreads();
    if (threadIdx.y == 0 && c < OC) {
        float u = 0.0f;
        for (int y = 0; y < (int)blockDim.y; y++) u = __fadd_rn(u, s[y][threadIdx.x]);
        db[c] = from_float<T>(to_float(db[c]) + u);
    }
}

// db (OC) += colsum over N rows of what src yields; scratch: colsum_scratch_floats(N, OC)
// floats. The caller picks VEC (16 / sizeof(T) where sizes and pointers allow, else 1).
template <int VEC, class Src, typename T>
void colsum_launch(T* db, float* scratch, const Src& src, int N, int OC, cudaStream_t st) {
    const ColsumPlan p = colsum_plan(N, OC);
    if (p.nsplit == 0) return;
    launch_kernel(colsum_partial_kernel<VEC, Src>, dim3(ceil_div(OC, 32 * VEC), p.nsplit), dim3(COLSUM_THREADS), 0, st, scratch, src, N,
                  OC, p.rows_per_split);
    launch_kernel(colsum_reduce_kernel<T>, dim3(ceil_div(OC, 32)), dim3(32, std::min(p.nsplit, COLSUM_REDUCE_MAX_Y)), 0, st, db, scratch,
                  p.nsplit, OC);
}

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
