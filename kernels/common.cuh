// common.cuh - helpers shared by the kernel headers: error checks, the launch helper,
// warp reductions, storage-type conversions, 128-bit vector loads/stores, and the
// deterministic column sum behind the bias gradients (end of file).
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

// ----------------------------------------------------------------------------
// Column sums, deterministic: db[c] += sum over rows r of x[r][c], x (N, OC) row-major, the
// bias gradient of a linear layer (matmul.cuh: bias_backward) or of the GELU backward's
// output computed on the fly (activation.cuh: gelu_backward_bias). Two kernels:
//  1. colsum_partial_kernel, grid (column blocks, row splits), block COLSUM_WARPS warps.
//     Thread `lane` of a warp owns VEC consecutive columns (VEC = 16 / sizeof(T): one 16-byte
//     load per row; VEC = 1, the same code with scalar loads, when OC % VEC != 0 or a pointer
//     is not 16-byte aligned), so a warp covers 32 * VEC contiguous columns of a row (512 B).
//     Warp w of the block reads rows r0 + w, r0 + w + COLSUM_WARPS, ... of its split
//     [r0, r0 + rows_per_split), Src::UNROLL rows' loads in flight before their adds, and
//     adds them in that (ascending) order into fp32 accumulators. The block's warps meet in
//     shared memory and are added in warp order into partial[split][c] (the scratch).
//  2. colsum_reduce_kernel, grid ceil(OC / 32), block (32, ry), ry = min(nsplit, 32): thread
//     (x, y) adds splits y, y + ry, ... in order for column x (a few loads per thread, not a
//     chain of nsplit: this kernel is latency bound); the ry sums are added in y order;
//     db[c] = round_T(db[c] + sum) (accumulates: gradient accumulation over micro-steps).
// Every column is summed in an order fixed by (N, OC) alone (colsum_plan): not by the run, the
// device or VEC (a column's rows, warps and splits are the same whether its thread holds 8
// columns or 1), so the vector and scalar paths and every rerun give the same bits. No atomics.
// The adds are __fadd_rn (never contracted into an FMA with the producer of the value).
// The source of the rows is a functor (ColsumRead below, activation.cuh's
// GeluBackwardColsum): Raw load(size_t i) issues the loads of the VEC elements at flat index
// i = r * OC + c, values(raw, i, v) turns them into the VEC floats to add (and may store a
// result: the GELU backward writes dpre there), so the loads of UNROLL rows (the source's
// constant: 64 bytes per thread in flight) are issued before any of their math. The unroll
// does not change the order of the adds.
// Plan: COLSUM_MIN_ROWS rows per split at least; as many splits as bring the blocks to about
// colsum_target_blocks (4 blocks of 256 threads per SM of a 132-SM H200, all resident at once:
// the launch bounds keep the registers within 64 for 4 blocks per SM), counting 256-column
// blocks (bf16's width; fp32 and scalar launches have 2x / 8x the column blocks). gpt2-124m,
// N = 16384: OC 768 -> 175 splits of 94 rows; 2304 -> 59 of 278; 3072 -> 44 of 373. Partial
// sums: ~colsum_target_blocks * 256 floats, ~0.5 MB, 2% of a 25 MB dout.
constexpr int COLSUM_WARPS = 8, COLSUM_THREADS = 32 * COLSUM_WARPS;
constexpr int COLSUM_MIN_ROWS = 64;        // rows per split, at least (8 per warp)
constexpr int COLSUM_PLAN_COLS = 256;      // columns per block assumed by the plan (bf16 VEC 8 x 32 lanes)
constexpr int COLSUM_TARGET_BLOCKS = 132 * 4;
constexpr int COLSUM_REDUCE_MAX_Y = 32;    // split-threads per column in the reduce kernel
constexpr int COLSUM_MIN_BLOCKS_PER_SM = 4; // resident blocks the registers must allow (<= 64 per thread)
// the plan's target number of blocks; tests lower it (more rows per split than the minimum at
// small N), the bench sweeps it. The plan, the scratch size and the bits of the sums depend on it.
inline int colsum_target_blocks = COLSUM_TARGET_BLOCKS;

struct ColsumPlan {
    int nsplit, rows_per_split;   // nsplit = ceil(N / rows_per_split): no empty split
};
inline ColsumPlan colsum_plan(int N, int OC) {
    if (N <= 0 || OC <= 0) return {0, 0};
    const int blocks_per_split = ceil_div(OC, COLSUM_PLAN_COLS);
    const int ns = std::max(1, std::min(ceil_div(std::max(1, colsum_target_blocks), blocks_per_split), ceil_div(N, COLSUM_MIN_ROWS)));
    const int rps = ceil_div(N, ns);
    return {ceil_div(N, rps), rps};
}
// Floats of scratch a column sum of N rows and OC columns needs (nsplit * OC), bounded from
// above so that it never decreases with N or OC (a buffer sized for the widest layer serves
// every narrower one): nsplit <= ceil(N / MIN_ROWS), and nsplit <= ceil(target / cb) with cb =
// ceil(OC / 256), so nsplit * OC <= (target + cb - 1) * 256 <= target * 256 + OC.
inline size_t colsum_scratch_floats(int N, int OC) {
    if (OC <= 0) return 0;
    if (N <= 0) return OC;   // nothing to sum; at least OC (matmul.cuh's epilogue vector lives there)
    const size_t by_rows = (size_t)ceil_div(N, COLSUM_MIN_ROWS) * OC;
    const size_t by_blocks = (size_t)std::max(1, colsum_target_blocks) * COLSUM_PLAN_COLS + OC;
    return std::min(by_rows, by_blocks);
}

