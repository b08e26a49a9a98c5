// test_matmul.cu - kernels/matmul.cuh (the linear layer on the GEMM wrapper, its GELU-fused
// forms and the deterministic bias gradient, both ways) against double-precision CPU
// references, storage fp32 and bf16, called as train_gpt.cu calls it (inp (N, C), weight
// (OC, C), out (N, OC)):
//   linear_forward   out = inp @ W^T + b, and without bias (lm_head); out poisoned first
//   linear_backward  dinp = dout @ W (poisoned first), or += onto a residual gradient
//                    (accumulate_dinp); dW += dout^T inp and db += colsum(dout) onto random
//                    initial gradients; two calls (two micro-steps) add both; dinp = null
//                    (skipped: its buffer keeps its bits) and db = null (lm_head: db untouched);
//                    each with the bias gradient in the dW GEMM's epilogue (BiasGrad::Epilogue,
//                    cuBLASLt BGRADB + the add onto db) and with bias_backward's kernels
//                    (BiasGrad::Kernel)
//   linear_gelu_forward / linear_dgelu_backward (GPT-2's MLP, fused: cuBLASLt GELU_AUX_BIAS
//                    and DGELU_BGRAD; the backward is dev/cuda/gelu_bias_grad.cuh's reference): act = GELU(inp W^T + b) and pre = inp W^T + b; then
//                    dpre = (dout @ Wp) * GELU'(pre), db_pre += colsum(dpre), dWp += dout^T act,
//                    dbp += colsum(dout), onto random initial gradients, two micro-steps. The
//                    reference GELU is the tanh form in double (written out here, independent
//                    of kernels/activation.cuh); the fp32 tolerance (1e-5 on values of order 1)
//                    is far below the largest gap to the erf form (4.7e-4 near |x| = 2.7), so on
//                    a GPU it also checks that cuBLASLt's GELU is the tanh approximation
//   the fallbacks    where cuBLASLt has no algorithm for a fused epilogue at a shape, the GEMM +
//                    kernels instead (gemm_force_epilogue_fallback): two linear cases with
//                    BiasGrad::Epilogue and two MLP cases, against the same references
//   bias_backward    alone (matmul.cuh's column sum): one row; one split; several splits with
//                    an uneven last one (and warps with unequal row counts); more rows than the
//                    plan's maximum number of splits (colsum_target_blocks lowered, so each
//                    split holds several times COLSUM_MIN_ROWS rows); OC below one warp's
//                    32 * VEC columns, and OC over several column blocks with a partial last one;
//                    the 16-byte path (OC % VEC == 0) and the scalar one (OC % VEC != 0, and dout
//                    misaligned by one element: bitwise equal to the vector path's db, since a
//                    column's summation order does not depend on VEC); fp32 and bf16; a second
//                    call accumulating onto db. Scratch poisoned, exactly
//                    bias_grad_scratch_floats(N, OC) floats (AddressSanitizer sees overruns), and
//                    (host only) the plan's nsplit * OC within it and the size non-decreasing in
//                    N and OC (the trainer sizes one buffer for its widest layer).
// --bench (GPU only; emulated builds say so and exit 0): at gpt2-124m's N = 16384 rows, bf16,
//   the bias gradient of each linear layer's shape both ways (bias_backward alone; the dW GEMM
//   with the BGRADB epilogue + add minus the plain dW GEMM), and gelu_backward alone against
//   gelu_backward_bias at F = 3072; lines "bias bench ...", microseconds per call and GB/s.
// Bias gradients must be bitwise identical when rerun.
// Inputs are fresh random numbers each run (seed printed; SEED=... replays). Exit status
// non-zero on any mismatch.
// Build: emulated (g++/clang++ -DCUDA_EMU, see dev/test/kernels.mk) or nvcc (real GPU,
// cuBLASLt).
#include "../../kernels/activation.cuh"
#include "../cuda/gelu_bias_grad.cuh"
#include "../../kernels/matmul.cuh"
#include "test_util.h"

struct Tol {
    double atol, rtol;
};

