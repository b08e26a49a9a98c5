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
// One launch for the whole parameter arena (a step used to make one launch per tensor: a
// few hundred launches of a few microseconds each). The arena is cut into the chunks of
// gradnorm.cuh (never straddling two tensors; device arrays chunk_off / chunk_len, the same
// table the gradient norm uses) plus a per-chunk flag chunk_decay (1: the chunk's tensor is
// decayed, a.decay applies; 0: decay 1). One block per chunk, threads striding over it.
#pragma once

#include "common.cuh"
#include "gradnorm.cuh"

struct AdamWArgs {
    float step_size, inv_bc2, beta1, beta2, eps, decay, grad_scale;
};

template <typename TP, typename TS>
__global__ void adamw_kernel(TP* __restrict__ param, float* __restrict__ master, TS* __restrict__ m, TS* __restrict__ v,
                             const TP* __restrict__ grad, const long long* __restrict__ chunk_off, const int* __restrict__ chunk_len,
                             const unsigned char* __restrict__ chunk_decay, AdamWArgs a, const StepStats* __restrict__ stats) {
    if (stats) {
        if (!stats->finite) return;   // a skipped step: every array keeps its bits
        a.grad_scale = stats->clip;
    }
    const size_t o = (size_t)chunk_off[blockIdx.x];
    const int n = chunk_len[blockIdx.x];
    const float decay = chunk_decay[blockIdx.x] ? a.decay : 1.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const size_t i = o + j;
        const float g = to_float(grad[i]) * a.grad_scale;
        const float mi = a.beta1 * to_float(m[i]) + (1.0f - a.beta1) * g;
        const float vi = a.beta2 * to_float(v[i]) + (1.0f - a.beta2) * g * g;
        const float w = master ? master[i] : to_float(param[i]);
        const float w_new = w * decay - a.step_size * mi / (sqrtf(vi) * a.inv_bc2 + a.eps);
        m[i] = from_float<TS>(mi);
        v[i] = from_float<TS>(vi);
        if (master) master[i] = w_new;
        param[i] = from_float<TP>(w_new);
    }
}

// the update of every chunk (nchunks = 0: no launch); arrays indexed by the arena offset;
// stats non-null: the device's clip and finite flag instead of a.grad_scale (see above)
template <typename TP, typename TS>
void adamw_update(TP* param, float* master, TS* m, TS* v, const TP* grad, const long long* chunk_off, const int* chunk_len,
                  const unsigned char* chunk_decay, int nchunks, const AdamWArgs& a, cudaStream_t st,
                  const StepStats* stats = nullptr) {
    if (nchunks == 0) return;
    launch_kernel(adamw_kernel<TP, TS>, nchunks, EW_BLOCK, 0, st, param, master, m, v, grad, chunk_off, chunk_len, chunk_decay, a,
                  stats);
}
