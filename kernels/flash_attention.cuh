// flash_attention.cuh - causal multi-head attention without the T x T matrices (bf16, tensor
// cores through mma.sync), forward and backward; kernels/attention.cuh holds the materialised
// version (fp32 runs, head sizes over 64, --attention matmul) and the math both compute.
//
// Math per (b, h), Q, K, V the (T, hd) slices of the head, s = 1/sqrt(hd), j <= i (causal):
//   forward   S = s Q K^T;  m_i = max_j S_ij;  l_i = sum_j exp(S_ij - m_i);  Y = (exp(S - m) / l) V
//             streamed over key tiles with the online-softmax recurrence: for each new tile,
//             m' = max(m, rowmax), l = l e^(m - m') + rowsum(e^(S - m')), O = O e^(m - m') + e^(S - m') V.
//             Only L_i = m_i + log l_i (the log-sum-exp) is kept for the backward.
//   backward  P = exp(S - L) (recomputed);  D_i = sum_d dY_id Y_id;  dP = dY V^T;
//             dS = s P (dP - D);  dV = P^T dY;  dK = dS^T Q;  dQ = dS K
// Exponentials are exp2 of scores pre-multiplied by log2(e); L is stored in that base-2 unit.
//
// Layouts (no split/merge copies): qkv (B, T, 3C) as the QKV projection writes it (head h of
// q, k, v at columns h*hd, C + h*hd, 2C + h*hd); the output Y and dY (B, T, C); dqkv
// (B, T, 3C); L and D (B, NH, T) fp32.
//
// Tiling (FlashAttention-2 style): a block of 4 warps owns 64 rows (queries in the forward and
// the dQ kernel, keys in the dK/dV kernel), a warp 16 of them, and streams 64-row tiles of the
// other side through shared memory. Head dims are zero-padded in shared memory to HD = 16, 32
// or 64, so any hd <= 64 works; rows past T are zero and masked. Every product is a sequence
// of warp-wide mma.sync m16n8k16 (bf16 in, fp32 accumulate; mma_bf16_16816 in common.cuh,
// which documents the register layouts). The accumulator layout of a 16 x 8 product (lane
// holds rows g = lane/4 and g+8, columns 2t, 2t+1 with t = lane%4) is exactly what the next
// product needs as its A operand, so scores turn into probabilities in registers: row
// maxima and sums are reduced over the 4 lanes of a row (xor shuffles 1, 2), and P or dS
// never touch shared memory.
// Deterministic: no atomics (dQ has its own kernel instead of FA2's atomic adds; it recomputes
// S and dP, about 40% more backward FLOPs, for run-to-run identical gradients).
#pragma once

#include <cstdint>
#include <cstring>

#include "common.cuh"

constexpr int FA_ROWS = 64;      // rows per block (4 warps x 16) and per streamed tile
constexpr int FA_THREADS = 128;
constexpr int FA_MAX_HD = 64;

// Shared-memory tiles are (64 x HD) bf16 with row stride LDH = HD + 8: the +8 skews rows by
// 16 bytes, so the 32 lanes' 4-byte fragment loads (8 rows x 4 words) hit 32 different banks.
template <int HD> struct FaDims {
    static constexpr int LDH = HD + 8;
    static constexpr size_t TILE = (size_t)FA_ROWS * LDH;   // elements of one tile
};

