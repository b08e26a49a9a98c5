// norm.cuh - LayerNorm and RMSNorm, forward and backward, in the fused forms that the two
// norm placements of Mix-LN need. Storage T is float or __nv_bfloat16; all math is fp32.
//
// Layout: activations are row-major (N, C) with N = B*T rows ("tokens") and C channels;
// weight and bias are (C); the per-row statistics mean and rstd are fp32 (N).
//
// The math, forward and backward side by side, for one row x[0..C):
//
//   LayerNorm (gpt, eps 1e-5)                 RMSNorm (llama, eps 1e-6)
//   mean = sum(x) / C                         (no mean)
//   var  = sum((x - mean)^2) / C              ms   = sum(x^2) / C
//   rstd = 1 / sqrt(var + eps)                rstd = 1 / sqrt(ms + eps)
//   xhat = (x - mean) * rstd                  xhat = x * rstd
//   y    = xhat * w + b                       y    = xhat * w
//
//   backward, given dy (g = dy * w elementwise):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))     dx = rstd * (g - xhat * mean(g * xhat))
//   dw += sum over rows of dy * xhat                       dw += sum over rows of dy * xhat
//   db += sum over rows of dy
//
// The two placements (layer l, sublayer f = attention or MLP; README.md, "The model"):
//
//   Pre-LN  (l >= K):  x' = x + f(N(x)).  The fused kernel ends one sublayer and starts the
//     next: residual_out = residual_in + branch_out; normed = N(residual_out), the input of
//     the next sublayer. Backward: dresidual_out = dresidual_in + N'(dnormed), where
//     dresidual_in is the gradient reaching residual_out through the skip path (from above)
//     and N' is the norm backward above; dresidual_out is then the gradient of both the
//     residual_in and the branch_out of this add (one buffer serves both).
//
//   Post-LN (l < K):   x' = N(x + f(x)).  out = N(residual_in + branch_out) and out *is* the
//     new residual stream. The pre-norm sum s = residual_in + branch_out is saved for the
//     backward (xhat is recomputed from it). Backward: ds = N'(dout); since s = x + f(x),
//     ds is the gradient of both the skip input x and the branch output f(x): one buffer
//     serves both (the branch's own backward later adds its dx contribution on top).
//
// In bf16 storage the sum residual_in + branch is rounded to bf16 first and the statistics
// are taken of the rounded value, so that the backward, which reads the stored (rounded)
// sum, sees exactly what the forward normalised.
//
// Weight/bias gradients are deterministic: each block of the backward kernel writes the
// per-channel partial sums of its own rows into a float scratch buffer (no atomics), then
// norm_weight_grad_reduce_kernel adds the partials in a fixed order and accumulates
// (+=) into dweight/dbias. Same inputs, same bits, every run.
//
// Kernels: one warp per row (the row's C channels strided over 32 lanes, 16-byte vector
// accesses when C and the pointers allow, else a scalar path), warp shuffles for the row
// sums. The forward uses no shared memory and no __syncthreads(), so rows may be
// distributed over warps freely. The backward has two kernels with the same grid (block b
// owns a contiguous range of rows) and the same scratch layout partial[block][2][C]:
//   - norm_backward_regs_kernel, when a row fits in registers (J = ceil(C / VEC / 32) <= 4
//     vectors per lane: bf16 C <= 1024, fp32 C <= 512; scalar path C <= 128): a single
//     pass. Each warp reads its row's dout, inp (and dres) once into registers, writes dinp
//     from them, and keeps the weight/bias gradient of its lane's channels in fp32 register
//     accumulators across all its rows; at the end the block's 8 warps combine theirs in a
//     fixed order through shared memory. Every input byte is read once: the minimum traffic.
//   - norm_backward_kernel, any C: one warp per row reads the row twice (sums, then dinp);
//     then the block re-reads its rows, one thread per vector of channels, for the partials.
// The reduce kernel adds the blocks' partials (a block barrier, fixed order).
#pragma once

#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "common.cuh"

enum class NormType { LayerNorm = 0, RMSNorm = 1 };

constexpr int NORM_BLOCK = 256;            // threads per block of the row kernels (8 warps)
constexpr int NORM_BWD_MAX_BLOCKS = 256;   // blocks of the backward kernel, at most (= partial rows)
constexpr int NORM_REDUCE_BX = 32;         // reduce kernel: channels per block
constexpr int NORM_REDUCE_BY = 8;          // reduce kernel: partial rows summed in parallel

// ----------------------------------------------------------------------------
// kernels

// Forward, one warp per row. x = residual_in (+ branch, rounded to T); residual_out = x if
// non-null; normed = N(x); mean (LayerNorm) and rstd saved if non-null.
// residual_out may alias residual_in (in-place residual update); nothing else may alias.
// Requires C % VEC == 0 and 16-byte-aligned pointers when VEC > 1 (checked by the launcher).
template <typename T, int VEC, bool RMS>
__global__ void __launch_bounds__(NORM_BLOCK)
    residual_norm_forward_kernel(T* residual_out, T* __restrict__ normed, float* __restrict__ mean, float* __restrict__ rstd,
                                 const T* residual_in, const T* __restrict__ branch, const T* __restrict__ weight,
                                 const T* __restrict__ bias, int N, int C, float eps) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;  // whole warps leave together; there is no block barrier below
    const size_t off = (size_t)row * C;
    const T* r_in = residual_in + off;
    const T* br = branch ? branch + off : nullptr;
    T* r_out = residual_out ? residual_out + off : nullptr;
    const int nvec = C / VEC;

    // x for vector i: after pass 1 it is re-read from residual_out (this lane wrote it),
    // otherwise recomputed from the inputs
    auto load_x = [&](int i, bool first_pass) {
        Packed<T, VEC> a;
        if (!first_pass && r_out) return load_packed<T, VEC>(r_out + i * VEC);
        a = load_packed<T, VEC>(r_in + i * VEC);
        if (br) {
            const Packed<T, VEC> b = load_packed<T, VEC>(br + i * VEC);
#pragma unroll
            for (int k = 0; k < VEC; k++) a.v[k] = from_float<T>(to_float(a.v[k]) + to_float(b.v[k]));
        }
        return a;
    };

    // pass 1: form x, store the residual, sum x (LayerNorm) or x^2 (RMSNorm)
    float sum = 0.0f;
    for (int i = lane; i < nvec; i += 32) {
        const Packed<T, VEC> a = load_x(i, true);
        if (r_out) store_packed<T, VEC>(r_out + i * VEC, a);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float x = to_float(a.v[k]);
            sum += RMS ? x * x : x;
        }
    }
    sum = warp_reduce_sum(sum);

    float m = 0.0f, s;
    if (RMS) {
        s = rsqrtf(sum / C + eps);
    } else {
        // pass 2 (LayerNorm): variance about the mean (two-pass, no cancellation)
        m = sum / C;
        float var = 0.0f;
        for (int i = lane; i < nvec; i += 32) {
            const Packed<T, VEC> a = load_x(i, false);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const float d = to_float(a.v[k]) - m;
                var += d * d;
            }
        }
        var = warp_reduce_sum(var);
        s = rsqrtf(var / C + eps);
    }

    // pass 3: normalise, scale, shift
    for (int i = lane; i < nvec; i += 32) {
        const Packed<T, VEC> a = load_x(i, false);
        const Packed<T, VEC> w = load_packed<T, VEC>(weight + i * VEC);
        Packed<T, VEC> b{};
        if (!RMS && bias) b = load_packed<T, VEC>(bias + i * VEC);
        Packed<T, VEC> y;
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float xhat = (to_float(a.v[k]) - m) * s;
            float o = xhat * to_float(w.v[k]);
            if (!RMS && bias) o += to_float(b.v[k]);
            y.v[k] = from_float<T>(o);
        }
        store_packed<T, VEC>(normed + off + i * VEC, y);
    }
    if (lane == 0) {
        if (!RMS && mean) mean[row] = m;
        if (rstd) rstd[row] = s;
    }
}

// Blocks per SM that norm_backward_regs_kernel asks ptxas to fit (__launch_bounds__):
// 2 (<= 128 registers) while a lane's live floats across the row sums, 4 per channel for
// LayerNorm (a, b, dw, db below), 3 for RMSNorm, stay within 96; else 1 (bf16 LayerNorm at
// C > 768, J = 4: 128 floats would spill at 128 registers).
constexpr int norm_bwd_regs_min_blocks(int VEC, int J, bool RMS) { return J * VEC * (RMS ? 3 : 4) <= 96 ? 2 : 1; }

