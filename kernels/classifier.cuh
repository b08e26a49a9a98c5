// classifier.cuh - the fused classifier: softmax + cross-entropy + dlogits without storing
// probabilities. Padded vocabulary columns [V, Vp) never enter the loss (only the vector that
// straddles V reads some, masked off); their gradient is written as 0.
//
// Per row n of logits z (N, Vp), target t_n:
//   lse_n   = log(sum_{v < V} exp(z_v))   (computed relative to the row max, see below)
//   loss_n  = lse_n - z_{t_n}
//   dz_v    = (exp(z_v - lse_n) - [v == t_n]) * dscale   for v < V   (written over z when
//             write_grad; dscale = grad_scale / N for a mean loss), 0 for v >= V
//
// Memory layout and access: logits are row-major (N, Vp), one block per row. Each thread
// moves VEC consecutive logits per access (VEC = 16 / sizeof(T): 8 bf16 or 4 fp32, one
// 128-bit load/store) and thread i takes vectors i, i + blockDim.x, ... so a warp reads
// 512 contiguous bytes per instruction. The vector kernel needs Vp % VEC == 0 and a 16-byte
// aligned logits pointer (then every row start is aligned); otherwise the launcher picks the
// VEC = 1 instantiation, the same code with scalar accesses (e.g. V = Vp = 251).
//
// Two passes over the row (the max and the sum of exponentials share one):
//   pass 1, online softmax: each thread keeps a running max m and s = sum exp(z - m) over
//     the logits it has seen. For each vector with local max mv: m' = max(m, mv),
//     s = s * exp(m - m') + sum_k exp(z_k - m'), m = m' (a bigger value rescales the sum
//     so far instead of needing a separate max pass). Then the threads' (m, s) pairs are
//     merged with the same rule, (m1, s1) + (m2, s2) = (M, s1 exp(m1 - M) + s2 exp(m2 - M)),
//     M = max(m1, m2): an xor butterfly inside each warp, then every thread folds the warps'
//     pairs in warp order. The merge is commutative bit for bit and the order is fixed, so
//     the result is the same on every run (no atomics). lse = m + log(s).
//   pass 2 (write_grad only): re-read the row (mostly from L2: pass 1 read it moments ago;
//     this pass loads with the evict-first hint and stores streaming) and write dlogits in
//     place. Vectors holding neither the target nor padding take a branch-free path; fully
//     padded vectors are stored as zeros without being read.
// Each thread issues CLASSIFIER_UNROLL independent vector loads before using them (memory-
// level parallelism without the registers of a deeper unroll).
// The exponentials are base 2 on pre-scaled values: m is kept in log2 units (m = the largest
// z * log2(e), rounded) so exp(z - max) = exp2(fmaf(z, log2e, -m)): one FMA and one ex2 per
// logit, the FMA's single rounding relative to |z - max|. lse is kept as the pair (m, log2 s)
// and dz uses exp2(fmaf(z, log2e, -m) - log2 s), so no rounding scales with |lse| itself.
// exp2 is exp2_ftz (common.cuh): one MUFU.EX2, results below 2^-126 flushed to zero.
// Running maxima start at -FLT_MAX rather than -inf so threads with nothing to read, and the
// merge, never compute inf - inf.
// Thread 0 reads the target's logit before the first barrier, i.e. before anything in the
// row can be overwritten.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cstring>

#include "common.cuh"

constexpr int CLASSIFIER_MAX_BLOCK = 1024;  // threads per row (block), at most
constexpr int CLASSIFIER_UNROLL = 2;        // vector loads issued per thread before their math
constexpr int CLASSIFIER_VECS_PER_THREAD = 16;  // block size: ~this many vectors per thread

// log2(e) and ln(2)
constexpr float CLASSIFIER_LOG2E = 1.4426950408889634f;
constexpr float CLASSIFIER_LN2 = 0.6931471805599453f;

// pass-2 accesses: last use of the logits (evict-first) and streaming dlogits stores; the
// scalar instantiation uses plain accesses
template <typename T, int VEC>
__device__ __forceinline__ Packed<T, VEC> classifier_load_last(const T* p) {
    if constexpr (sizeof(Packed<T, VEC>) == sizeof(int4)) {
        const int4 r = __ldcs(reinterpret_cast<const int4*>(p));
        Packed<T, VEC> x;
        memcpy(&x, &r, sizeof(x));
        return x;
    } else {
        return load_packed<T, VEC>(p);
    }
}
template <typename T, int VEC>
__device__ __forceinline__ void classifier_store_stream(T* p, const Packed<T, VEC>& x) {
    if constexpr (sizeof(Packed<T, VEC>) == sizeof(int4)) {
        int4 r;
        memcpy(&r, &x, sizeof(r));
        __stcs(reinterpret_cast<int4*>(p), r);
    } else {
        store_packed<T, VEC>(p, x);
    }
}

// merge the online-softmax pair (m2, s2) into (m, s); m in log2 units. Symmetric in its
// two arguments bit for bit (fmaxf and the sum of two products commute), which keeps the
// xor butterfly's lanes identical.
__device__ __forceinline__ void classifier_merge(float& m, float& s, float m2, float s2) {
    const float M = fmaxf(m, m2);
    s = s * exp2_ftz(m - M) + s2 * exp2_ftz(m2 - M);
    m = M;
}

// Block-wide merge of every thread's (m, s); all threads get the result. `scratch` holds
// 2 * 32 floats of shared memory. Fixed order: xor butterfly per warp, then warps 0, 1, ...
__device__ __forceinline__ void classifier_block_merge(float& m, float& s, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
        classifier_merge(m, s, m2, s2);
    }
    if (lane == 0) {
        scratch[warp] = m;
        scratch[32 + warp] = s;
    }
    __syncthreads();
    m = scratch[0];
    s = scratch[32];
    for (int w = 1; w < nwarps; w++) classifier_merge(m, s, scratch[w], scratch[32 + w]);
}

// One block per row; blockDim.x a multiple of 32, at most CLASSIFIER_MAX_BLOCK.
// VEC > 1 requires Vp % VEC == 0 and 16-byte-aligned logits (checked by the launcher).
template <typename T, int VEC>
__global__ void __launch_bounds__(CLASSIFIER_MAX_BLOCK)
    classifier_kernel(T* logits, float* __restrict__ losses, const int* __restrict__ targets, int V, int Vp, float dscale,
                      int write_grad) {
    __shared__ float scratch[64];
    const int row = blockIdx.x;
    T* z = logits + (size_t)row * Vp;
    const int tgt = targets[row];
    float zt = 0.0f;
    if (threadIdx.x == 0) zt = to_float(z[tgt]);  // before the barrier below: nothing is overwritten yet
    const int step = blockDim.x;

    // pass 1: online (max, sum of exp) over the vectors holding columns < V
    const int nv = (V + VEC - 1) / VEC;  // the last one may reach into the padding
    float m = -FLT_MAX, s = 0.0f;        // m in log2 units
    for (int base = threadIdx.x; base < nv; base += CLASSIFIER_UNROLL * step) {
        Packed<T, VEC> x[CLASSIFIER_UNROLL];
#pragma unroll
        for (int u = 0; u < CLASSIFIER_UNROLL; u++) {
            const int i = base + u * step;
            x[u] = i < nv ? load_packed<T, VEC>(z + (size_t)i * VEC) : Packed<T, VEC>{};
        }
#pragma unroll
        for (int u = 0; u < CLASSIFIER_UNROLL; u++) {
            const int i = base + u * step;
            if (i >= nv) continue;
            float f[VEC];
#pragma unroll
            for (int k = 0; k < VEC; k++) f[k] = to_float(x[u].v[k]);
            if ((i + 1) * VEC > V) {  // only the last vector reaches into the padding: exp -> 0
#pragma unroll
                for (int k = 0; k < VEC; k++)
                    if (i * VEC + k >= V) f[k] = -INFINITY;
            }
            float mv = f[0];
#pragma unroll
            for (int k = 1; k < VEC; k++) mv = fmaxf(mv, f[k]);
            const float mn = fmaxf(m, mv * CLASSIFIER_LOG2E);  // rounding is monotonic: = max of the scaled values
            float acc = s * exp2_ftz(m - mn);                  // rescale: 1 unless the max grew
#pragma unroll
            for (int k = 0; k < VEC; k++) acc += exp2_ftz(fmaf(f[k], CLASSIFIER_LOG2E, -mn));
            m = mn;
            s = acc;
        }
    }
    classifier_block_merge(m, s, scratch);
    // lse = (m + log2 s) ln 2, never rounded as one number: the arguments below are formed
    // relative to m, so their rounding error scales with |z - lse|, not with |lse|
    const float log2s = log2f(s);
    if (threadIdx.x == 0) losses[row] = (fmaf(-zt, CLASSIFIER_LOG2E, m) + log2s) * CLASSIFIER_LN2;
    if (!write_grad) return;

    // pass 2: dlogits in place; vectors wholly in the padding are zeroed without a read
    const int nvp = Vp / VEC;
    for (int base = threadIdx.x; base < nvp; base += CLASSIFIER_UNROLL * step) {
        Packed<T, VEC> x[CLASSIFIER_UNROLL];
#pragma unroll
        for (int u = 0; u < CLASSIFIER_UNROLL; u++) {
            const int i = base + u * step;
            x[u] = i < nv ? classifier_load_last<T, VEC>(z + (size_t)i * VEC) : Packed<T, VEC>{};
        }
#pragma unroll
        for (int u = 0; u < CLASSIFIER_UNROLL; u++) {
            const int i = base + u * step;
            if (i >= nvp) continue;
            const int v0 = i * VEC;
            Packed<T, VEC> d;
            if (v0 + VEC <= V && (unsigned)(tgt - v0) >= (unsigned)VEC) {  // the common case: no padding, no target
#pragma unroll
                for (int k = 0; k < VEC; k++)
                    d.v[k] = from_float<T>(exp2_ftz(fmaf(to_float(x[u].v[k]), CLASSIFIER_LOG2E, -m) - log2s) * dscale);
            } else {
#pragma unroll
                for (int k = 0; k < VEC; k++) {
                    const int v = v0 + k;
                    float g = 0.0f;
                    if (v < V) {
                        const float p = exp2_ftz(fmaf(to_float(x[u].v[k]), CLASSIFIER_LOG2E, -m) - log2s);  // softmax
                        g = (p - (v == tgt ? 1.0f : 0.0f)) * dscale;
                    }
                    d.v[k] = from_float<T>(g);
                }
            }
            classifier_store_stream<T, VEC>(z + (size_t)i * VEC, d);
        }
    }
}

