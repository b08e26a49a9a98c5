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
// Exponentials are exp2 of scores times s log2(e) (one FFMA with the subtracted maximum); m and
// L are kept in that base-2 unit. exp2 is exp2_ftz (common.cuh): a single MUFU.EX2, where
// CUDA's exp2f adds a range test and two multiplies to keep subnormal results.
//
// Layouts (no split/merge copies): qkv (B, T, 3C) as the QKV projection writes it (head h of
// q, k, v at columns h*hd, C + h*hd, 2C + h*hd); the output Y and dY (B, T, C); dqkv
// (B, T, 3C); L and D (B, NH, T) fp32.
//
// Tiling (FlashAttention-2 style): a block of 4 warps owns 64 rows (queries in the forward and
// the dQ kernel, keys in the dK/dV kernel), a warp 16 of them, kept in registers as mma
// fragments, and streams 64-row tiles of the other side through shared memory. Head dims are
// zero-padded in shared memory to HD = 16, 32 or 64, so any hd <= 64 works; rows past T are
// zero and masked (the mask is only evaluated on tiles that cross the diagonal or T).
//   - Every product is a sequence of warp-wide mma.sync m16n8k16 (bf16 in, fp32 accumulate;
//     mma_bf16_16816 in common.cuh, which documents the register layouts).
//   - Operands come out of shared memory with ldmatrix x4 (one instruction: four 8 x 8 blocks,
//     the fragments of two mma), non-transposed for the row-major side of a product (Q, K, dY
//     and V as the rows of S = Q K^T, dP = dY V^T) and transposed where the tile is the
//     k-major B operand (V in P V, dY in P^T dY, Q in dS^T Q, K in dS K). ldsm_x4 below gives
//     the addressing and which registers form which fragment.
//   - The accumulator layout of a 16 x 8 product (lane holds rows g = lane/4 and g+8, columns
//     2t, 2t+1 with t = lane%4) is what the next product needs as its A operand, so scores
//     turn into probabilities in registers: row maxima are reduced over the 4 lanes of a row
//     (xor shuffles 1, 2), row sums of P come from one more product (P times a block of
//     ones), and P or dS never touch shared memory.
//   - The streamed tiles are double-buffered: while the warps compute on one buffer, cp.async
//     copies the next tile into the other (global -> shared, no registers), so the load
//     latency hides behind the mma work. Four (64 x HD) tiles in all: the block's own rows are
//     copied once, turned into register fragments, and their two tiles then serve as the
//     second buffer.
// The backward kernels form dS / s = P (dP - D) and multiply dK and dQ by s once, when they
// are stored (one multiply per output instead of one per score; for hd = 64, s = 1/8 and
// the bf16 rounding of dS / s is that of dS exactly).
// Deterministic: no atomics. FA2 adds dQ up with atomics from the dK/dV kernel; here either
// dQ has its own kernel (FlashDq::Recompute, the default: it recomputes S and dP, 7 products
// per pair of tiles instead of 5) or the dK/dV kernel stores its share of dQ per pair of tiles
// as fp32 partials that a second kernel adds in a fixed order (FlashDq::Partials: 5 products,
// and scratch of 64 x HD floats per pair). Both give run-to-run identical gradients.
#pragma once

#include <cstdint>
#include <cstring>

#include "common.cuh"

constexpr int FA_ROWS = 64;      // rows per block (4 warps x 16) and per streamed tile
constexpr int FA_THREADS = 128;
constexpr int FA_MAX_HD = 64;
constexpr int FA_DS_LD = FA_ROWS + 8;   // row stride of the dK/dV kernel's dS^T tile (--flash_dq partials)
// the (key tile, query tile) pairs kt <= qt of one head: the dQ partial slots
__host__ __device__ inline size_t fa_pairs(int ntiles) { return (size_t)ntiles * (ntiles + 1) / 2; }

// Shared-memory tiles are (64 x HD) bf16 with row stride LDH = HD + 8: the +8 skews rows by
// 16 bytes, so the 8 row addresses of one ldmatrix phase (8 rows x 16 bytes) hit all 32 banks.
template <int HD> struct FaDims {
    static constexpr int LDH = HD + 8;
    static constexpr size_t TILE = (size_t)FA_ROWS * LDH;   // elements of one tile
    static constexpr size_t SMEM = 4 * TILE * sizeof(__nv_bfloat16);   // four tiles: 36 KB at HD = 64
};

// ----------------------------------------------------------------------------
// tile loads: rows [r0, r0 + 64) of one head (columns col0 .. col0 + hd of a row-major matrix
// with row stride `ld`) into a (64 x HD) bf16 tile, zero past T and past hd. With vec8 (hd, ld
// and col0 multiples of 8, 16-byte aligned base) as 16-byte cp.async copies, which the caller
// commits and waits for; otherwise element by element (visible after the next barrier).
template <int HD>
__device__ __forceinline__ void fa_load_tile(__nv_bfloat16* dst, const __nv_bfloat16* src, size_t ld, int col0, int r0, int T_, int hd,
                                             bool vec8) {
    constexpr int LDH = FaDims<HD>::LDH, CH = HD / 8;
    for (int idx = threadIdx.x; idx < FA_ROWS * CH; idx += FA_THREADS) {
        const int r = idx / CH, c = (idx % CH) * 8, t = r0 + r;
        __nv_bfloat16* d = dst + r * LDH + c;
        if (vec8) {
            const bool in = t < T_ && c < hd;   // hd is a multiple of 8: the chunk is all in or all out
            cp_async<16>(d, src + (in ? (size_t)t * ld + col0 + c : (size_t)col0), in ? 16 : 0);
        } else {
            for (int e = 0; e < 8; e++)
                d[e] = (t < T_ && c + e < hd) ? src[(size_t)t * ld + col0 + c + e] : __float2bfloat16_rn(0.0f);
        }
    }
}
// 64 floats of a (B, NH, T) row vector into shared memory (0 past T), 4-byte cp.async copies
__device__ __forceinline__ void fa_load_vec(float* dst, const float* src, int r0, int T_) {
    for (int i = threadIdx.x; i < FA_ROWS; i += FA_THREADS) {
        const bool in = r0 + i < T_;
        cp_async<4>(dst + i, src + (in ? r0 + i : 0), in ? 4 : 0);
    }
}

