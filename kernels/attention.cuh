// attention.cuh - causal multi-head attention, forward and backward, with the T x T scores
// materialised (batched GEMMs through kernels/cublas_wrap.cuh; fine at T = 256).
//
// Math, per (b, h), with Q, K, V the (T, hd) slices of the head and s = 1/sqrt(hd):
//   forward   S = Q K^T                     (batched GEMM)
//             P = softmax(s * S) over j <= i, P[i, j > i] = 0   (softmax_forward_kernel)
//             Y = P V                       (batched GEMM)
//   backward  dP = dY V^T,  dV = P^T dY     (batched GEMMs)
//             dS = s * P * (dP - rowsum(P * dP))                (softmax_backward_kernel)
//             dQ = dS K,    dK = dS^T Q     (batched GEMMs)
//
// Layouts: qkv (B, T, 3C) as the QKV projection writes it ([q | k | v] per token, head h in
// columns [h*hd, (h+1)*hd) of each part). The GEMMs want each head contiguous, so
// split_heads copies it to three (B, NH, T, hd) blocks q, k, v; merge_heads copies back
// (the attention output to (B, T, C); dq, dk, dv to dqkv (B, T, 3C)). P is kept
// (B, NH, T, T) per layer for the backward; the permuted copies are scratch (re-made in the
// backward from qkv).
#pragma once

#include "common.cuh"
#include "cublas_wrap.cuh"

constexpr int SOFTMAX_BLOCK = EW_BLOCK;  // one warp per row (rows grid-strided over the warps)

// (B, T, parts*C) -> parts blocks of (B, NH, T, hd), block p at dst + p*B*T*C
template <typename T>
__global__ void split_heads_kernel(T* __restrict__ dst, const T* __restrict__ src, int B, int T_, int C, int NH, int parts) {
    const int hd = C / NH;
    const size_t total = (size_t)parts * B * T_ * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        // dst index (p, b, h, t, d)
        const int d = (int)(i % hd);
        size_t r = i / hd;
        const int t = (int)(r % T_);
        r /= T_;
        const int h = (int)(r % NH);
        r /= NH;
        const int b = (int)(r % B);
        const int p = (int)(r / B);
        dst[i] = src[((size_t)b * T_ + t) * parts * C + (size_t)p * C + h * hd + d];
    }
}
// the inverse: parts blocks of (B, NH, T, hd) -> (B, T, parts*C)
template <typename T>
__global__ void merge_heads_kernel(T* __restrict__ dst, const T* __restrict__ src, int B, int T_, int C, int NH, int parts) {
    const int hd = C / NH;
    const size_t total = (size_t)parts * B * T_ * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        // dst index (b, t, p, h, d): consecutive threads write consecutive addresses
        const int d = (int)(i % hd);
        size_t r = i / hd;
        const int h = (int)(r % NH);
        r /= NH;
        const int p = (int)(r % parts);
        r /= parts;
        const int t = (int)(r % T_);
        const int b = (int)(r / T_);
        dst[i] = src[(((size_t)p * B + b) * NH + h) * T_ * hd + (size_t)t * hd + d];
    }
}

