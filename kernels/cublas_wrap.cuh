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
#pragma once

#include <cstdint>

#include "common.cuh"

#if !defined(CUDA_EMU)
#include <cublasLt.h>

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
    const cudaDataType_t dt = dtype<T>();
    const cublasComputeType_t compute =
        (sizeof(T) == 4 && allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasLtMatmulDesc_t desc;
    cublasCheck(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
    // cuBLASLt's A is our B, its B is our A (see the top of this file)
    const cublasOperation_t opA = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opB = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)));
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof(opB)));
    if (bias) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
        cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dt, sizeof(dt)));
    }
    // column-major layouts of the stored matrices
    cublasLtMatrixLayout_t la, lb, lc;
    cublasCheck(transB ? cublasLtMatrixLayoutCreate(&la, dt, K, N, K) : cublasLtMatrixLayoutCreate(&la, dt, N, K, N));
    cublasCheck(transA ? cublasLtMatrixLayoutCreate(&lb, dt, M, K, M) : cublasLtMatrixLayoutCreate(&lb, dt, K, M, K));
    cublasCheck(cublasLtMatrixLayoutCreate(&lc, dt, N, M, N));
    if (batch_count > 1) {
        const int64_t strides[3] = {strideB, strideA, strideOut};
        cublasLtMatrixLayout_t ls[3] = {la, lb, lc};
        for (int i = 0; i < 3; i++) {
            cublasCheck(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch_count, sizeof(batch_count)));
            cublasCheck(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i], sizeof(int64_t)));
        }
    }
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                     sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    cublasCheck(cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, lc, pref, 1, &heur, &found));
    if (found == 0) {
        fprintf(stderr, "gemm: no cuBLASLt algorithm for M=%d N=%d K=%d transA=%d transB=%d bias=%d batch=%d\n", M, N, K, (int)transA,
                (int)transB, bias != nullptr, batch_count);
        exit(EXIT_FAILURE);
    }
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    cublasCheck(cublasLtMatmul(handle, desc, &alpha, B, la, A, lb, &beta, out, lc, out, lc, &heur.algo, workspace, workspace_bytes,
                               stream));
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    cublasCheck(cublasLtMatrixLayoutDestroy(la));
    cublasCheck(cublasLtMatrixLayoutDestroy(lb));
    cublasCheck(cublasLtMatrixLayoutDestroy(lc));
    cublasCheck(cublasLtMatmulDescDestroy(desc));
#endif
}
