// flash_attention.cuh - causal multi-head attention without the T x T matrices (bf16, tensor
// cores through the wmma API), forward and backward; kernels/attention.cuh holds the
// materialised version (fp32 runs, head sizes over 64) and the math both compute.
//
// Math per (b, h), Q, K, V the (T, hd) slices of the head, s = 1/sqrt(hd), j <= i (causal):
//   forward   S = s Q K^T;  m_i = max_j S_ij;  l_i = sum_j exp(S_ij - m_i);  Y = (exp(S - m) / l) V
//             streamed over key tiles with the online-softmax recurrence: for each new tile,
//             m' = max(m, rowmax), l = l e^(m - m') + rowsum(e^(S - m')), O = O e^(m - m') + e^(S - m') V.
//             Only L_i = m_i + log l_i (the log-sum-exp) is kept for the backward.
//   backward  P = exp(S - L) (recomputed);  D_i = sum_d dY_id Y_id;  dP = dY V^T;
//             dS = P (dP - D);  dV = P^T dY;  dK = s dS^T Q;  dQ = s dS K
//             (the s of S = s Q K^T is folded into dS here: dS below means s P (dP - D)).
// Exponentials are exp2 of scores pre-multiplied by log2(e); L is stored in that base-2 unit.
//
// Layouts (no split/merge copies): qkv (B, T, 3C) as the QKV projection writes it (head h of
// q, k, v at columns h*hd, C + h*hd, 2C + h*hd); the output Y and dY (B, T, C); dqkv
// (B, T, 3C); L and D (B, NH, T) fp32.
//
// Tiling: a block of 4 warps owns 64 rows (queries in the forward and the dQ kernel, keys in
// the dK/dV kernel), a warp 16 of them; it streams 64-row tiles of the other side through
// shared memory. Head dims are zero-padded in shared memory to HD = 16, 32 or 64 (the wmma
// tile is 16 x 16 x 16), so any hd <= 64 works; rows past T are zero and masked. Products go
// through wmma fragments (S = Q K^T, P V, ...); the softmax steps read the products back
// from shared memory, where lane l of a warp owns row l/2 and half (l%2) of its columns.
// Deterministic: no atomics (dQ has its own kernel instead of FA2's atomic adds; it recomputes
// S and dP, about 40% more backward FLOPs for run-to-run identical gradients).
#pragma once

#include <mma.h>

#include "common.cuh"

constexpr int FA_ROWS = 64;                  // rows per block (4 warps x 16) and per streamed tile
constexpr int FA_THREADS = 128;
constexpr int FA_MAX_HD = 64;

