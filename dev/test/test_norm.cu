// test_norm.cu - kernels/norm.cuh against an fp64 CPU reference.
// For every size (odd ones included: N not a multiple of the 8 warps per block, C not a
// multiple of the 4/8-wide vectors, C < 32), storage fp32 and bf16, LayerNorm and RMSNorm:
//   Pre-LN forward (also in place), Post-LN forward, plain forward,
//   Pre-LN backward (also in place with at most 3 blocks: several rows per warp, an uneven
//   last block), Post-LN backward; weight/bias gradients accumulate onto random initial
//   values, and the backward runs twice: the results must be bitwise equal.
// The sizes reach both backward row kernels in both storage types: the register kernel with
// J = 1, 2, 3, 4 vectors per lane (also with a partial last vector column, nvec % 32 != 0,
// and on the scalar path) and the general kernel (J > 4); main() checks that they all ran.
// Inputs are fresh random numbers each run (seed printed; SEED=... replays), every output is
// poisoned (NaN) before each launch. Exit status non-zero on any mismatch.
// --bench (GPU only): times the backward row kernels at gpt2-124m's shape (bf16 LayerNorm,
// N 16384, C 768, with dres) for the register and the general kernel, and llama-1b's
// RMSNorm (N 8192, C 2048: the general kernel).
// Build: emulated (g++/clang++ -DCUDA_EMU, see dev/test/kernels.mk) or nvcc (real GPU).
#include "../../kernels/norm.cuh"
#include "test_util.h"

struct Tol {
    double atol, rtol;
};

enum Types { BOTH, FP32_ONLY, BF16_ONLY };
struct Case {
    int N, C;
    bool general_too = false;  // also the Pre-LN backward with the general kernel forced
    // backward cases (Pre-LN only: its rerun and in-place variants): of the forwards only the
    // Post-LN one, which gives the backward its input, in the storage types listed
    bool bwd_only = false;
    Types types = BOTH;
};

// fp64 reference forward on x (already rounded to storage), one row at a time
static void ref_forward(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b, int N, int C, double eps,
                        bool rms, std::vector<double>& y, std::vector<double>& mean, std::vector<double>& rstd) {
    y.assign((size_t)N * C, 0.0);
    mean.assign(N, 0.0);
    rstd.assign(N, 0.0);
    for (int r = 0; r < N; r++) {
        const float* xr = &x[(size_t)r * C];
        double m = 0, v = 0;
        if (rms) {
            for (int c = 0; c < C; c++) v += (double)xr[c] * xr[c];
            v /= C;
        } else {
            for (int c = 0; c < C; c++) m += xr[c];
            m /= C;
            for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
            v /= C;
        }
        double s = 1.0 / std::sqrt(v + eps);
        mean[r] = m;
        rstd[r] = s;
        for (int c = 0; c < C; c++) y[(size_t)r * C + c] = (xr[c] - m) * s * w[c] + (rms ? 0.0 : b[c]);
    }
}

// fp64 reference backward: dx = N'(dy) + dres; dw, db = init + sums over rows
static void ref_backward(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& dy,
                         const std::vector<float>* dres, const std::vector<double>& mean, const std::vector<double>& rstd, int N, int C,
                         bool rms, const std::vector<float>& dw0, const std::vector<float>& db0, std::vector<double>& dx,
                         std::vector<double>& dw, std::vector<double>& db) {
    dx.assign((size_t)N * C, 0.0);
    dw.assign(dw0.begin(), dw0.end());
    db.assign(db0.begin(), db0.end());
    for (int r = 0; r < N; r++) {
        const size_t o = (size_t)r * C;
        double m = rms ? 0.0 : mean[r], s = rstd[r], sg = 0, sgx = 0;
        for (int c = 0; c < C; c++) {
            double g = (double)dy[o + c] * w[c], xh = (x[o + c] - m) * s;
            sg += g;
            sgx += g * xh;
            dw[c] += dy[o + c] * xh;
            db[c] += dy[o + c];
        }
        sg /= C;
        sgx /= C;
        for (int c = 0; c < C; c++) {
            double g = (double)dy[o + c] * w[c], xh = (x[o + c] - m) * s;
            dx[o + c] = s * (g - (rms ? 0.0 : sg) - xh * sgx) + (dres ? (*dres)[o + c] : 0.0f);
        }
    }
}

static std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// the backward row kernel that norm_backward picks for C channels of T (the test's buffers
// are all 16-byte aligned): J = 1..4, the register kernel; 0, the general kernel
template <typename T>
static int bwd_kernel_J(int C) {
    constexpr int V = norm_detail::vec_width<T>();
    return norm_detail::norm_backward_regs_vectors(C % V == 0 ? C / V : C);
}