// Element k of a vector, in fp32. For bf16 it is read from the vector's 32-bit words (a
// bf16 is the top half of its fp32): going through the 16-bit elements (to_float(p.v[k]))
// splits the words into 16-bit registers, which ptxas keeps one per 32-bit register, and
// the J = 3 bf16 LayerNorm kernel below then spills at 128 registers.
template <typename T, int VEC>
__device__ __forceinline__ float packed_elem(const Packed<T, VEC>& p, int k) {
    if constexpr (sizeof(T) == 2 && VEC % 2 == 0) {
        uint32_t words[VEC / 2];
        memcpy(words, &p, sizeof(p));
        const uint32_t u = words[k / 2];
        return __uint_as_float(k % 2 ? (u & 0xffff0000u) : (u << 16));
    } else {
        return to_float(p.v[k]);
    }
}

// Backward, single pass, for rows that fit in registers: J = ceil(nvec / 32) <= 4 vectors
// (VEC channels each) per lane. Block b owns rows [b*rows_per_block, min(N, (b+1)*rows_per_block)),
// as in norm_backward_kernel below, and writes the same partial[b][2][C].
//   Warp w takes rows row_begin + w, row_begin + w + 8, ... in that order. Lane l holds the
//   vectors i = j*32 + l (j < J), channels [i*VEC, i*VEC + VEC): per row it loads dout, inp
//   and dres there once into registers (the weight once per block, into shared memory),
//   the warp reduces sum(g), sum(g * xhat) with shuffles, and the lane writes dinp. It also
//   adds dout * xhat and dout into fp32 accumulators dw[j][k], db[j][k] that stay in
//   registers across all the warp's rows: after the loop each warp holds the weight/bias
//   gradient of *its* rows for all C channels, spread over its lanes exactly as a row is.
//   Vectors past nvec (i >= nvec: C not a multiple of 32*VEC) are neither loaded nor
//   stored; they hold zeros, which add exactly 0 to every sum, so the math runs unguarded.
//   The 8 warps then combine in a fixed order through shared memory (red[slot][.][channel]):
//   warps 4-7 store, 0-3 add them (w + (w+4)); 1-3 store these sums, warp 0 adds them in
//   order: ((((w0 + w4) + (w1 + w5)) + (w2 + w6)) + (w3 + w7)) per channel, and writes
//   partial[b]. Two barriers (and one after the weight is staged). The order is fixed by
//   the code, no atomics: same bits every run. Warps without rows (a short last block)
//   take part with zeros.
// Each input element is read once and dinp written once (the general kernel reads dout and
// inp three times). No prefetch of the next row: the 16 warps per SM (2 blocks at <= 128
// registers, see the grid note at norm_bwd_max_blocks) each have a whole row (dout, inp,
// dres: 4.6 KB at bf16 C = 768) in flight, several times what latency x bandwidth needs.
// dinp may alias dres (a lane reads its dres before writing the same elements), not dout/inp.
template <typename T, int VEC, int J, bool RMS>
__global__ void __launch_bounds__(NORM_BLOCK, norm_bwd_regs_min_blocks(VEC, J, RMS))
    norm_backward_regs_kernel(T* dinp, float* __restrict__ partial, const T* __restrict__ dout, const T* __restrict__ inp,
                              const T* __restrict__ weight, const float* __restrict__ mean, const float* __restrict__ rstd,
                              const T* dres, int N, int C, int rows_per_block) {
    constexpr int NWARPS = NORM_BLOCK / 32;
    static_assert(NWARPS == 8, "the combine below is written for 8 warps");
    constexpr int CMAX = J * 32 * VEC;  // channels one warp covers (>= C)
    constexpr int NACC = RMS ? 1 : 2;   // dweight, dbias (LayerNorm only)
    __shared__ Packed<T, VEC> w_s[J * 32];           // the weight, zeros past nvec
    __shared__ float red[4][NACC][CMAX];             // the warps' accumulators, for the combine
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row_begin = blockIdx.x * rows_per_block;
    const int row_end = min(N, row_begin + rows_per_block);
    const int nvec = C / VEC;

    for (int i = threadIdx.x; i < J * 32; i += blockDim.x) {
        Packed<T, VEC> w = {};
        if (i < nvec) w = load_packed<T, VEC>(weight + i * VEC);
        w_s[i] = w;
    }
    __syncthreads();

    float dw[J][VEC], db[J][VEC];  // this lane's channels, summed over this warp's rows
#pragma unroll
    for (int j = 0; j < J; j++)
#pragma unroll
        for (int k = 0; k < VEC; k++) dw[j][k] = db[j][k] = 0.0f;

    for (int row = row_begin + warp; row < row_end; row += NWARPS) {
        const size_t off = (size_t)row * C;
        const float m = RMS ? 0.0f : mean[row];
        const float s = rstd[row];
        // the row's loads, all issued before the first use; r stays 0 without dres
        Packed<T, VEC> dy[J] = {}, x[J] = {}, r[J] = {};
#pragma unroll
        for (int j = 0; j < J; j++) {
            const int i = j * 32 + lane;
            if (i < nvec) {
                dy[j] = load_packed<T, VEC>(dout + off + i * VEC);
                x[j] = load_packed<T, VEC>(inp + off + i * VEC);
                if (dres) r[j] = load_packed<T, VEC>(dres + off + i * VEC);
            }
        }
        // per channel: g = dout * w and xhat, into the row sums and the accumulators; for dx
        // after the row sums two floats per channel are kept (the loaded vectors die here):
        //   dx = s * (g - mean_g - xhat * mean_gx) + dres = a - s * mean_g - b * (s * mean_gx)
        //   with a = s * g + dres, b = xhat
        float a[J][VEC], b[J][VEC];
        float sum_g = 0.0f, sum_gx = 0.0f;  // sum(g), sum(g * xhat)
#pragma unroll
        for (int j = 0; j < J; j++) {
            const Packed<T, VEC> w = w_s[j * 32 + lane];
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const float d = packed_elem(dy[j], k);
                const float g = d * packed_elem(w, k);
                const float xhat = (packed_elem(x[j], k) - m) * s;
                sum_g += g;
                sum_gx += g * xhat;
                dw[j][k] += d * xhat;
                if (!RMS) db[j][k] += d;
                a[j][k] = s * g + packed_elem(r[j], k);
                b[j][k] = xhat;
            }
        }
        sum_g = warp_reduce_sum(sum_g);
        sum_gx = warp_reduce_sum(sum_gx);
        const float c0 = RMS ? 0.0f : s * (sum_g / C);  // s * mean_g
        const float c1 = s * (sum_gx / C);              // s * mean_gx
#pragma unroll
        for (int j = 0; j < J; j++) {
            const int i = j * 32 + lane;
            if (i >= nvec) continue;
            Packed<T, VEC> dx;
#pragma unroll
            for (int k = 0; k < VEC; k++) dx.v[k] = from_float<T>(a[j][k] - c0 - b[j][k] * c1);
            store_packed<T, VEC>(dinp + off + i * VEC, dx);
        }
    }

    // fixed-order combine of the warps' accumulators through red[slot][.][channel]:
    //   round 1: warps 4-7 store into slots 0-3; barrier; warps 0-3 add slot (warp) to their own
    //   round 2: warps 1-3 store into slots 1-3; barrier; warp 0 adds slots 1, 2, 3 in order
    // In round 2 a warp overwrites only the slot that it read itself in round 1. Every thread
    // reaches both barriers (no early exit above).
    // each_channel(f): f(j, k, c) for this lane's channels c = (32 j + lane) VEC + k below C
    auto each_channel = [&](auto&& f) {
#pragma unroll
        for (int j = 0; j < J; j++) {
            const int i = j * 32 + lane;
            if (i >= nvec) continue;
#pragma unroll
            for (int k = 0; k < VEC; k++) f(j, k, i * VEC + k);
        }
    };
    if (warp >= 4)
        each_channel([&](int j, int k, int c) {
            red[warp - 4][0][c] = dw[j][k];
            if (!RMS) red[warp - 4][NACC - 1][c] = db[j][k];
        });
    __syncthreads();
    if (warp < 4)
        each_channel([&](int j, int k, int c) {
            dw[j][k] += red[warp][0][c];
            if (!RMS) db[j][k] += red[warp][NACC - 1][c];
            if (warp > 0) {  // round 2's store, same element
                red[warp][0][c] = dw[j][k];
                if (!RMS) red[warp][NACC - 1][c] = db[j][k];
            }
        });
    __syncthreads();
    if (warp == 0) {
        float* pw = partial + (size_t)blockIdx.x * 2 * C;  // dweight partial; dbias partial at pw + C
        each_channel([&](int j, int k, int c) {
            float w_sum = dw[j][k], b_sum = db[j][k];
            for (int slot = 1; slot < 4; slot++) {
                w_sum += red[slot][0][c];
                if (!RMS) b_sum += red[slot][NACC - 1][c];
            }
            pw[c] = w_sum;
            if (!RMS) pw[C + c] = b_sum;
        });
    }
}

