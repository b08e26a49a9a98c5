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
// All math in fp32. One launch per tensor (the decay differs per tensor); grid-stride.
#pragma once

#include "common.cuh"

struct AdamWArgs {
    float step_size, inv_bc2, beta1, beta2, eps, decay, grad_scale;
};

template <typename TP, typename TS>
__global__ void adamw_kernel(TP* __restrict__ param, float* __restrict__ master, TS* __restrict__ m, TS* __restrict__ v,
                             const TP* __restrict__ grad, size_t n, AdamWArgs a) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = to_float(grad[i]) * a.grad_scale;
        const float mi = a.beta1 * to_float(m[i]) + (1.0f - a.beta1) * g;
        const float vi = a.beta2 * to_float(v[i]) + (1.0f - a.beta2) * g * g;
        const float w = master ? master[i] : to_float(param[i]);
        const float w_new = w * a.decay - a.step_size * mi / (sqrtf(vi) * a.inv_bc2 + a.eps);
        m[i] = from_float<TS>(mi);
        v[i] = from_float<TS>(vi);
        if (master) master[i] = w_new;
        param[i] = from_float<TP>(w_new);
    }
}

template <typename TP, typename TS>
void adamw_update(TP* param, float* master, TS* m, TS* v, const TP* grad, size_t n, const AdamWArgs& a, cudaStream_t st) {
    if (n == 0) return;
    launch_kernel(adamw_kernel<TP, TS>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, st, param, master, m, v, grad, n, a);
}
