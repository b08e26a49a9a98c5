// gradnorm.cuh - deterministic sums of squares of the gradient, per chunk, from which the
// host forms the per-tensor and per-layer gradient norms; and the step's scalars (mean
// loss, global gradient norm, clipping factor, finite flag) formed on the device, so that
// a training step needs no host round trip before its update (StepStats, below).
//
// The parameter table is cut into chunks that never straddle two tensors (gradnorm_chunks:
// each tensor in pieces of at most GRADNORM_CHUNK elements). One block per chunk:
//   partial[k] = sum over the chunk's elements of g^2
// (per-thread fp32 sums over 16-byte loads, then a block reduction in warp order). The host adds a tensor's
// chunks in order in double. No atomics: same gradient, same bits.
//   layer norm l = sqrt(sum over layer l's tensors), global = sqrt(sum over all)
#pragma once

#include <cfloat>
#include <vector>

#include "common.cuh"

constexpr int GRADNORM_CHUNK = 1 << 16;  // elements per block at most
constexpr int GRADNORM_BLOCK = EW_BLOCK;

// VEC = 16 / sizeof(T): a thread reads groups of VEC elements (16 bytes) starting at indices
// that are multiples of VEC (the launcher checks g is 16-byte aligned); the chunk's elements
// before the first group (head) and after the last (tail) one at a time (vec_split). VEC = 1: all one at
// a time. One running sum per thread either way, in index order.
template <typename T, int VEC>
__global__ void __launch_bounds__(GRADNORM_BLOCK)
    sumsq_chunks_kernel(float* __restrict__ partial, const T* __restrict__ g, const long long* __restrict__ chunk_off,
                        const int* __restrict__ chunk_len) {
    __shared__ float scratch[32];
    const size_t o = (size_t)chunk_off[blockIdx.x];
    const int n = chunk_len[blockIdx.x];
    const VecSplit sp = vec_split<VEC>(o, n);
    const T* p = g + o;
    float s = 0.0f;
    for (int i = threadIdx.x; i < sp.head; i += blockDim.x) {
        const float x = to_float(p[i]);
        s += x * x;
    }
    for (int q = threadIdx.x; q < sp.groups; q += blockDim.x) {
        const Packed<T, VEC> v = load_packed<T, VEC>(p + sp.head + (size_t)q * VEC);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float x = to_float(v.v[k]);
            s += x * x;
        }
    }
    for (int i = sp.tail + threadIdx.x; i < n; i += blockDim.x) {
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
    if (nchunks == 0) return;
    if (is_aligned(g, 16))
        launch_kernel(sumsq_chunks_kernel<T, 16 / sizeof(T)>, nchunks, GRADNORM_BLOCK, 0, st, partial, g, chunk_off, chunk_len);
    else
        launch_kernel(sumsq_chunks_kernel<T, 1>, nchunks, GRADNORM_BLOCK, 0, st, partial, g, chunk_off, chunk_len);
}

// ----------------------------------------------------------------------------
// The step's scalars, in device memory. A training step (train_gpt.cu, Model::begin_step /
// end_step) zeroes them, every micro-batch's forward adds its mean loss (loss_mean), the
// finalize kernel forms the global norm, the clipping factor and the finite flag from the
// chunk partials, and AdamW reads clip and finite from here (adamw.cuh): the host sees the
// numbers once, after the update is queued, in one copy.
struct StepStats {
    double loss_sum;  // sum over the step's micro-batches of each one's mean loss
    double grad_sq;   // sum of g^2 over every gradient element (the chunk partials, in double)
    float norm;       // sqrt(grad_sq)
    float clip;       // the factor applied to the gradients: min(1, max_norm / (norm + 1e-6)); 1 without clipping
    int finite;       // loss_sum and norm are finite: AdamW applies the update (else it leaves every array as it is)
    float batch_loss; // the last micro-batch's mean loss (what a plain forward returns)
};

// Sum over the block in double, deterministic: each warp by shuffles (a fixed tree), then
// the warps' sums in warp order by thread 0; the result is valid in thread 0 only.
// scratch: 32 doubles of shared memory.
__device__ __forceinline__ double block_sum_double_to_thread0(double v, double* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double r = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < nwarps; w++) r += scratch[w];
    return r;
}

constexpr int STEP_STATS_BLOCK = EW_BLOCK;   // one block of this many threads for both kernels below

// mean = sum(losses[0..N)) / N in double (thread t adds t, t + blockDim, ...; then the block sum):
// stats->batch_loss = mean, stats->loss_sum += mean. One block.
__global__ void __launch_bounds__(STEP_STATS_BLOCK) loss_mean_kernel(StepStats* stats, const float* __restrict__ losses, int N) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) s += losses[i];
    s = block_sum_double_to_thread0(s, scratch);
    if (threadIdx.x == 0) {
        const double mean = s / N;
        stats->batch_loss = (float)mean;
        stats->loss_sum += mean;
    }
}

// grad_sq = the nchunks partials added in double (fixed order), norm = sqrt(grad_sq) (as the
// host's global_norm), clip = clip_scale(norm, max_norm) (common/run.h: max_norm <= 0 means
// no clipping), finite = loss_sum and norm finite. One block.
__global__ void __launch_bounds__(STEP_STATS_BLOCK)
    grad_norm_finalize_kernel(StepStats* stats, const float* __restrict__ partial, int nchunks, float max_norm) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (int k = threadIdx.x; k < nchunks; k += blockDim.x) s += partial[k];
    s = block_sum_double_to_thread0(s, scratch);
    if (threadIdx.x == 0) {
        const float norm = (float)sqrt(s);
        stats->grad_sq = s;
        stats->norm = norm;
        stats->clip = max_norm <= 0.0f ? 1.0f : fminf(1.0f, max_norm / (norm + 1e-6f));
        // finite: |x| <= the largest double (false for inf and for NaN, whose comparisons fail)
        stats->finite = fabs(stats->loss_sum) <= DBL_MAX && fabs((double)norm) <= DBL_MAX;
    }
}

// the mean of N per-token losses into stats (batch_loss =, loss_sum +=)
inline void loss_mean(StepStats* stats, const float* losses, int N, cudaStream_t st) {
    launch_kernel(loss_mean_kernel, 1, STEP_STATS_BLOCK, 0, st, stats, losses, N);
}
// norm, clip and finite from the chunk partials of sumsq_chunks
inline void grad_norm_finalize(StepStats* stats, const float* partial, int nchunks, float max_norm, cudaStream_t st) {
    launch_kernel(grad_norm_finalize_kernel, 1, STEP_STATS_BLOCK, 0, st, stats, partial, nchunks, max_norm);
}
