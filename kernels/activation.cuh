// activation.cuh - the MLP activations, forward and backward side by side. Elementwise,
// grid-stride loops, math in fp32, storage T (float or bf16).
//
// GELU (gpt, tanh approximation), fc and act both (N, F):
//   y  = 0.5 x (1 + tanh u),   u = sqrt(2/pi) (x + 0.044715 x^3)
//   dx = dy * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2))
//
// SwiGLU (llama): the fc row is [gate (F) | up (F)], act (N, F):
//   y = silu(g) * u,   silu(g) = g * sigmoid(g)
//   dg = dy * u * s (1 + g (1 - s)),   du = dy * silu(g),   s = sigmoid(g)
#pragma once

#include "common.cuh"

constexpr float GELU_SCALE = 0.7978845608028654f;  // sqrt(2/pi)

template <typename T>
__global__ void gelu_forward_kernel(T* __restrict__ out, const T* __restrict__ inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float x = to_float(inp[i]);
        out[i] = from_float<T>(0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x))));
    }
}
template <typename T>
__global__ void gelu_backward_kernel(T* __restrict__ dinp, const T* __restrict__ inp, const T* __restrict__ dout, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float x = to_float(inp[i]);
        const float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
        const float d = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = from_float<T>(d * to_float(dout[i]));
    }
}

template <typename T>
__global__ void swiglu_forward_kernel(T* __restrict__ out, const T* __restrict__ fc, int N, int F) {
    const size_t n = (size_t)N * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / F, col = i % F;
        const float g = to_float(fc[row * 2 * F + col]), u = to_float(fc[row * 2 * F + F + col]);
        out[i] = from_float<T>(g / (1.0f + expf(-g)) * u);
    }
}
template <typename T>
__global__ void swiglu_backward_kernel(T* __restrict__ dfc, const T* __restrict__ fc, const T* __restrict__ dout, int N, int F) {
    const size_t n = (size_t)N * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / F, col = i % F;
        const float g = to_float(fc[row * 2 * F + col]), u = to_float(fc[row * 2 * F + F + col]), dy = to_float(dout[i]);
        const float s = 1.0f / (1.0f + expf(-g));
        dfc[row * 2 * F + col] = from_float<T>(dy * u * s * (1.0f + g * (1.0f - s)));
        dfc[row * 2 * F + F + col] = from_float<T>(dy * g * s);
    }
}

template <typename T>
void gelu_forward(T* out, const T* inp, size_t n, cudaStream_t st) {
    launch_kernel(gelu_forward_kernel<T>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, st, out, inp, n);
}
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n, cudaStream_t st) {
    launch_kernel(gelu_backward_kernel<T>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, st, dinp, inp, dout, n);
}
template <typename T>
void swiglu_forward(T* out, const T* fc, int N, int F, cudaStream_t st) {
    launch_kernel(swiglu_forward_kernel<T>, grid_stride_blocks((size_t)N * F, EW_BLOCK), EW_BLOCK, 0, st, out, fc, N, F);
}
template <typename T>
void swiglu_backward(T* dfc, const T* fc, const T* dout, int N, int F, cudaStream_t st) {
    launch_kernel(swiglu_backward_kernel<T>, grid_stride_blocks((size_t)N * F, EW_BLOCK), EW_BLOCK, 0, st, dfc, fc, dout, N, F);
}