// the plain source: x (N, OC) itself
template <typename T, int VEC>
struct ColsumRead {
    static constexpr int UNROLL = 4;   // rows in flight per thread: 4 x 16 bytes
    const T* x;
    using Raw = Packed<T, VEC>;
    __device__ __forceinline__ Raw load(size_t i) const { return load_packed<T, VEC>(x + i); }
    __device__ __forceinline__ void values(const Raw& a, size_t, float (&v)[VEC]) const {
#pragma unroll
        for (int k = 0; k < VEC; k++) v[k] = to_float(a.v[k]);
    }
};

// VEC > 1 needs OC % VEC == 0 and the source's pointers 16-byte aligned
template <int VEC, class Src>
__global__ void __launch_bounds__(COLSUM_THREADS, COLSUM_MIN_BLOCKS_PER_SM)
    colsum_partial_kernel(float* __restrict__ partial, const Src src, int N, int OC, int rows_per_split) {
    constexpr int W = COLSUM_WARPS, U = Src::UNROLL;
    __shared__ Packed<float, VEC> s[W][32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int c0 = blockIdx.x * 32 * VEC, c = c0 + lane * VEC;   // the block's and the thread's first column
    const int r0 = blockIdx.y * rows_per_split, r1 = min(N, r0 + rows_per_split);
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; k++) acc[k] = 0.0f;
    if (c < OC) {   // OC % VEC == 0: all VEC columns of the thread exist
        auto add = [&](const typename Src::Raw& a, size_t i) {
            float v[VEC];
            src.values(a, i, v);
#pragma unroll
            for (int k = 0; k < VEC; k++) acc[k] = __fadd_rn(acc[k], v[k]);
        };
        int r = r0 + warp;
        for (; r + (U - 1) * W < r1; r += U * W) {   // U rows: all loads first, then the adds in row order
            typename Src::Raw a[U];
#pragma unroll
            for (int u = 0; u < U; u++) a[u] = src.load((size_t)(r + u * W) * OC + c);
#pragma unroll
            for (int u = 0; u < U; u++) add(a[u], (size_t)(r + u * W) * OC + c);
        }
        for (; r < r1; r += W) add(src.load((size_t)r * OC + c), (size_t)r * OC + c);
    }
#pragma unroll
    for (int k = 0; k < VEC; k++) s[warp][lane].v[k] = acc[k];
    __syncthreads();
    for (int j = threadIdx.x; j < 32 * VEC; j += blockDim.x) {   // column c0 + j, the warps in order
        if (c0 + j >= OC) break;
        float t = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) t = __fadd_rn(t, s[w][j / VEC].v[j % VEC]);
        partial[(size_t)blockIdx.y * OC + c0 + j] = t;
    }
}

template <typename T>
__global__ void __launch_bounds__(32 * COLSUM_REDUCE_MAX_Y)
    colsum_reduce_kernel(T* __restrict__ db, const float* __restrict__ partial, int nsplit, int OC) {
    __shared__ float s[COLSUM_REDUCE_MAX_Y][32];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float t = 0.0f;
    if (c < OC) {
#pragma unroll 4
        for (int k = threadIdx.y; k < nsplit; k += blockDim.y) t = __fadd_rn(t, partial[(size_t)k * OC + c]);
    }
    s[threadIdx.y][threadIdx.x] = t;
    __syncthreads();
    if (threadIdx.y == 0 && c < OC) {
        float u = 0.0f;
        for (int y = 0; y < (int)blockDim.y; y++) u = __fadd_rn(u, s[y][threadIdx.x]);
        db[c] = from_float<T>(to_float(db[c]) + u);
    }
}

// db (OC) += colsum over N rows of what src yields; scratch: colsum_scratch_floats(N, OC)
// floats. The caller picks VEC (16 / sizeof(T) where sizes and pointers allow, else 1).
template <int VEC, class Src, typename T>
void colsum_launch(T* db, float* scratch, const Src& src, int N, int OC, cudaStream_t st) {
    const ColsumPlan p = colsum_plan(N, OC);
    if (p.nsplit == 0) return;
    launch_kernel(colsum_partial_kernel<VEC, Src>, dim3(ceil_div(OC, 32 * VEC), p.nsplit), dim3(COLSUM_THREADS), 0, st, scratch, src, N,
                  OC, p.rows_per_split);
    launch_kernel(colsum_reduce_kernel<T>, dim3(ceil_div(OC, 32)), dim3(32, std::min(p.nsplit, COLSUM_REDUCE_MAX_Y)), 0, st, db, scratch,
                  p.nsplit, OC);
}