// ----------------------------------------------------------------------------
// tile loads: rows [r0, r0 + 64) of one head (columns col0 .. col0 + hd of a row-major matrix
// with row stride `ld`) into a (64 x HD) bf16 tile; zero past T and past hd. 16-byte loads
// when the columns allow it (vec8: hd, ld and col0 multiples of 8).
template <int HD>
__device__ __forceinline__ void fa_load_tile(__nv_bfloat16* dst, const __nv_bfloat16* src, size_t ld, int col0, int r0, int T_, int hd,
                                             bool vec8) {
    constexpr int LDH = FaDims<HD>::LDH, CH = HD / 8;
    for (int idx = threadIdx.x; idx < FA_ROWS * CH; idx += FA_THREADS) {
        const int r = idx / CH, c = (idx % CH) * 8, t = r0 + r;
        __nv_bfloat16* d = dst + r * LDH + c;
        if (vec8 && t < T_ && c + 8 <= hd) {
            store_packed<__nv_bfloat16, 8>(d, load_packed<__nv_bfloat16, 8>(src + (size_t)t * ld + col0 + c));
        } else {
            for (int e = 0; e < 8; e++)
                d[e] = (t < T_ && c + e < hd) ? src[(size_t)t * ld + col0 + c + e] : __float2bfloat16_rn(0.0f);
        }
    }
}
// 64 floats of a (B, NH, T) row vector into shared memory (0 past T)
__device__ __forceinline__ void fa_load_vec(float* dst, const float* src, int r0, int T_) {
    for (int i = threadIdx.x; i < FA_ROWS; i += FA_THREADS) dst[i] = r0 + i < T_ ? src[r0 + i] : 0.0f;
}

namespace fa {
// two bf16 of a tile row, adjacent columns (c even), as one register
template <int HD>
__device__ __forceinline__ uint32_t pair_in_row(const __nv_bfloat16* tile, int r, int c) {
    return *reinterpret_cast<const uint32_t*>(tile + r * FaDims<HD>::LDH + c);
}
__device__ __forceinline__ uint32_t pack(__nv_bfloat16 lo, __nv_bfloat16 hi) {
    uint16_t l, h;
    memcpy(&l, &lo, 2);
    memcpy(&h, &hi, 2);
    return (uint32_t)l | ((uint32_t)h << 16);
}
// two bf16 of a tile column c, adjacent rows (r, r + 1), as one register
template <int HD>
__device__ __forceinline__ uint32_t pair_in_col(const __nv_bfloat16* tile, int r, int c) {
    return pack(tile[r * FaDims<HD>::LDH + c], tile[(r + 1) * FaDims<HD>::LDH + c]);
}
// A fragment (16 x 16, row-major) of tile rows r0.. r0+15, columns k0.. k0+15
template <int HD>
__device__ __forceinline__ void load_a(uint32_t a[4], const __nv_bfloat16* tile, int r0, int k0) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    a[0] = pair_in_row<HD>(tile, r0 + g, k0 + 2 * t);
    a[1] = pair_in_row<HD>(tile, r0 + g + 8, k0 + 2 * t);
    a[2] = pair_in_row<HD>(tile, r0 + g, k0 + 2 * t + 8);
    a[3] = pair_in_row<HD>(tile, r0 + g + 8, k0 + 2 * t + 8);
}
// B fragment (16 x 8) of X^T for X a tile: B[k][n] = X[n0 + n][k0 + k] (scores against the
// tile's rows: S = A X^T)
template <int HD>
__device__ __forceinline__ void load_b_t(uint32_t b[2], const __nv_bfloat16* tile, int n0, int k0) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    b[0] = pair_in_row<HD>(tile, n0 + g, k0 + 2 * t);
    b[1] = pair_in_row<HD>(tile, n0 + g, k0 + 2 * t + 8);
}
// B fragment (16 x 8) of a tile itself: B[k][n] = X[k0 + k][n0 + n] (P X products)
template <int HD>
__device__ __forceinline__ void load_b(uint32_t b[2], const __nv_bfloat16* tile, int k0, int n0) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    b[0] = pair_in_col<HD>(tile, k0 + 2 * t, n0 + g);
    b[1] = pair_in_col<HD>(tile, k0 + 2 * t + 8, n0 + g);
}
// the accumulators of two adjacent 16 x 8 blocks (columns 16kk.. 16kk+15) as the A fragment
// of the next product, rounded to bf16
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float lo[4], const float hi[4]) {
    a[0] = pack(__float2bfloat16_rn(lo[0]), __float2bfloat16_rn(lo[1]));
    a[1] = pack(__float2bfloat16_rn(lo[2]), __float2bfloat16_rn(lo[3]));
    a[2] = pack(__float2bfloat16_rn(hi[0]), __float2bfloat16_rn(hi[1]));
    a[3] = pack(__float2bfloat16_rn(hi[2]), __float2bfloat16_rn(hi[3]));
}
// write a warp's 16 x HD accumulators (acc[nb] covers columns 8nb.. 8nb+7) to rows r0.. of a
// row-major bf16 matrix (stride ld, columns col0 .. col0 + hd), rows < T only, times mul[2]
// (row g, row g + 8)
template <int HD>
__device__ __forceinline__ void store_acc(__nv_bfloat16* dst, size_t ld, int col0, int r0, int T_, int hd, const float (*acc)[4],
                                          const float mul[2]) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    for (int half = 0; half < 2; half++) {
        const int r = r0 + g + 8 * half;
        if (r >= T_) continue;
        __nv_bfloat16* row = dst + (size_t)r * ld + col0;
        for (int nb = 0; nb < HD / 8; nb++)
            for (int e = 0; e < 2; e++) {
                const int d = nb * 8 + 2 * t + e;
                if (d < hd) row[d] = __float2bfloat16_rn(acc[nb][2 * half + e] * mul[half]);
            }
    }
}
__device__ __forceinline__ float quad_max(float v) {   // over the 4 lanes of a row
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
}  // namespace fa

