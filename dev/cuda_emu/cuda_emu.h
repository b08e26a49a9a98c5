// cuda_emu.h - run CUDA kernels on a CPU, for tests (see README.md beside this file).
//
// Force-included (g++/clang++ `-x c++ -include dev/cuda_emu/cuda_emu.h -DCUDA_EMU`) into a
// translation unit that contains ordinary CUDA source. It takes the types and the host half
// of the bf16/fp16 headers from the real CUDA toolkit, and supplies what a host compiler
// lacks:
//   - threadIdx/blockIdx/blockDim/gridDim as thread-local variables (one OS thread per CUDA
//     thread, pooled; the blocks of a grid run one after another);
//   - __shared__ as `static` (one block at a time owns it), dynamic shared memory as an
//     exact-size buffer poisoned (0xFF bytes: NaN in fp32/bf16/fp16) before every block;
//   - __syncthreads() as a block barrier that knows its call site and aborts on divergence;
//   - warp shuffles/votes/__syncwarp with mask checks, atomics, math intrinsics;
//   - cuda_emu::launch(), used by the project's launch helper in place of <<<...>>>;
//   - the runtime API calls the trainer needs (defined in cuda_emu.cpp).
#pragma once
#ifndef CUDA_EMU
#define CUDA_EMU 1
#endif

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------------------
// qualifiers. host_defines.h already made __global__/__device__/__host__ empty for a host
// compiler; shared memory needs storage that all threads of the block see.
#undef __shared__
#define __shared__ static
#undef __constant__
#define __constant__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

namespace cuda_emu {

// per-OS-thread CUDA coordinates (set by the thread pool before the kernel body runs)
extern thread_local uint3 tl_threadIdx;
extern thread_local uint3 tl_blockIdx;
extern thread_local dim3 tl_blockDim;
extern thread_local dim3 tl_gridDim;

// --- synchronisation, implemented in cuda_emu.cpp --------------------------------------
int syncthreads_impl(int op, int pred, const char* file, int line);  // op: 0 plain, 1 count, 2 and, 3 or
enum WarpOpKind { W_SHFL = 0, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_SYNC, W_MATCH_ANY };
uint64_t warp_op(int kind, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
unsigned activemask();
// one warp-wide bf16 tensor-core product (PTX mma.sync m16n8k16; layouts in cuda_emu.cpp)
void warp_mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file, int line);
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 for the whole warp (layouts in cuda_emu.cpp)
void warp_ldmatrix_x4(uint32_t* r, const void* row, bool trans, const char* file, int line);
// cp.async (global -> shared, `bytes` = 4, 8 or 16, the last bytes - src_bytes zero-filled),
// cp.async.commit_group and cp.async.wait_group n: copies are deferred to the wait
void cp_async(void* dst, const void* src, int bytes, int src_bytes, const char* file, int line);
void cp_async_commit();
void cp_async_wait(int n);
void* dynamic_smem();
[[noreturn]] void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// a vector access (`bytes` = 2..16, one load/store instruction on the GPU) must be aligned to
// its size: on a GPU a misaligned one faults (cudaErrorMisalignedAddress), on x86 it would
// silently work, so the emulation stops with the call site (kernels/common.cuh's
// load_packed / store_packed call this)
inline void check_vector_aligned(const void* p, size_t bytes, const char* file, int line) {
    if (bytes > 1 && reinterpret_cast<uintptr_t>(p) % bytes != 0)
        fatal("misaligned address at %s:%d: a %zu-byte vector access at %p (a fault on a GPU)", file, line, bytes, p);
}

// --- streams ----------------------------------------------------------------------------
// Work given to a stream (a kernel, an async copy or memset, a library call's CPU stand-in)
// goes through enqueue(). With CUDA_EMU_STREAMS unset (or "sync") it runs at once, so every
// call is synchronous. With CUDA_EMU_STREAMS=late it waits in its stream's queue until the
// host needs it (a stream / event / device synchronisation, a synchronous copy, a free), as
// late as a GPU may run it; with CUDA_EMU_STREAMS=early the legacy default stream waits the
// same way but the other streams run their work at once, as early as their event waits
// allow; with CUDA_EMU_STREAMS=random[:SEED] each new operation lets every stream run a random
// part of its queue (the orders in between, reproducible by seed). Streams keep CUDA's order
// (in order within a stream, cudaStreamWaitEvent, the legacy default stream ordered with
// blocking streams), so a missing event wait or synchronisation that a GPU could expose
// shows up as wrong data in one of the modes.
void enqueue(cudaStream_t stream, std::function<void()> op);

// --- launches ---------------------------------------------------------------------------
// launch_ok validates the configuration (sets the last error like a failed launch);
// run_grid runs `body` once per CUDA thread, block after block.
bool launch_ok(const void* func, dim3 grid, dim3 block, size_t smem);
void run_grid(const void* func, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);

template <typename... KParams, typename... Args>
void launch(void (*kernel)(KParams...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            Args&&... args) {
    const void* func = reinterpret_cast<const void*>(kernel);
    if (!launch_ok(func, grid, block, smem)) return;
    // kernel arguments are copied once (as a real launch does); every thread gets its own
    // by-value copy when the body calls the kernel
    std::tuple<std::decay_t<KParams>...> params(std::forward<Args>(args)...);
    enqueue(stream, [func, grid, block, smem, kernel, params]() {
        run_grid(func, grid, block, smem, [&]() { std::apply(kernel, params); });
    });
}

template <typename T>
inline uint64_t to_bits(const T& v) {
    static_assert(sizeof(T) <= 8, "warp shuffle of a type wider than 8 bytes");
    static_assert(std::is_trivially_copyable<T>::value, "warp shuffle of a non-trivially-copyable type");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace cuda_emu

#define threadIdx (static_cast<const uint3&>(::cuda_emu::tl_threadIdx))
#define blockIdx (static_cast<const uint3&>(::cuda_emu::tl_blockIdx))
#define blockDim (static_cast<const dim3&>(::cuda_emu::tl_blockDim))
#define gridDim (static_cast<const dim3&>(::cuda_emu::tl_gridDim))
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------
// block barrier. The default arguments record the caller's file:line (gcc and clang).
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    cuda_emu::syncthreads_impl(0, 0, file, line);
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cuda_emu::syncthreads_impl(1, pred, file, line);
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cuda_emu::syncthreads_impl(2, pred, file, line);
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return cuda_emu::syncthreads_impl(3, pred, file, line);
}

// ---------------------------------------------------------------------------------------
// warp collectives: every lane named in `mask` must reach the same collective with the same
// mask (checked); lanes outside the mask are free.
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    cuda_emu::warp_op(cuda_emu::W_SYNC, mask, 0, 0, 32, file, line);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
    return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::W_SHFL, mask, cuda_emu::to_bits(var), srcLane, width, file, line));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
    return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::W_SHFL_UP, mask, cuda_emu::to_bits(var), (int)delta, width, file, line));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
    return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::W_SHFL_DOWN, mask, cuda_emu::to_bits(var), (int)delta, width, file, line));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32, const char* file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
    return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::W_SHFL_XOR, mask, cuda_emu::to_bits(var), laneMask, width, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return (unsigned)cuda_emu::warp_op(cuda_emu::W_BALLOT, mask, pred != 0, 0, 32, file, line);
}
inline int __any_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return (int)cuda_emu::warp_op(cuda_emu::W_ANY, mask, pred != 0, 0, 32, file, line);
}
inline int __all_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return (int)cuda_emu::warp_op(cuda_emu::W_ALL, mask, pred != 0, 0, 32, file, line);
}
template <typename T>
inline unsigned __match_any_sync(unsigned mask, T value, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return (unsigned)cuda_emu::warp_op(cuda_emu::W_MATCH_ANY, mask, cuda_emu::to_bits(value), 0, 32, file, line);
}
inline unsigned __activemask() { return cuda_emu::activemask(); }

