// cooperative_groups.h - the subset of CUDA's cooperative groups that the emulation supports
// (found before the toolkit's header because dev/cuda_emu/include comes first on the include
// path of emulated builds). Everything maps onto the emulated __syncthreads()/warp
// collectives, so their checks (divergent barriers, masks) apply here too.
//   thread_block: this_thread_block(), sync(), thread_rank(), size()/num_threads(),
//                 group_index(), thread_index(), group_dim()/dim_threads()
//   thread_block_tile<N> (N = 1..32, power of two) from tiled_partition<N>(block):
//                 sync(), thread_rank(), size()/num_threads(), meta_group_rank(),
//                 meta_group_size(), shfl(), shfl_up(), shfl_down(), shfl_xor(), any(), all(),
//                 ballot()
//   reduce(tile, value, op) with plus<T>, less<T>, greater<T>, bit_and/or/xor<T>
// Not here: grid_group / grid sync (blocks run one at a time), coalesced_threads(),
// memcpy_async, cluster groups, runtime-sized tiled_partition.
#pragma once
#ifndef CUDA_EMU
#error "dev/cuda_emu/include/cooperative_groups.h is only for emulated (CUDA_EMU) builds"
#endif

namespace cooperative_groups {

class thread_block {
  public:
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const { __syncthreads(file, line); }
    unsigned long long thread_rank() const {
        return threadIdx.x + (unsigned long long)blockDim.x * (threadIdx.y + (unsigned long long)blockDim.y * threadIdx.z);
    }
    unsigned long long num_threads() const { return (unsigned long long)blockDim.x * blockDim.y * blockDim.z; }
    unsigned long long size() const { return num_threads(); }
    dim3 group_index() const { return dim3(blockIdx.x, blockIdx.y, blockIdx.z); }
    dim3 thread_index() const { return dim3(threadIdx.x, threadIdx.y, threadIdx.z); }
    dim3 group_dim() const { return blockDim; }
    dim3 dim_threads() const { return blockDim; }
};
inline thread_block this_thread_block() { return thread_block(); }
inline void sync(const thread_block& g, const char* file = __builtin_FILE(), int line = __builtin_LINE()) { g.sync(file, line); }

template <unsigned N>
class thread_block_tile {
    static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "tile size must be a power of two <= 32");
    unsigned long long rank_in_block() const { return this_thread_block().thread_rank(); }

  public:
    static constexpr unsigned num_threads() { return N; }
    static constexpr unsigned size() { return N; }
    unsigned thread_rank() const { return (unsigned)(rank_in_block() % N); }
    unsigned long long meta_group_rank() const { return rank_in_block() / N; }
    unsigned long long meta_group_size() const { return (this_thread_block().num_threads() + N - 1) / N; }
    unsigned mask() const {
        unsigned lane = (unsigned)(rank_in_block() % 32);
        unsigned base = N == 32 ? 0xffffffffu : ((1u << N) - 1u);
        return base << (lane / N * N);
    }
    void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const { __syncwarp(mask(), file, line); }
    template <typename T>
    T shfl(T v, int src, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return __shfl_sync(mask(), v, src, N, file, line);
    }
    template <typename T>
    T shfl_up(T v, unsigned d, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return __shfl_up_sync(mask(), v, d, N, file, line);
    }
    template <typename T>
    T shfl_down(T v, unsigned d, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return __shfl_down_sync(mask(), v, d, N, file, line);
    }
    template <typename T>
    T shfl_xor(T v, unsigned m, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        return __shfl_xor_sync(mask(), v, (int)m, N, file, line);
    }
    int any(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const { return __any_sync(mask(), p, file, line); }
    int all(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const { return __all_sync(mask(), p, file, line); }
    unsigned ballot(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
        unsigned lane = (unsigned)(rank_in_block() % 32);
        return __ballot_sync(mask(), p, file, line) >> (lane / N * N);
    }
};

template <unsigned N>
thread_block_tile<N> tiled_partition(const thread_block&) {
    return thread_block_tile<N>();
}

template <typename T> struct plus { T operator()(T a, T b) const { return a + b; } };
template <typename T> struct less { T operator()(T a, T b) const { return b < a ? b : a; } };
template <typename T> struct greater { T operator()(T a, T b) const { return a < b ? b : a; } };
template <typename T> struct bit_and { T operator()(T a, T b) const { return a & b; } };
template <typename T> struct bit_or { T operator()(T a, T b) const { return a | b; } };
template <typename T> struct bit_xor { T operator()(T a, T b) const { return a ^ b; } };

// butterfly reduction: every lane of the tile gets op over all lanes
template <unsigned N, typename T, typename Op>
T reduce(const thread_block_tile<N>& g, T value, Op op) {
    for (unsigned off = N / 2; off > 0; off /= 2) value = op(value, g.shfl_xor(value, off));
    return value;
}

}  // namespace cooperative_groups