// The softmax kernels give each row a group of G lanes (G a power of two <= 32, about T/8:
// a whole warp per row at T >= 256, several rows per warp for short rows); the group's
// reductions are xor shuffles with offsets < G, which stay inside the group. All 32 lanes of
// a warp run the same loop (lanes past the last row take part in the shuffles only),
// so every shuffle has the full warp. Rows are grid-strided over the warps; no block barrier.
template <int G>
__device__ __forceinline__ float group_reduce_sum(float v) {
    for (int off = G / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
template <int G>
__device__ __forceinline__ float group_reduce_max(float v) {
    for (int off = G / 2; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// Row r (of rows = B*NH*T; i = r % T) of one (b, h):
//   P[i, j] = exp(s S[i,j] - max) / sum  for j <= i,  0 for j > i.   In place (P may be S).
template <typename T, int G>
__global__ void softmax_forward_kernel(T* P, const T* S, float scale, int rows, int T_) {
    constexpr int RPW = 32 / G;  // rows per warp and round
    const int lane = threadIdx.x % 32, g = lane % G, warps = gridDim.x * (blockDim.x / 32);
    for (int base = (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * RPW; base < rows; base += warps * RPW) {
        const int row = min(base + lane / G, rows - 1);
        const bool owner = base + lane / G < rows;
        const int i = owner ? row % T_ : -1;  // lanes past the end read nothing (the owner may be writing that row)
        const T* s = S + (size_t)row * T_;
        T* p = P + (size_t)row * T_;
        float mx = -INFINITY;
        for (int j = g; j <= i; j += G) mx = fmaxf(mx, scale * to_float(s[j]));
        mx = group_reduce_max<G>(mx);
        float sum = 0.0f;
        for (int j = g; j <= i; j += G) sum += expf(scale * to_float(s[j]) - mx);
        sum = group_reduce_sum<G>(sum);
        const float inv = 1.0f / sum;
        if (owner)
            for (int j = g; j < T_; j += G) p[j] = from_float<T>(j <= i ? expf(scale * to_float(s[j]) - mx) * inv : 0.0f);
    }
}

//   dS[i, j] = s * P[i,j] * (dP[i,j] - sum_k P[i,k] dP[i,k])  for j <= i,  0 for j > i.   In place (dS may be dP).
template <typename T, int G>
__global__ void softmax_backward_kernel(T* dS, const T* dP, const T* __restrict__ P, float scale,
                                                                         int rows, int T_) {
    constexpr int RPW = 32 / G;
    const int lane = threadIdx.x % 32, g = lane % G, warps = gridDim.x * (blockDim.x / 32);
    for (int base = (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * RPW; base < rows; base += warps * RPW) {
        const int row = min(base + lane / G, rows - 1);
        const bool owner = base + lane / G < rows;
        const int i = owner ? row % T_ : -1;
        const T* dp = dP + (size_t)row * T_;
        const T* p = P + (size_t)row * T_;
        T* ds = dS + (size_t)row * T_;
        float dot = 0.0f;
        for (int j = g; j <= i; j += G) dot += to_float(p[j]) * to_float(dp[j]);
        dot = group_reduce_sum<G>(dot);
        if (owner)
            for (int j = g; j < T_; j += G) ds[j] = from_float<T>(j <= i ? scale * to_float(p[j]) * (to_float(dp[j]) - dot) : 0.0f);
    }
}

// lanes per row for rows of length T_: about T/8, a power of two in [1, 32]
inline int softmax_group(int T_) {
    int g = 1;
    while (g < 32 && g * 8 < T_) g *= 2;
    return g;
}
// launch kernel K<T, G> for the G that softmax_group picks
#define SOFTMAX_LAUNCH(K, T_, ...)                                                                      \
    do {                                                                                               \
        const int g_ = softmax_group(T_);                                                              \
        const size_t lanes_ = (size_t)ceil_div(rows, 32 / g_) * 32;                                    \
        const int grid_ = grid_stride_blocks(lanes_, SOFTMAX_BLOCK);                                   \
        switch (g_) {                                                                                  \
            case 1: launch_kernel(K<T, 1>, grid_, SOFTMAX_BLOCK, 0, st, __VA_ARGS__); break;          \
            case 2: launch_kernel(K<T, 2>, grid_, SOFTMAX_BLOCK, 0, st, __VA_ARGS__); break;          \
            case 4: launch_kernel(K<T, 4>, grid_, SOFTMAX_BLOCK, 0, st, __VA_ARGS__); break;          \
            case 8: launch_kernel(K<T, 8>, grid_, SOFTMAX_BLOCK, 0, st, __VA_ARGS__); break;          \
            case 16: launch_kernel(K<T, 16>, grid_, SOFTMAX_BLOCK, 0, st, __VA_ARGS__); break;        \
            default: launch_kernel(K<T, 32>, grid_, SOFTMAX_BLOCK, 0, st, __VA_ARGS__); break;        \
        }                                                                                              \
    } while (0)

// ----------------------------------------------------------------------------
// host side

template <typename T>
void split_heads(T* dst, const T* src, int B, int T_, int C, int NH, int parts, cudaStream_t st) {
    launch_kernel(split_heads_kernel<T>, grid_stride_blocks((size_t)parts * B * T_ * C, EW_BLOCK), EW_BLOCK, 0, st, dst, src, B, T_, C, NH, parts);
}
template <typename T>
void merge_heads(T* dst, const T* src, int B, int T_, int C, int NH, int parts, cudaStream_t st) {
    launch_kernel(merge_heads_kernel<T>, grid_stride_blocks((size_t)parts * B * T_ * C, EW_BLOCK), EW_BLOCK, 0, st, dst, src, B, T_, C, NH, parts);
}

// Scratch the attention calls need (elements of T): qkvp 3*B*T*C + yp B*T*C (+ the backward's
// dS B*NH*T*T, which may reuse nothing else).
inline size_t attention_scratch_elems(int B, int T_, int C, int NH) { return (size_t)4 * B * T_ * C + (size_t)B * NH * T_ * T_; }

// out (B, T, C) = attention(qkv); att (B, NH, T, T) receives P. scratch: attention_scratch_elems.
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, T* scratch, int B, int T_, int C, int NH, cudaStream_t st) {
    const int hd = C / NH, BH = B * NH;
    const size_t NC = (size_t)B * T_ * C, TT = (size_t)T_ * T_, Thd = (size_t)T_ * hd;
    T* q = scratch;
    T* k = q + NC;
    T* v = k + NC;
    T* yp = v + NC;
    split_heads(q, qkv, B, T_, C, NH, 3, st);
    gemm<T>(att, q, k, nullptr, T_, T_, hd, false, true, false, st, BH, Thd, Thd, TT);  // S = Q K^T
    const int rows = BH * T_;
    SOFTMAX_LAUNCH(softmax_forward_kernel, T_, att, att, 1.0f / sqrtf((float)hd), rows, T_);
    gemm<T>(yp, att, v, nullptr, T_, hd, T_, false, false, false, st, BH, TT, Thd, Thd);  // Y = P V
    merge_heads(out, yp, B, T_, C, NH, 1, st);
}

// dqkv (B, T, 3C) = the gradient w.r.t. qkv (overwritten); dout (B, T, C); qkv and att as the
// forward left them. scratch: attention_scratch_elems.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, T* scratch, int B, int T_, int C, int NH, cudaStream_t st) {
    const int hd = C / NH, BH = B * NH;
    const size_t NC = (size_t)B * T_ * C, TT = (size_t)T_ * T_, Thd = (size_t)T_ * hd;
    T* q = scratch;
    T* k = q + NC;
    T* v = k + NC;
    T* dyp = v + NC;
    T* dS = dyp + NC;
    split_heads(q, qkv, B, T_, C, NH, 3, st);
    split_heads(dyp, dout, B, T_, C, NH, 1, st);
    gemm<T>(dS, dyp, v, nullptr, T_, T_, hd, false, true, false, st, BH, Thd, Thd, TT);  // dP = dY V^T
    // dV = P^T dY goes into the v block: V's last use is the dP product above
    gemm<T>(v, att, dyp, nullptr, T_, hd, T_, true, false, false, st, BH, TT, Thd, Thd);
    const int rows = BH * T_;
    SOFTMAX_LAUNCH(softmax_backward_kernel, T_, dS, dS, att, 1.0f / sqrtf((float)hd), rows, T_);
    // dQ = dS K into dyp (dY is consumed), dK = dS^T Q into k's slot once dQ has read k:
    gemm<T>(dyp, dS, k, nullptr, T_, hd, T_, false, false, false, st, BH, TT, Thd, Thd);  // dQ
    gemm<T>(k, dS, q, nullptr, T_, hd, T_, true, false, false, st, BH, TT, Thd, Thd);     // dK (k is dead now)
    // blocks now: q (dead), k = dK, v = dV, dyp = dQ. Move dQ into the q slot, then merge.
    cudaCheck(cudaMemcpyAsync(q, dyp, NC * sizeof(T), cudaMemcpyDeviceToDevice, st));
    merge_heads(dqkv, q, B, T_, C, NH, 3, st);
}
