// cublas_wrap.cuh - the project's thin GEMM wrapper: cuBLASLt on a GPU, a plain CPU loop in
// the emulated build (dev/cuda_emu, -DCUDA_EMU), same semantics, so code above it (the CUDA
// trainer) runs in emulation too.
//
// Row-major, as the rest of the project (activations (B*T, C), weights (OC, C)):
//
//   P(M, N) = op(A)(M, K) @ op(B)(K, N)
//   out(M, N) = P  [+ bias(N), broadcast over rows]  [+ out if accumulate]      (gemm)
//   out(M, N) = P  [+ bias(N)]  + cin(M, N)                                      (gemm_add)
//
//   A is stored (M, K) row-major, or (K, M) if transA (op(A) = A^T)
//   B is stored (K, N) row-major, or (N, K) if transB
//   storage T = float or __nv_bfloat16 for A, B, bias, out and the epilogue vectors/matrices
//   below; fp32 accumulation
//   batch_count > 1: strided batches (strides in elements; bias shared by all batches)
//
// Epilogues beyond the bias (single GEMMs only; what cuBLASLt computes from the fp32
// accumulator P before anything is stored, so the fused result is rounded to T once):
//
//   gemm_gelu_aux_bias  (GELU_AUX_BIAS)  pre = P + bias -> aux (M, N);  out = GELU(P + bias)
//   gemm_dgelu_bgrad    (DGELU_BGRAD)    out = P * GELU'(aux);  bgrad(N)[j] = sum_i out[i][j]
//   gemm_bgradb         (BGRADB)         out = P [+ out];  bgrad(M)[i] = sum_k op(A)[i][k]
//
//   GELU is the tanh approximation, GPT-2's and kernels/activation.cuh's:
//     GELU(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   cuBLASLt's header does not name the form; PyTorch's fused addmm + GELU relies on its being
//   the tanh approximation (pytorch/pytorch#104061) and llm.c uses it as GPT-2's GELU.
//   dev/test/test_matmul.cu holds it to the tanh form within 1e-5 in fp32 and prints its
//   distance from both forms (the erf form differs by up to 4.7e-4 near |x| = 2.7). cuBLASLt
//   does not document whether it evaluates tanh in full fp32 or with the hardware
//   approximation (MUFU.TANH, about 2^-11 relative); that tolerance would flag the latter.
//   aux is a row-major (M, N) matrix of T (leading dimension N, which must be a multiple of
//   8: cuBLASLt's rule for CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD; the emulation enforces it
//   too). The bias gradients are WRITTEN (cuBLASLt has no accumulating form), as T: the
//   cuBLASLt header documents the bias-gradient vector as the output type (Ctype); callers
//   that accumulate gradients add the vector themselves (kernels/matmul.cuh).
//   GELU_AUX_BIAS and DGELU_BGRAD take no accumulate (beta = 0); BGRADB does (dW += ...).
//   These three return false, having computed nothing, when cuBLASLt has no algorithm for the
//   epilogue at that shape (its fused kernels need aligned shapes; a plain GEMM of the same
//   shape still exists): the caller then takes the unfused path (kernels/matmul.cuh does).
//   The first such shape prints a one-line note to stderr. gemm_force_epilogue_fallback =
//   true makes them return false always (both builds), so the tests run the unfused paths.
//
// The trainer's linear-layer GEMMs (inp (BT, C), weight (OC, C), out (BT, OC)):
//   forward      out  = inp @ weight^T + bias  gemm(out, inp, weight, bias, BT, OC, C, false, true, false, s)
//   forward GELU act  = GELU(inp @ W^T + b), fc = inp @ W^T + b
//                                              gemm_gelu_aux_bias(act, fc, inp, W, b, BT, OC, C, false, true, s)
//   backward dx  dinp = dout @ weight          gemm(dinp, dout, weight, nullptr, BT, C, OC, false, false, false, s)
//   backward dx through GELU: dfc = (dout @ W) * GELU'(fc), dbias_fc = colsum(dfc)
//                                              gemm_dgelu_bgrad(dfc, dbias_fc, fc, dout, W, BT, C, OC, false, false, s)
//   backward dW  dW  += dout^T @ inp           gemm(dW, dout, inp, nullptr, OC, C, BT, true, false, true, s)
//                with db = colsum(dout) = row sums of op(A) = dout^T:
//                                              gemm_bgradb(dW, db, dout, inp, OC, C, BT, true, false, true, s)
//   (these are the layouts the tests cover; other transposes go to cuBLASLt unchecked)
//
// cuBLASLt is column-major; a row-major (M, N) matrix is a column-major (N, M) one, so the call
// computes out^T (N, M) = op(B)^T (N, K) @ op(A)^T (K, M), i.e. cuBLASLt's "A" is our B and
// its "B" is our A, with the same transposes, and its (m, n, k) are our (N, M, K). Hence:
//   - the BIAS epilogue adds a vector of length N (cuBLASLt's m, "D rows") to every column of
//     out^T, that is, to every row of out;
//   - GELU_AUX_BIAS / DGELU_BGRAD: aux is column-major (N, M) with ld N = our row-major
//     (M, N) with row stride N; DGELU_BGRAD's bias gradient has "D rows" = N entries, the
//     sum over D's columns = over our rows i;
//   - BGRADA reduces cuBLASLt's A (our B) over k, a vector of N ("D rows"); BGRADB reduces
//     cuBLASLt's B (our A) over k, a vector of M ("D columns"). The weight gradient's bias
//     term, colsum(dout) with dout = our A (transA), is therefore BGRADB. (Transformer Engine's
//     weight-gradient GEMM makes the same call: "grad output is always input B", BGRADB.)
//
// fp32 GEMMs use exact fp32 (CUBLAS_COMPUTE_32F) unless gemm_allow_tf32(true) is called.
//
// Plan cache (GPU build only). Building a cuBLASLt call - a matmul descriptor, three matrix
// layouts, a preference and above all the cublasLtMatmulAlgoGetHeuristic query - costs tens of
// microseconds of host time, and a training step makes hundreds of GEMM calls over a few
// dozen distinct shapes. So the first gemm() of a shape builds a Plan (descriptor, layouts,
// chosen algorithm) and keeps it in gemm_detail::plans, next to the handle; later calls with
// the same PlanKey only set the epilogue's pointers (bias or bias gradient, aux) on the cached
// descriptor (cuBLASLt reads the descriptor's attributes when cublasLtMatmul is called, so the
// pointers may change between calls) and call cublasLtMatmul. The key is the call's shape and
// options: data type, compute type (the tf32 flag at the time of the call), M, N, K, transA,
// transB, the epilogue kind (none, bias, GELU_AUX_BIAS, DGELU_BGRAD, BGRADB; the aux leading
// dimension N follows from the shape and is set when the plan is made), accumulate (beta; the
// heuristic does not see it, so it only splits plans), batch count and the three strides (0
// for a single batch, where they are unused). Pointers are not in the key: the heuristic runs
// with the epilogue pointers unset (null, i.e. maximally aligned) and never sees the data
// pointers (its alignment assumption is the preference's default); the trainer's aux and
// bias-gradient buffers are 256-byte aligned (its Arena). gemm_shutdown() destroys every plan
// along with the handle. The cache is not thread-safe: gemm() is called from one host thread.
#pragma once