// Tolerances. Operands are unit normals, so a sum of K products (or K values) has typical
// magnitude sqrt(K) even where its value cancels to near 0: the absolute tolerance is relative
// to that scale, sqrt(K).
// fp32 (exact fp32 GEMM: cuBLASLt CUBLAS_COMPUTE_32F, no TF32; the emulation's loop; the bias
//   kernels' fp32 sums): each of the K additions rounds by <= half an ulp of a partial sum of
//   size ~sqrt(K), with random signs: ~sqrt(K) * 2^-24 * sqrt(K) = 6e-8 K in all, <= 1.6e-6
//   sqrt(K) for K <= 700 (the largest GEMM K here; the bias sums, at most 1001 rows, are shorter
//   chains: thread sums of rows, then 8 warps, then the splits). atol 1e-5 sqrt(K), rtol 1e-5.
static Tol tol_fp32(int K) { return {1e-5 * std::sqrt((double)K), 1e-5}; }
// bf16 GEMM: the sum in fp32, rounded once to bf16 (2^-8 = 3.9e-3 relative, x2: rtol 8e-3);
//   cuBLASLt may split K and reduce the partial sums in the output type (bf16), a rounding of
//   2^-8 of a partial sum of size ~sqrt(K): atol 4e-3 * sqrt(K).
static Tol tol_bf16_gemm(int K) { return {4e-3 * std::sqrt((double)K), 8e-3}; }
// bf16 bias gradient: the sums are fp32 (as tol_fp32), then one rounding to bf16: rtol 8e-3.
static Tol tol_bf16_bias(int K) { return {1e-5 * std::sqrt((double)K), 8e-3}; }
// bf16 bias gradient from a GEMM epilogue: the sum g is rounded to bf16 before it is added
//   onto db and the result rounded again: 2^-9 |g| + 2^-9 |db|. |g| is a sum of K unit
//   normals, up to ~4.5 sqrt(K) over the columns tested, and db + g may cancel (the second
//   micro-step): atol 2^-9 * 4.5 sqrt(K) ~ 1e-2 sqrt(K), rtol 8e-3. (A missing accumulation
//   is off by |db| ~ 1 in the first step, ~sqrt(K) in the second.)
static Tol tol_bf16_bias_fused(int K) { return {1e-2 * std::sqrt((double)K), 8e-3}; }
// Values of order 1 (the MLP tests: weights scaled by 1/sqrt(fan-in), so every output is a
//   sum of K terms of size ~1/sqrt(K)): fp32 rounding ~sqrt(K) 2^-24 < 1e-6 for K <= 300, and
//   fp32 tanhf; atol 1e-5, rtol 1e-5. bf16: one rounding of the result (rtol 8e-3) and possibly
//   bf16 partial sums (4e-3 of the order-1 scale): atol 1e-2.
static Tol tol_unit(bool bf16) { return bf16 ? Tol{1e-2, 8e-3} : Tol{1e-5, 1e-5}; }

template <typename T>
static Tol tol_gemm(int K) {
    return sizeof(T) == 2 ? tol_bf16_gemm(K) : tol_fp32(K);
}
template <typename T>
static Tol tol_bias(int K, bool fused) {
    return sizeof(T) == 2 ? (fused ? tol_bf16_bias_fused(K) : tol_bf16_bias(K)) : tol_fp32(K);
}

// GPT-2's GELU (tanh approximation) and its derivative, in double
static double ref_gelu(double x) {
    const double s = std::sqrt(2.0 / M_PI), u = s * (x + 0.044715 * x * x * x);
    return 0.5 * x * (1.0 + std::tanh(u));
}
static double ref_gelu_grad(double x) {
    const double s = std::sqrt(2.0 / M_PI), th = std::tanh(s * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * s * (1.0 + 3.0 * 0.044715 * x * x);
}

static std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// fp64 references. out (N, OC) = inp (N, C) @ W^T + bias
static std::vector<double> ref_forward(const std::vector<float>& inp, const std::vector<float>& W, const std::vector<float>* bias, int N,
                                       int C, int OC) {
    std::vector<double> out((size_t)N * OC);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? (*bias)[o] : 0.0;
            for (int c = 0; c < C; c++) s += (double)inp[(size_t)n * C + c] * W[(size_t)o * C + c];
            out[(size_t)n * OC + o] = s;
        }
    return out;
}
// dinp (N, C) = init + dout (N, OC) @ W (OC, C)
static std::vector<double> ref_dinp(const std::vector<float>& dout, const std::vector<float>& W, const std::vector<float>* init, int N,
                                    int C, int OC) {
    std::vector<double> d((size_t)N * C, 0.0);
    if (init) d = to_double(*init);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int o = 0; o < OC; o++) s += (double)dout[(size_t)n * OC + o] * W[(size_t)o * C + c];
            d[(size_t)n * C + c] += s;
        }
    return d;
}
// dW (OC, C) += dout^T @ inp, in place
static void ref_dW_add(std::vector<double>& dW, const std::vector<float>& dout, const std::vector<float>& inp, int N, int C, int OC) {
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += (double)dout[(size_t)n * OC + o] * inp[(size_t)n * C + c];
            dW[(size_t)o * C + c] += s;
        }
}
// db (OC) += colsum(dout), in place
static void ref_db_add(std::vector<double>& db, const std::vector<float>& dout, int N, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) db[o] += dout[(size_t)n * OC + o];
}