template <typename T>
static void run_case(Checker& ck, Rng& rng, const Case& cs, NormType type, bool covered[2][5]) {
    const int N = cs.N, C = cs.C;
    const bool rms = type == NormType::RMSNorm;
    const float eps = rms ? 1e-6f : 1e-5f;
    const size_t NC = (size_t)N * C;
    const bool bf16 = sizeof(T) == 2;
    // tolerances: values stored in T (rounding 2^-9 relative in bf16) computed in fp32
    const Tol t_val = bf16 ? Tol{2e-2, 1e-2} : Tol{1e-5, 1e-5};  // normed, dx
    const Tol t_res = bf16 ? Tol{0, 4e-3} : Tol{1e-6, 1e-6};     // residual = a + b (same rounding as the reference)
    const Tol t_stat = {1e-5, 1e-4};                             // fp32 mean / rstd
    // weight / bias gradients sum N products of unit size: partial sums grow to ~sqrt(N), and
    // each of up to N fp32 additions rounds by half an ulp of one (random signs: ~6e-8 N in
    // all; the 3-block variant below sums ~N/3 rows per block in order). atol 5e-5 + 1e-7 N:
    // 5.6e-5 at N = 64, 4.6e-4 at --big's N = 4096 (where 2.3e-4 is seen).
    const Tol t_wgrad = bf16 ? Tol{5e-2, 1e-2} : Tol{5e-5 + 1e-7 * N, 5e-5};
    const int J = bwd_kernel_J<T>(C);
    covered[bf16][J] = true;
    char tag[128];
    snprintf(tag, sizeof tag, "%s %s N=%d C=%d (backward: %s, J=%d)", type_name<T>(), rms ? "rmsnorm" : "layernorm", N, C,
             J ? "register kernel" : "general kernel", J);
    printf("%s\n", tag);

    // inputs (rounded to T where the device stores them in T); residual has a non-zero mean
    std::vector<float> res = round_to<T>(rng.normal(NC, 0.7f, 1.5f));
    std::vector<float> branch = round_to<T>(rng.normal(NC));
    std::vector<float> w = round_to<T>(rng.normal(C, 1.0f, 0.3f));
    std::vector<float> b = round_to<T>(rng.normal(C, 0.0f, 0.3f));
    std::vector<float> dy = round_to<T>(rng.normal(NC));
    std::vector<float> dres = round_to<T>(rng.normal(NC));
    std::vector<float> dw0 = round_to<T>(rng.normal(C, 0.0f, 0.5f));
    std::vector<float> db0 = round_to<T>(rng.normal(C, 0.0f, 0.5f));
    // x = residual + branch, added in fp32 and rounded to T, exactly like the kernel
    std::vector<float> x(NC);
    for (size_t i = 0; i < NC; i++) x[i] = host_to_float(host_from_float<T>(res[i] + branch[i]));

    std::vector<double> y_ref, mean_ref, rstd_ref;
    ref_forward(x, w, b, N, C, eps, rms, y_ref, mean_ref, rstd_ref);

    DeviceBuffer<T> d_res(NC), d_branch(NC), d_w(C), d_b(C), d_resout(NC), d_normed(NC), d_dy(NC), d_dres(NC), d_dx(NC), d_dw(C),
        d_db(C);
    DeviceBuffer<float> d_mean(N), d_rstd(N), d_scratch(norm_backward_scratch_floats(N, C));
    d_res.upload(res);
    d_branch.upload(branch);
    d_w.upload(w);
    d_b.upload(b);
    d_dy.upload(dy);
    d_dres.upload(dres);
    const T* bias = rms ? nullptr : d_b.ptr;

    auto check_fwd = [&](const char* what, const DeviceBuffer<T>& normed, const DeviceBuffer<T>* resid) {
        ck.check(std::string(what) + " normed", normed.download(), y_ref, t_val.atol, t_val.rtol);
        if (resid) ck.check(std::string(what) + " residual", resid->download(), to_double(x), t_res.atol, t_res.rtol);
        if (!rms) ck.check(std::string(what) + " mean", d_mean.download(), mean_ref, t_stat.atol, t_stat.rtol);
        ck.check(std::string(what) + " rstd", d_rstd.download(), rstd_ref, t_stat.atol, t_stat.rtol);
    };
    auto poison_fwd = [&] {
        d_resout.poison();
        d_normed.poison();
        d_mean.poison();
        d_rstd.poison();
    };

    // Pre-LN: residual_out = res + branch, normed = N(residual_out)
    if (!cs.bwd_only) {
        poison_fwd();
        preln_residual_norm_forward<T>(d_resout, d_normed, d_mean, d_rstd, d_res, d_branch, d_w, bias, N, C, eps, type, 0);
        cudaCheck(cudaDeviceSynchronize());
        check_fwd("preln fwd", d_normed, &d_resout);
    }

    // Post-LN: out = N(res + branch) is the new residual; sum saved for backward
    poison_fwd();
    postln_residual_norm_forward<T>(d_normed, d_resout, d_mean, d_rstd, d_res, d_branch, d_w, bias, N, C, eps, type, 0);
    cudaCheck(cudaDeviceSynchronize());
    check_fwd("postln fwd", d_normed, &d_resout);

    // plain norm of x (d_resout holds x now)
    if (!cs.bwd_only) {
        d_normed.poison();
        d_mean.poison();
        d_rstd.poison();
        norm_forward<T>(d_normed, d_mean, d_rstd, d_resout, d_w, bias, N, C, eps, type, 0);
        cudaCheck(cudaDeviceSynchronize());
        check_fwd("plain fwd", d_normed, nullptr);
    }

    // Pre-LN in place: residual_out aliases residual_in
    if (!cs.bwd_only) {
        DeviceBuffer<T> d_inplace(NC);
        d_inplace.upload(res);
        d_normed.poison();
        d_mean.poison();
        d_rstd.poison();
        preln_residual_norm_forward<T>(d_inplace, d_normed, d_mean, d_rstd, d_inplace, d_branch, d_w, bias, N, C, eps, type, 0);
        cudaCheck(cudaDeviceSynchronize());
        check_fwd("preln fwd in-place", d_normed, &d_inplace);
    }
    // the forward left mean/rstd of x in d_mean/d_rstd and x in d_resout: the backward uses
    // the device's own statistics, as the trainer will

    // Pre-LN backward: dx = dres + N'(dy); twice, for determinism
    std::vector<double> dx_ref, dw_ref, db_ref;
    ref_backward(x, w, dy, &dres, mean_ref, rstd_ref, N, C, rms, dw0, db0, dx_ref, dw_ref, db_ref);
    std::vector<unsigned char> first_dx, first_dw, first_db;
    for (int rep = 0; rep < 2; rep++) {
        d_dx.poison();
        d_scratch.poison();
        d_dw.upload(dw0);
        d_db.upload(db0);
        preln_residual_norm_backward<T>(d_dx, d_dw, rms ? nullptr : d_db.ptr, d_scratch, d_dy, d_dres, d_resout, d_w, d_mean, d_rstd, N,
                                        C, type, 0);
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 0) {
            ck.check("preln bwd dresidual", d_dx.download(), dx_ref, t_val.atol, t_val.rtol);
            ck.check("preln bwd dweight", d_dw.download(), dw_ref, t_wgrad.atol, t_wgrad.rtol);
            if (!rms) ck.check("preln bwd dbias", d_db.download(), db_ref, t_wgrad.atol, t_wgrad.rtol);
            first_dx = d_dx.bytes();
            first_dw = d_dw.bytes();
            first_db = d_db.bytes();
        } else {
            ck.check_equal_bytes("preln bwd rerun dresidual", first_dx, d_dx.bytes());
            ck.check_equal_bytes("preln bwd rerun dweight", first_dw, d_dw.bytes());
            if (!rms) ck.check_equal_bytes("preln bwd rerun dbias", first_db, d_db.bytes());
        }
    }
    // Pre-LN backward in place (dresidual_out aliases dresidual_in) with at most 3 blocks:
    // several rows per warp, an uneven last block
    {
        DeviceBuffer<T> d_inplace(NC);
        d_inplace.upload(dres);
        const int saved = norm_bwd_max_blocks;
        norm_bwd_max_blocks = 3;
        d_scratch.poison();
        d_dw.upload(dw0);
        d_db.upload(db0);
        preln_residual_norm_backward<T>(d_inplace, d_dw, rms ? nullptr : d_db.ptr, d_scratch, d_dy, d_inplace, d_resout, d_w, d_mean,
                                        d_rstd, N, C, type, 0);
        cudaCheck(cudaDeviceSynchronize());
        norm_bwd_max_blocks = saved;
        ck.check("preln bwd in-place 3 blocks dresidual", d_inplace.download(), dx_ref, t_val.atol, t_val.rtol);
        ck.check("preln bwd in-place 3 blocks dweight", d_dw.download(), dw_ref, t_wgrad.atol, t_wgrad.rtol);
        if (!rms) ck.check("preln bwd in-place 3 blocks dbias", d_db.download(), db_ref, t_wgrad.atol, t_wgrad.rtol);
    }
    // the general kernel where the register kernel would run (it stays the fallback for wide rows)
    if (cs.general_too && J > 0) {
        norm_bwd_regs_path = false;
        d_dx.poison();
        d_scratch.poison();
        d_dw.upload(dw0);
        d_db.upload(db0);
        preln_residual_norm_backward<T>(d_dx, d_dw, rms ? nullptr : d_db.ptr, d_scratch, d_dy, d_dres, d_resout, d_w, d_mean, d_rstd, N,
                                        C, type, 0);
        cudaCheck(cudaDeviceSynchronize());
        norm_bwd_regs_path = true;
        ck.check("preln bwd general kernel dresidual", d_dx.download(), dx_ref, t_val.atol, t_val.rtol);
        ck.check("preln bwd general kernel dweight", d_dw.download(), dw_ref, t_wgrad.atol, t_wgrad.rtol);
        if (!rms) ck.check("preln bwd general kernel dbias", d_db.download(), db_ref, t_wgrad.atol, t_wgrad.rtol);
        covered[bf16][0] = true;
    }

    if (cs.bwd_only) return;

    // Post-LN backward: dsum = N'(dout), no residual gradient added
    ref_backward(x, w, dy, nullptr, mean_ref, rstd_ref, N, C, rms, dw0, db0, dx_ref, dw_ref, db_ref);
    d_dx.poison();
    d_scratch.poison();
    d_dw.upload(dw0);
    d_db.upload(db0);
    postln_residual_norm_backward<T>(d_dx, d_dw, rms ? nullptr : d_db.ptr, d_scratch, d_dy, d_resout, d_w, d_mean, d_rstd, N, C, type,
                                     0);
    cudaCheck(cudaDeviceSynchronize());
    ck.check("postln bwd dsum", d_dx.download(), dx_ref, t_val.atol, t_val.rtol);
    ck.check("postln bwd dweight", d_dw.download(), dw_ref, t_wgrad.atol, t_wgrad.rtol);
    if (!rms) ck.check("postln bwd dbias", d_db.download(), db_ref, t_wgrad.atol, t_wgrad.rtol);
    else ck.check("postln bwd dbias untouched (rmsnorm)", d_db.download(), to_double(db0), 0, 0);
}