// Backward, general (any C; used where J > 4, e.g. llama-1b's C = 2048). Block b owns rows
// [b*rows_per_block, min(N, (b+1)*rows_per_block)).
//   phase A, one warp per row:   dinp = N'(dout) (+ dres if non-null)
//   phase B, one thread per VEC channels, rows in order:
//     partial[b][0][c] = sum_rows dout*xhat,  partial[b][1][c] = sum_rows dout  (LayerNorm)
// Phase A reads each row twice (sums, then dinp) and phase B a third time (from L2 or
// DRAM), with only nvec of the 256 threads busy: about twice the register kernel's time.
// inp is the pre-norm input x; mean/rstd are the forward's. dinp may alias dres
// (in-place), but not dout or inp (phase B re-reads them).
template <typename T, int VEC, bool RMS>
__global__ void __launch_bounds__(NORM_BLOCK)
    norm_backward_kernel(T* dinp, float* __restrict__ partial, const T* __restrict__ dout, const T* __restrict__ inp,
                         const T* __restrict__ weight, const float* __restrict__ mean, const float* __restrict__ rstd,
                         const T* dres, int N, int C, int rows_per_block) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    const int row_begin = blockIdx.x * rows_per_block;
    const int row_end = min(N, row_begin + rows_per_block);
    const int nvec = C / VEC;

    // phase A: input gradient, one warp per row (warps never wait for each other)
    for (int row = row_begin + warp; row < row_end; row += nwarps) {
        const size_t off = (size_t)row * C;
        const float m = RMS ? 0.0f : mean[row];
        const float s = rstd[row];
        float sum_g = 0.0f, sum_gx = 0.0f;  // sum(g), sum(g * xhat)
        for (int i = lane; i < nvec; i += 32) {
            const Packed<T, VEC> dy = load_packed<T, VEC>(dout + off + i * VEC);
            const Packed<T, VEC> x = load_packed<T, VEC>(inp + off + i * VEC);
            const Packed<T, VEC> w = load_packed<T, VEC>(weight + i * VEC);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const float g = to_float(dy.v[k]) * to_float(w.v[k]);
                const float xhat = (to_float(x.v[k]) - m) * s;
                sum_g += g;
                sum_gx += g * xhat;
            }
        }
        sum_g = warp_reduce_sum(sum_g);
        sum_gx = warp_reduce_sum(sum_gx);
        const float mean_g = RMS ? 0.0f : sum_g / C;
        const float mean_gx = sum_gx / C;
        for (int i = lane; i < nvec; i += 32) {
            const Packed<T, VEC> dy = load_packed<T, VEC>(dout + off + i * VEC);
            const Packed<T, VEC> x = load_packed<T, VEC>(inp + off + i * VEC);
            const Packed<T, VEC> w = load_packed<T, VEC>(weight + i * VEC);
            Packed<T, VEC> r{};
            if (dres) r = load_packed<T, VEC>(dres + off + i * VEC);
            Packed<T, VEC> dx;
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const float g = to_float(dy.v[k]) * to_float(w.v[k]);
                const float xhat = (to_float(x.v[k]) - m) * s;
                float d = s * (g - mean_g - xhat * mean_gx);
                if (dres) d += to_float(r.v[k]);
                dx.v[k] = from_float<T>(d);
            }
            store_packed<T, VEC>(dinp + off + i * VEC, dx);
        }
    }

    // phase B: this block's partial weight/bias gradient, rows added in a fixed order
    float* pw = partial + (size_t)blockIdx.x * 2 * C;  // dweight partial; dbias partial at pw + C
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
        float dw[VEC], db[VEC];