template <typename T>
static void run_linear(Checker& ck, Rng& rng, int N, int C, int OC, BiasGrad bg) {
    const bool fused = bg == BiasGrad::Epilogue;
    printf("%s linear N=%d C=%d OC=%d, bias gradient %s\n", type_name<T>(), N, C, OC,
           fused ? (gemm_force_epilogue_fallback ? "epilogue asked, forced fallback to the kernels" : "in the dW GEMM's epilogue (BGRADB)")
                 : ("kernels, " + std::to_string(colsum_plan(N, OC).nsplit) + " splits").c_str());
    const std::vector<float> inp = round_to<T>(rng.normal((size_t)N * C));
    const std::vector<float> W = round_to<T>(rng.normal((size_t)OC * C));
    const std::vector<float> bias = round_to<T>(rng.normal(OC));
    const std::vector<float> dout = round_to<T>(rng.normal((size_t)N * OC));
    const std::vector<float> dout2 = round_to<T>(rng.normal((size_t)N * OC));
    const std::vector<float> dinp0 = round_to<T>(rng.normal((size_t)N * C));
    const std::vector<float> dW0 = round_to<T>(rng.normal((size_t)OC * C));
    const std::vector<float> db0 = round_to<T>(rng.normal(OC));
    DeviceBuffer<T> d_inp((size_t)N * C), d_W((size_t)OC * C), d_bias(OC), d_out((size_t)N * OC), d_dout((size_t)N * OC),
        d_dout2((size_t)N * OC), d_dinp((size_t)N * C), d_dW((size_t)OC * C), d_db(OC);
    DeviceBuffer<float> d_scratch(bias_grad_scratch_floats(N, OC));
    d_inp.upload(inp);
    d_W.upload(W);
    d_bias.upload(bias);
    d_dout.upload(dout);
    d_dout2.upload(dout2);
    const Tol t_fwd = tol_gemm<T>(C), t_dinp = tol_gemm<T>(OC), t_dW = tol_gemm<T>(N), t_db = tol_bias<T>(N, fused);
    // every linear_backward call below
    auto backward = [&](T* dinp, T* dW, T* db, float* scratch, const T* dout_, bool acc) {
        linear_backward<T>(dinp, dW, db, scratch, dout_, d_inp, d_W, N, C, OC, acc, bg, 0);
    };

    // forward, with and without bias
    d_out.poison();
    linear_forward<T>(d_out, d_inp, d_W, d_bias, N, C, OC, 0);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("fwd out = inp W^T + b", d_out.download(), ref_forward(inp, W, &bias, N, C, OC), t_fwd.atol, t_fwd.rtol);
    d_out.poison();
    linear_forward<T>(d_out, d_inp, d_W, (const T*)nullptr, N, C, OC, 0);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("fwd out = inp W^T (no bias)", d_out.download(), ref_forward(inp, W, nullptr, N, C, OC), t_fwd.atol, t_fwd.rtol);

    std::vector<double> dW_ref = to_double(dW0), db_ref = to_double(db0);
    ref_dW_add(dW_ref, dout, inp, N, C, OC);
    ref_db_add(db_ref, dout, N, OC);

    // backward, dinp overwritten (twice: the bias gradient must be bitwise identical)
    std::vector<unsigned char> first_db;
    for (int rep = 0; rep < 2; rep++) {
        d_dinp.poison();
        d_scratch.poison();
        d_dW.upload(dW0);
        d_db.upload(db0);
        backward(d_dinp, d_dW, d_db, d_scratch, d_dout, false);
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 0) {
            ck.check("bwd dinp = dout W", d_dinp.download(), ref_dinp(dout, W, nullptr, N, C, OC), t_dinp.atol, t_dinp.rtol);
            ck.check("bwd dW += dout^T inp", d_dW.download(), dW_ref, t_dW.atol, t_dW.rtol);
            ck.check("bwd db += colsum(dout)", d_db.download(), db_ref, t_db.atol, t_db.rtol);
            first_db = d_db.bytes();
        } else {
            ck.check_equal_bytes("bwd rerun db", first_db, d_db.bytes());
        }
    }

    // backward, dinp accumulated onto a residual gradient (dinp0); then a second micro-step
    // (dout2, dinp null): dW and db hold the sums of both steps
    d_dinp.upload(dinp0);
    d_scratch.poison();
    d_dW.upload(dW0);
    d_db.upload(db0);
    backward(d_dinp, d_dW, d_db, d_scratch, d_dout, true);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("bwd dinp += dout W (accumulate_dinp)", d_dinp.download(), ref_dinp(dout, W, &dinp0, N, C, OC), t_dinp.atol, t_dinp.rtol);
    const std::vector<float> dW_step1 = d_dW.download(), db_step1 = d_db.download();
    ck.check("bwd (accumulate_dinp) dW += dout^T inp", dW_step1, dW_ref, t_dW.atol, t_dW.rtol);
    ck.check_equal_bytes("bwd (accumulate_dinp) db == first run", first_db, d_db.bytes());
    // the second step adds onto what the device holds after the first (in bf16 that is
    // rounded, and the reference must start from the same value)
    d_scratch.poison();
    backward((T*)nullptr, d_dW, d_db, d_scratch, d_dout2, false);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<double> dW_ref2 = to_double(dW_step1), db_ref2 = to_double(db_step1);
    ref_dW_add(dW_ref2, dout2, inp, N, C, OC);
    ref_db_add(db_ref2, dout2, N, OC);
    ck.check("bwd 2nd micro-step dW += (dinp null)", d_dW.download(), dW_ref2, t_dW.atol, t_dW.rtol);
    ck.check("bwd 2nd micro-step db += (dinp null)", d_db.download(), db_ref2, t_db.atol, t_db.rtol);

    // backward without bias (lm_head) and without dinp: db and the dinp buffer keep their bits
    d_dinp.poison();
    const std::vector<unsigned char> dinp_before = d_dinp.bytes();
    d_scratch.poison();
    d_dW.upload(dW0);
    d_db.upload(db0);
    backward((T*)nullptr, d_dW, (T*)nullptr, d_scratch, d_dout, false);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("bwd no bias, no dinp: dW += dout^T inp", d_dW.download(), dW_ref, t_dW.atol, t_dW.rtol);
    ck.check("bwd no bias: db untouched", d_db.download(), to_double(db0), 0, 0);
    ck.check_equal_bytes("bwd no dinp: dinp buffer untouched", dinp_before, d_dinp.bytes());
}

