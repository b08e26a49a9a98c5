// cublas_wrap.cuh - the project's thin GEMM wrapper: cuBLASLt on a GPU, a plain CPU loop in
// the emulated build (dev/cuda_emu, -DCUDA_EMU), same semantics, so code above it (the CUDA
// trainer) runs in emulation too.
//
// Row-major, as the rest of the project (activations (B*T, C), weights (OC, C)):
//
//   out(M, N) = op(A)(M, K) @ op(B)(K, N)  [+ bias(N), broadcast over rows]  [+ out if accumulate]
//
//   A is stored (M, K) row-major, or (K, M) if transA (op(A) = A^T)
//   B is stored (K, N) row-major, or (N, K) if transB
//   storage T = float or __nv_bfloat16 for A, B, bias and out; fp32 accumulation
//   batch_count > 1: strided batches (strides in elements; bias shared by all batches)
//
// The trainer's three linear-layer GEMMs (inp (BT, C), weight (OC, C), out (BT, OC)):
//   forward      out  = inp @ weight^T + bias  gemm(out, inp, weight, bias, BT, OC, C, false, true, false, s)
//   backward dx  dinp = dout @ weight          gemm(dinp, dout, weight, nullptr, BT, C, OC, false, false, false, s)
//   backward dW  dW  += dout^T @ inp           gemm(dW, dout, inp, nullptr, OC, C, BT, true, false, true, s)
//
// cuBLASLt is column-major; a row-major (M, N) matrix is a column-major (N, M) one, so the call
// computes out^T (N, M) = op(B)^T (N, K) @ op(A)^T (K, M), i.e. cuBLASLt's "A" is our B and
// its "B" is our A, with the same transposes; the BIAS epilogue adds a vector of length N
// (cuBLASLt's m) to every column of out^T, that is, to every row of out.
//
// fp32 GEMMs use exact fp32 (CUBLAS_COMPUTE_32F) unless gemm_allow_tf32(true) is called.
//
// Plan cache (GPU build only). Building a cuBLASLt call - a matmul descriptor, three matrix
// layouts, a preference and above all the cublasLtMatmulAlgoGetHeuristic query - costs tens of
// microseconds of host time, and a training step makes hundreds of GEMM calls over a few
// dozen distinct shapes. So the first gemm() of a shape builds a Plan (descriptor, layouts,
// chosen algorithm) and keeps it in gemm_detail::plans, next to the handle; later calls with
// the same PlanKey only set the bias pointer on the cached descriptor (cuBLASLt reads the
// descriptor's attributes when cublasLtMatmul is called, so the pointer may change between
// calls) and call cublasLtMatmul. The key is the call's shape and options: data type,
// compute type (the tf32 flag at the time of the call), M, N, K, transA, transB, bias or not
// (not its pointer), accumulate (beta; the heuristic does not see it, so it only splits
// plans), batch count and the three strides (0 for a single batch, where they are unused).
// Data pointers are not in the key, as they never reached the heuristic before either (its
// alignment assumption is the preference's default). gemm_shutdown() destroys every plan
// along with the handle. The cache is not thread-safe: gemm() is called from one host thread.
#pragma once

#include <cstdint>

#include "common.cuh"

#if !defined(CUDA_EMU)
#include <cublasLt.h>

#include <functional>
#include <unordered_map>

inline void cublas_check(cublasStatus_t status, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "[cuBLAS ERROR] %d at file %s:%d\n", (int)status, file, line);
        exit(EXIT_FAILURE);
    }
}
#define cublasCheck(status) (cublas_check((status), __FILE__, __LINE__))

