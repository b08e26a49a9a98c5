// common.cuh - helpers shared by the kernel headers: error checks, the launch helper,
// warp reductions, storage-type conversions, 128-bit vector loads/stores.
//
// Every kernel in kernels/ is launched through launch_kernel() below instead of writing
// `kernel<<<grid, block, smem, stream>>>(args...)` at the call site. With nvcc it *is* that
// launch; in the CPU emulation (dev/cuda_emu, -DCUDA_EMU) a host compiler cannot parse
// <<<>>>, so the helper calls cuda_emu::launch() instead. The kernels themselves are plain
// CUDA and compile unmodified in both builds; this file holds the only #ifdefs.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
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
// (The emulation checks the alignment a GPU needs, see dev/cuda_emu: on x86 a misaligned
// vector access would silently work.)
#if defined(CUDA_EMU)
template <typename T, int VEC>
inline Packed<T, VEC> load_packed(const T* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    cuda_emu::check_vector_aligned(p, sizeof(Packed<T, VEC>), file, line);
    return *reinterpret_cast<const Packed<T, VEC>*>(p);
}
template <typename T, int VEC>
inline void store_packed(T* p, const Packed<T, VEC>& x, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    cuda_emu::check_vector_aligned(p, sizeof(Packed<T, VEC>), file, line);
    *reinterpret_cast<Packed<T, VEC>*>(p) = x;
}
#else
template <typename T, int VEC>
__device__ __forceinline__ Packed<T, VEC> load_packed(const T* p) {
    return *reinterpret_cast<const Packed<T, VEC>*>(p);
}
template <typename T, int VEC>
__device__ __forceinline__ void store_packed(T* p, const Packed<T, VEC>& x) {
    *reinterpret_cast<Packed<T, VEC>*>(p) = x;
}
#endif

// true if p is aligned to `bytes` (nullptr counts as aligned)
inline bool is_aligned(const void* p, size_t bytes) { return (reinterpret_cast<size_t>(p) % bytes) == 0; }

// n elements from array index o, cut for VEC-wide accesses that must start at indices that
// are multiples of VEC: [0, head) before the first such index, `groups` whole vectors from
// head, and [tail, n) after them (offsets relative to o). AdamW and the gradient norm's
// chunks use it (a chunk starts wherever its tensor does).
struct VecSplit {
    int head, groups, tail;
};
template <int VEC>
__device__ __forceinline__ VecSplit vec_split(size_t o, int n) {
    const int head = min(n, (int)((VEC - o % VEC) % VEC)), groups = (n - head) / VEC;
    return VecSplit{head, groups, head + groups * VEC};
}

// ----------------------------------------------------------------------------
// 2^x with subnormal inputs and results flushed to zero: one MUFU.EX2 instruction (PTX
// ex2.approx.ftz.f32, max relative error about 2^-22). CUDA's exp2f without --use_fast_math
// is ex2.approx.f32, which keeps subnormal results: the hardware unit flushes them, so the
// compiler wraps it in a range test and two predicated multiplies (three more issue slots
// per exponential). The softmax kernels (flash attention, the classifier) take one 2^x per
// score, of x <= 0, into sums and bf16 probabilities where a value below 2^-126 changes
// nothing; in the flash kernels the exponentials and their wrapping are a large part of the
// work besides the tensor-core products. The emulation computes exp2f and flushes a
// subnormal result to 0 (the input is never subnormal there).
__device__ __forceinline__ float exp2_ftz(float x) {
#if defined(CUDA_EMU)
    const float r = exp2f(x);
    return r < FLT_MIN ? 0.0f : r;   // NaN stays NaN, +inf stays +inf
#else
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
#endif
}

// ----------------------------------------------------------------------------
// one warp-wide tensor-core product, PTX mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32:
//   d (16 x 8 fp32) += a (16 x 16 bf16) @ b (16 x 8 bf16)
// All 32 lanes call it; each holds a slice of every operand (g = lane / 4, t = lane % 4; a
// register packs two bf16, the lower column/row index in the lower 16 bits):
//   a[0] = A[g][2t, 2t+1]    a[1] = A[g+8][2t, 2t+1]    a[2] = A[g][2t+8, 2t+9]    a[3] = A[g+8][2t+8, 2t+9]
//   b[0] = B[2t, 2t+1][g]    b[1] = B[2t+8, 2t+9][g]
//   d[0], d[1] = D[g][2t], D[g][2t+1]     d[2], d[3] = D[g+8][2t], D[g+8][2t+1]
// sm_80 and newer; the emulation (dev/cuda_emu) computes the same product from these layouts.
__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(CUDA_EMU)
    cuda_emu::warp_mma_m16n8k16_bf16(d, a, b, d, __FILE__, __LINE__);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: four 8 x 8 matrices of bf16 from shared