// GPT-2's MLP through the fused forms: fc (C -> F) with GELU, proj (F -> C) backward through
// the GELU. F % 8 == 0 (the aux leading dimension; the trainer pads F to a multiple of 64).
template <typename T>
static void run_mlp(Checker& ck, Rng& rng, int N, int C, int F) {
    printf("%s fused MLP N=%d C=%d F=%d (GELU_AUX_BIAS forward, DGELU_BGRAD + BGRADB backward%s)\n", type_name<T>(), N, C, F,
           gemm_force_epilogue_fallback ? "; forced fallback: no epilogue algorithm, the unfused paths" : "");
    const bool bf16 = sizeof(T) == 2;
    auto scaled = [&](size_t n, int fan_in) { return round_to<T>(rng.normal(n, 0.0f, 1.0f / std::sqrt((float)fan_in))); };
    const std::vector<float> inp = round_to<T>(rng.normal((size_t)N * C));
    const std::vector<float> Wfc = scaled((size_t)F * C, C), bfc = round_to<T>(rng.normal(F));
    const std::vector<float> Wp = scaled((size_t)C * F, F);
    const std::vector<float> dout = round_to<T>(rng.normal((size_t)N * C)), dout2 = round_to<T>(rng.normal((size_t)N * C));
    const std::vector<float> dbfc0 = round_to<T>(rng.normal(F)), dWp0 = round_to<T>(rng.normal((size_t)C * F)),
                             dbp0 = round_to<T>(rng.normal(C));
    DeviceBuffer<T> d_inp((size_t)N * C), d_Wfc((size_t)F * C), d_bfc(F), d_pre((size_t)N * F), d_act((size_t)N * F), d_Wp((size_t)C * F),
        d_dout((size_t)N * C), d_dout2((size_t)N * C), d_dpre((size_t)N * F), d_dbfc(F), d_dWp((size_t)C * F), d_dbp(C);
    DeviceBuffer<float> d_scratch(bias_grad_scratch_floats(N, std::max(C, F)));
    d_inp.upload(inp);
    d_Wfc.upload(Wfc);
    d_bfc.upload(bfc);
    d_Wp.upload(Wp);
    d_dout.upload(dout);
    d_dout2.upload(dout2);
    const Tol t_unit = tol_unit(bf16), t_dW = tol_gemm<T>(N), t_db = tol_bias<T>(N, true);

    // forward: pre = inp Wfc^T + bfc (the aux output), act = GELU(pre)
    d_pre.poison();
    d_act.poison();
    linear_gelu_forward<T>(d_act, d_pre, d_inp, d_Wfc, d_bfc, N, C, F, 0);
    cudaCheck(cudaDeviceSynchronize());
    const std::vector<double> pre_ref = ref_forward(inp, Wfc, &bfc, N, C, F);
    std::vector<double> act_ref(pre_ref.size());
    for (size_t i = 0; i < pre_ref.size(); i++) act_ref[i] = ref_gelu(pre_ref[i]);
    ck.check("fwd pre = inp Wfc^T + b (aux)", d_pre.download(), pre_ref, t_unit.atol, t_unit.rtol);
    const std::vector<float> act_dev = d_act.download();
    ck.check("fwd act = GELU(inp Wfc^T + b)", act_dev, act_ref, t_unit.atol, t_unit.rtol);
    if (!bf16) {   // which GELU: the tanh form and the erf form differ by up to 4.7e-4
        double d_tanh = 0, d_erf = 0;
        for (size_t i = 0; i < act_ref.size(); i++) {
            const double x = pre_ref[i], erf_form = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
            d_tanh = std::max(d_tanh, std::fabs(act_dev[i] - act_ref[i]));
            d_erf = std::max(d_erf, std::fabs(act_dev[i] - erf_form));
        }
        printf("    (GELU form: max |act - tanh form| %.2e, max |act - erf form| %.2e)\n", d_tanh, d_erf);
    }

    // backward from what the device holds (pre, act), twice (bitwise reruns), then a second
    // micro-step onto the first one's gradients
    const std::vector<float> pre = d_pre.download(), act = d_act.download();
    auto refs = [&](const std::vector<float>& dy, const std::vector<float>& dbfc, const std::vector<float>& dWp, const std::vector<float>& dbp,
                    std::vector<double>& dpre_r, std::vector<double>& dbfc_r, std::vector<double>& dWp_r, std::vector<double>& dbp_r) {
        dpre_r = ref_dinp(dy, Wp, nullptr, N, F, C);   // dact = dout @ Wp, (N, F)
        for (size_t i = 0; i < dpre_r.size(); i++) dpre_r[i] *= ref_gelu_grad(pre[i]);
        dbfc_r = to_double(dbfc);
        for (int n = 0; n < N; n++)
            for (int f = 0; f < F; f++) dbfc_r[f] += dpre_r[(size_t)n * F + f];
        dWp_r = to_double(dWp);
        ref_dW_add(dWp_r, dy, act, N, F, C);
        dbp_r = to_double(dbp);
        ref_db_add(dbp_r, dy, N, C);
    };
    std::vector<double> dpre_r, dbfc_r, dWp_r, dbp_r;
    refs(dout, dbfc0, dWp0, dbp0, dpre_r, dbfc_r, dWp_r, dbp_r);
    std::vector<unsigned char> first_dpre, first_dbfc, first_dbp;
    for (int rep = 0; rep < 2; rep++) {
        d_dpre.poison();
        d_scratch.poison();
        d_dbfc.upload(dbfc0);
        d_dWp.upload(dWp0);
        d_dbp.upload(dbp0);
        linear_dgelu_backward<T>(d_dpre, d_dbfc, d_dWp, d_dbp, d_scratch, d_dout, d_act, d_pre, d_Wp, N, F, C, 0);
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 0) {
            ck.check("bwd dpre = (dout Wp) * GELU'(pre)", d_dpre.download(), dpre_r, t_unit.atol, t_unit.rtol);
            ck.check("bwd db_pre += colsum(dpre)", d_dbfc.download(), dbfc_r, t_db.atol, t_db.rtol);
            ck.check("bwd dWp += dout^T act", d_dWp.download(), dWp_r, t_dW.atol, t_dW.rtol);
            ck.check("bwd dbp += colsum(dout)", d_dbp.download(), dbp_r, t_db.atol, t_db.rtol);
            first_dpre = d_dpre.bytes();
            first_dbfc = d_dbfc.bytes();
            first_dbp = d_dbp.bytes();
        } else {
            ck.check_equal_bytes("bwd rerun dpre", first_dpre, d_dpre.bytes());
            ck.check_equal_bytes("bwd rerun db_pre", first_dbfc, d_dbfc.bytes());
            ck.check_equal_bytes("bwd rerun dbp", first_dbp, d_dbp.bytes());
        }
    }
    const std::vector<float> dbfc1 = d_dbfc.download(), dWp1 = d_dWp.download(), dbp1 = d_dbp.download();
    refs(dout2, dbfc1, dWp1, dbp1, dpre_r, dbfc_r, dWp_r, dbp_r);
    d_dpre.poison();
    d_scratch.poison();
    linear_dgelu_backward<T>(d_dpre, d_dbfc, d_dWp, d_dbp, d_scratch, d_dout2, d_act, d_pre, d_Wp, N, F, C, 0);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("bwd 2nd micro-step dpre", d_dpre.download(), dpre_r, t_unit.atol, t_unit.rtol);
    ck.check("bwd 2nd micro-step db_pre +=", d_dbfc.download(), dbfc_r, t_db.atol, t_db.rtol);
    ck.check("bwd 2nd micro-step dWp +=", d_dWp.download(), dWp_r, t_dW.atol, t_dW.rtol);
    ck.check("bwd 2nd micro-step dbp +=", d_dbp.download(), dbp_r, t_db.atol, t_db.rtol);
}