// ----------------------------------------------------------------------------
// forward: grid (query tiles, B*NH), 128 threads. out (B, T, C); lse (B, NH, T), base 2.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS)
    flash_attention_forward_kernel(__nv_bfloat16* __restrict__ out, float* __restrict__ lse, const __nv_bfloat16* __restrict__ qkv,
                                   int T_, int C, int NH, float scale_log2, int vec8) {
    using namespace fa;
    constexpr int KC = HD / 16, NB = HD / 8, NS = FA_ROWS / 8;
    const int hd = C / NH, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;   // the longest (last) query tiles first
    const int warp = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    __nv_bfloat16* sQ = dynamic_shared_memory<__nv_bfloat16>();
    __nv_bfloat16* sK = sQ + FaDims<HD>::TILE;
    __nv_bfloat16* sV = sK + FaDims<HD>::TILE;
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    fa_load_tile<HD>(sQ, base, ld, h * hd, q0, T_, hd, vec8);
    __syncthreads();
    uint32_t qf[KC][4];
    for (int kc = 0; kc < KC; kc++) load_a<HD>(qf[kc], sQ, warp * 16, kc * 16);

    const int qrow[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};   // this lane's two query rows
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, o[NB][4];
    for (int nb = 0; nb < NB; nb++) o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0.0f;
    const int last_tile = min(q0 + FA_ROWS - 1, T_ - 1) / FA_ROWS;
    for (int kt = 0; kt <= last_tile; kt++) {
        const int k0 = kt * FA_ROWS;
        __syncthreads();   // the previous tiles are consumed
        fa_load_tile<HD>(sK, base, ld, C + h * hd, k0, T_, hd, vec8);
        fa_load_tile<HD>(sV, base, ld, 2 * C + h * hd, k0, T_, hd, vec8);
        __syncthreads();
        if (k0 > q0 + warp * 16 + 15) continue;   // every key of the tile is after this warp's rows
        // S (16 x 64) = Q K^T as 8 blocks of 16 x 8, scaled to base 2 and masked
        float s[NS][4];
        for (int j = 0; j < NS; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            for (int kc = 0; kc < KC; kc++) {
                uint32_t bk[2];
                load_b_t<HD>(bk, sK, j * 8, kc * 16);
                mma_bf16_16816(s[j], qf[kc], bk);
            }
            for (int e = 0; e < 4; e++) {
                const int key = k0 + j * 8 + 2 * t + (e & 1), q = qrow[e >> 1];
                s[j][e] = (key <= q && key < T_) ? s[j][e] * scale_log2 : -INFINITY;
            }
        }
        // online softmax, rows g (elements 0, 1) and g + 8 (elements 2, 3)
        float use[2], alpha[2];
        for (int hf = 0; hf < 2; hf++) {
            float mx = -INFINITY;
            for (int j = 0; j < NS; j++) mx = fmaxf(mx, fmaxf(s[j][2 * hf], s[j][2 * hf + 1]));
            const float m_new = fmaxf(m[hf], quad_max(mx));
            use[hf] = m_new == -INFINITY ? 0.0f : m_new;   // a row with nothing unmasked yet
            alpha[hf] = exp2f(m[hf] - use[hf]);           // 0 while m = -inf
            m[hf] = m_new;
        }
        float sum[2] = {0.0f, 0.0f};
        for (int j = 0; j < NS; j++)
            for (int e = 0; e < 4; e++) {
                // round to bf16 here, so l sums exactly the values P V multiplies
                s[j][e] = __bfloat162float(__float2bfloat16_rn(exp2f(s[j][e] - use[e >> 1])));
                sum[e >> 1] += s[j][e];
            }
        for (int hf = 0; hf < 2; hf++) l[hf] = l[hf] * alpha[hf] + quad_sum(sum[hf]);
        for (int nb = 0; nb < NB; nb++) {
            o[nb][0] *= alpha[0]; o[nb][1] *= alpha[0];
            o[nb][2] *= alpha[1]; o[nb][3] *= alpha[1];
        }
        // O += P V
        for (int kk = 0; kk < FA_ROWS / 16; kk++) {
            uint32_t pa[4];
            acc_to_a(pa, s[2 * kk], s[2 * kk + 1]);
            for (int nb = 0; nb < NB; nb++) {
                uint32_t bv[2];
                load_b<HD>(bv, sV, kk * 16, nb * 8);
                mma_bf16_16816(o[nb], pa, bv);
            }
        }
    }
    const float inv[2] = {1.0f / l[0], 1.0f / l[1]};
    store_acc<HD>(out + (size_t)b * T_ * C, C, h * hd, q0 + warp * 16, T_, hd, o, inv);
    if (t == 0)
        for (int hf = 0; hf < 2; hf++)
            if (qrow[hf] < T_) lse[(size_t)bh * T_ + qrow[hf]] = m[hf] + log2f(l[hf]);
}

