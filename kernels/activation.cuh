// activation.cuh - the MLP activations, forward and backward side by side. Elementwise,
// grid-stride loops, math in fp32, storage T (float or bf16), each result rounded to T once.
//
// GELU (gpt, tanh approximation), fc and act both (N, F):
//   y  = 0.5 x (1 + tanh u),   u = sqrt(2/pi) (x + 0.044715 x^3)
//   dx = dy * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2))
//
// SwiGLU (llama): the fc row is [gate (F) | up (F)] (row stride 2F), act and dout (N, F):
//   y = silu(g) * u,   silu(g) = g * sigmoid(g)
//   dg = dy * u * s (1 + g (1 - s)),   du = dy * silu(g),   s = sigmoid(g)
//
// Vector paths: every kernel is a template on VEC, the number of consecutive elements one
// thread moves per access (Packed / load_packed / store_packed, common.cuh). The wrappers use
// VEC = 16 / sizeof(T) (8 bf16, 4 fp32: one 16-byte LDG.128/STG.128 per lane) when the
// element count (GELU) or the row width F (SwiGLU; then the gate and up halves of every fc
// row start on a vector boundary too) is a multiple of VEC and every pointer is 16-byte
// aligned, else VEC = 1, the same code with scalar accesses. The per-element math is shared
// (the *_elem functions below), so both paths give bitwise-identical results.
//
#pragma once

#include "common.cuh"

constexpr float GELU_SCALE = 0.7978845608028654f;  // sqrt(2/pi)

// ----------------------------------------------------------------------------
// per-element math (fp32)

__device__ __forceinline__ float gelu_forward_elem(float x) {
    return 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
}
// d gelu(x) / dx * dy
__device__ __forceinline__ float gelu_backward_elem(float x, float dy) {
    const float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
    const float d = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    return d * dy;
}
__device__ __forceinline__ float swiglu_forward_elem(float g, float u) { return g / (1.0f + expf(-g)) * u; }
__device__ __forceinline__ void swiglu_backward_elem(float g, float u, float dy, float& dg, float& du) {
    const float s = 1.0f / (1.0f + expf(-g));
    dg = dy * u * s * (1.0f + g * (1.0f - s));
    du = dy * g * s;
}

// ----------------------------------------------------------------------------
// kernels: thread i of the grid-stride loop handles elements [i*VEC, i*VEC + VEC).
// VEC > 1 needs n % VEC == 0 (GELU) / F % VEC == 0 (SwiGLU) and 16-byte-aligned pointers.

template <typename T, int VEC>
__global__ void gelu_forward_kernel(T* __restrict__ out, const T* __restrict__ inp, size_t n) {
    const size_t nv = n / VEC;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nv; i += (size_t)gridDim.x * blockDim.x) {
        const Packed<T, VEC> x = load_packed<T, VEC>(inp + i * VEC);
        Packed<T, VEC> y;
#pragma unroll
        for (int k = 0; k < VEC; k++) y.v[k] = from_float<T>(gelu_forward_elem(to_float(x.v[k])));
        store_packed<T, VEC>(out + i * VEC, y);
    }
}
template <typename T, int VEC>
__global__ void gelu_backward_kernel(T* __restrict__ dinp, const T* __restrict__ inp, const T* __restrict__ dout, size_t n) {
    const size_t nv = n / VEC;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nv; i += (size_t)gridDim.x * blockDim.x) {
        const Packed<T, VEC> x = load_packed<T, VEC>(inp + i * VEC);
        const Packed<T, VEC> dy = load_packed<T, VEC>(dout + i * VEC);
        Packed<T, VEC> dx;
#pragma unroll
        for (int k = 0; k < VEC; k++) dx.v[k] = from_float<T>(gelu_backward_elem(to_float(x.v[k]), to_float(dy.v[k])));
        store_packed<T, VEC>(dinp + i * VEC, dx);
    }
}

