// gradnorm.cuh - deterministic sums of squares of the gradient, per chunk, from which the
// host forms the per-tensor, per-layer and global gradient norms.
//
// The parameter table is cut into chunks that never straddle two tensors (gradnorm_chunks:
// each tensor in pieces of at most GRADNORM_CHUNK elements). One block per chunk:
//   partial[k] = sum over the chunk's elements of g^2
// (per-thread fp32 sums, then a block reduction in warp order). The host adds a tensor's
// chunks in order in double. No atomics: same gradient, same bits.
//   layer norm l = sqrt(sum over layer l's tensors), global = sqrt(sum over all)
#pragma once

#include <vector>

#include "common.cuh"

constexpr int GRADNORM_CHUNK = 1 << 16;  // elements per block at most
constexpr int GRADNORM_BLOCK = EW_BLOCK;

template <typename T>
__global__ void __launch_bounds__(GRADNORM_BLOCK)
    sumsq_chunks_kernel(float* __restrict__ partial, const T* __restrict__ g, const long long* __restrict__ chunk_off,
                        const int* __restrict__ chunk_len) {
    __shared__ float scratch[32];
    const T* p = g + chunk_off[blockIdx.x];
    const int n = chunk_len[blockIdx.x];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float x = to_float(p[i]);
        s += x * x;
    }
    s = block_reduce_sum(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Chunk table of tensors given as (offset, numel): chunk k covers [off[k], off[k] + len[k]) of
// tensor owner[k].
struct GradNormChunks {
    std::vector<long long> off;
    std::vector<int> len, owner;
};
inline GradNormChunks gradnorm_chunks(const std::vector<std::pair<size_t, size_t>>& tensors) {
    GradNormChunks c;
    for (size_t t = 0; t < tensors.size(); t++)
        for (size_t s = 0; s < tensors[t].second; s += GRADNORM_CHUNK) {
            c.off.push_back((long long)(tensors[t].first + s));
            c.len.push_back((int)std::min<size_t>(GRADNORM_CHUNK, tensors[t].second - s));
            c.owner.push_back((int)t);
        }
    return c;
}

// partial[k] for the nchunks chunks (device arrays chunk_off / chunk_len)
template <typename T>
void sumsq_chunks(float* partial, const T* g, const long long* chunk_off, const int* chunk_len, int nchunks, cudaStream_t st) {
    if (nchunks > 0) launch_kernel(sumsq_chunks_kernel<T>, nchunks, GRADNORM_BLOCK, 0, st, partial, g, chunk_off, chunk_len);
}