#pragma unroll
        for (int k = 0; k < VEC; k++) dw[k] = db[k] = 0.0f;
        for (int row = row_begin; row < row_end; row++) {
            const size_t off = (size_t)row * C;
            const float m = RMS ? 0.0f : mean[row];
            const float s = rstd[row];
            const Packed<T, VEC> dy = load_packed<T, VEC>(dout + off + i * VEC);
            const Packed<T, VEC> x = load_packed<T, VEC>(inp + off + i * VEC);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const float d = to_float(dy.v[k]);
                dw[k] += d * (to_float(x.v[k]) - m) * s;
                db[k] += d;
            }
        }
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            pw[i * VEC + k] = dw[k];
            if (!RMS) pw[C + i * VEC + k] = db[k];
        }
    }
}

// dweight[c] += sum_p partial[p][0][c]; dbias[c] += sum_p partial[p][1][c] (if dbias).
// Block (32, 8): threadIdx.x picks the channel, threadIdx.y sums every 8th partial row in
// order; the 8 sums meet in shared memory and thread y == 0 adds them in order.
template <typename T>
__global__ void __launch_bounds__(NORM_REDUCE_BX* NORM_REDUCE_BY)
    norm_weight_grad_reduce_kernel(T* dweight, T* dbias, const float* __restrict__ partial, int nparts, int C) {
    __shared__ float sw[NORM_REDUCE_BY][NORM_REDUCE_BX];
    __shared__ float sb[NORM_REDUCE_BY][NORM_REDUCE_BX];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * NORM_REDUCE_BX + tx;
    float aw = 0.0f, ab = 0.0f;
    if (c < C) {
        for (int p = ty; p < nparts; p += NORM_REDUCE_BY) {
            aw += partial[(size_t)p * 2 * C + c];
            if (dbias) ab += partial[(size_t)p * 2 * C + C + c];
        }
    }
    sw[ty][tx] = aw;  // every thread writes and reaches the barrier, even past C
    sb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && c < C) {
        float tw = 0.0f, tb = 0.0f;
        for (int y = 0; y < NORM_REDUCE_BY; y++) {
            tw += sw[y][tx];
            tb += sb[y][tx];
        }
        dweight[c] = from_float<T>(to_float(dweight[c]) + tw);
        if (dbias) dbias[c] = from_float<T>(to_float(dbias[c]) + tb);
    }
}

