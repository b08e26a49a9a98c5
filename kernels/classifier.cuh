// classifier.cuh - the fused classifier: softmax + cross-entropy + dlogits in one pass over
// the logits, without storing probabilities. Padded vocabulary columns [V, Vp) are skipped
// (their gradient is written as 0).
//
// Per row n of logits z (N, Vp), target t_n:
//   lse_n   = log(sum_{v < V} exp(z_v - max)) + max
//   loss_n  = lse_n - z_{t_n}
//   dz_v    = (exp(z_v - lse_n) - [v == t_n]) * dscale   for v < V   (written over z when
//             write_grad; dscale = grad_scale / N for a mean loss), 0 for v >= V
//
// One block per row: a max pass, a sum-of-exp pass (block reductions in a fixed order), then
// the gradient pass. The target's logit is read before anything is overwritten.
#pragma once

#include <algorithm>

#include "common.cuh"

template <typename T>
__global__ void classifier_kernel(T* logits, float* __restrict__ losses, const int* __restrict__ targets, int V, int Vp, float dscale,
                                  int write_grad) {
    __shared__ float scratch[32];
    const int row = blockIdx.x;
    T* z = logits + (size_t)row * Vp;
    const int tgt = targets[row];
    const float zt = to_float(z[tgt]);  // every thread reads it before the barriers below
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, to_float(z[v]));
    mx = block_reduce_max(mx, scratch);
    float sum = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) sum += expf(to_float(z[v]) - mx);
    sum = block_reduce_sum(sum, scratch);
    const float lse = logf(sum) + mx;
    if (threadIdx.x == 0) losses[row] = lse - zt;
    if (!write_grad) return;
    for (int v = threadIdx.x; v < Vp; v += blockDim.x) {
        float d = 0.0f;
        if (v < V) d = (expf(to_float(z[v]) - lse) - (v == tgt ? 1.0f : 0.0f)) * dscale;
        z[v] = from_float<T>(d);
    }
}

// Threads per row: enough for ~8 logits each, 32..1024.
inline int classifier_block(int V) { return std::min(1024, std::max(32, ((V + 7) / 8 + 31) / 32 * 32)); }

// losses[n] = the row's cross-entropy; with write_grad, logits become dlogits (times dscale).
template <typename T>
void classifier(T* logits, float* losses, const int* targets, int N, int V, int Vp, float dscale, bool write_grad, cudaStream_t st) {
    if (N <= 0) return;
    launch_kernel(classifier_kernel<T>, N, classifier_block(V), 0, st, logits, losses, targets, V, Vp, dscale, write_grad ? 1 : 0);
}