// --bench: the backward at N rows, C channels, bf16, dres (the Pre-LN case); prints one line
// per row kernel (the register kernel if C allows it, and the general kernel) with us per
// call of the row kernel alone, and of the whole call (with the weight-gradient reduce), and
// GB/s of the row kernel for the bytes it must move: read dout, inp, dres, write dinp.
[[maybe_unused]] static void bench_norm_backward(int N, int C, NormType type) {
    using T = __nv_bfloat16;
    constexpr int V = norm_detail::vec_width<T>();
    const size_t NC = (size_t)N * C;
    const bool rms = type == NormType::RMSNorm;
    Rng rng(1);
    DeviceBuffer<T> d_x(NC), d_dy(NC), d_dres(NC), d_dx(NC), d_w(C), d_b(C), d_dw(C), d_db(C), d_y(NC);
    DeviceBuffer<float> d_mean(N), d_rstd(N), d_scratch(norm_backward_scratch_floats(N, C));
    d_x.upload(rng.normal(NC, 0.5f, 1.5f));
    d_dy.upload(rng.normal(NC));
    d_dres.upload(rng.normal(NC));
    d_w.upload(rng.normal(C, 1.0f, 0.3f));
    d_b.upload(rng.normal(C, 0.0f, 0.3f));
    d_dw.upload(std::vector<float>(C, 0.0f));
    d_db.upload(std::vector<float>(C, 0.0f));
    norm_forward<T>(d_y, d_mean, d_rstd, d_x, d_w, rms ? nullptr : d_b.ptr, N, C, rms ? 1e-6f : 1e-5f, type, 0);
    cudaCheck(cudaDeviceSynchronize());
    const int rows_per_block = norm_backward_rows_per_block(N);
    const dim3 grid(ceil_div(N, rows_per_block));
    // average ms per call of f over 50 calls, after 5 warm-up calls (test_util.h)
    auto time_ms = [&](auto&& f) { return gpu_time_us(f, 50, 5) / 1e3; };
    const double bytes = 4.0 * NC * sizeof(T);
    double us_regs = 0, us_general = 0;
    for (bool regs : {true, false}) {
        norm_bwd_regs_path = regs;
        const int J = norm_detail::norm_backward_regs_vectors(C / V);
        if (regs && J == 0) continue;  // too wide for the register kernel
        const double row_ms = time_ms([&] {
            if (rms) norm_detail::launch_norm_backward_rows<T, V, true>(grid, 0, d_dx.ptr, d_scratch.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr,
                                                                        d_rstd.ptr, d_dres.ptr, N, C, rows_per_block);
            else norm_detail::launch_norm_backward_rows<T, V, false>(grid, 0, d_dx.ptr, d_scratch.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr,
                                                                     d_rstd.ptr, d_dres.ptr, N, C, rows_per_block);
        });
        const double call_ms = time_ms([&] {
            preln_residual_norm_backward<T>(d_dx, d_dw, rms ? nullptr : d_db.ptr, d_scratch, d_dy, d_dres, d_x, d_w, d_mean, d_rstd, N, C,
                                            type, 0);
        });
        if (regs) us_regs = row_ms * 1e3;
        else us_general = row_ms * 1e3;
        printf("norm bench bf16 %s N=%d C=%d dres, %s kernel%s: %.1f us per call (%.0f GB/s), with the reduce %.1f us\n",
               rms ? "rmsnorm" : "layernorm", N, C, regs ? "register" : "general", regs ? (" (J=" + std::to_string(J) + ")").c_str() : "",
               row_ms * 1e3, bytes / (row_ms * 1e-3) / 1e9, call_ms * 1e3);
    }
    norm_bwd_regs_path = true;
    if (us_regs > 0)
        printf("norm bench bf16 %s N=%d C=%d: general / register = %.2f\n", rms ? "rmsnorm" : "layernorm", N, C, us_general / us_regs);
}

int main(int argc, char** argv) {
    skip_without_device("test_norm");
    if (argc > 1 && std::string(argv[1]) == "--bench") {
#if defined(CUDA_EMU)
        printf("test_norm --bench: needs a GPU (emulated build)\n");
#else
        bench_norm_backward(16384, 768, NormType::LayerNorm);  // gpt2-124m, Pre-LN
        bench_norm_backward(8192, 2048, NormType::RMSNorm);    // llama-1b (the general kernel)
#endif
        return 0;
    }
    Rng rng(test_seed());
    // (N, C) and the backward row kernel each takes, fp32 (VEC 4) / bf16 (VEC 8); J vectors
    // of VEC (scalar path: of 1) channels per lane, "general" for J > 4; a "+" marks a
    // partial last vector column (nvec % 32 != 0). N % 8 != 0 in most: a short last block.
    // The last two check the backward only, in one type (emulated time: the weight-gradient
    // reduce of wide rows costs most).
    std::vector<Case> cases = {
        {64, 768, true},                    // fp32 general (J 6) / bf16 J=3 full; and bf16's general kernel
        {37, 100},                          // fp32 J=1+ / bf16 scalar J=4+ (C % 8 != 0)
        {13, 37, true},                     // scalar J=2+ both (C odd); and the scalar general kernel
        {5, 20},                            // fp32 J=1+ (5 vectors: idle lanes) / bf16 scalar J=1+
        {64, 264},                          // fp32 J=3+ / bf16 J=2+ (33 vectors)
        {1, 8},                             // a single row: fp32 J=1+ / bf16 J=1+
        {11, 392, false, true, FP32_ONLY},  // fp32 J=4+ (98 vectors)
        {11, 776, false, true, BF16_ONLY},  // bf16 J=4+ (97 vectors: one lane in the last column)
    };
    if (argc > 1 && std::string(argv[1]) == "--big") {  // GPU only
        cases.push_back({4096, 2048});  // general both
        cases.push_back({4096, 768});   // fp32 general / bf16 J=3: 2 rows per warp
    }
    Checker ck;
    bool covered[2][5] = {};  // [bf16][J], J = 0: the general kernel
    auto t0 = std::chrono::steady_clock::now();
    for (const Case& cs : cases)
        for (NormType type : {NormType::LayerNorm, NormType::RMSNorm}) {
            if (cs.types != BF16_ONLY) run_case<float>(ck, rng, cs, type, covered);
            if (cs.types != FP32_ONLY) run_case<__nv_bfloat16>(ck, rng, cs, type, covered);
        }
    // the sizes above must keep reaching every backward row kernel
    for (int b = 0; b < 2; b++)
        for (int J = 0; J <= 4; J++) {
            ck.checked++;
            if (!covered[b][J]) {
                printf("MISMATCH: no size reaches the %s backward %s kernel (J=%d)\n", b ? "bf16" : "fp32", J ? "register" : "general", J);
                ck.failed++;
            }
        }
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_norm");
}