namespace fa {
// ldmatrix x4 of the 16 x 16 block of a tile at (row0, col0): lane l points at row
// row0 + l%8 + 8((l/8)%2), column col0 + 8(l/16), so the four 8 x 8 blocks are
//   r[0] (row0, col0)   r[1] (row0 + 8, col0)   r[2] (row0, col0 + 8)   r[3] (row0 + 8, col0 + 8)
// Read non-transposed this is the A fragment of rows row0.., k = col0.. (a = r), or, for a tile
// X used as X^T (scores against X's rows n = row0.., k = col0..), the B fragments of two
// adjacent 8-column blocks: n-block row0 = {r[0], r[2]}, n-block row0 + 8 = {r[1], r[3]}.
// Read transposed, for a tile X used as it is (k = row0.., n = col0..), it is the B fragments
// n-block col0 = {r[0], r[1]} and n-block col0 + 8 = {r[2], r[3]}.
// ldsm_x4_ld takes the tile's row stride (elements); ldsm_x4 is it for a (64 x HD) tile.
template <bool TRANS>
__device__ __forceinline__ void ldsm_x4_ld(uint32_t r[4], const __nv_bfloat16* tile, int ld, int row0, int col0) {
    const int l = threadIdx.x % 32;
    const __nv_bfloat16* p = tile + (row0 + l % 8 + 8 * ((l / 8) % 2)) * ld + col0 + 8 * (l / 16);
    if (TRANS) ldmatrix_x4_trans(r, p);
    else ldmatrix_x4(r, p);
}
template <int HD, bool TRANS>
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const __nv_bfloat16* tile, int row0, int col0) {
    ldsm_x4_ld<TRANS>(r, tile, FaDims<HD>::LDH, row0, col0);
}
// two floats as one register of two bf16 (round to nearest even; lo in the lower 16 bits)
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}
// the accumulators of two adjacent 16 x 8 blocks (columns 16kk.. 16kk+15) as the A fragment
// of the next product, rounded to bf16
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float lo[4], const float hi[4]) {
    a[0] = pack_bf16(lo[0], lo[1]);
    a[1] = pack_bf16(lo[2], lo[3]);
    a[2] = pack_bf16(hi[0], hi[1]);
    a[3] = pack_bf16(hi[2], hi[3]);
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
// acc (16 x 16 block pair) = A (16 x HD, fragments a[kc]) @ X^T for rows n0.. n0+15 of tile X:
// scores of the warp's rows against 16 of the tile's rows
template <int HD>
__device__ __forceinline__ void scores16(float acc[2][4], const uint32_t (*a)[4], const __nv_bfloat16* tile, int n0) {
    for (int jj = 0; jj < 2; jj++)
        for (int e = 0; e < 4; e++) acc[jj][e] = 0.0f;
    for (int kc = 0; kc < HD / 16; kc++) {
        uint32_t r[4];
        ldsm_x4<HD, false>(r, tile, n0, kc * 16);
        const uint32_t b0[2] = {r[0], r[2]}, b1[2] = {r[1], r[3]};
        mma_bf16_16816(acc[0], a[kc], b0);
        mma_bf16_16816(acc[1], a[kc], b1);
    }
}
// acc (16 x HD) += A (16 x 16 fragment) @ rows k0.. k0+15 of tile X (X used as it is)
template <int HD>
__device__ __forceinline__ void accumulate16(float (*acc)[4], const uint32_t a[4], const __nv_bfloat16* tile, int k0) {
    for (int np = 0; np < HD / 16; np++) {
        uint32_t r[4];
        ldsm_x4<HD, true>(r, tile, k0, np * 16);
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma_bf16_16816(acc[2 * np], a, b0);
        mma_bf16_16816(acc[2 * np + 1], a, b1);
    }
}
}  // namespace fa