// ----------------------------------------------------------------------------
// launchers (host). Device pointers; N rows, C channels; stream may be 0.

// Blocks of the backward kernel and the scratch it needs (floats): allocate
// norm_backward_scratch_floats(N, C) floats once for the largest N*C and pass it to every
// backward call (calls on one stream may share it).
// The grid: min(NORM_BWD_MAX_BLOCKS, N / 8) blocks of 8 warps, contiguous rows each. At
// gpt2-124m's N = 16384 that is 256 blocks x 64 rows, 8 rows per warp. The register kernel
// fits 2 blocks per SM (__launch_bounds__(256, 2): <= 128 registers; all but bf16 LayerNorm
// at J = 4, see norm_bwd_regs_min_blocks), so on a 132-SM H100/H200 (264 slots) all 256
// blocks are resident at once: one wave, 16 warps per SM streaming. More blocks would not
// add resident warps, only scratch: every block writes one partial row of 2*C floats that
// the reduce kernel re-reads, 1.5 MB at C = 768 against the ~100 MB that the row kernel
// moves (bf16 dout, inp, dres, dinp), about 1.5%. Fewer, longer blocks would leave SMs idle.
// norm_bwd_max_blocks: the cap on backward blocks; tests lower it to give warps several
// rows each (the partial-sum layout and thus the bits of dweight depend on it).
// norm_bwd_regs_path: use norm_backward_regs_kernel where the row fits (J <= 4); tests and
// test_norm --bench clear it to run the general kernel at any C.
inline int norm_bwd_max_blocks = NORM_BWD_MAX_BLOCKS;
inline bool norm_bwd_regs_path = true;
inline int norm_backward_rows_per_block(int N) {
    const int max_blocks = norm_bwd_max_blocks;
    const int blocks = std::min(max_blocks, ceil_div(N, NORM_BLOCK / 32));
    return ceil_div(N, blocks);
}
inline int norm_backward_num_blocks(int N) { return N > 0 ? ceil_div(N, norm_backward_rows_per_block(N)) : 0; }
inline size_t norm_backward_scratch_floats(int N, int C) { return (size_t)norm_backward_num_blocks(N) * 2 * (size_t)C; }