// Threads per row: one per ~CLASSIFIER_VECS_PER_THREAD (16) vectors, i.e. ~256 bytes of the
// row per thread (Vp/128 threads for bf16, Vp/64 for fp32), in whole warps, 32..1024; `vec`
// is the kernel's VEC. One thread per 8 logits would saturate at 1024 threads for a GPT-2
// vocabulary; with 16-byte loads each thread would then have only ~6 bf16 vectors, and the
// per-row reduction, the pass-1 -> pass-2 barrier and the ragged last iteration would be a
// large share of the work. Measured on an H200 (bf16, N = 16384, V = 50257, Vp = 50304, fused
// loss + dlogits): 1.05 ms with 16 vectors per thread (416 threads) against 1.25 ms with 8
// (800), 1.07 ms with 12, 1.18 ms with 24; a 4-deep-unrolled variant at 1024 threads takes
// 1.79 ms (59 registers: one block per SM) and a scalar three-pass kernel 4.2 ms.
// fp32 (N = 8192, 800 threads): 1.01 ms against 2.8 ms. The kernel stays at <= 32 registers
// (2 loads in flight per thread), so several blocks share an SM and one block's barrier
// overlaps another's loads.
inline int classifier_block(int Vp, int vec) {
    const int nvec = (Vp + vec - 1) / vec, per = CLASSIFIER_VECS_PER_THREAD;
    return std::min(CLASSIFIER_MAX_BLOCK, std::max(32, ((nvec + per - 1) / per + 31) / 32 * 32));
}

// losses[n] = the row's cross-entropy; with write_grad, logits become dlogits (times dscale).
template <typename T>
void classifier(T* logits, float* losses, const int* targets, int N, int V, int Vp, float dscale, bool write_grad, cudaStream_t st) {
    if (N <= 0) return;
    constexpr int VEC = 16 / sizeof(T);
    if (Vp % VEC == 0 && is_aligned(logits, 16))
        launch_kernel(classifier_kernel<T, VEC>, N, classifier_block(Vp, VEC), 0, st, logits, losses, targets, V, Vp, dscale,
                      write_grad ? 1 : 0);
    else
        launch_kernel(classifier_kernel<T, 1>, N, classifier_block(Vp, 1), 0, st, logits, losses, targets, V, Vp, dscale,
                      write_grad ? 1 : 0);
}