// D_i = sum_d dY_id Y_id per (b, h, i): one warp per row, rows grid-strided.
__global__ void flash_attention_dsum_kernel(float* __restrict__ dsum, const __nv_bfloat16* __restrict__ dout,
                                            const __nv_bfloat16* __restrict__ y, int B, int T_, int C, int NH) {
    const int hd = C / NH, lane = threadIdx.x % 32;
    const size_t rows = (size_t)B * NH * T_, warps = (size_t)gridDim.x * (blockDim.x / 32);
    for (size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
        const int t = (int)(row % T_), bh = (int)(row / T_), b = bh / NH, h = bh % NH;
        const size_t off = ((size_t)b * T_ + t) * C + h * hd;
        float acc = 0.0f;
        for (int d = lane; d < hd; d += 32) acc += __bfloat162float(dout[off + d]) * __bfloat162float(y[off + d]);
        acc = warp_reduce_sum(acc);
        if (lane == 0) dsum[row] = acc;
    }
}

// dK, dV: grid (key tiles, B*NH), 128 threads; each warp owns 16 keys and streams the query
// tiles at and after its key tile, computing the transposed products directly:
// S^T = K Q^T, dP^T = V dY^T (16 keys x 64 queries), P^T, dS^T, then dV += P^T dY, dK += dS^T Q.
// Writes the k and v parts of dqkv (B, T, 3C).
template <int HD>
__global__ void __launch_bounds__(FA_THREADS)
    flash_attention_dkv_kernel(__nv_bfloat16* __restrict__ dqkv, const __nv_bfloat16* __restrict__ dout,
                               const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse, const float* __restrict__ dsum,
                               int T_, int C, int NH, float scale, float scale_log2, int vec8) {
    using namespace fa;
    constexpr int KC = HD / 16, NB = HD / 8;
    const int hd = C / NH, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int k0 = blockIdx.x * FA_ROWS;
    const int warp = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    __nv_bfloat16* sK = dynamic_shared_memory<__nv_bfloat16>();
    __nv_bfloat16* sV = sK + FaDims<HD>::TILE;
    __nv_bfloat16* sQ = sV + FaDims<HD>::TILE;
    __nv_bfloat16* sdY = sQ + FaDims<HD>::TILE;
    float* sL = reinterpret_cast<float*>(sdY + FaDims<HD>::TILE);
    float* sD = sL + FA_ROWS;
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    const __nv_bfloat16* dyb = dout + (size_t)b * T_ * C;
    fa_load_tile<HD>(sK, base, ld, C + h * hd, k0, T_, hd, vec8);
    fa_load_tile<HD>(sV, base, ld, 2 * C + h * hd, k0, T_, hd, vec8);
    __syncthreads();
    uint32_t kf[KC][4], vf[KC][4];
    for (int kc = 0; kc < KC; kc++) {
        load_a<HD>(kf[kc], sK, warp * 16, kc * 16);
        load_a<HD>(vf[kc], sV, warp * 16, kc * 16);
    }
    const int krow[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};   // this lane's two key rows
    float dk[NB][4], dv[NB][4];
    for (int nb = 0; nb < NB; nb++)
        for (int e = 0; e < 4; e++) dk[nb][e] = dv[nb][e] = 0.0f;
    const int ntiles = (T_ + FA_ROWS - 1) / FA_ROWS;
    for (int qt = blockIdx.x; qt < ntiles; qt++) {   // query tiles at or after the key tile
        const int q0 = qt * FA_ROWS;
        __syncthreads();
        fa_load_tile<HD>(sQ, base, ld, h * hd, q0, T_, hd, vec8);
        fa_load_tile<HD>(sdY, dyb, C, h * hd, q0, T_, hd, vec8);
        fa_load_vec(sL, lse + (size_t)bh * T_, q0, T_);
        fa_load_vec(sD, dsum + (size_t)bh * T_, q0, T_);
        __syncthreads();
        for (int kk = 0; kk < FA_ROWS / 16; kk++) {   // queries 16kk .. 16kk + 15 of the tile
            float st[2][4], dpt[2][4];
            for (int jj = 0; jj < 2; jj++) {
                const int j = 2 * kk + jj;
                for (int e = 0; e < 4; e++) st[jj][e] = dpt[jj][e] = 0.0f;
                for (int kc = 0; kc < KC; kc++) {
                    uint32_t bq[2], bdy[2];
                    load_b_t<HD>(bq, sQ, j * 8, kc * 16);
                    load_b_t<HD>(bdy, sdY, j * 8, kc * 16);
                    mma_bf16_16816(st[jj], kf[kc], bq);    // S^T
                    mma_bf16_16816(dpt[jj], vf[kc], bdy);  // dP^T
                }
                for (int e = 0; e < 4; e++) {
                    const int qc = j * 8 + 2 * t + (e & 1), q = q0 + qc, key = krow[e >> 1];
                    const bool valid = q >= key && q < T_ && key < T_;
                    const float p = valid ? exp2f(st[jj][e] * scale_log2 - sL[qc]) : 0.0f;
                    st[jj][e] = p;
                    dpt[jj][e] = p * (dpt[jj][e] - sD[qc]) * scale;   // dS^T
                }
            }
            uint32_t pa[4], dsa[4];
            acc_to_a(pa, st[0], st[1]);
            acc_to_a(dsa, dpt[0], dpt[1]);
            for (int nb = 0; nb < NB; nb++) {
                uint32_t bdy[2], bq[2];
                load_b<HD>(bdy, sdY, kk * 16, nb * 8);
                load_b<HD>(bq, sQ, kk * 16, nb * 8);
                mma_bf16_16816(dv[nb], pa, bdy);    // dV += P^T dY
                mma_bf16_16816(dk[nb], dsa, bq);    // dK += dS^T Q
            }
        }
    }
    const float one[2] = {1.0f, 1.0f};
    __nv_bfloat16* db = dqkv + (size_t)b * T_ * ld;
    store_acc<HD>(db, ld, C + h * hd, k0 + warp * 16, T_, hd, dk, one);
    store_acc<HD>(db, ld, 2 * C + h * hd, k0 + warp * 16, T_, hd, dv, one);
}