#include <cstdint>
#include <vector>

#include "common.cuh"
#if defined(CUDA_EMU)
#include "activation.cuh"  // the emulated GELU epilogues: the same per-element math
#endif

// the epilogue of one GEMM call (see the top of this file)
enum class GemmEpilogue : int { None = 0, Bias, GeluAuxBias, DGeluBGrad, BGradB };
// test hook: the fused epilogues (GELU_AUX_BIAS, DGELU_BGRAD, BGRADB) report "no algorithm"
inline bool gemm_force_epilogue_fallback = false;

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
    bool transA, transB, accumulate;
    GemmEpilogue epilogue;
    int batch_count;
    long long strideA, strideB, strideOut;  // 0 when batch_count == 1 (unused then)
    bool operator==(const PlanKey& o) const {
        return dt == o.dt && compute == o.compute && M == o.M && N == o.N && K == o.K && transA == o.transA &&
               transB == o.transB && accumulate == o.accumulate && epilogue == o.epilogue && batch_count == o.batch_count &&
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
        mix(k.transA | (k.transB << 1) | (k.accumulate << 2) | ((int)k.epilogue << 3));
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
    bool ok;                            // false: no algorithm for this fused epilogue (the caller falls back)
};
// An unordered_map rather than a vector with linear search: a step has a few dozen shapes,
// where either would do, but evaluation or sampling at other sequence lengths adds more and
// the map's lookup does not grow with them. Its values never move, so a Plan& stays valid.
inline std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;