// bias_backward alone. target_blocks: the plan's colsum_target_blocks (lowered: fewer splits
// of more rows). Runs: dout aligned (the 16-byte path when OC % VEC == 0), rerun, dout
// misaligned by one element (the scalar path: bitwise equal), a second call accumulating.
template <typename T>
static void run_bias(Checker& ck, Rng& rng, int N, int OC, int target_blocks = COLSUM_TARGET_BLOCKS) {
    constexpr int VEC = 16 / sizeof(T);
    colsum_target_blocks = target_blocks;
    const ColsumPlan plan = colsum_plan(N, OC);
    const bool vec = OC % VEC == 0;
    printf("%s bias_backward N=%d OC=%d: %d splits of %d rows (the last %d), %s path, %d column blocks%s\n", type_name<T>(), N, OC,
           plan.nsplit, plan.rows_per_split, N - (plan.nsplit - 1) * plan.rows_per_split, vec ? "16-byte" : "scalar",
           ceil_div(OC, 32 * (vec ? VEC : 1)), target_blocks != COLSUM_TARGET_BLOCKS ? " (target blocks lowered)" : "");
    const std::vector<float> dout = round_to<T>(rng.normal((size_t)N * OC));
    const std::vector<float> db0 = round_to<T>(rng.normal(OC));
    GuardedOperand<T> d_dout((size_t)N * OC, 0), d_dout_mis((size_t)N * OC, 1);   // 16-byte aligned; one element off
    DeviceBuffer<T> d_db(OC);
    DeviceBuffer<float> d_scratch(bias_grad_scratch_floats(N, OC));
    d_dout.upload(dout);
    d_dout_mis.upload(dout);
    std::vector<double> db_ref = to_double(db0);
    ref_db_add(db_ref, dout, N, OC);
    const Tol t = tol_bias<T>(N, false);
    auto call = [&](const T* x) {
        d_scratch.poison();
        bias_backward<T>(d_db, d_scratch, x, N, OC, 0);
        cudaCheck(cudaDeviceSynchronize());
    };
    d_db.upload(db0);
    call(d_dout.ptr());
    ck.check("db += colsum(dout)", d_db.download(), db_ref, t.atol, t.rtol);
    const std::vector<unsigned char> first = d_db.bytes();
    d_db.upload(db0);
    call(d_dout.ptr());
    ck.check_equal_bytes("rerun db", first, d_db.bytes());
    d_db.upload(db0);
    call(d_dout_mis.ptr());
    ck.check_equal_bytes("dout misaligned (scalar path) db", first, d_db.bytes());
    // a second call adds again (gradient accumulation) onto what db holds now
    std::vector<double> db_ref2 = to_double(d_db.download());
    ref_db_add(db_ref2, dout, N, OC);
    call(d_dout.ptr());
    ck.check("second call: db += colsum(dout) again", d_db.download(), db_ref2, t.atol, t.rtol);
    colsum_target_blocks = COLSUM_TARGET_BLOCKS;
}