namespace norm_detail {
template <typename T>
constexpr int vec_width() {
    return 16 / (int)sizeof(T);
}
// 16-byte vectors only if every row starts 16-byte aligned and all pointers are
inline bool use_vec(int C, int vec, std::initializer_list<const void*> ptrs) {
    if (C % vec != 0) return false;
    for (const void* p : ptrs)
        if (!is_aligned(p, 16)) return false;
    return true;
}

// vectors per lane of the register kernel for rows of nvec vectors: J = ceil(nvec / 32)
// when J <= 4 (and norm_bwd_regs_path), else 0: the general kernel
inline int norm_backward_regs_vectors(int nvec) {
    const int J = ceil_div(nvec, 32);
    return norm_bwd_regs_path && J <= 4 ? J : 0;
}
// the backward row kernel for vector width VEC: the register kernel with J = ceil(nvec / 32)
// vectors per lane when J <= 4 (and norm_bwd_regs_path), else the general kernel
template <typename T, int VEC, bool RMS>
void launch_norm_backward_rows(dim3 grid, cudaStream_t stream, T* dinp, float* partial, const T* dout, const T* inp, const T* weight,
                               const float* mean, const float* rstd, const T* dres, int N, int C, int rows_per_block) {
    const int J = norm_backward_regs_vectors(C / VEC);
    const dim3 block(NORM_BLOCK);
#define NORM_BWD_ARGS grid, block, 0, stream, dinp, partial, dout, inp, weight, mean, rstd, dres, N, C, rows_per_block
    if (J == 1) launch_kernel(norm_backward_regs_kernel<T, VEC, 1, RMS>, NORM_BWD_ARGS);
    else if (J == 2) launch_kernel(norm_backward_regs_kernel<T, VEC, 2, RMS>, NORM_BWD_ARGS);
    else if (J == 3) launch_kernel(norm_backward_regs_kernel<T, VEC, 3, RMS>, NORM_BWD_ARGS);
    else if (J == 4) launch_kernel(norm_backward_regs_kernel<T, VEC, 4, RMS>, NORM_BWD_ARGS);
    else launch_kernel(norm_backward_kernel<T, VEC, RMS>, NORM_BWD_ARGS);
#undef NORM_BWD_ARGS
}
}  // namespace norm_detail

// The general forward: x = residual_in + branch (branch may be null: x = residual_in);
// residual_out = x (if non-null; may alias residual_in); normed = N(x);
// mean (LayerNorm only) and rstd (N floats each) saved if non-null. bias may be null.
template <typename T>
void residual_norm_forward(T* residual_out, T* normed, float* mean, float* rstd, const T* residual_in, const T* branch,
                           const T* weight, const T* bias, int N, int C, float eps, NormType type, cudaStream_t stream) {
    if (N <= 0) return;
    constexpr int V = norm_detail::vec_width<T>();
    const bool vec = norm_detail::use_vec(C, V, {residual_out, normed, residual_in, branch, weight, bias});
    const dim3 grid(ceil_div(N, NORM_BLOCK / 32)), block(NORM_BLOCK);
    const bool rms = type == NormType::RMSNorm;
#define NORM_FWD_ARGS grid, block, 0, stream, residual_out, normed, mean, rstd, residual_in, branch, weight, bias, N, C, eps
    if (rms && vec) launch_kernel(residual_norm_forward_kernel<T, V, true>, NORM_FWD_ARGS);
    else if (rms) launch_kernel(residual_norm_forward_kernel<T, 1, true>, NORM_FWD_ARGS);
    else if (vec) launch_kernel(residual_norm_forward_kernel<T, V, false>, NORM_FWD_ARGS);
    else launch_kernel(residual_norm_forward_kernel<T, 1, false>, NORM_FWD_ARGS);
#undef NORM_FWD_ARGS
}

// Plain norm: out = N(inp) (the final norm; the first norm of a Pre-LN stack).
template <typename T>
void norm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias, int N, int C, float eps,
                  NormType type, cudaStream_t stream) {
    residual_norm_forward<T>(nullptr, out, mean, rstd, inp, nullptr, weight, bias, N, C, eps, type, stream);
}