// ----------------------------------------------------------------------------
// forward: grid (query tiles, B*NH), 128 threads. out (B, T, C); lse (B, NH, T), base 2.
// Shared memory: tiles 0-3; Q in tile 0 at first; K, V of key tile kt in tiles (2, 3) for
// even kt and (0, 1) for odd kt.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS)
    flash_attention_forward_kernel(__nv_bfloat16* __restrict__ out, float* __restrict__ lse, const __nv_bfloat16* __restrict__ qkv,
                                   int T_, int C, int NH, float scale_log2, int vec8) {
    using namespace fa;
    constexpr int KC = HD / 16, NB = HD / 8, NS = FA_ROWS / 8;
    const int hd = C / NH, bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * FA_ROWS;   // the longest (last) query tiles first
    const int warp = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    __nv_bfloat16* tiles = dynamic_shared_memory<__nv_bfloat16>();
    auto tile = [&](int i) { return tiles + i * FaDims<HD>::TILE; };
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    fa_load_tile<HD>(tile(0), base, ld, h * hd, q0, T_, hd, vec8);
    fa_load_tile<HD>(tile(2), base, ld, C + h * hd, 0, T_, hd, vec8);
    fa_load_tile<HD>(tile(3), base, ld, 2 * C + h * hd, 0, T_, hd, vec8);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[KC][4];
    for (int kc = 0; kc < KC; kc++) ldsm_x4<HD, false>(qf[kc], tile(0), warp * 16, kc * 16);
    __syncthreads();   // tile 0 is free for key tile 1

    const int qlo = q0 + warp * 16, qrow[2] = {qlo + g, qlo + g + 8};   // the warp's first row; this lane's two
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, o[NB][4];
    for (int nb = 0; nb < NB; nb++) o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0.0f;
    const int last_tile = min(q0 + FA_ROWS - 1, T_ - 1) / FA_ROWS;
    for (int kt = 0; kt <= last_tile; kt++) {
        const int k0 = kt * FA_ROWS, cur = kt % 2 == 0 ? 2 : 0, nxt = 2 - cur;
        if (kt < last_tile) {   // prefetch key tile kt + 1 into the other buffer
            fa_load_tile<HD>(tile(nxt), base, ld, C + h * hd, k0 + FA_ROWS, T_, hd, vec8);
            fa_load_tile<HD>(tile(nxt + 1), base, ld, 2 * C + h * hd, k0 + FA_ROWS, T_, hd, vec8);
        }
        cp_async_commit();
        cp_async_wait<1>();   // tile kt has landed (only the prefetch may be in flight)
        __syncthreads();
        const __nv_bfloat16 *sK = tile(cur), *sV = tile(cur + 1);
        if (k0 <= qlo + 15) {   // else every key of the tile is after this warp's rows
            // S (16 x 64) = Q K^T as 8 blocks of 16 x 8 (raw scores)
            float s[NS][4];
            for (int jp = 0; jp < NS / 2; jp++) scores16<HD>(&s[2 * jp], qf, sK, jp * 16);
            if (k0 + FA_ROWS - 1 > qlo || k0 + FA_ROWS > T_)   // the tile crosses the diagonal or T: mask
                for (int j = 0; j < NS; j++)
                    for (int e = 0; e < 4; e++) {
                        const int key = k0 + j * 8 + 2 * t + (e & 1);
                        if (key > qrow[e >> 1] || key >= T_) s[j][e] = -INFINITY;
                    }
            // online softmax, rows g (elements 0, 1) and g + 8 (elements 2, 3); m in base-2 units
            float use[2], alpha[2];
            for (int hf = 0; hf < 2; hf++) {
                float mx = -INFINITY;
                for (int j = 0; j < NS; j++) mx = fmaxf(mx, fmaxf(s[j][2 * hf], s[j][2 * hf + 1]));
                const float m_new = fmaxf(m[hf], quad_max(mx) * scale_log2);
                use[hf] = m_new == -INFINITY ? 0.0f : m_new;   // a row with nothing unmasked yet
                alpha[hf] = exp2_ftz(m[hf] - use[hf]);        // 0 while m = -inf
                m[hf] = m_new;
            }
            // P = exp2(S s log2e - m), rounded to bf16 once: the A fragments of P V (keys
            // 16kk.. 16kk+15)
            uint32_t pa[FA_ROWS / 16][4];
            for (int j = 0; j < NS; j++)
                for (int hf = 0; hf < 2; hf++)
                    pa[j / 2][hf + 2 * (j % 2)] = pack_bf16(exp2_ftz(fmaf(s[j][2 * hf], scale_log2, -use[hf])),
                                                            exp2_ftz(fmaf(s[j][2 * hf + 1], scale_log2, -use[hf])));
            // the row sums of exactly those bf16 values, on the tensor cores: P (16 x 64) @ a
            // 64 x 8 matrix of ones puts row g's sum in every column, so this lane's rsum[0]
            // (row g) and rsum[2] (row g + 8) need no shuffles (four mma instead of about 70
            // conversions, adds and shuffles per lane)
            float rsum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const uint32_t ones[2] = {0x3F803F80u, 0x3F803F80u};   // two bf16 1.0 per register
            for (int kk = 0; kk < FA_ROWS / 16; kk++) mma_bf16_16816(rsum, pa[kk], ones);
            l[0] = l[0] * alpha[0] + rsum[0];
            l[1] = l[1] * alpha[1] + rsum[2];
            // rescale O only when some row of the warp has a new maximum (alpha < 1; a factor
            // of exactly 1 would change nothing): once the rows' maxima have settled, as they
            // tend to in trained attention, the 32 multiplies per lane are skipped
            if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f))
                for (int nb = 0; nb < NB; nb++) {
                    o[nb][0] *= alpha[0]; o[nb][1] *= alpha[0];
                    o[nb][2] *= alpha[1]; o[nb][3] *= alpha[1];
                }
            // O += P V
            for (int kk = 0; kk < FA_ROWS / 16; kk++) accumulate16<HD>(o, pa[kk], sV, kk * 16);
        }
        __syncthreads();   // the tile is consumed before iteration kt + 1 prefetches into it
    }
    const float inv[2] = {1.0f / l[0], 1.0f / l[1]};
    store_acc<HD>(out + (size_t)b * T_ * C, C, h * hd, qlo, T_, hd, o, inv);
    if (t == 0)
        for (int hf = 0; hf < 2; hf++)
            if (qrow[hf] < T_) lse[(size_t)bh * T_ + qrow[hf]] = m[hf] + log2f(l[hf]);
}