// dQ: grid (query tiles, B*NH), 128 threads; each warp owns 16 queries and streams the key
// tiles up to the diagonal: S = Q K^T, dP = dY V^T, dS, dQ += dS K. Writes the q part of dqkv.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS)
    flash_attention_dq_kernel(__nv_bfloat16* __restrict__ dqkv, const __nv_bfloat16* __restrict__ dout,
                              const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse, const float* __restrict__ dsum,
                              int T_, int C, int NH, float scale, float scale_log2, int vec8) {
    using namespace fa;
    constexpr int KC = HD / 16, NB = HD / 8;
    const int hd = C / NH, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;
    const int warp = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    __nv_bfloat16* sQ = dynamic_shared_memory<__nv_bfloat16>();
    __nv_bfloat16* sdY = sQ + FaDims<HD>::TILE;
    __nv_bfloat16* sK = sdY + FaDims<HD>::TILE;
    __nv_bfloat16* sV = sK + FaDims<HD>::TILE;
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    fa_load_tile<HD>(sQ, base, ld, h * hd, q0, T_, hd, vec8);
    fa_load_tile<HD>(sdY, dout + (size_t)b * T_ * C, C, h * hd, q0, T_, hd, vec8);
    __syncthreads();
    uint32_t qf[KC][4], dyf[KC][4];
    for (int kc = 0; kc < KC; kc++) {
        load_a<HD>(qf[kc], sQ, warp * 16, kc * 16);
        load_a<HD>(dyf[kc], sdY, warp * 16, kc * 16);
    }
    const int qrow[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    float L[2], Dr[2];
    for (int hf = 0; hf < 2; hf++) {
        L[hf] = qrow[hf] < T_ ? lse[(size_t)bh * T_ + qrow[hf]] : 0.0f;
        Dr[hf] = qrow[hf] < T_ ? dsum[(size_t)bh * T_ + qrow[hf]] : 0.0f;
    }
    float dq[NB][4];
    for (int nb = 0; nb < NB; nb++) dq[nb][0] = dq[nb][1] = dq[nb][2] = dq[nb][3] = 0.0f;
    const int last_tile = min(q0 + FA_ROWS - 1, T_ - 1) / FA_ROWS;
    for (int kt = 0; kt <= last_tile; kt++) {
        const int k0 = kt * FA_ROWS;
        __syncthreads();
        fa_load_tile<HD>(sK, base, ld, C + h * hd, k0, T_, hd, vec8);
        fa_load_tile<HD>(sV, base, ld, 2 * C + h * hd, k0, T_, hd, vec8);
        __syncthreads();
        if (k0 > q0 + warp * 16 + 15) continue;
        for (int kk = 0; kk < FA_ROWS / 16; kk++) {   // keys 16kk .. 16kk + 15 of the tile
            float s[2][4], dp[2][4];
            for (int jj = 0; jj < 2; jj++) {
                const int j = 2 * kk + jj;
                for (int e = 0; e < 4; e++) s[jj][e] = dp[jj][e] = 0.0f;
                for (int kc = 0; kc < KC; kc++) {
                    uint32_t bk[2], bv[2];
                    load_b_t<HD>(bk, sK, j * 8, kc * 16);
                    load_b_t<HD>(bv, sV, j * 8, kc * 16);
                    mma_bf16_16816(s[jj], qf[kc], bk);    // S
                    mma_bf16_16816(dp[jj], dyf[kc], bv);  // dP = dY V^T
                }
                for (int e = 0; e < 4; e++) {
                    const int key = k0 + j * 8 + 2 * t + (e & 1), hf = e >> 1;
                    const bool valid = key <= qrow[hf] && key < T_ && qrow[hf] < T_;
                    const float p = valid ? exp2f(s[jj][e] * scale_log2 - L[hf]) : 0.0f;
                    dp[jj][e] = p * (dp[jj][e] - Dr[hf]) * scale;   // dS
                }
            }
            uint32_t dsa[4];
            acc_to_a(dsa, dp[0], dp[1]);
            for (int nb = 0; nb < NB; nb++) {
                uint32_t bk[2];
                load_b<HD>(bk, sK, kk * 16, nb * 8);
                mma_bf16_16816(dq[nb], dsa, bk);   // dQ += dS K
            }
        }
    }
    const float one[2] = {1.0f, 1.0f};
    store_acc<HD>(dqkv + (size_t)b * T_ * ld, ld, h * hd, q0 + warp * 16, T_, hd, dq, one);
}

// ----------------------------------------------------------------------------
// host side

inline bool flash_attention_supported(int C, int NH) { return C % NH == 0 && C / NH <= FA_MAX_HD; }
inline int flash_attention_hd(int C, int NH) {   // the padded head dim
    const int hd = C / NH;
    return hd <= 16 ? 16 : hd <= 32 ? 32 : 64;
}
// fp32 scratch the backward needs: D, (B, NH, T)
inline size_t flash_attention_scratch_floats(int B, int T_, int NH) { return (size_t)B * NH * T_; }

template <int HD>
inline void fa_forward_launch(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T_, int C, int NH, cudaStream_t st) {
    const size_t smem = 3 * FaDims<HD>::TILE * sizeof(__nv_bfloat16);   // Q, K, V tiles: 27 KB at HD = 64
    const int hd = C / NH, vec8 = (hd % 8 == 0 && C % 8 == 0 && is_aligned(qkv, 16)) ? 1 : 0;
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)hd);
    launch_kernel(flash_attention_forward_kernel<HD>, dim3(ceil_div(T_, FA_ROWS), B * NH), FA_THREADS, smem, st, out, lse, qkv, T_, C, NH,
                  scale_log2, vec8);
}
template <int HD>
inline void fa_backward_launch(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse, const float* dsum,
                               int B, int T_, int C, int NH, cudaStream_t st) {
    // four tiles + L and D: 37 KB at HD = 64
    const size_t smem = 4 * FaDims<HD>::TILE * sizeof(__nv_bfloat16) + 2 * FA_ROWS * sizeof(float);
    const int hd = C / NH, vec8 = (hd % 8 == 0 && C % 8 == 0 && is_aligned(qkv, 16) && is_aligned(dout, 16)) ? 1 : 0;
    const float scale = 1.0f / sqrtf((float)hd), scale_log2 = 1.4426950408889634f * scale;
    const dim3 grid(ceil_div(T_, FA_ROWS), B * NH);
    launch_kernel(flash_attention_dkv_kernel<HD>, grid, FA_THREADS, smem, st, dqkv, dout, qkv, lse, dsum, T_, C, NH, scale, scale_log2,
                  vec8);
    launch_kernel(flash_attention_dq_kernel<HD>, grid, FA_THREADS, smem, st, dqkv, dout, qkv, lse, dsum, T_, C, NH, scale, scale_log2,
                  vec8);
}