// Pre-LN: residual_out = residual_in + branch (the new residual stream; may alias
// residual_in), normed = N(residual_out) (the next sublayer's input).
template <typename T>
void preln_residual_norm_forward(T* residual_out, T* normed, float* mean, float* rstd, const T* residual_in, const T* branch,
                                 const T* weight, const T* bias, int N, int C, float eps, NormType type, cudaStream_t stream) {
    residual_norm_forward<T>(residual_out, normed, mean, rstd, residual_in, branch, weight, bias, N, C, eps, type, stream);
}

// Post-LN: out = N(residual_in + branch) is the new residual stream; sum = residual_in +
// branch is saved for the backward (may be null when no backward follows).
template <typename T>
void postln_residual_norm_forward(T* out, T* sum, float* mean, float* rstd, const T* residual_in, const T* branch, const T* weight,
                                  const T* bias, int N, int C, float eps, NormType type, cudaStream_t stream) {
    residual_norm_forward<T>(sum, out, mean, rstd, residual_in, branch, weight, bias, N, C, eps, type, stream);
}

// The general backward: dinp = N'(dout) + dres (dres may be null; dinp may alias dres);
// dweight += sum dout*xhat, dbias += sum dout (LayerNorm, if dbias non-null), deterministic.
// inp is the forward's pre-norm input x, mean/rstd its saved statistics (mean unused for
// RMSNorm). scratch: norm_backward_scratch_floats(N, C) floats.
template <typename T>
void norm_backward(T* dinp, T* dweight, T* dbias, float* scratch, const T* dout, const T* inp, const T* weight, const float* mean,
                   const float* rstd, const T* dres, int N, int C, NormType type, cudaStream_t stream) {
    if (N <= 0) return;
    constexpr int V = norm_detail::vec_width<T>();
    const bool vec = norm_detail::use_vec(C, V, {dinp, dout, inp, weight, dres, scratch});
    const int rows_per_block = norm_backward_rows_per_block(N);
    const dim3 grid(ceil_div(N, rows_per_block));
    const bool rms = type == NormType::RMSNorm;
#define NORM_BWD_ARGS grid, stream, dinp, scratch, dout, inp, weight, mean, rstd, dres, N, C, rows_per_block
    if (rms && vec) norm_detail::launch_norm_backward_rows<T, V, true>(NORM_BWD_ARGS);
    else if (rms) norm_detail::launch_norm_backward_rows<T, 1, true>(NORM_BWD_ARGS);
    else if (vec) norm_detail::launch_norm_backward_rows<T, V, false>(NORM_BWD_ARGS);
    else norm_detail::launch_norm_backward_rows<T, 1, false>(NORM_BWD_ARGS);
#undef NORM_BWD_ARGS
    launch_kernel(norm_weight_grad_reduce_kernel<T>, dim3(ceil_div(C, NORM_REDUCE_BX)), dim3(NORM_REDUCE_BX, NORM_REDUCE_BY), 0,
                  stream, dweight, rms ? nullptr : dbias, scratch, (int)grid.x, C);
}

// Pre-LN backward: dresidual_out = dresidual_in + N'(dnormed), the gradient of both the
// residual_in and the branch output of the forward's add (dresidual_out may alias
// dresidual_in). residual is the forward's residual_out (the normalised input).
template <typename T>
void preln_residual_norm_backward(T* dresidual_out, T* dweight, T* dbias, float* scratch, const T* dnormed, const T* dresidual_in,
                                  const T* residual, const T* weight, const float* mean, const float* rstd, int N, int C,
                                  NormType type, cudaStream_t stream) {
    norm_backward<T>(dresidual_out, dweight, dbias, scratch, dnormed, residual, weight, mean, rstd, dresidual_in, N, C, type, stream);
}

// Post-LN backward: dsum = N'(dout), the gradient of both the skip input and the branch
// output (one buffer for both). sum is the forward's saved pre-norm sum.
template <typename T>
void postln_residual_norm_backward(T* dsum, T* dweight, T* dbias, float* scratch, const T* dout, const T* sum, const T* weight,
                                   const float* mean, const float* rstd, int N, int C, NormType type, cudaStream_t stream) {
    norm_backward<T>(dsum, dweight, dbias, scratch, dout, sum, weight, mean, rstd, nullptr, N, C, type, stream);
}
