// embedding.cuh - token (+ learned position) embedding, forward and backward.
//
//   forward   out[n, c] = wte[tok[n], c] + wpe[n % T, c]        (wpe: gpt only; null for llama)
//   backward  dwte[v, c] += sum over the n with tok[n] == v of dout[n, c]
//             dwpe[t, c] += sum over b of dout[b*T + t, c]
//
// Layout: out/dout (N = B*T, C) row-major, wte (Vp, C), wpe (max_seq_len, C).
//
// The backward is deterministic without atomics. The token ids live on the host (the data
// loader reads them there), so the host groups the positions by token once per batch
// (embedding_buckets below: the distinct tokens, and for each the positions n where it
// occurs, in increasing order); the kernel then gives each distinct token one block that
// owns its whole row of dwte and adds its positions in that fixed order. No two blocks
// write the same row, so there is no race and no atomic, and the bits do not depend on
// scheduling. dwpe: one block per position t, summing the B rows in order. Both move 16-byte
// vectors where C and the pointers allow.
#pragma once

#include <algorithm>
#include <vector>

#include "common.cuh"

// ----------------------------------------------------------------------------
// kernels

template <typename T, int VEC>
__global__ void embedding_forward_kernel(T* __restrict__ out, const int* __restrict__ tok, const T* __restrict__ wte,
                                         const T* __restrict__ wpe, int N, int T_, int C) {
    const int nvec = C / VEC;
    const size_t total = (size_t)N * nvec;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int n = (int)(i / nvec), cv = (int)(i % nvec);
        Packed<T, VEC> e = load_packed<T, VEC>(wte + (size_t)tok[n] * C + cv * VEC);
        if (wpe) {
            const Packed<T, VEC> p = load_packed<T, VEC>(wpe + (size_t)(n % T_) * C + cv * VEC);
#pragma unroll
            for (int k = 0; k < VEC; k++) e.v[k] = from_float<T>(to_float(e.v[k]) + to_float(p.v[k]));
        }
        store_packed<T, VEC>(out + (size_t)n * C + cv * VEC, e);
    }
}

// dst[0 .. VEC) += the sum, in order j = 0 .. count-1, of the VEC values at src(j) (fp32 sums)
template <typename T, int VEC, typename Src>
__device__ __forceinline__ void add_vector_sum(T* dst, int count, Src src) {
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; k++) acc[k] = 0.0f;
    for (int j = 0; j < count; j++) {
        const Packed<T, VEC> d = load_packed<T, VEC>(src(j));
#pragma unroll
        for (int k = 0; k < VEC; k++) acc[k] += to_float(d.v[k]);
    }
    Packed<T, VEC> r = load_packed<T, VEC>(dst);
#pragma unroll
    for (int k = 0; k < VEC; k++) r.v[k] = from_float<T>(to_float(r.v[k]) + acc[k]);
    store_packed<T, VEC>(dst, r);
}

// block b: distinct token bucket_tok[b]; its positions are bucket_pos[bucket_start[b] ..
// bucket_start[b+1]); threads stride over the row in vectors of VEC channels (16 bytes; VEC = 1
// when C or the pointers do not allow it). Every channel adds the positions in the same order
// either way, so both widths give the same bits.
template <typename T, int VEC>
__global__ void embedding_backward_wte_kernel(T* __restrict__ dwte, const T* __restrict__ dout, const int* __restrict__ bucket_tok,
                                              const int* __restrict__ bucket_start, const int* __restrict__ bucket_pos, int C) {
    const int b = blockIdx.x, nvec = C / VEC;
    const int begin = bucket_start[b], end = bucket_start[b + 1];
    T* row = dwte + (size_t)bucket_tok[b] * C;
    for (int cv = threadIdx.x; cv < nvec; cv += blockDim.x)
        add_vector_sum<T, VEC>(row + cv * VEC, end - begin, [&](int j) { return dout + (size_t)bucket_pos[begin + j] * C + cv * VEC; });
}