// out (B, T, C) = causal attention of qkv (B, T, 3C); lse (B, NH, T) for the backward
inline void flash_attention_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T_, int C, int NH, cudaStream_t st) {
    switch (flash_attention_hd(C, NH)) {
        case 16: fa_forward_launch<16>(out, lse, qkv, B, T_, C, NH, st); break;
        case 32: fa_forward_launch<32>(out, lse, qkv, B, T_, C, NH, st); break;
        default: fa_forward_launch<64>(out, lse, qkv, B, T_, C, NH, st); break;
    }
}
// dqkv (B, T, 3C, overwritten) from dout (B, T, C), the forward's qkv, out and lse;
// dsum: flash_attention_scratch_floats
inline void flash_attention_backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const __nv_bfloat16* out,
                                     const float* lse, float* dsum, int B, int T_, int C, int NH, cudaStream_t st) {
    const size_t rows = (size_t)B * NH * T_;
    launch_kernel(flash_attention_dsum_kernel, grid_stride_blocks(rows * 32, EW_BLOCK), EW_BLOCK, 0, st, dsum, dout, out, B, T_, C, NH);
    switch (flash_attention_hd(C, NH)) {
        case 16: fa_backward_launch<16>(dqkv, dout, qkv, lse, dsum, B, T_, C, NH, st); break;
        case 32: fa_backward_launch<32>(dqkv, dout, qkv, lse, dsum, B, T_, C, NH, st); break;
        default: fa_backward_launch<64>(dqkv, dout, qkv, lse, dsum, B, T_, C, NH, st); break;
    }
}