inline cublasLtEpilogue_t lt_epilogue(GemmEpilogue e) {
    switch (e) {
        case GemmEpilogue::Bias: return CUBLASLT_EPILOGUE_BIAS;
        case GemmEpilogue::GeluAuxBias: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
        case GemmEpilogue::DGeluBGrad: return CUBLASLT_EPILOGUE_DGELU_BGRAD;
        case GemmEpilogue::BGradB: return CUBLASLT_EPILOGUE_BGRADB;
        default: return CUBLASLT_EPILOGUE_DEFAULT;
    }
}

// build the plan of key: descriptor, layouts and the heuristic's first choice
inline Plan make_plan(const PlanKey& key) {
    Plan p;
    cublasCheck(cublasLtMatmulDescCreate(&p.desc, key.compute, CUDA_R_32F));
    // cuBLASLt's A is our B, its B is our A (see the top of this file)
    const cublasOperation_t opA = key.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opB = key.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)));
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof(opB)));
    if (key.epilogue != GemmEpilogue::None) {
        // the bias (or bias-gradient) and aux pointers themselves are set by every call
        const cublasLtEpilogue_t epi = lt_epilogue(key.epilogue);
        cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
        // bias and bias gradient in the storage type (the documented default for a gradient)
        cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &key.dt, sizeof(key.dt)));
        if (key.epilogue == GemmEpilogue::GeluAuxBias || key.epilogue == GemmEpilogue::DGeluBGrad) {
            // aux: column-major (N, M) = our row-major (M, N), ld N; its type defaults to the output's (T)
            const int64_t ld = key.N;
            cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)));
        }
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
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.la, p.lb, p.lc, p.lc, pref, 1, &heur, &found);
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    p.ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
    const bool fused = key.epilogue == GemmEpilogue::GeluAuxBias || key.epilogue == GemmEpilogue::DGeluBGrad ||
                       key.epilogue == GemmEpilogue::BGradB;
    if (!p.ok) {
        fprintf(stderr, "gemm: no cuBLASLt algorithm (status %d) for %s M=%d N=%d K=%d transA=%d transB=%d epilogue=%d batch=%d%s\n",
                (int)st, dt == CUDA_R_32F ? "fp32" : "bf16", M, N, K, (int)key.transA, (int)key.transB, (int)key.epilogue,
                key.batch_count, fused ? "; this shape takes the unfused path" : "");
        if (!fused) exit(EXIT_FAILURE);
        return p;
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

namespace gemm_detail {
// One GEMM with epilogue epi (see the top of this file): bias read (Bias, GeluAuxBias), bgrad
// written (DGeluBGrad, BGradB), aux the pre-activation (GeluAuxBias: written, DGeluBGrad: read).
// Returns false, computing nothing, when a fused epilogue has no algorithm at this shape (or
// gemm_force_epilogue_fallback is set). With accumulate, the summand is cin when non-null
// (out = P + cin: cuBLASLt's C and D differ), else out itself.
template <typename T>
bool run(GemmEpilogue epi, T* out, const T* cin, const T* A, const T* B, const T* bias, T* bgrad, T* aux, int M, int N, int K, bool transA,
         bool transB, bool accumulate, cudaStream_t stream, int batch_count, long long strideA, long long strideB,
         long long strideOut) {
    const bool fused = epi == GemmEpilogue::GeluAuxBias || epi == GemmEpilogue::DGeluBGrad || epi == GemmEpilogue::BGradB;
    if (fused && gemm_force_epilogue_fallback) return false;
    if (M <= 0 || N <= 0 || batch_count <= 0) return true;
    const bool has_aux = epi == GemmEpilogue::GeluAuxBias || epi == GemmEpilogue::DGeluBGrad;
    const bool has_bgrad = epi == GemmEpilogue::DGeluBGrad || epi == GemmEpilogue::BGradB;
    if ((epi == GemmEpilogue::GeluAuxBias && !bias) || (has_bgrad && !bgrad) || (has_aux && (!aux || N % 8 != 0))) {
        fprintf(stderr, "gemm: epilogue %d needs its bias / bias-gradient vector and an aux matrix with N %% 8 == 0 (N = %d)\n",
                (int)epi, N);
        exit(EXIT_FAILURE);
    }
#if defined(CUDA_EMU)
    // CPU stand-in: plain loops, fp32 accumulation in k order; epilogues as cuBLASLt's, from
    // the fp32 accumulator (alpha * A@B + beta * out + bias), each output rounded once to T;
    // the bias gradients summed in fp32 in index order (of the unrounded DGELU outputs),
    // rounded once to T. Queued on `stream` like the kernels (cuda_emu::enqueue).
    cuda_emu::enqueue(stream, [=]() {
        std::vector<float> colsum(epi == GemmEpilogue::DGeluBGrad ? N : 0, 0.0f);
        for (int b = 0; b < batch_count; b++) {
            const T* a = A + b * strideA;
            const T* bb = B + b * strideB;
            T* o = out + b * strideOut;
            const T* c_in = cin ? cin + b * strideOut : o;
            for (int i = 0; i < M; i++) {
                if (epi == GemmEpilogue::BGradB) {  // row i of op(A), summed over k
                    float s = 0.0f;
                    for (int k = 0; k < K; k++) s += to_float(transA ? a[(size_t)k * M + i] : a[(size_t)i * K + k]);
                    bgrad[i] = from_float<T>(s);
                }
                for (int j = 0; j < N; j++) {
                    float acc = 0.0f;
                    for (int k = 0; k < K; k++) {
                        const float x = to_float(transA ? a[(size_t)k * M + i] : a[(size_t)i * K + k]);
                        const float y = to_float(transB ? bb[(size_t)j * K + k] : bb[(size_t)k * N + j]);
                        acc += x * y;
                    }
                    if (accumulate) acc += to_float(c_in[(size_t)i * N + j]);
                    const size_t ij = (size_t)i * N + j;
                    switch (epi) {
                        case GemmEpilogue::GeluAuxBias:
                            acc += to_float(bias[j]);
                            aux[ij] = from_float<T>(acc);
                            o[ij] = from_float<T>(gelu_forward_elem(acc));
                            break;
                        case GemmEpilogue::DGeluBGrad: {
                            const float d = gelu_backward_elem(to_float(aux[ij]), acc);
                            o[ij] = from_float<T>(d);
                            colsum[j] += d;
                            break;
                        }
                        case GemmEpilogue::Bias: acc += to_float(bias[j]); [[fallthrough]];
                        default: o[ij] = from_float<T>(acc);
                    }
                }
            }
        }
        if (epi == GemmEpilogue::DGeluBGrad)
            for (int j = 0; j < N; j++) bgrad[j] = from_float<T>(colsum[j]);
    });
    return true;
#else
    gemm_init();
    PlanKey key;
    key.dt = dtype<T>();
    key.compute = (sizeof(T) == 4 && allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    key.M = M;
    key.N = N;
    key.K = K;
    key.transA = transA;
    key.transB = transB;
    key.accumulate = accumulate;
    key.epilogue = epi;
    key.batch_count = batch_count;
    key.strideA = batch_count > 1 ? strideA : 0;
    key.strideB = batch_count > 1 ? strideB : 0;
    key.strideOut = batch_count > 1 ? strideOut : 0;
    auto it = plans.find(key);
    if (it == plans.end()) it = plans.emplace(key, make_plan(key)).first;
    const Plan& p = it->second;
    if (!p.ok) return false;   // a fused epilogue without an algorithm (make_plan said so once)
    if (epi != GemmEpilogue::None) {  // the bias, or the bias gradient
        const void* vec = has_bgrad ? (const void*)bgrad : (const void*)bias;
        cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof(vec)));
    }
    if (has_aux) cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const void* c = cin ? (const void*)cin : (const void*)out;
    cublasCheck(cublasLtMatmul(handle, p.desc, &alpha, B, p.la, A, p.lb, &beta, c, p.lc, out, p.lc, &p.algo, workspace,
                               workspace_bytes, stream));
    return true;
#endif
}
}  // namespace gemm_detail