// D_i = sum_d dY_id Y_id per (b, h, i), the row term of dS = P o (dP - D).
// dout, y: (B, T, C) bf16, head h at columns h*hd .. h*hd+hd-1; dsum: (B, NH, T) fp32, so
// rows r = (b*NH + h)*T + t. A row is split into hd/VEC chunks of VEC consecutive elements
// (VEC = 8: one 16-byte load of dY and one of Y per chunk; VEC = 1: the scalar fallback for
// hd % 8 != 0 or unaligned pointers). A group of G lanes, G = the chunk count rounded up to
// a power of two (at most 32), owns one row: lane g of the group takes chunks g, g + G, ...
// (lanes past the last chunk add nothing), then xor shuffles within the group add the
// partials. A warp thus covers 32/G consecutive rows (hd = 64, VEC = 8: 8 lanes x 16 bytes
// = one 128-byte row segment per group, 4 rows per warp); warps grid-stride over the rows.
// The order of every sum is fixed, so D is bitwise reproducible.
__host__ __device__ inline int fa_dsum_group(int hd, int vec) {
    const int chunks = hd / vec;
    int g = 1;
    while (g < chunks && g < 32) g *= 2;
    return g;
}
template <int VEC>
__global__ void flash_attention_dsum_kernel(float* __restrict__ dsum, const __nv_bfloat16* __restrict__ dout,
                                            const __nv_bfloat16* __restrict__ y, int B, int T_, int C, int NH) {
    const int hd = C / NH, chunks = hd / VEC, G = fa_dsum_group(hd, VEC), per_warp = 32 / G;
    const int lane = threadIdx.x % 32, g = lane % G;
    const size_t rows = (size_t)B * NH * T_, warps = (size_t)gridDim.x * (blockDim.x / 32);
    // the loop bound is per warp (every lane runs the shuffles); a group past the end idles
    for (size_t r0 = (blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32) * per_warp; r0 < rows; r0 += warps * per_warp) {
        const size_t row = r0 + lane / G;
        float acc = 0.0f;
        if (row < rows) {
            const int t = (int)(row % T_), bh = (int)(row / T_), b = bh / NH, h = bh % NH;
            const size_t off = ((size_t)b * T_ + t) * C + h * hd;
            for (int c = g; c < chunks; c += G) {
                const Packed<__nv_bfloat16, VEC> a = load_packed<__nv_bfloat16, VEC>(dout + off + c * VEC);
                const Packed<__nv_bfloat16, VEC> v = load_packed<__nv_bfloat16, VEC>(y + off + c * VEC);
#pragma unroll
                for (int k = 0; k < VEC; k++) acc += __bfloat162float(a.v[k]) * __bfloat162float(v.v[k]);
            }
        }
        for (int offset = G / 2; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
        if (g == 0 && row < rows) dsum[row] = acc;
    }
}

// dK, dV: grid (key tiles, B*NH), 128 threads; each warp owns 16 keys and streams the query
// tiles at and after its key tile, computing the transposed products directly:
// S^T = K Q^T, dP^T = V dY^T (16 keys x 16 queries at a time), P^T, dS^T, then dV += P^T dY,
// dK += dS^T Q. Writes the k and v parts of dqkv (B, T, 3C).
// Shared memory: K, V in tiles 0, 1 at first; Q, dY of query tile i (counted from the first)
// in tiles (2, 3) for even i and (0, 1) for odd i, with L and D (64 floats each) beside them.
//
// DQ = true (--flash_dq partials) also forms this key tile's share of dQ for every query tile
// it meets, instead of the dQ kernel recomputing S and dP: the warps put their dS^T / s (the
// bf16 values of the dK product) into a shared (64 keys x 64 queries) tile, and after a
// barrier warp w multiplies rows 16w.. of dS (ldmatrix.trans of that tile) with the block's K
// tile, kept in shared memory for this, and stores the fp32 (64 x HD) partial to its own slot
// of dq_part. flash_attention_dq_reduce_kernel then sums each query tile's partials in key
// tile order, so dQ is still deterministic (no atomics). Per (b, h) the slots are the pairs
// kt <= qt of key and query tiles, pair index qt (qt + 1) / 2 + kt. A launch covers the heads
// bh0 .. bh0 + gridDim.y - 1 (all of them when the scratch holds them all), head bh0 + y
// writing the slots of scratch head y.
// Launch bounds (minimum blocks per SM) of the DQ kernels: at HD = 64, 3 on sm_90 (at most
// 168 registers, else a few more put it at 2 blocks per SM; the 228 KB of shared memory of an
// H100/H200 SM hold 3 blocks of 56 KB, with 1 KB reserved per block), none on sm_80 (its
// 164 KB hold 2 such blocks anyway, and a cap of 168 registers spilled); at HD 16 and 32, 1 (ptxas's own occupancy target spilled 4 bytes on
// sm_80). The kernels without DQ keep no minimum (0).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr int FA_DQ_MIN_BLOCKS_HD64 = 0;
#else
constexpr int FA_DQ_MIN_BLOCKS_HD64 = 3;
#endif
template <int HD, bool DQ>
__global__ void __launch_bounds__(FA_THREADS, !DQ ? 0 : HD == 64 ? FA_DQ_MIN_BLOCKS_HD64 : 1)
    flash_attention_dkv_kernel(__nv_bfloat16* __restrict__ dqkv, float* __restrict__ dq_part, const __nv_bfloat16* __restrict__ dout,
                               const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse, const float* __restrict__ dsum,
                               int T_, int C, int NH, float scale, float scale_log2, int vec8, int bh0) {
    using namespace fa;
    constexpr int KC = HD / 16, NB = HD / 8;
    const int hd = C / NH, bh = bh0 + blockIdx.y, b = bh / NH, h = bh % NH;   // heads bh0.. of this launch
    const int k0 = blockIdx.x * FA_ROWS;
    const int warp = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    __nv_bfloat16* tiles = dynamic_shared_memory<__nv_bfloat16>();
    auto tile = [&](int i) { return tiles + i * FaDims<HD>::TILE; };
    float* vecs = reinterpret_cast<float*>(tiles + 4 * FaDims<HD>::TILE);   // L, D of buffer 0; L, D of buffer 1
    // DQ only: the key tile (64 x HD, stride LDH) and dS^T (64 keys x 64 queries, stride FA_DS_LD)
    __nv_bfloat16* sKeep = reinterpret_cast<__nv_bfloat16*>(vecs + 4 * FA_ROWS);
    __nv_bfloat16* sdS = sKeep + FaDims<HD>::TILE;
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    const __nv_bfloat16* dyb = dout + (size_t)b * T_ * C;
    const float *lse_bh = lse + (size_t)bh * T_, *dsum_bh = dsum + (size_t)bh * T_;
    auto load_queries = [&](int buf, int q0) {   // Q, dY, L, D of the query tile at q0 into buffer buf
        const int t0 = buf == 0 ? 2 : 0;
        fa_load_tile<HD>(tile(t0), base, ld, h * hd, q0, T_, hd, vec8);
        fa_load_tile<HD>(tile(t0 + 1), dyb, C, h * hd, q0, T_, hd, vec8);
        fa_load_vec(vecs + buf * 2 * FA_ROWS, lse_bh, q0, T_);
        fa_load_vec(vecs + buf * 2 * FA_ROWS + FA_ROWS, dsum_bh, q0, T_);
    };
    fa_load_tile<HD>(DQ ? sKeep : tile(0), base, ld, C + h * hd, k0, T_, hd, vec8);
    fa_load_tile<HD>(tile(1), base, ld, 2 * C + h * hd, k0, T_, hd, vec8);
    load_queries(0, k0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t kf[KC][4], vf[KC][4];
    for (int kc = 0; kc < KC; kc++) {
        ldsm_x4<HD, false>(kf[kc], DQ ? sKeep : tile(0), warp * 16, kc * 16);
        ldsm_x4<HD, false>(vf[kc], tile(1), warp * 16, kc * 16);
    }
    __syncthreads();   // tiles 0, 1 are free for the second buffer
    const int krow[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};   // this lane's two key rows
    float dk[NB][4], dv[NB][4];
    for (int nb = 0; nb < NB; nb++)
        for (int e = 0; e < 4; e++) dk[nb][e] = dv[nb][e] = 0.0f;
    const int ntiles = (T_ + FA_ROWS - 1) / FA_ROWS;
    float* dq_part_bh = DQ ? dq_part + (size_t)blockIdx.y * fa_pairs(ntiles) * FA_ROWS * HD : nullptr;   // this head's dQ slots
    for (int qt = blockIdx.x; qt < ntiles; qt++) {   // query tiles at or after the key tile
        const int q0 = qt * FA_ROWS, buf = (qt - blockIdx.x) % 2;
        if (qt + 1 < ntiles) load_queries(1 - buf, q0 + FA_ROWS);   // prefetch
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const __nv_bfloat16 *sQ = tile(buf == 0 ? 2 : 0), *sdY = tile(buf == 0 ? 3 : 1);
        const float *sL = vecs + buf * 2 * FA_ROWS, *sD = sL + FA_ROWS;
        const bool mask = qt == (int)blockIdx.x || q0 + FA_ROWS > T_;   // the diagonal tile, or rows past T
        for (int kk = 0; kk < FA_ROWS / 16; kk++) {   // queries 16kk .. 16kk + 15 of the tile
            float st[2][4], dpt[2][4];
            scores16<HD>(st, kf, sQ, kk * 16);    // S^T = K Q^T
            scores16<HD>(dpt, vf, sdY, kk * 16);  // dP^T = V dY^T
            for (int jj = 0; jj < 2; jj++) {
                const int qc = kk * 16 + jj * 8 + 2 * t;   // this lane's two query columns qc, qc + 1
                const float2 Lq = *reinterpret_cast<const float2*>(sL + qc), Dq = *reinterpret_cast<const float2*>(sD + qc);
                for (int e = 0; e < 4; e++) {
                    const float Le = (e & 1) ? Lq.y : Lq.x, De = (e & 1) ? Dq.y : Dq.x;
                    float p = exp2_ftz(fmaf(st[jj][e], scale_log2, -Le));
                    if (mask) {
                        const int q = q0 + qc + (e & 1);
                        if (q < krow[e >> 1] || q >= T_) p = 0.0f;
                    }
                    st[jj][e] = p;
                    dpt[jj][e] = p * (dpt[jj][e] - De);   // dS^T / s (s is applied to dK at the end)
                }
            }
            uint32_t pa[4], dsa[4];
            acc_to_a(pa, st[0], st[1]);
            acc_to_a(dsa, dpt[0], dpt[1]);
            accumulate16<HD>(dv, pa, sdY, kk * 16);   // dV += P^T dY
            accumulate16<HD>(dk, dsa, sQ, kk * 16);   // dK += dS^T Q
            if (DQ) {   // dS^T / s into the shared tile: rows (keys) g, g + 8 of the warp's 16, query columns 16kk + 2t (+8)
                uint32_t* r0 = reinterpret_cast<uint32_t*>(sdS + (warp * 16 + g) * FA_DS_LD + kk * 16 + 2 * t);
                uint32_t* r8 = reinterpret_cast<uint32_t*>(sdS + (warp * 16 + g + 8) * FA_DS_LD + kk * 16 + 2 * t);
                r0[0] = dsa[0], r8[0] = dsa[1], r0[4] = dsa[2], r8[4] = dsa[3];
            }
        }
        if (DQ) {
            __syncthreads();   // every warp's dS^T is in sdS
            // partial dQ / s (16 queries x HD) of queries 16w.. = dS (16 x 64 keys) K (64 x HD): the
            // transposed ldmatrix of dS^T at (keys 16kk.., queries 16w..) holds the blocks
            // (q, k) r[0], (q, k + 8) r[1], (q + 8, k) r[2], (q + 8, k + 8) r[3] of dS
            float dqp[NB][4];
            for (int nb = 0; nb < NB; nb++) dqp[nb][0] = dqp[nb][1] = dqp[nb][2] = dqp[nb][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < FA_ROWS / 16; kk++) {
                uint32_t r[4];
                ldsm_x4_ld<true>(r, sdS, FA_DS_LD, kk * 16, warp * 16);
                const uint32_t a[4] = {r[0], r[2], r[1], r[3]};
                accumulate16<HD>(dqp, a, sKeep, kk * 16);
            }
            float* slot = dq_part_bh + ((size_t)qt * (qt + 1) / 2 + blockIdx.x) * FA_ROWS * HD;
            for (int hf = 0; hf < 2; hf++) {
                float* row = slot + (size_t)(warp * 16 + g + 8 * hf) * HD + 2 * t;
                for (int nb = 0; nb < NB; nb++) *reinterpret_cast<float2*>(row + nb * 8) = make_float2(dqp[nb][2 * hf], dqp[nb][2 * hf + 1]);
            }
        }
        __syncthreads();   // the buffer (and sdS) is consumed before it is written again
    }
    const float one[2] = {1.0f, 1.0f}, s2[2] = {scale, scale};
    __nv_bfloat16* db = dqkv + (size_t)b * T_ * ld;
    store_acc<HD>(db, ld, C + h * hd, k0 + warp * 16, T_, hd, dk, s2);   // dK = s sum (dS^T / s) Q
    store_acc<HD>(db, ld, 2 * C + h * hd, k0 + warp * 16, T_, hd, dv, one);
}

// dQ: grid (query tiles, B*NH), 128 threads; each warp owns 16 queries and streams the key
// tiles up to the diagonal: S = Q K^T, dP = dY V^T, dS, dQ += dS K. Writes the q part of dqkv.
// Shared memory: Q, dY in tiles 0, 1 at first; K, V of key tile kt in tiles (2, 3) for even
// kt and (0, 1) for odd kt.
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
    __nv_bfloat16* tiles = dynamic_shared_memory<__nv_bfloat16>();
    auto tile = [&](int i) { return tiles + i * FaDims<HD>::TILE; };
    const size_t ld = (size_t)3 * C;
    const __nv_bfloat16* base = qkv + (size_t)b * T_ * ld;
    fa_load_tile<HD>(tile(0), base, ld, h * hd, q0, T_, hd, vec8);
    fa_load_tile<HD>(tile(1), dout + (size_t)b * T_ * C, C, h * hd, q0, T_, hd, vec8);
    fa_load_tile<HD>(tile(2), base, ld, C + h * hd, 0, T_, hd, vec8);
    fa_load_tile<HD>(tile(3), base, ld, 2 * C + h * hd, 0, T_, hd, vec8);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[KC][4], dyf[KC][4];
    for (int kc = 0; kc < KC; kc++) {
        ldsm_x4<HD, false>(qf[kc], tile(0), warp * 16, kc * 16);
        ldsm_x4<HD, false>(dyf[kc], tile(1), warp * 16, kc * 16);
    }
    __syncthreads();   // tiles 0, 1 are free for key tile 1
    const int qlo = q0 + warp * 16, qrow[2] = {qlo + g, qlo + g + 8};
    float L[2], Dr[2];
    for (int hf = 0; hf < 2; hf++) {
        L[hf] = qrow[hf] < T_ ? lse[(size_t)bh * T_ + qrow[hf]] : 0.0f;
        Dr[hf] = qrow[hf] < T_ ? dsum[(size_t)bh * T_ + qrow[hf]] : 0.0f;
    }
    float dq[NB][4];
    for (int nb = 0; nb < NB; nb++) dq[nb][0] = dq[nb][1] = dq[nb][2] = dq[nb][3] = 0.0f;
    const int last_tile = min(q0 + FA_ROWS - 1, T_ - 1) / FA_ROWS;
    for (int kt = 0; kt <= last_tile; kt++) {
        const int k0 = kt * FA_ROWS, cur = kt % 2 == 0 ? 2 : 0, nxt = 2 - cur;
        if (kt < last_tile) {
            fa_load_tile<HD>(tile(nxt), base, ld, C + h * hd, k0 + FA_ROWS, T_, hd, vec8);
            fa_load_tile<HD>(tile(nxt + 1), base, ld, 2 * C + h * hd, k0 + FA_ROWS, T_, hd, vec8);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const __nv_bfloat16 *sK = tile(cur), *sV = tile(cur + 1);
        if (k0 <= qlo + 15) {
            const bool mask = k0 + FA_ROWS - 1 > qlo || k0 + FA_ROWS > T_;
            for (int kk = 0; kk < FA_ROWS / 16; kk++) {   // keys 16kk .. 16kk + 15 of the tile
                float s[2][4], dp[2][4];
                scores16<HD>(s, qf, sK, kk * 16);    // S
                scores16<HD>(dp, dyf, sV, kk * 16);  // dP = dY V^T
                for (int jj = 0; jj < 2; jj++)
                    for (int e = 0; e < 4; e++) {
                        const int hf = e >> 1;
                        float p = exp2_ftz(fmaf(s[jj][e], scale_log2, -L[hf]));
                        if (mask) {
                            const int key = k0 + kk * 16 + jj * 8 + 2 * t + (e & 1);
                            if (key > qrow[hf] || key >= T_) p = 0.0f;
                        }
                        dp[jj][e] = p * (dp[jj][e] - Dr[hf]);   // dS / s (s is applied to dQ at the end)
                    }
                uint32_t dsa[4];
                acc_to_a(dsa, dp[0], dp[1]);
                accumulate16<HD>(dq, dsa, sK, kk * 16);   // dQ += dS K
            }
        }
        __syncthreads();
    }
    const float s2[2] = {scale, scale};
    store_acc<HD>(dqkv + (size_t)b * T_ * ld, ld, h * hd, qlo, T_, hd, dq, s2);   // dQ = s sum (dS / s) K
}

// dQ from the dK/dV kernel's partials (--flash_dq partials): row t of head bh0 + y (y < nbh, the
// heads of the launch before), query tile qt = t / 64, is s times the sum over key tiles
// kt = 0 .. qt (in that order) of row t % 64 of slot (y, qt (qt + 1) / 2 + kt). One thread per
// 4 columns of a row (16-byte loads; HD is a multiple of 16), writing the q columns d < hd of
// dqkv (B, T, 3C).
template <int HD>
__global__ void flash_attention_dq_reduce_kernel(__nv_bfloat16* __restrict__ dqkv, const float* __restrict__ dq_part, int bh0, int nbh,
                                                 int T_, int C, int NH, float scale) {
    const int hd = C / NH, ntiles = (T_ + FA_ROWS - 1) / FA_ROWS;
    const size_t n = (size_t)nbh * T_ * (HD / 4);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int d = (int)(i % (HD / 4)) * 4;
        const size_t row = i / (HD / 4);   // y T + t
        const int t = (int)(row % T_), y = (int)(row / T_), bh = bh0 + y, qt = t / FA_ROWS;
        const float* p = dq_part + ((size_t)y * fa_pairs(ntiles) + (size_t)qt * (qt + 1) / 2) * FA_ROWS * HD + (size_t)(t % FA_ROWS) * HD + d;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int kt = 0; kt <= qt; kt++, p += FA_ROWS * HD) {
            const float4 v = *reinterpret_cast<const float4*>(p);
            acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
        }
        const float a[4] = {acc.x, acc.y, acc.z, acc.w};
        __nv_bfloat16* out = dqkv + ((size_t)(bh / NH) * T_ + t) * 3 * C + (bh % NH) * hd;
        for (int e = 0; e < 4; e++)
            if (d + e < hd) out[d + e] = __float2bfloat16_rn(scale * a[e]);
    }
}

