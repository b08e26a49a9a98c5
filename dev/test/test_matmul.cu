// test_matmul.cu - kernels/matmul.cuh (the linear layer on the GEMM wrapper, and the
// deterministic bias gradient) against double-precision CPU references, storage fp32 and bf16,
// called as train_gpt.cu calls it (inp (N, C), weight (OC, C), out (N, OC)):
//   linear_forward   out = inp @ W^T + b, and without bias (lm_head); out poisoned first
//   linear_backward  dinp = dout @ W (poisoned first), or += onto a residual gradient
//                    (accumulate_dinp); dW += dout^T inp and db += colsum(dout) onto random
//                    initial gradients; two calls (two micro-steps) add both; dinp = null
//                    (skipped: its buffer keeps its bits) and db = null (lm_head: db untouched)
//   bias_backward    alone, for N of one row, one split (N <= BIAS_ROWS_PER_SPLIT), several
//                    splits with an uneven last one, and (fp32) N beyond BIAS_MAX_SPLITS splits
//                    of BIAS_ROWS_PER_SPLIT rows (more rows per split); OC not a multiple of 32
//                    (a partial column block) and OC < 32. Scratch poisoned, exactly
//                    bias_grad_scratch_floats(N, OC) floats (AddressSanitizer sees overruns).
// The bias gradient must be bitwise identical when rerun.
// Inputs are fresh random numbers each run (seed printed; SEED=... replays). Exit status
// non-zero on any mismatch.
// Build: emulated (g++/clang++ -DCUDA_EMU, see dev/test/kernels.mk) or nvcc (real GPU,
// cuBLASLt).
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
//   sqrt(K) for K <= 700 (the largest GEMM K here). The 65636-row bias sum is reduced in a tree
//   (thread sums of <= 33 rows, 8 per block, then 256 splits in order); its last level
//   dominates, ~sqrt(256) * 2^-24 * 256 = 2.4e-4 = 1e-6 sqrt(K). atol 1e-5 sqrt(K), rtol 1e-5.
static Tol tol_fp32(int K) { return {1e-5 * std::sqrt((double)K), 1e-5}; }
// bf16 GEMM: the sum in fp32, rounded once to bf16 (2^-8 = 3.9e-3 relative, x2: rtol 8e-3);
//   cuBLASLt may split K and reduce the partial sums in the output type (bf16), a rounding of
//   2^-8 of a partial sum of size ~sqrt(K): atol 4e-3 * sqrt(K).
static Tol tol_bf16_gemm(int K) { return {4e-3 * std::sqrt((double)K), 8e-3}; }
// bf16 bias gradient: the sums are fp32 (as tol_fp32), then one rounding to bf16: rtol 8e-3.
static Tol tol_bf16_bias(int K) { return {1e-5 * std::sqrt((double)K), 8e-3}; }

