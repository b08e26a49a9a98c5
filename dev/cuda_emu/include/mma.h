// mma.h - the subset of CUDA's warp matrix functions (nvcuda::wmma) that the kernels use,
// for emulated (CUDA_EMU) builds; found before the toolkit's header because
// dev/cuda_emu/include comes first on the include path of emulated builds.
//
// On a GPU a fragment is spread over the 32 lanes of a warp in an unspecified layout, and
// load/store/mma are warp-collective. Here every lane holds the WHOLE tile (element (r, c)
// of the logical rows x cols matrix at x[r * cols + c]), so:
//   load_matrix_sync   every lane reads the whole tile (reads only: no race);
//   mma_sync           every lane computes the whole product, fp32 accumulation in k order;
//   store_matrix_sync  lane 0 of the warp writes the whole tile, with NO barrier: as on the
//                      hardware, other lanes may read it only after a __syncwarp(), and the
//                      race detector (TSan build) reports a kernel that forgets one.
// Kernels must therefore treat fragments as opaque (only fill/load/store/mma), which is
// what the wmma API promises anyway; element-wise access to x[] is not emulated faithfully.
// Supported: m16n16k16 with __nv_bfloat16 (or __half) inputs and float accumulators.
#pragma once
#ifndef CUDA_EMU
#error "dev/cuda_emu/include/mma.h is only for emulated (CUDA_EMU) builds"
#endif
#include <type_traits>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K> struct frag_shape;
template <int M, int N, int K> struct frag_shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct frag_shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct frag_shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = frag_shape<Use, M, N, K>::rows, cols = frag_shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    T x[num_elements];
};

namespace detail {
inline float to_f(float v) { return v; }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
inline bool is_lane0() {
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return tid % 32 == 0;
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, T v) {
    for (int i = 0; i < f.num_elements; i++) f.x[i] = v;
}
template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, V v) {
    fill_fragment(f, (T)v);
}

// matrix_a / matrix_b: the layout is a template argument of the fragment
template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
    constexpr bool colmaj = std::is_same<Layout, col_major>::value;
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++) f.x[r * f.cols + c] = colmaj ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
}
// accumulator: the layout is an argument
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout) {
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.x[r * f.cols + c] = layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
}
template <int M, int N, int K, typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
    if (!detail::is_lane0()) return;
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++) {
            T& dst = layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
            dst = f.x[r * f.cols + c];
        }
}

// d = a @ b + c (d may be c)
template <int M, int N, int K, typename TA, typename LA, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, TC>& c) {
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = detail::to_f(c.x[i * N + j]);
            for (int k = 0; k < K; k++) acc += detail::to_f(a.x[i * K + k]) * detail::to_f(b.x[k * N + j]);
            out[i * N + j] = acc;
        }
    for (int i = 0; i < M * N; i++) d.x[i] = (TC)out[i];
}

}  // namespace wmma
}  // namespace nvcuda