namespace gemm_detail {
inline cublasLtHandle_t handle = nullptr;
inline void* workspace = nullptr;
constexpr size_t workspace_bytes = 32ull << 20;
inline bool allow_tf32 = false;
template <typename T> constexpr cudaDataType_t dtype();
template <> constexpr cudaDataType_t dtype<float>() { return CUDA_R_32F; }
template <> constexpr cudaDataType_t dtype<__nv_bfloat16>() { return CUDA_R_16BF; }

// the plan cache (see the top of this file)
struct PlanKey {
    cudaDataType_t dt;
    cublasComputeType_t compute;
    int M, N, K;
    bool transA, transB, has_bias, accumulate;
    int batch_count;
    long long strideA, strideB, strideOut;  // 0 when batch_count == 1 (unused then)
    bool operator==(const PlanKey& o) const {
        return dt == o.dt && compute == o.compute && M == o.M && N == o.N && K == o.K && transA == o.transA &&
               transB == o.transB && has_bias == o.has_bias && accumulate == o.accumulate && batch_count == o.batch_count &&
               strideA == o.strideA && strideB == o.strideB && strideOut == o.strideOut;
    }
};
struct PlanKeyHash {
    size_t operator()(const PlanKey& k) const {
        size_t h = 0;
        auto mix = [&h](long long v) { h ^= std::hash<long long>()(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
        mix(k.dt);
        mix(k.compute);
        mix(k.M);
        mix(k.N);
        mix(k.K);
        mix(k.transA | (k.transB << 1) | (k.has_bias << 2) | (k.accumulate << 3));
        mix(k.batch_count);
        mix(k.strideA);
        mix(k.strideB);
        mix(k.strideOut);
        return h;
    }
};
struct Plan {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;  // cuBLASLt's A (our B), B (our A), C = D (out)
    cublasLtMatmulAlgo_t algo;
};
// An unordered_map rather than a vector with linear search: a step has a few dozen shapes,
// where either would do, but evaluation or sampling at other sequence lengths adds more and
// the map's lookup does not grow with them. Its values never move, so a Plan& stays valid.
inline std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;

// build the plan of key: descriptor, layouts and the heuristic's first choice
inline Plan make_plan(const PlanKey& key) {
    Plan p;
    cublasCheck(cublasLtMatmulDescCreate(&p.desc, key.compute, CUDA_R_32F));
    // cuBLASLt's A is our B, its B is our A (see the top of this file)
    const cublasOperation_t opA = key.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opB = key.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)));
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof(opB)));
    if (key.has_bias) {  // the bias pointer itself is set by every gemm() call
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
        cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &key.dt, sizeof(key.dt)));
    }
    // column-major layouts of the stored matrices
    const int M = key.M, N = key.N, K = key.K;
    const cudaDataType_t dt = key.dt;
    cublasCheck(key.transB ? cublasLtMatrixLayoutCreate(&p.la, dt, K, N, K) : cublasLtMatrixLayoutCreate(&p.la, dt, N, K, N));
    cublasCheck(key.transA ? cublasLtMatrixLayoutCreate(&p.lb, dt, M, K, M) : cublasLtMatrixLayoutCreate(&p.lb, dt, K, M, K));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.lc, dt, N, M, N));
    if (key.batch_count > 1) {
        const int64_t strides[3] = {key.strideB, key.strideA, key.strideOut};
        const cublasLtMatrixLayout_t ls[3] = {p.la, p.lb, p.lc};
        for (int i = 0; i < 3; i++) {
            cublasCheck(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &key.batch_count,
                                                         sizeof(key.batch_count)));
            cublasCheck(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                         sizeof(int64_t)));
        }
    }
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                     sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    cublasCheck(cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.la, p.lb, p.lc, p.lc, pref, 1, &heur, &found));
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    if (found == 0) {
        fprintf(stderr, "gemm: no cuBLASLt algorithm for M=%d N=%d K=%d transA=%d transB=%d bias=%d batch=%d\n", M, N, K,
                (int)key.transA, (int)key.transB, (int)key.has_bias, key.batch_count);
        exit(EXIT_FAILURE);
    }
    p.algo = heur.algo;
    return p;
}
inline void destroy_plans() {
    for (auto& kv : plans) {
        cublasCheck(cublasLtMatrixLayoutDestroy(kv.second.la));
        cublasCheck(cublasLtMatrixLayoutDestroy(kv.second.lb));
        cublasCheck(cublasLtMatrixLayoutDestroy(kv.second.lc));
        cublasCheck(cublasLtMatmulDescDestroy(kv.second.desc));
    }
    plans.clear();
}
}  // namespace gemm_detail
#endif

// create the library handle and workspace (called by the first gemm() if not before)
inline void gemm_init() {
#if !defined(CUDA_EMU)
    if (gemm_detail::handle) return;
    cublasCheck(cublasLtCreate(&gemm_detail::handle));
    cudaCheck(cudaMalloc(&gemm_detail::workspace, gemm_detail::workspace_bytes));
#endif
}
inline void gemm_shutdown() {
#if !defined(CUDA_EMU)
    if (!gemm_detail::handle) return;
    gemm_detail::destroy_plans();
    cublasCheck(cublasLtDestroy(gemm_detail::handle));
    cudaCheck(cudaFree(gemm_detail::workspace));
    gemm_detail::handle = nullptr;
    gemm_detail::workspace = nullptr;
#endif
}
// fp32 GEMMs on tensor cores (TF32, about 10 mantissa bits) instead of exact fp32
inline void gemm_allow_tf32(bool allow) {
#if !defined(CUDA_EMU)
    gemm_detail::allow_tf32 = allow;
#else
    (void)allow;
#endif
}

template <typename T>
void gemm(T* out, const T* A, const T* B, const T* bias, int M, int N, int K, bool transA, bool transB, bool accumulate,
          cudaStream_t stream, int batch_count = 1, long long strideA = 0, long long strideB = 0, long long strideOut = 0) {
    if (M <= 0 || N <= 0 || batch_count <= 0) return;
#if defined(CUDA_EMU)
    // CPU stand-in: plain loops, fp32 accumulation in k order, epilogue as cuBLASLt's
    // (alpha * A@B + beta * out + bias), rounded once to T
    (void)stream;
    for (int b = 0; b < batch_count; b++) {
        const T* a = A + b * strideA;
        const T* bb = B + b * strideB;
        T* o = out + b * strideOut;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float acc = 0.0f;
                for (int k = 0; k < K; k++) {
                    const float x = to_float(transA ? a[(size_t)k * M + i] : a[(size_t)i * K + k]);
                    const float y = to_float(transB ? bb[(size_t)j * K + k] : bb[(size_t)k * N + j]);
                    acc += x * y;
                }
                if (accumulate) acc += to_float(o[(size_t)i * N + j]);
                if (bias) acc += to_float(bias[j]);
                o[(size_t)i * N + j] = from_float<T>(acc);
            }
    }
#else
    using namespace gemm_detail;
    gemm_init();
    PlanKey key;
    key.dt = dtype<T>();
    key.compute = (sizeof(T) == 4 && allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    key.M = M;
    key.N = N;
    key.K = K;
    key.transA = transA;
    key.transB = transB;
    key.has_bias = bias != nullptr;
    key.accumulate = accumulate;
    key.batch_count = batch_count;
    key.strideA = batch_count > 1 ? strideA : 0;
    key.strideB = batch_count > 1 ? strideB : 0;
    key.strideOut = batch_count > 1 ? strideOut : 0;
    auto it = plans.find(key);
    if (it == plans.end()) it = plans.emplace(key, make_plan(key)).first;
    const Plan& p = it->second;
    if (bias)
        cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    cublasCheck(cublasLtMatmul(handle, p.desc, &alpha, B, p.la, A, p.lb, &beta, out, p.lc, out, p.lc, &p.algo, workspace,
                               workspace_bytes, stream));
#endif
}