// ----------------------------------------------------------------------------
// host side

// How the backward forms dQ (--flash_dq): Recompute, the dQ kernel streams the key tiles and
// recomputes S and dP (7 products per pair of tiles in all, no scratch); Partials, the dK/dV
// kernel also multiplies its dS with K (5 products and a shared-memory round of dS) into fp32
// partials that a reduction kernel sums (scratch flash_attention_dq_partial_floats: 408 MiB at
// gpt2-124m B 16, T 1024, at most FA_DQ_PART_MAX_BYTES, the heads taken in groups that fit
// beyond that). Both are deterministic.
enum class FlashDq { Recompute, Partials };
constexpr size_t FA_DQ_PART_MAX_BYTES = (size_t)2 << 30;   // 2 GiB: gpt2-124m 64 x 1024 (1.6 GiB) in one launch

inline bool flash_attention_supported(int C, int NH) { return C % NH == 0 && C / NH <= FA_MAX_HD; }
inline int flash_attention_hd(int C, int NH) {   // the padded head dim
    const int hd = C / NH;
    return hd <= 16 ? 16 : hd <= 32 ? 32 : 64;
}
// fp32 scratch the backward needs: D, (B, NH, T)
inline size_t flash_attention_scratch_floats(int B, int T_, int NH) { return (size_t)B * NH * T_; }
// and with FlashDq::Partials the dQ partials: per head (b, h) and pair of tiles kt <= qt a
// (64 x HD) slot. One head's slots, and as many heads' as fit in max_bytes (at least one, at
// most B * NH); the backward takes the heads in groups of scratch / one head's floats.
inline size_t flash_attention_dq_head_floats(int T_, int C, int NH) {
    return fa_pairs((T_ + FA_ROWS - 1) / FA_ROWS) * FA_ROWS * flash_attention_hd(C, NH);
}
inline size_t flash_attention_dq_partial_floats(int B, int T_, int C, int NH, size_t max_bytes = FA_DQ_PART_MAX_BYTES) {
    const size_t head = flash_attention_dq_head_floats(T_, C, NH);
    const size_t heads = std::min((size_t)B * NH, std::max((size_t)1, max_bytes / sizeof(float) / head));
    return heads * head;
}