// block t: dwpe[t, :] += sum over b of dout[b*T + t, :] (vectors of VEC channels as above)
template <typename T, int VEC>
__global__ void embedding_backward_wpe_kernel(T* __restrict__ dwpe, const T* __restrict__ dout, int B, int T_, int C) {
    const int t = blockIdx.x, nvec = C / VEC;
    T* row = dwpe + (size_t)t * C;
    for (int cv = threadIdx.x; cv < nvec; cv += blockDim.x)
        add_vector_sum<T, VEC>(row + cv * VEC, B, [&](int b) { return dout + ((size_t)b * T_ + t) * C + cv * VEC; });
}

// ----------------------------------------------------------------------------
// host side

// Positions grouped by token (built on the host from the batch's token ids):
// tok[b] = the b-th distinct token (ascending), its positions pos[start[b] .. start[b+1]).
struct EmbeddingBuckets {
    std::vector<int> tok, start, pos;
};
inline EmbeddingBuckets embedding_buckets(const int* ids, int N) {
    std::vector<std::pair<int, int>> p(N);
    for (int n = 0; n < N; n++) p[n] = {ids[n], n};
    std::sort(p.begin(), p.end());  // by token, then by position
    EmbeddingBuckets e;
    for (int n = 0; n < N; n++) {
        if (n == 0 || p[n].first != p[n - 1].first) {
            e.tok.push_back(p[n].first);
            e.start.push_back(n);
        }
        e.pos.push_back(p[n].second);
    }
    e.start.push_back(N);
    return e;
}

// threads for a row of n units (channels or vectors): whole warps, 32 .. 256
inline int embedding_block(int n) { return std::min(256, std::max(32, (n + 31) / 32 * 32)); }

template <typename T>
void embedding_forward(T* out, const int* tok, const T* wte, const T* wpe, int B, int T_, int C, cudaStream_t stream) {
    const int N = B * T_;
    constexpr int V = 16 / sizeof(T);
    const int block = EW_BLOCK;
    if (C % V == 0 && is_aligned(out, 16) && is_aligned(wte, 16) && is_aligned(wpe, 16))
        launch_kernel(embedding_forward_kernel<T, V>, grid_stride_blocks((size_t)N * C / V, block), block, 0, stream, out, tok, wte,
                      wpe, N, T_, C);
    else
        launch_kernel(embedding_forward_kernel<T, 1>, grid_stride_blocks((size_t)N * C, block), block, 0, stream, out, tok, wte, wpe,
                      N, T_, C);
}

// dwte (and dwpe if non-null) += the embedding gradient; the bucket arrays are on the device
// (num_buckets distinct tokens). Deterministic.
template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int* bucket_tok, const int* bucket_start, const int* bucket_pos,
                        int num_buckets, int B, int T_, int C, cudaStream_t stream) {
    constexpr int V = 16 / sizeof(T);
    const bool vec = C % V == 0 && is_aligned(dwte, 16) && is_aligned(dout, 16) && is_aligned(dwpe, 16);
    const int block = embedding_block(vec ? C / V : C);
    if (num_buckets > 0) {
        if (vec)
            launch_kernel(embedding_backward_wte_kernel<T, V>, num_buckets, block, 0, stream, dwte, dout, bucket_tok, bucket_start,
                          bucket_pos, C);
        else
            launch_kernel(embedding_backward_wte_kernel<T, 1>, num_buckets, block, 0, stream, dwte, dout, bucket_tok, bucket_start,
                          bucket_pos, C);
    }
    if (dwpe) {
        if (vec) launch_kernel(embedding_backward_wpe_kernel<T, V>, T_, block, 0, stream, dwpe, dout, B, T_, C);
        else launch_kernel(embedding_backward_wpe_kernel<T, 1>, T_, block, 0, stream, dwpe, dout, B, T_, C);
    }
}
