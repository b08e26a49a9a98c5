// common.cuh - helpers shared by the kernel headers: error checks, the launch helper,
// warp reductions, storage-type conversions and 128-bit vector loads/stores.
//
// Every kernel in kernels/ is launched through launch_kernel() below instead of writing
// `kernel<<<grid, block, smem, stream>>>(args...)` at the call site. With nvcc it *is* that
// launch; in the CPU emulation (dev/cuda_emu, -DCUDA_EMU) a host compiler cannot parse
// <<<>>>, so the helper calls cuda_emu::launch() instead. The kernels themselves are plain
// CUDA and compile unmodified in both builds; this file holds the only #ifdefs.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

// ----------------------------------------------------------------------------
// error checking

inline void cuda_check(cudaError_t error, const char* file, int line) {
    if (error != cudaSuccess) {
        fprintf(stderr, "[CUDA ERROR] at file %s:%d:\n%s\n", file, line, cudaGetErrorString(error));
        exit(EXIT_FAILURE);
    }
}
#define cudaCheck(err) (cuda_check((err), __FILE__, __LINE__))

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ----------------------------------------------------------------------------
// kernel launch: launch_kernel(kernel, grid, block, dynamic_smem_bytes, stream, args...)
// Arguments convert to the kernel's parameter types exactly as in a <<<>>> launch.
// A launch error (bad configuration, too much shared memory) aborts with file:line.

template <typename... KParams, typename... Args>
inline void launch_kernel(void (*kernel)(KParams...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args... args) {
#if defined(CUDA_EMU)
    cuda_emu::launch(kernel, grid, block, smem, stream, static_cast<KParams>(args)...);
#else
    kernel<<<grid, block, smem, stream>>>(static_cast<KParams>(args)...);
#endif
    cudaCheck(cudaGetLastError());
}

// dynamic shared memory (the `extern __shared__` array) as a T*, 16-byte aligned
template <typename T>
__device__ __forceinline__ T* dynamic_shared_memory() {
#if defined(CUDA_EMU)
    return reinterpret_cast<T*>(cuda_emu::dynamic_smem());
#else
    extern __shared__ __align__(16) unsigned char dynamic_smem_[];
    return reinterpret_cast<T*>(dynamic_smem_);
#endif
}

// ----------------------------------------------------------------------------
// warp-level reductions: every lane of the (full, converged) warp gets the result.
// The xor butterfly adds in the same order on every run, so results are deterministic.

__device__ __forceinline__ float warp_reduce_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
__device__ __forceinline__ float warp_reduce_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// ----------------------------------------------------------------------------
// storage types: activations are stored as float or __nv_bfloat16; math is always fp32.

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// VEC consecutive elements of T moved as one aligned access (16 bytes when
// VEC = 16 / sizeof(T): one LDG.128/STG.128 per lane); VEC = 1 is the scalar fallback
// for rows whose length is not a multiple of the vector width.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Packed {
    T v[VEC];
};
template <typename T, int VEC>
__device__ __forceinline__ Packed<T, VEC> load_packed(const T* p) {
    return *reinterpret_cast<const Packed<T, VEC>*>(p);
}
template <typename T, int VEC>
__device__ __forceinline__ void store_packed(T* p, const Packed<T, VEC>& x) {
    *reinterpret_cast<Packed<T, VEC>*>(p) = x;
}

// true if p is aligned to `bytes` (nullptr counts as aligned)
inline bool is_aligned(const void* p, size_t bytes) { return (reinterpret_cast<size_t>(p) % bytes) == 0; }