// Shared-memory row strides (elements): +8 bf16 / +4 float skews the rows across banks and
// keeps every 16-row fragment start 32-byte aligned as wmma requires.
template <int HD> struct FaDims {
    static constexpr int LDH = HD + 8;                        // bf16 (64 x HD) tiles
    static constexpr int LDF = (FA_ROWS > HD ? FA_ROWS : HD) + 4;   // per-warp fp32 (16 x 64 or 16 x HD) scratch
    static constexpr int LDP = FA_ROWS + 8;                   // per-warp bf16 (16 x 64) P / dS
    static constexpr size_t TILE = (size_t)FA_ROWS * LDH;     // elements of one bf16 tile
    static constexpr size_t WF = (size_t)16 * LDF;            // floats of one warp's fp32 scratch
    static constexpr size_t WP = (size_t)16 * LDP;            // elements of one warp's bf16 scratch
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
using namespace nvcuda;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBr = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// out (16 x 64 fp32, stride LDF) = A (16 x HD, stride LDH) @ B^T, B a (64 x HD) tile: the
// 16 x 64 block of scores of this warp's rows against a whole tile.
template <int HD>
__device__ __forceinline__ void rows_times_tile_t(float* out, const __nv_bfloat16* A, const __nv_bfloat16* Bt) {
    constexpr int LDH = FaDims<HD>::LDH, LDF = FaDims<HD>::LDF;
    for (int j = 0; j < FA_ROWS / 16; j++) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < HD / 16; k++) {
            FragA a;
            FragBc b;
            wmma::load_matrix_sync(a, A + k * 16, LDH);
            wmma::load_matrix_sync(b, Bt + j * 16 * LDH + k * 16, LDH);   // B^T: column-major view of B
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(out + j * 16, acc, LDF, wmma::mem_row_major);
    }
}
// acc[n] (16 x HD as HD/16 fragments) += P (16 x 64 bf16, stride LDP) @ V, V a (64 x HD) tile
template <int HD>
__device__ __forceinline__ void accumulate_p_times_tile(FragC* acc, const __nv_bfloat16* P, const __nv_bfloat16* V) {
    constexpr int LDH = FaDims<HD>::LDH, LDP = FaDims<HD>::LDP;
    for (int k = 0; k < FA_ROWS / 16; k++) {
        FragA a;
        wmma::load_matrix_sync(a, P + k * 16, LDP);
        for (int n = 0; n < HD / 16; n++) {
            FragBr b;
            wmma::load_matrix_sync(b, V + k * 16 * LDH + n * 16, LDH);
            wmma::mma_sync(acc[n], a, b, acc[n]);
        }
    }
}
// write the warp's 16 x HD accumulators (through its fp32 scratch) to rows r0.. of a
// row-major bf16 matrix (stride ld, columns col0 .. col0 + hd), rows < T only
template <int HD>
__device__ __forceinline__ void store_rows(__nv_bfloat16* dst, size_t ld, int col0, int r0, int T_, int hd, const FragC* acc,
                                           float* scratch) {
    constexpr int LDF = FaDims<HD>::LDF;
    __syncwarp();
    for (int n = 0; n < HD / 16; n++) wmma::store_matrix_sync(scratch + n * 16, acc[n], LDF, wmma::mem_row_major);
    __syncwarp();
    const int lane = threadIdx.x % 32;
    for (int idx = lane; idx < 16 * hd; idx += 32) {
        const int r = idx / hd, c = idx % hd;
        if (r0 + r < T_) dst[(size_t)(r0 + r) * ld + col0 + c] = __float2bfloat16_rn(scratch[r * LDF + c]);
    }
}
}  // namespace fa