// host only: the plan's partial sums fit bias_grad_scratch_floats, which never decreases with
// N or OC (the trainer allocates it once for its widest layer and largest N)
static void check_bias_scratch_bound(Checker& ck) {
    size_t bad = 0, cases = 0;
    for (int target : {COLSUM_TARGET_BLOCKS, 3, 1000})
        for (int N : {1, 63, 64, 65, 700, 4096, 16384, 16385, 65536, 1 << 20}) {
            colsum_target_blocks = target;
            size_t prev = 0;
            for (int OC = 1; OC <= 4200; OC++) {
                const ColsumPlan p = colsum_plan(N, OC);
                const size_t sz = bias_grad_scratch_floats(N, OC);
                cases++;
                const bool ok = (size_t)p.nsplit * OC <= sz && sz >= prev && sz >= (size_t)OC && p.nsplit >= 1 &&
                                (size_t)(p.nsplit - 1) * p.rows_per_split < (size_t)N && (size_t)p.nsplit * p.rows_per_split >= (size_t)N &&
                                (N < 2 || sz >= bias_grad_scratch_floats(N - 1, OC));
                if (!ok && bad++ < 5) printf("    scratch bound fails: target %d N %d OC %d: nsplit %d, %zu floats\n", target, N, OC, p.nsplit, sz);
                prev = sz;
            }
        }
    colsum_target_blocks = COLSUM_TARGET_BLOCKS;
    ck.checked++;
    if (bad) ck.failed++;
    printf("  %-44s %zu of %zu (N, OC) %s\n", "bias plan within scratch, scratch monotone", cases - bad, cases, bad ? "MISMATCH" : "ok");
}