// ---------------------------------------------------------------------------------------
// memory fences and atomics (GCC/Clang __atomic builtins: ThreadSanitizer understands them)
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

#define CUDA_EMU_INT_ATOMICS(T)                                                                              \
    inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }                    \
    inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }                    \
    inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }                  \
    inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }                    \
    inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }                      \
    inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }                    \
    inline T atomicCAS(T* p, T cmp, T v) {                                                                   \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                  \
        return cmp;                                                                                          \
    }                                                                                                        \
    inline T atomicMax(T* p, T v) {                                                                          \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                        \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) \
            ;                                                                                                \
        return old;                                                                                          \
    }                                                                                                        \
    inline T atomicMin(T* p, T v) {                                                                          \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                        \
        while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) \
            ;                                                                                                \
        return old;                                                                                          \
    }
CUDA_EMU_INT_ATOMICS(int)
CUDA_EMU_INT_ATOMICS(unsigned int)
CUDA_EMU_INT_ATOMICS(unsigned long long int)
#undef CUDA_EMU_INT_ATOMICS

namespace cuda_emu {
template <typename F, typename Op>
inline F float_atomic(F* p, Op op) {
    using U = std::conditional_t<sizeof(F) == 4, uint32_t, uint64_t>;
    U* up = reinterpret_cast<U*>(p);
    U old = __atomic_load_n(up, __ATOMIC_RELAXED), nv;
    do {
        F f;
        std::memcpy(&f, &old, sizeof f);
        F r = op(f);
        std::memcpy(&nv, &r, sizeof nv);
    } while (!__atomic_compare_exchange_n(up, &old, nv, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    F f;
    std::memcpy(&f, &old, sizeof f);
    return f;
}
}  // namespace cuda_emu
inline float atomicAdd(float* p, float v) { return cuda_emu::float_atomic(p, [v](float a) { return a + v; }); }
inline double atomicAdd(double* p, double v) { return cuda_emu::float_atomic(p, [v](double a) { return a + v; }); }
inline float atomicExch(float* p, float v) { return cuda_emu::float_atomic(p, [v](float) { return v; }); }
inline unsigned atomicInc(unsigned* p, unsigned limit) {
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, old >= limit ? 0u : old + 1, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return old;
}

// ---------------------------------------------------------------------------------------
// intrinsics a host compiler does not have
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __int_as_float(int i) { return cuda_emu::from_bits<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)cuda_emu::to_bits(f); }
inline float __uint_as_float(unsigned i) { return cuda_emu::from_bits<float>(i); }
inline unsigned __float_as_uint(float f) { return (uint32_t)cuda_emu::to_bits(f); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline long long clock64() { return (long long)std::chrono::steady_clock::now().time_since_epoch().count(); }

#define CUDA_EMU_MINMAX(T)                             \
    inline T min(T a, T b) { return a < b ? a : b; } \
    inline T max(T a, T b) { return a < b ? b : a; }
CUDA_EMU_MINMAX(int)
CUDA_EMU_MINMAX(unsigned int)
CUDA_EMU_MINMAX(long long)
CUDA_EMU_MINMAX(unsigned long long)
CUDA_EMU_MINMAX(float)
CUDA_EMU_MINMAX(double)
#undef CUDA_EMU_MINMAX

// cache-hinted loads/stores: plain accesses here
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldlu(const T* p) { return *p; }
template <typename T> inline T __ldcv(const T* p) { return *p; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }
