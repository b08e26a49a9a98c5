// adamw.cuh - the AdamW update (torch.optim.AdamW semantics, as train_gpt.cpp), for the three
// precision modes of the CUDA trainer:
//   fp32       param fp32 (it is the master), m/v fp32
//   bf16       param bf16 (the compute copy) + fp32 master; m/v fp32; param = round(master)
//   pure bf16  param bf16 is the only copy, m/v bf16 (the paper's code: model.to(bfloat16))
//
// Per element, g scaled by grad_scale (global-norm clipping), decay = 1 - lr*wd for 2-D tensors:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   w = w * decay - step_size * m / (sqrt(v) * inv_bc2 + eps)
//   step_size = lr / (1 - b1^t),  inv_bc2 = 1 / sqrt(1 - b2^t)       (computed on the host)
// All math in fp32.
//
// The gradient scale and whether to update at all come either from the host (a.grad_scale,
// always applied) or, when `stats` is non-null, from the device (gradnorm.cuh's StepStats:
// grad_scale = stats->clip, and nothing is written unless stats->finite), so the trainer
// queues the update right behind the gradient norm without waiting for it.
//
// One launch for the whole parameter arena (one launch per tensor would be a few hundred
// launches of a few microseconds each). The arena is cut into the chunks of
// gradnorm.cuh (never straddling two tensors; device arrays chunk_off / chunk_len, the same
// table the gradient norm uses) plus a per-chunk flag chunk_decay (1: the chunk's tensor is
// decayed, a.decay applies; 0: decay 1). One block per chunk, threads striding over it in
// groups of 4 elements (see adamw_kernel).
//
// Sharded optimizer state (the trainer's ZeRO-1, --zero 1): a rank updates only its own
// chunks (the launcher is given that part of the chunk table) and holds master, m and v
// only for them: state element s is arena element state_base + s (the groups of 4 need
// state_base to be a multiple of 4, else one element at a time); param and grad are whole arenas as always.
#pragma once

#include "common.cuh"
#include "gradnorm.cuh"

struct AdamWArgs {
    float step_size, inv_bc2, beta1, beta2, eps, decay, grad_scale;
};

// K consecutive elements from arena index i, state index s = i - state_base (one aligned
// load/store per array when K > 1)
template <int K, typename TP, typename TS>
__device__ __forceinline__ void adamw_elems(size_t i, size_t s, TP* __restrict__ param, float* __restrict__ master, TS* __restrict__ m,
                                            TS* __restrict__ v, const TP* __restrict__ grad, float decay, const AdamWArgs& a) {
    const Packed<TP, K> g = load_packed<TP, K>(grad + i);
    Packed<TS, K> mv = load_packed<TS, K>(m + s), vv = load_packed<TS, K>(v + s);
    Packed<TP, K> p = load_packed<TP, K>(param + i);   // the weights themselves unless there is a master
    Packed<float, K> w;
    if (master) w = load_packed<float, K>(master + s);
#pragma unroll
    for (int k = 0; k < K; k++) {
        const float gk = to_float(g.v[k]) * a.grad_scale;
        const float mi = a.beta1 * to_float(mv.v[k]) + (1.0f - a.beta1) * gk;
        const float vi = a.beta2 * to_float(vv.v[k]) + (1.0f - a.beta2) * gk * gk;
        const float wk = master ? w.v[k] : to_float(p.v[k]);
        const float w_new = wk * decay - a.step_size * mi / (sqrtf(vi) * a.inv_bc2 + a.eps);
        mv.v[k] = from_float<TS>(mi);
        vv.v[k] = from_float<TS>(vi);
        w.v[k] = w_new;
        p.v[k] = from_float<TP>(w_new);
    }
    store_packed<TS, K>(m + s, mv);
    store_packed<TS, K>(v + s, vv);
    if (master) store_packed<float, K>(master + s, w);
    store_packed<TP, K>(param + i, p);
}

// One block per chunk. VEC = 4: every array moves in groups of 4 elements (16 bytes of an
// fp32 array, 8 of a bf16 one) starting at arena indices that are multiples of 4 (the launcher
// checks the base pointers are aligned for that); a chunk's elements before its first such
// index (head) and after its last whole group (tail) go one at a time (vec_split, common.cuh). VEC = 1: all one at a
// time. The element math is the same either way, so both give the same bits.
template <typename TP, typename TS, int VEC>
__global__ void adamw_kernel(TP* __restrict__ param, float* __restrict__ master, TS* __restrict__ m, TS* __restrict__ v,
                             const TP* __restrict__ grad, const long long* __restrict__ chunk_off, const int* __restrict__ chunk_len,
                             const unsigned char* __restrict__ chunk_decay, AdamWArgs a, const StepStats* __restrict__ stats,
                             size_t state_base) {
    if (stats) {
        if (!stats->finite) return;   // a skipped step: every array keeps its bits
        a.grad_scale = stats->clip;
    }
    const size_t o = (size_t)chunk_off[blockIdx.x];
    const int n = chunk_len[blockIdx.x];
    const float decay = chunk_decay[blockIdx.x] ? a.decay : 1.0f;
    const VecSplit sp = vec_split<VEC>(o, n);
    const size_t so = o - state_base;
    for (int j = threadIdx.x; j < sp.head; j += blockDim.x) adamw_elems<1>(o + j, so + j, param, master, m, v, grad, decay, a);
    for (int q = threadIdx.x; q < sp.groups; q += blockDim.x) {
        const size_t j = sp.head + (size_t)q * VEC;
        adamw_elems<VEC>(o + j, so + j, param, master, m, v, grad, decay, a);
    }
    for (int j = sp.tail + threadIdx.x; j < n; j += blockDim.x) adamw_elems<1>(o + j, so + j, param, master, m, v, grad, decay, a);
}

// the update of every chunk (nchunks = 0: no launch); arrays indexed by the arena offset;
// stats non-null: the device's clip and finite flag instead of a.grad_scale (see above);
// vectorize = false: the one-element kernel even where groups of 4 would fit (for tests);
// state_base: master / m / v start at that arena element (sharded state, see the top)
template <typename TP, typename TS>
void adamw_update(TP* param, float* master, TS* m, TS* v, const TP* grad, const long long* chunk_off, const int* chunk_len,
                  const unsigned char* chunk_decay, int nchunks, const AdamWArgs& a, cudaStream_t st,
                  const StepStats* stats = nullptr, bool vectorize = true, size_t state_base = 0) {
    if (nchunks == 0) return;
    // groups of 4 need arena index 4k at a 4-element boundary of every array
    const bool vec = is_aligned(param, 4 * sizeof(TP)) && is_aligned(grad, 4 * sizeof(TP)) && is_aligned(master, 16) &&
                     is_aligned(m, 4 * sizeof(TS)) && is_aligned(v, 4 * sizeof(TS)) && state_base % 4 == 0 && vectorize;
    if (vec)
        launch_kernel(adamw_kernel<TP, TS, 4>, nchunks, EW_BLOCK, 0, st, param, master, m, v, grad, chunk_off, chunk_len, chunk_decay, a,
                      stats, state_base);
    else
        launch_kernel(adamw_kernel<TP, TS, 1>, nchunks, EW_BLOCK, 0, st, param, master, m, v, grad, chunk_off, chunk_len, chunk_decay, a,
                      stats, state_base);
}