// --bench: gpt2-124m's shapes, N = 16384 rows, bf16. cudaEvents around `reps` calls after two
// warm-up calls; microseconds per call.
#if !defined(CUDA_EMU)
static void bench_bias() {
    using T = __nv_bfloat16;
    const int N = 16384, Cmax = 3072, OCmax = 3072;
    Rng rng(1);
    DeviceBuffer<T> d_dout((size_t)N * OCmax), d_inp((size_t)N * Cmax), d_dW((size_t)OCmax * Cmax), d_db(OCmax), d_pre((size_t)N * OCmax),
        d_dpre((size_t)N * OCmax);
    d_dout.upload(rng.normal((size_t)N * OCmax));
    d_inp.upload(rng.normal((size_t)N * Cmax));
    d_pre.upload(rng.normal((size_t)N * OCmax));
    d_dW.upload(std::vector<float>((size_t)OCmax * Cmax, 0.0f));
    d_db.upload(std::vector<float>(OCmax, 0.0f));
    DeviceBuffer<float> d_scratch(bias_grad_scratch_floats(N, OCmax) * 8);   // room for the sweep's larger targets
    const double bytes_dout = 2.0 * N;   // per column
    // bias_backward alone, the default plan and a sweep of the target block count
    for (int OC : {768, 2304, 3072}) {
        for (int target : {COLSUM_TARGET_BLOCKS, 132, 264, 1056, 2112}) {
            colsum_target_blocks = target;
            if (bias_grad_scratch_floats(N, OC) > d_scratch.n) continue;
            const ColsumPlan p = colsum_plan(N, OC);
            const double us = gpu_time_us([&] { bias_backward<T>(d_db, d_scratch, d_dout, N, OC, 0); });
            printf("bias bench kernel   N=%d OC=%d: %8.2f us %7.0f GB/s (target_blocks %d: %d splits of %d rows)%s\n", N, OC, us,
                   bytes_dout * OC / us / 1e3, target, p.nsplit, p.rows_per_split, target == COLSUM_TARGET_BLOCKS ? " default" : "");
        }
        colsum_target_blocks = COLSUM_TARGET_BLOCKS;
    }
    // cuBLASLt: the dW GEMM with the BGRADB epilogue (+ the add onto db) against the plain dW
    // GEMM, for the layers' (C, OC): qkv, attn proj, fc, mlp proj
    const int shapes[][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}};
    for (const auto& sh : shapes) {
        const int C = sh[0], OC = sh[1];
        const double plain = gpu_time_us([&] { weight_bias_backward<T>(d_dW, (T*)nullptr, d_scratch, d_dout, d_inp, N, C, OC, BiasGrad::Kernel, 0); });
        const double epi = gpu_time_us([&] { weight_bias_backward<T>(d_dW, d_db, d_scratch, d_dout, d_inp, N, C, OC, BiasGrad::Epilogue, 0); });
        const double ker = gpu_time_us([&] { weight_bias_backward<T>(d_dW, d_db, d_scratch, d_dout, d_inp, N, C, OC, BiasGrad::Kernel, 0); });
        printf("bias bench epilogue N=%d C=%d OC=%d: dW GEMM %8.2f us, + BGRADB %8.2f us (bias %7.2f us %6.0f GB/s), + kernel %8.2f us "
               "(bias %7.2f us)\n",
               N, C, OC, plain, epi, epi - plain, bytes_dout * OC / (epi - plain) / 1e3, ker, ker - plain);
    }
    // GELU backward alone (reads pre, dact, writes dpre) against it with the fc bias gradient
    const int F = 3072;
    const double bytes_gelu = 3.0 * 2.0 * N * F;
    const double g = gpu_time_us([&] { gelu_backward<T>(d_dpre, d_pre, d_dout, (size_t)N * F, 0); });
    const double gb = gpu_time_us([&] { gelu_backward_bias<T>(d_dpre, d_db, d_scratch, d_pre, d_dout, N, F, 0); });
    const double b = gpu_time_us([&] { bias_backward<T>(d_db, d_scratch, d_dpre, N, F, 0); });
    printf("bias bench gelu     N=%d F=%d: gelu_backward %8.2f us %6.0f GB/s; gelu_backward_bias %8.2f us %6.0f GB/s "
           "(+%.2f us; gelu_backward + bias_backward %.2f us)\n",
           N, F, g, bytes_gelu / g / 1e3, gb, bytes_gelu / gb / 1e3, gb - g, g + b);
}
#endif