// out (+)= op(A) op(B) (+ bias), see the top of this file
template <typename T>
void gemm(T* out, const T* A, const T* B, const T* bias, int M, int N, int K, bool transA, bool transB, bool accumulate,
          cudaStream_t stream, int batch_count = 1, long long strideA = 0, long long strideB = 0, long long strideOut = 0) {
    gemm_detail::run<T>(bias ? GemmEpilogue::Bias : GemmEpilogue::None, out, nullptr, A, B, bias, nullptr, nullptr, M, N, K, transA,
                        transB, accumulate, stream, batch_count, strideA, strideB, strideOut);
}
// out = op(A) op(B) (+ bias) + cin, with cin (M, N) another matrix (a residual: no copy of it
// into out first); cin may also be out itself
template <typename T>
void gemm_add(T* out, const T* cin, const T* A, const T* B, const T* bias, int M, int N, int K, bool transA, bool transB,
              cudaStream_t stream) {
    gemm_detail::run<T>(bias ? GemmEpilogue::Bias : GemmEpilogue::None, out, cin, A, B, bias, nullptr, nullptr, M, N, K, transA, transB,
                        true, stream, 1, 0, 0, 0);
}
// pre (M, N) = op(A) op(B) + bias;  out (M, N) = GELU(pre), from the fp32 value (N % 8 == 0).
// false: no algorithm, nothing computed (as the two below)
template <typename T>
bool gemm_gelu_aux_bias(T* out, T* pre, const T* A, const T* B, const T* bias, int M, int N, int K, bool transA, bool transB,
                        cudaStream_t stream) {
    return gemm_detail::run<T>(GemmEpilogue::GeluAuxBias, out, nullptr, A, B, bias, nullptr, pre, M, N, K, transA, transB, false, stream, 1, 0, 0,
                               0);
}
// out (M, N) = (op(A) op(B)) * GELU'(pre);  bgrad (N) = column sums of out, written (N % 8 == 0)
template <typename T>
bool gemm_dgelu_bgrad(T* out, T* bgrad, const T* pre, const T* A, const T* B, int M, int N, int K, bool transA, bool transB,
                      cudaStream_t stream) {
    // pre is only read (the const_cast feeds the shared aux parameter)
    return gemm_detail::run<T>(GemmEpilogue::DGeluBGrad, out, nullptr, A, B, nullptr, bgrad, const_cast<T*>(pre), M, N, K, transA, transB, false,
                               stream, 1, 0, 0, 0);
}
// out (M, N) (+)= op(A) op(B);  bgrad (M) = row sums of op(A) (sum over k), written
template <typename T>
bool gemm_bgradb(T* out, T* bgrad, const T* A, const T* B, int M, int N, int K, bool transA, bool transB, bool accumulate,
                 cudaStream_t stream) {
    return gemm_detail::run<T>(GemmEpilogue::BGradB, out, nullptr, A, B, nullptr, bgrad, nullptr, M, N, K, transA, transB, accumulate, stream, 1,
                               0, 0, 0);
}