template <int HD>
inline void fa_forward_launch(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T_, int C, int NH, cudaStream_t st) {
    const size_t smem = FaDims<HD>::SMEM;   // four tiles: 36 KB at HD = 64
    const int hd = C / NH, vec8 = (hd % 8 == 0 && C % 8 == 0 && is_aligned(qkv, 16)) ? 1 : 0;
    const float scale_log2 = 1.4426950408889634f / sqrtf((float)hd);
    launch_kernel(flash_attention_forward_kernel<HD>, dim3(ceil_div(T_, FA_ROWS), B * NH), FA_THREADS, smem, st, out, lse, qkv, T_, C, NH,
                  scale_log2, vec8);
}
template <int HD>
inline void fa_backward_launch(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse, const float* dsum,
                               FlashDq dq_mode, float* dq_part, size_t dq_part_floats, int B, int T_, int C, int NH, cudaStream_t st) {
    // four tiles + two buffers of L and D (dK/dV; dQ uses the tiles only): 37 KB at HD = 64
    const size_t smem = FaDims<HD>::SMEM + 4 * FA_ROWS * sizeof(float);
    const int hd = C / NH, vec8 = (hd % 8 == 0 && C % 8 == 0 && is_aligned(qkv, 16) && is_aligned(dout, 16)) ? 1 : 0;
    const float scale = 1.0f / sqrtf((float)hd), scale_log2 = 1.4426950408889634f * scale;
    const dim3 grid(ceil_div(T_, FA_ROWS), B * NH);
    if (dq_mode == FlashDq::Partials) {
        // plus the kept K tile and the dS^T tile: 55 KB at HD = 64, over the 48 KB a launch gets unasked
        const size_t smem_dq = smem + (FaDims<HD>::TILE + (size_t)FA_ROWS * FA_DS_LD) * sizeof(__nv_bfloat16);
        auto* dkv_dq = flash_attention_dkv_kernel<HD, true>;
        cudaCheck(cudaFuncSetAttribute((const void*)dkv_dq, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_dq));
        // the heads in groups that fit the scratch (all at once unless T is long)
        const int group = (int)std::min((size_t)B * NH, dq_part_floats / flash_attention_dq_head_floats(T_, C, NH));
        if (group < 1) {
            fprintf(stderr, "flash_attention_backward: dQ scratch of %zu floats holds no head (%zu needed)\n", dq_part_floats,
                    flash_attention_dq_head_floats(T_, C, NH));
            exit(EXIT_FAILURE);
        }
        for (int bh0 = 0; bh0 < B * NH; bh0 += group) {
            const int nbh = std::min(group, B * NH - bh0);
            launch_kernel(dkv_dq, dim3(grid.x, nbh), FA_THREADS, smem_dq, st, dqkv, dq_part, dout, qkv, lse, dsum, T_, C, NH, scale,
                          scale_log2, vec8, bh0);
            const size_t threads = (size_t)nbh * T_ * (HD / 4);
            launch_kernel(flash_attention_dq_reduce_kernel<HD>, grid_stride_blocks(threads, EW_BLOCK), EW_BLOCK, 0, st, dqkv, dq_part, bh0,
                          nbh, T_, C, NH, scale);
        }
        return;
    }
    launch_kernel(flash_attention_dkv_kernel<HD, false>, grid, FA_THREADS, smem, st, dqkv, nullptr, dout, qkv, lse, dsum, T_, C, NH, scale,
                  scale_log2, vec8, 0);
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
// dsum (B, NH, T) = D, the row sums of dout o out per head; 16-byte loads when they fit
inline void flash_attention_dsum(float* dsum, const __nv_bfloat16* dout, const __nv_bfloat16* out, int B, int T_, int C, int NH, cudaStream_t st) {
    const int hd = C / NH, vec = (hd % 8 == 0 && C % 8 == 0 && is_aligned(dout, 16) && is_aligned(out, 16)) ? 8 : 1;
    const size_t threads = (size_t)B * NH * T_ * fa_dsum_group(hd, vec);   // G lanes per row
    if (vec == 8)
        launch_kernel(flash_attention_dsum_kernel<8>, grid_stride_blocks(threads, EW_BLOCK), EW_BLOCK, 0, st, dsum, dout, out, B, T_, C, NH);
    else
        launch_kernel(flash_attention_dsum_kernel<1>, grid_stride_blocks(threads, EW_BLOCK), EW_BLOCK, 0, st, dsum, dout, out, B, T_, C, NH);
}
// dqkv (B, T, 3C, overwritten) from dout (B, T, C), the forward's qkv, out and lse;
// dsum: flash_attention_scratch_floats; with FlashDq::Partials dq_part holds dq_part_floats
// (flash_attention_dq_partial_floats, or any multiple of one head's) (else unused, may be null)
inline void flash_attention_backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const __nv_bfloat16* out,
                                     const float* lse, float* dsum, FlashDq dq_mode, float* dq_part, size_t dq_part_floats, int B, int T_,
                                     int C, int NH, cudaStream_t st) {
    flash_attention_dsum(dsum, dout, out, B, T_, C, NH, st);
    switch (flash_attention_hd(C, NH)) {
        case 16: fa_backward_launch<16>(dqkv, dout, qkv, lse, dsum, dq_mode, dq_part, dq_part_floats, B, T_, C, NH, st); break;
        case 32: fa_backward_launch<32>(dqkv, dout, qkv, lse, dsum, dq_mode, dq_part, dq_part_floats, B, T_, C, NH, st); break;
        default: fa_backward_launch<64>(dqkv, dout, qkv, lse, dsum, dq_mode, dq_part, dq_part_floats, B, T_, C, NH, st); break;
    }
}