template <typename T, int VEC>
__global__ void swiglu_forward_kernel(T* __restrict__ out, const T* __restrict__ fc, int N, int F) {
    const size_t fv = (size_t)F / VEC;  // vectors per act row
    const size_t nv = (size_t)N * fv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nv; i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / fv, col = (i % fv) * VEC;
        const T* gate = fc + row * 2 * F + col;
        const Packed<T, VEC> g = load_packed<T, VEC>(gate), u = load_packed<T, VEC>(gate + F);
        Packed<T, VEC> y;
#pragma unroll
        for (int k = 0; k < VEC; k++) y.v[k] = from_float<T>(swiglu_forward_elem(to_float(g.v[k]), to_float(u.v[k])));
        store_packed<T, VEC>(out + i * VEC, y);
    }
}
template <typename T, int VEC>
__global__ void swiglu_backward_kernel(T* __restrict__ dfc, const T* __restrict__ fc, const T* __restrict__ dout, int N, int F) {
    const size_t fv = (size_t)F / VEC;
    const size_t nv = (size_t)N * fv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nv; i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / fv, col = (i % fv) * VEC;
        const size_t o = row * 2 * F + col;
        const Packed<T, VEC> g = load_packed<T, VEC>(fc + o), u = load_packed<T, VEC>(fc + o + F);
        const Packed<T, VEC> dy = load_packed<T, VEC>(dout + i * VEC);
        Packed<T, VEC> dg, du;
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            float a, b;
            swiglu_backward_elem(to_float(g.v[k]), to_float(u.v[k]), to_float(dy.v[k]), a, b);
            dg.v[k] = from_float<T>(a);
            du.v[k] = from_float<T>(b);
        }
        store_packed<T, VEC>(dfc + o, dg);
        store_packed<T, VEC>(dfc + o + F, du);
    }
}

// ----------------------------------------------------------------------------
// launchers: the 16-byte vector path where sizes and pointers allow, else scalar

template <typename T>
void gelu_forward(T* out, const T* inp, size_t n, cudaStream_t st) {
    constexpr int VEC = 16 / sizeof(T);
    if (n % VEC == 0 && is_aligned(out, 16) && is_aligned(inp, 16))
        launch_kernel(gelu_forward_kernel<T, VEC>, grid_stride_blocks(n / VEC, EW_BLOCK), EW_BLOCK, 0, st, out, inp, n);
    else
        launch_kernel(gelu_forward_kernel<T, 1>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, st, out, inp, n);
}
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n, cudaStream_t st) {
    constexpr int VEC = 16 / sizeof(T);
    if (n % VEC == 0 && is_aligned(dinp, 16) && is_aligned(inp, 16) && is_aligned(dout, 16))
        launch_kernel(gelu_backward_kernel<T, VEC>, grid_stride_blocks(n / VEC, EW_BLOCK), EW_BLOCK, 0, st, dinp, inp, dout, n);
    else
        launch_kernel(gelu_backward_kernel<T, 1>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, st, dinp, inp, dout, n);
}
template <typename T>
void swiglu_forward(T* out, const T* fc, int N, int F, cudaStream_t st) {
    constexpr int VEC = 16 / sizeof(T);
    const size_t n = (size_t)N * F;
    if (F % VEC == 0 && is_aligned(out, 16) && is_aligned(fc, 16))
        launch_kernel(swiglu_forward_kernel<T, VEC>, grid_stride_blocks(n / VEC, EW_BLOCK), EW_BLOCK, 0, st, out, fc, N, F);
    else
        launch_kernel(swiglu_forward_kernel<T, 1>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, st, out, fc, N, F);
}
template <typename T>
void swiglu_backward(T* dfc, const T* fc, const T* dout, int N, int F, cudaStream_t st) {
    constexpr int VEC = 16 / sizeof(T);
    const size_t n = (size_t)N * F;
    if (F % VEC == 0 && is_aligned(dfc, 16) && is_aligned(fc, 16) && is_aligned(dout, 16))
        launch_kernel(swiglu_backward_kernel<T, VEC>, grid_stride_blocks(n / VEC, EW_BLOCK), EW_BLOCK, 0, st, dfc, fc, dout, N, F);
    else
        launch_kernel(swiglu_backward_kernel<T, 1>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, st, dfc, fc, dout, N, F);
}