// memory into the fragment layout above, one instruction for the warp. Lane l passes the
// address of row l % 8 of matrix l / 8 (16 contiguous bytes, 16-byte aligned); lane l gets in
// r[i] row l / 4, columns 2(l % 4), 2(l % 4) + 1 of matrix i (with _trans: rows 2(l % 4),
// 2(l % 4) + 1 of column l / 4, i.e. of the transposed matrix). A non-transposed x4 of the
// 16 x 16 block at (r0, c0), lane l pointing at row r0 + l % 8 + 8((l / 8) % 2), column
// c0 + 8(l / 16), is exactly an mma A fragment; flash_attention.cuh uses the same addressing
// for the B fragments (ldsm_x4 there).
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const __nv_bfloat16* row) {
#if defined(CUDA_EMU)
    cuda_emu::warp_ldmatrix_x4(r, row, false, __FILE__, __LINE__);
#else
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const __nv_bfloat16* row) {
#if defined(CUDA_EMU)
    cuda_emu::warp_ldmatrix_x4(r, row, true, __FILE__, __LINE__);
#else
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#endif
}

// cp.async: copy BYTES (4, 8 or 16; both addresses aligned to it) from global to shared
// memory without passing through registers, asynchronously; only the first src_bytes are
// read, the rest of the destination is zero-filled (src_bytes = 0: a zero chunk, e.g. a row
// past the end). The copies a thread issued since its last commit form a group;
// cp_async_wait<N>() waits until at most N of the thread's groups are still in flight. Other
// threads see the data only after a __syncthreads() that follows the wait. (The emulation
// performs the copies at the wait, so reading too early is caught.)
template <int BYTES>
__device__ __forceinline__ void cp_async(void* smem_dst, const void* gmem_src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(CUDA_EMU)
    cuda_emu::cp_async(smem_dst, gmem_src, BYTES, src_bytes, __FILE__, __LINE__);
#else
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
    if constexpr (BYTES == 16)   // .cg: cache in L2 only (16-byte copies only)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem_src), "r"(src_bytes) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gmem_src), "n"(BYTES), "r"(src_bytes) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(CUDA_EMU)
    cuda_emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(CUDA_EMU)
    cuda_emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// ----------------------------------------------------------------------------
// grid-stride launches: enough blocks to fill a GPU (a few waves over 132 SMs), and only a
// couple in the CPU emulation, where every CUDA thread is an OS thread (the loops inside
// the kernels cover any n with any grid, so results do not depend on the cap)
// EW_BLOCK: threads per block of the grid-stride kernels (and of the small block reductions)
#if defined(CUDA_EMU)
constexpr int GRID_STRIDE_MAX_BLOCKS = 2;
constexpr int EW_BLOCK = 64;
#else
constexpr int GRID_STRIDE_MAX_BLOCKS = 132 * 16;
constexpr int EW_BLOCK = 256;
#endif
inline int grid_stride_blocks(size_t n, int block) {
    const size_t b = (n + block - 1) / block;
    return (int)(b < (size_t)GRID_STRIDE_MAX_BLOCKS ? (b > 0 ? b : 1) : GRID_STRIDE_MAX_BLOCKS);
}

// Block-wide reductions (every thread of the block must call them; blockDim.x a multiple
// of 32, at most 1024). `scratch` is 32 floats of shared memory; the warps' partials are
// added in warp order, so the result is deterministic. All threads get the result.
__device__ __forceinline__ float block_reduce_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_reduce_sum(v);
    __syncthreads();  // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = 0.0f;
    for (int w = 0; w < nwarps; w++) r += scratch[w];
    return r;
}
__device__ __forceinline__ float block_reduce_max(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_reduce_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = -INFINITY;
    for (int w = 0; w < nwarps; w++) r = fmaxf(r, scratch[w]);
    return r;
}