int main(int argc, char** argv) {
    skip_without_device("test_matmul");
    if (argc > 1 && std::string(argv[1]) == "--bench") {
#if defined(CUDA_EMU)
        printf("test_matmul --bench: needs a GPU (emulated build)\n");
#else
        gemm_init();
        bench_bias();
        gemm_shutdown();
#endif
        return 0;
    }
    Rng rng(test_seed());
    Checker ck;
    gemm_init();
    // (N, C, OC): one bias split / OC not a multiple of 32; 2 splits; 3 uneven splits with
    // OC < 32; OC a multiple of 32 and of both vector widths; one row
    const int linear_cases[][3] = {{37, 40, 100}, {300, 24, 72}, {700, 16, 33}, {256, 32, 64}, {1, 8, 5}};
    auto t0 = std::chrono::steady_clock::now();
    for (const auto& c : linear_cases)
        for (BiasGrad bg : {BiasGrad::Kernel, BiasGrad::Epilogue}) {
            run_linear<float>(ck, rng, c[0], c[1], c[2], bg);
            run_linear<__nv_bfloat16>(ck, rng, c[0], c[1], c[2], bg);
        }
    // (N, C, F), F % 8 == 0: one row; F not a multiple of 64 (the trainer's padding) nor of
    // the block sizes; more rows than the bias kernels' split
    const int mlp_cases[][3] = {{1, 8, 16}, {37, 24, 40}, {300, 32, 128}};
    for (const auto& c : mlp_cases) {
        run_mlp<float>(ck, rng, c[0], c[1], c[2]);
        run_mlp<__nv_bfloat16>(ck, rng, c[0], c[1], c[2]);
    }
    // the paths taken where cuBLASLt has no algorithm for a fused epilogue at a shape (odd
    // sizes; cublas_wrap.cuh returns false and matmul.cuh falls back to the GEMM + kernels):
    // the same references, forced through the hook
    gemm_force_epilogue_fallback = true;
    run_linear<float>(ck, rng, 37, 40, 100, BiasGrad::Epilogue);
    run_linear<__nv_bfloat16>(ck, rng, 700, 16, 33, BiasGrad::Epilogue);
    for (const auto& c : {mlp_cases[1], mlp_cases[2]}) {
        run_mlp<float>(ck, rng, c[0], c[1], c[2]);
        run_mlp<__nv_bfloat16>(ck, rng, c[0], c[1], c[2]);
    }
    gemm_force_epilogue_fallback = false;
    check_bias_scratch_bound(ck);
    // (N, OC, target blocks) with COLSUM_MIN_ROWS 64, VEC 8 (bf16) / 4 (fp32):
    //   1 row, scalar (OC 7) and 16-byte (256: one full warp of bf16 columns); one split; 4
    //   splits of 58 rows, the last 56 (OC 48 < 32 * VEC, both types 16-byte); 3 splits of 44,
    //   the last 42 (warps of 6 and 5 rows: the 4-row unrolled loop and the remainder; OC 100:
    //   fp32 16-byte, bf16 scalar); OC 264 over 2 (bf16) / 3 (fp32) column blocks, the last
    //   partial (one split); OC 31 (scalar), 3 splits of 47, the last 46; target lowered: 3
    //   splits of 334 rows (the last 332) and, over 2-3 column blocks, 2 splits of 301 (the last 300)
    const int bias_cases[][3] = {{1, 7, COLSUM_TARGET_BLOCKS},   {1, 256, COLSUM_TARGET_BLOCKS}, {40, 64, COLSUM_TARGET_BLOCKS},
                                 {230, 48, COLSUM_TARGET_BLOCKS}, {130, 100, COLSUM_TARGET_BLOCKS}, {40, 264, COLSUM_TARGET_BLOCKS},
                                 {140, 31, COLSUM_TARGET_BLOCKS}, {1000, 64, 3},                  {601, 264, 4}};
    for (const auto& c : bias_cases) {
        run_bias<float>(ck, rng, c[0], c[1], c[2]);
        run_bias<__nv_bfloat16>(ck, rng, c[0], c[1], c[2]);
    }
    gemm_shutdown();
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_matmul");
}