// ----------------------------------------------------------------------------
// forward: grid (query tiles, B*NH), 128 threads. out (B, T, C); lse (B, NH, T), base 2.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS)
    flash_attention_forward_kernel(__nv_bfloat16* __restrict__ out, float* __restrict__ lse, const __nv_bfloat16* __restrict__ qkv,
                                   int T_, int C, int NH, float scale_log2, int vec8) {
    using D = FaDims<HD>;
    using namespace fa;
    const int hd = C / NH, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;   // the longest (last) query tiles first
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
    __nv_bfloat16* sQ = dynamic_shared_memory<__nv_bfloat16>();
    __nv_bfloat16* sK = sQ + D::TILE;
    __nv_bfloat16* sV = sK + D::TILE;
    float* sS = reinterpret_cast<float*>(sV + D::TILE) + warp * D::WF;                         // this warp's 16 x 64 scores
    __nv_bfloat16* sP = reinterpret_cast<__nv_bfloat16*>(reinterpret_cast<float*>(sV + D::TILE) + 4 * D::WF) + warp * D::WP;
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    fa_load_tile<HD>(sQ, base, ld, h * hd, q0, T_, hd, vec8);

    const int qi = q0 + warp * 16 + r;                        // this lane's query row
    float m = -INFINITY, l = 0.0f, o[HD / 2];
    for (int c = 0; c < HD / 2; c++) o[c] = 0.0f;
    const int last_tile = min(q0 + FA_ROWS - 1, T_ - 1) / FA_ROWS;
    for (int kt = 0; kt <= last_tile; kt++) {
        const int k0 = kt * FA_ROWS;
        __syncthreads();                                      // the previous tiles are consumed
        fa_load_tile<HD>(sK, base, ld, C + h * hd, k0, T_, hd, vec8);
        fa_load_tile<HD>(sV, base, ld, 2 * C + h * hd, k0, T_, hd, vec8);
        __syncthreads();
        if (k0 > q0 + warp * 16 + 15) continue;               // every key of the tile is after this warp's rows
        rows_times_tile_t<HD>(sS, sQ + warp * 16 * D::LDH, sK);
        __syncwarp();
        // online softmax on this lane's 32 columns of row r
        float mx = -INFINITY;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            const int kj = k0 + c;
            const float s = (kj <= qi && kj < T_) ? sS[r * D::LDF + c] * scale_log2 : -INFINITY;
            sS[r * D::LDF + c] = s;
            mx = fmaxf(mx, s);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m, mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;   // a row with nothing unmasked yet
        float sum = 0.0f;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            const __nv_bfloat16 p = __float2bfloat16_rn(exp2f(sS[r * D::LDF + c] - m_use));
            sP[r * D::LDP + c] = p;
            sum += __bfloat162float(p);                       // l sums the values P V multiplies
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        const float alpha = exp2f(m - m_use);                 // 0 while m = -inf
        l = l * alpha + sum;
        m = m_new;
        __syncwarp();
        FragC acc[HD / 16];
        for (int n = 0; n < HD / 16; n++) wmma::fill_fragment(acc[n], 0.0f);
        accumulate_p_times_tile<HD>(acc, sP, sV);
        for (int n = 0; n < HD / 16; n++) wmma::store_matrix_sync(sS + n * 16, acc[n], D::LDF, wmma::mem_row_major);
        __syncwarp();
        for (int c = 0; c < HD / 2; c++) o[c] = o[c] * alpha + sS[r * D::LDF + half * (HD / 2) + c];
        __syncwarp();                                         // sS is rewritten by the next tile
    }
    if (qi < T_) {
        const float inv = 1.0f / l;
        __nv_bfloat16* y = out + ((size_t)b * T_ + qi) * C + h * hd;
        for (int c = 0; c < HD / 2; c++) {
            const int d = half * (HD / 2) + c;
            if (d < hd) y[d] = __float2bfloat16_rn(o[c] * inv);
        }
        if (half == 0) lse[(size_t)bh * T_ + qi] = m + log2f(l);
    }
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
// tiles at and after its key tile. Writes the k and v parts of dqkv (B, T, 3C).
template <int HD>
__global__ void __launch_bounds__(FA_THREADS, 2)   // (ptxas otherwise caps it at 128 registers and spills)
    flash_attention_dkv_kernel(__nv_bfloat16* __restrict__ dqkv, const __nv_bfloat16* __restrict__ dout,
                               const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse, const float* __restrict__ dsum,
                               int T_, int C, int NH, float scale, float scale_log2, int vec8) {
    using D = FaDims<HD>;
    using namespace fa;
    const int hd = C / NH, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int k0 = blockIdx.x * FA_ROWS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
    __nv_bfloat16* sK = dynamic_shared_memory<__nv_bfloat16>();
    __nv_bfloat16* sV = sK + D::TILE;
    __nv_bfloat16* sQ = sV + D::TILE;
    __nv_bfloat16* sdY = sQ + D::TILE;
    float* sL = reinterpret_cast<float*>(sdY + D::TILE);
    float* sD = sL + FA_ROWS;
    float* sS = sD + FA_ROWS + warp * 2 * D::WF;              // this warp's S^T, then its dP^T
    float* sdP = sS + D::WF;
    __nv_bfloat16* sP = reinterpret_cast<__nv_bfloat16*>(sD + FA_ROWS + 8 * D::WF) + warp * 2 * D::WP;
    __nv_bfloat16* sdS = sP + D::WP;
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    const __nv_bfloat16* dyb = dout + (size_t)b * T_ * C;
    fa_load_tile<HD>(sK, base, ld, C + h * hd, k0, T_, hd, vec8);
    fa_load_tile<HD>(sV, base, ld, 2 * C + h * hd, k0, T_, hd, vec8);

    const int kj = k0 + warp * 16 + r;                        // this lane's key row
    FragC dk[HD / 16], dv[HD / 16];
    for (int n = 0; n < HD / 16; n++) { wmma::fill_fragment(dk[n], 0.0f); wmma::fill_fragment(dv[n], 0.0f); }
    const int ntiles = (T_ + FA_ROWS - 1) / FA_ROWS;
    for (int qt = blockIdx.x; qt < ntiles; qt++) {            // query tiles at or after the key tile
        const int q0 = qt * FA_ROWS;
        __syncthreads();
        fa_load_tile<HD>(sQ, base, ld, h * hd, q0, T_, hd, vec8);
        fa_load_tile<HD>(sdY, dyb, C, h * hd, q0, T_, hd, vec8);
        fa_load_vec(sL, lse + (size_t)bh * T_, q0, T_);
        fa_load_vec(sD, dsum + (size_t)bh * T_, q0, T_);
        __syncthreads();
        rows_times_tile_t<HD>(sS, sK + warp * 16 * D::LDH, sQ);    // S^T (16 keys x 64 queries)
        rows_times_tile_t<HD>(sdP, sV + warp * 16 * D::LDH, sdY);  // dP^T = V dY^T
        __syncwarp();
        for (int c = half * 32; c < half * 32 + 32; c++) {
            const int qi = q0 + c;
            const bool valid = qi >= kj && qi < T_ && kj < T_;
            const float p = valid ? exp2f(sS[r * D::LDF + c] * scale_log2 - sL[c]) : 0.0f;
            const float ds = p * (sdP[r * D::LDF + c] - sD[c]) * scale;
            sP[r * D::LDP + c] = __float2bfloat16_rn(p);
            sdS[r * D::LDP + c] = __float2bfloat16_rn(ds);
        }
        __syncwarp();
        accumulate_p_times_tile<HD>(dv, sP, sdY);            // dV += P^T dY
        accumulate_p_times_tile<HD>(dk, sdS, sQ);            // dK += dS^T Q
    }
    store_rows<HD>(dqkv + (size_t)b * T_ * ld, ld, C + h * hd, k0 + warp * 16, T_, hd, dk, sS);
    store_rows<HD>(dqkv + (size_t)b * T_ * ld, ld, 2 * C + h * hd, k0 + warp * 16, T_, hd, dv, sS);
}

// dQ: grid (query tiles, B*NH), 128 threads; each warp owns 16 queries and streams the key
// tiles up to the diagonal. Writes the q part of dqkv.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS)
    flash_attention_dq_kernel(__nv_bfloat16* __restrict__ dqkv, const __nv_bfloat16* __restrict__ dout,
                              const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse, const float* __restrict__ dsum,
                              int T_, int C, int NH, float scale, float scale_log2, int vec8) {
    using D = FaDims<HD>;
    using namespace fa;
    const int hd = C / NH, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
    __nv_bfloat16* sQ = dynamic_shared_memory<__nv_bfloat16>();
    __nv_bfloat16* sdY = sQ + D::TILE;
    __nv_bfloat16* sK = sdY + D::TILE;
    __nv_bfloat16* sV = sK + D::TILE;
    float* sL = reinterpret_cast<float*>(sV + D::TILE);
    float* sD = sL + FA_ROWS;
    float* sS = sD + FA_ROWS + warp * 2 * D::WF;
    float* sdP = sS + D::WF;
    __nv_bfloat16* sdS = reinterpret_cast<__nv_bfloat16*>(sD + FA_ROWS + 8 * D::WF) + warp * D::WP;
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    fa_load_tile<HD>(sQ, base, ld, h * hd, q0, T_, hd, vec8);
    fa_load_tile<HD>(sdY, dout + (size_t)b * T_ * C, C, h * hd, q0, T_, hd, vec8);
    fa_load_vec(sL, lse + (size_t)bh * T_, q0, T_);
    fa_load_vec(sD, dsum + (size_t)bh * T_, q0, T_);

    const int qi = q0 + warp * 16 + r;
    FragC dq[HD / 16];
    for (int n = 0; n < HD / 16; n++) wmma::fill_fragment(dq[n], 0.0f);
    const int last_tile = min(q0 + FA_ROWS - 1, T_ - 1) / FA_ROWS;
    for (int kt = 0; kt <= last_tile; kt++) {
        const int k0 = kt * FA_ROWS;
        __syncthreads();
        fa_load_tile<HD>(sK, base, ld, C + h * hd, k0, T_, hd, vec8);
        fa_load_tile<HD>(sV, base, ld, 2 * C + h * hd, k0, T_, hd, vec8);
        __syncthreads();
        if (k0 > q0 + warp * 16 + 15) continue;
        rows_times_tile_t<HD>(sS, sQ + warp * 16 * D::LDH, sK);    // S (16 queries x 64 keys)
        rows_times_tile_t<HD>(sdP, sdY + warp * 16 * D::LDH, sV);  // dP = dY V^T
        __syncwarp();
        const float L = sL[warp * 16 + r], Dr = sD[warp * 16 + r];
        for (int c = half * 32; c < half * 32 + 32; c++) {
            const int kj = k0 + c;
            const bool valid = kj <= qi && kj < T_ && qi < T_;
            const float p = valid ? exp2f(sS[r * D::LDF + c] * scale_log2 - L) : 0.0f;
            sdS[r * D::LDP + c] = __float2bfloat16_rn(p * (sdP[r * D::LDF + c] - Dr) * scale);
        }
        __syncwarp();
        accumulate_p_times_tile<HD>(dq, sdS, sK);            // dQ += dS K
        __syncwarp();
    }
    store_rows<HD>(dqkv + (size_t)b * T_ * ld, ld, h * hd, q0 + warp * 16, T_, hd, dq, sS);
}

// ----------------------------------------------------------------------------
// host side

inline bool flash_attention_supported(int C, int NH) { return C % NH == 0 && C / NH <= FA_MAX_HD; }
inline int flash_attention_hd(int C, int NH) {   // the padded head dim
    const int hd = C / NH;
    return hd <= 16 ? 16 : hd <= 32 ? 32 : 64;
}
template <int HD> constexpr size_t fa_forward_smem() { return (3 * FaDims<HD>::TILE + 4 * FaDims<HD>::WP) * 2 + 4 * FaDims<HD>::WF * 4; }
template <int HD> constexpr size_t fa_backward_smem() {
    return 4 * FaDims<HD>::TILE * 2 + 2 * FA_ROWS * 4 + 8 * FaDims<HD>::WF * 4 + 8 * FaDims<HD>::WP * 2;
}
// fp32 scratch the backward needs: D, (B, NH, T)
inline size_t flash_attention_scratch_floats(int B, int T_, int NH) { return (size_t)B * NH * T_; }

// the opt-in to more than 48 KB of dynamic shared memory (a cheap call, made before every
// launch rather than remembered in a static)
template <typename Kernel>
inline void fa_allow_smem(Kernel kernel, size_t smem) {
    cudaCheck(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
}

template <int HD>
inline void fa_forward_launch(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T_, int C, int NH, cudaStream_t st) {
    const size_t smem = fa_forward_smem<HD>();
    fa_allow_smem(flash_attention_forward_kernel<HD>, smem);
    const int hd = C / NH, vec8 = (hd % 8 == 0 && C % 8 == 0 && is_aligned(qkv, 16)) ? 1 : 0;
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)hd);
    launch_kernel(flash_attention_forward_kernel<HD>, dim3(ceil_div(T_, FA_ROWS), B * NH), FA_THREADS, smem, st, out, lse, qkv, T_, C, NH,
                  scale_log2, vec8);
}
template <int HD>
inline void fa_backward_launch(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse, const float* dsum,
                               int B, int T_, int C, int NH, cudaStream_t st) {
    const size_t smem = fa_backward_smem<HD>();
    fa_allow_smem(flash_attention_dkv_kernel<HD>, smem);
    fa_allow_smem(flash_attention_dq_kernel<HD>, smem);
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