template <typename T>
static Tol tol_gemm(int K) {
    return sizeof(T) == 2 ? tol_bf16_gemm(K) : tol_fp32(K);
}
template <typename T>
static Tol tol_bias(int K) {
    return sizeof(T) == 2 ? tol_bf16_bias(K) : tol_fp32(K);
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
static void run_linear(Checker& ck, Rng& rng, int N, int C, int OC) {
    printf("%s linear N=%d C=%d OC=%d (bias splits %d)\n", type_name<T>(), N, C, OC, bias_grad_splits(N));
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
    const Tol t_fwd = tol_gemm<T>(C), t_dinp = tol_gemm<T>(OC), t_dW = tol_gemm<T>(N), t_db = tol_bias<T>(N);

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
        linear_backward<T>(d_dinp, d_dW, d_db, d_scratch, d_dout, d_inp, d_W, N, C, OC, false, 0);
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
    linear_backward<T>(d_dinp, d_dW, d_db, d_scratch, d_dout, d_inp, d_W, N, C, OC, true, 0);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("bwd dinp += dout W (accumulate_dinp)", d_dinp.download(), ref_dinp(dout, W, &dinp0, N, C, OC), t_dinp.atol, t_dinp.rtol);
    const std::vector<float> dW_step1 = d_dW.download(), db_step1 = d_db.download();
    ck.check("bwd (accumulate_dinp) dW += dout^T inp", dW_step1, dW_ref, t_dW.atol, t_dW.rtol);
    ck.check_equal_bytes("bwd (accumulate_dinp) db == first run", first_db, d_db.bytes());
    // the second step adds onto what the device holds after the first (in bf16 that is
    // rounded, and the reference must start from the same value)
    d_scratch.poison();
    linear_backward<T>((T*)nullptr, d_dW, d_db, d_scratch, d_dout2, d_inp, d_W, N, C, OC, false, 0);
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
    linear_backward<T>((T*)nullptr, d_dW, (T*)nullptr, d_scratch, d_dout, d_inp, d_W, N, C, OC, false, 0);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("bwd no bias, no dinp: dW += dout^T inp", d_dW.download(), dW_ref, t_dW.atol, t_dW.rtol);
    ck.check("bwd no bias: db untouched", d_db.download(), to_double(db0), 0, 0);
    ck.check_equal_bytes("bwd no dinp: dinp buffer untouched", dinp_before, d_dinp.bytes());
}

template <typename T>
static void run_bias(Checker& ck, Rng& rng, int N, int OC, bool second_call = true) {
    const int nsplit = bias_grad_splits(N);
    printf("%s bias_backward N=%d OC=%d (%d splits of %d rows, %d column blocks)\n", type_name<T>(), N, OC, nsplit, ceil_div(N, nsplit),
           ceil_div(OC, BIAS_BX));
    const std::vector<float> dout = round_to<T>(rng.normal((size_t)N * OC));
    const std::vector<float> db0 = round_to<T>(rng.normal(OC));
    DeviceBuffer<T> d_dout((size_t)N * OC), d_db(OC);
    DeviceBuffer<float> d_scratch(bias_grad_scratch_floats(N, OC));
    d_dout.upload(dout);
    std::vector<double> db_ref = to_double(db0);
    ref_db_add(db_ref, dout, N, OC);
    const Tol t = tol_bias<T>(N);
    std::vector<unsigned char> first;
    for (int rep = 0; rep < 2; rep++) {
        d_scratch.poison();
        d_db.upload(db0);
        bias_backward<T>(d_db, d_scratch, d_dout, N, OC, 0);
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 0) {
            ck.check("db += colsum(dout)", d_db.download(), db_ref, t.atol, t.rtol);
            first = d_db.bytes();
        } else {
            ck.check_equal_bytes("rerun db", first, d_db.bytes());
        }
    }
    if (!second_call) return;
    // a second call adds again (gradient accumulation) onto what db holds now
    std::vector<double> db_ref2 = to_double(d_db.download());
    ref_db_add(db_ref2, dout, N, OC);
    d_scratch.poison();
    bias_backward<T>(d_db, d_scratch, d_dout, N, OC, 0);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("second call: db += colsum(dout) again", d_db.download(), db_ref2, t.atol, t.rtol);
}

int main() {
    skip_without_device("test_matmul");
    Rng rng(test_seed());
    Checker ck;
    gemm_init();
    // (N, C, OC): one bias split / OC not a multiple of 32; 2 splits; 3 uneven splits with
    // OC < 32; OC a multiple of 32 with N = BIAS_ROWS_PER_SPLIT exactly (one full split)
    const int linear_cases[][3] = {{37, 40, 100}, {300, 24, 72}, {700, 16, 33}, {256, 32, 64}, {1, 8, 5}};
    // (N, OC): 1 row; one split; 2 splits; 3 uneven splits
    const int bias_cases[][2] = {{1, 7}, {200, 45}, {257, 100}, {700, 31}};
    auto t0 = std::chrono::steady_clock::now();
    for (const auto& c : linear_cases) {
        run_linear<float>(ck, rng, c[0], c[1], c[2]);
        run_linear<__nv_bfloat16>(ck, rng, c[0], c[1], c[2]);
    }
    for (const auto& c : bias_cases) {
        run_bias<float>(ck, rng, c[0], c[1]);
        run_bias<__nv_bfloat16>(ck, rng, c[0], c[1]);
    }
    // more rows than BIAS_MAX_SPLITS full splits: 256 splits of 257 rows, the last shorter
    // (fp32 only, one column block, no second call: 256 blocks of 256 threads per call are
    // what the emulation spends its time on; the split logic does not depend on the type)
    run_bias<float>(ck, rng, BIAS_MAX_SPLITS * BIAS_ROWS_PER_SPLIT + 100, 20, false);
    gemm_shutdown();
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_matmul");
}
