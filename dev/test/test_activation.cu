// test_activation.cu - kernels/activation.cuh (GELU and SwiGLU, forward and backward)
// against a double-precision CPU reference, storage fp32 and bf16.
// Sizes take the 16-byte vector path (n and F multiples of 8), the scalar path (odd n,
// F = 13, F = 1) and the split case (n, F multiples of 4 but not of 8: fp32 vector, bf16
// scalar). Inputs include large |x| (+-8, +-5, +-3) and values near 0 (0, +-1e-3, +-1e-6).
// Every operand lives in a buffer one element longer than it; at element 0 it is 16-byte
// aligned (cudaMalloc), at element 1 misaligned, which forces the wrapper onto the scalar
// path. Each op runs with all operands aligned, all misaligned, and one operand misaligned at
// a time (so a missing alignment check shows as a misaligned vector access, caught by UBSan
// in the asan flavour and by the GPU); all runs must be bitwise identical, as must direct
// launches of the VEC = 16 / sizeof(T) and VEC = 1 kernels. Outputs are poisoned (NaN)
// first and the element of the buffer outside the operand must stay poisoned.
// gelu_backward_bias (the candidate of dev/cuda/gelu_bias_grad.cuh: dpre = GELU'(pre) * dact
// and dbias += colsum(dpre), one pass): dpre
// against the fp64 reference and bitwise equal to gelu_backward's; dbias against the fp64 column
// sums of the dpre the device stored (the kernel sums those values, rounded to T) and bitwise
// equal to matmul.cuh's column sum of gelu_backward's output (bias_backward's kernels: the same
// plan and order); aligned (16-byte path where F % VEC == 0), rerun, all and each operand
// misaligned (scalar path; each alone on the small cases): dpre and dbias bitwise equal; a
// second call accumulates onto dbias.
// Rows: one; one split; splits with an uneven last one; splits of several times
// COLSUM_MIN_ROWS rows (colsum_target_blocks lowered); F over 2-3 column blocks.
// Inputs are fresh random numbers each run (seed printed; SEED=... replays). Exit status
// non-zero on any mismatch.
// Build: emulated (g++/clang++ -DCUDA_EMU, see dev/test/kernels.mk) or nvcc (real GPU).
#include <functional>

#include "test_util.h"

#include "../../kernels/activation.cuh"
#include "../cuda/gelu_bias_grad.cuh"

struct Tol {
    double atol, rtol;
};

// fp64 references (formulas of activation.cuh's header comment)
static const double SQRT_2_OVER_PI = std::sqrt(2.0 / 3.14159265358979323846);
static double ref_gelu(double x) { return 0.5 * x * (1.0 + std::tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))); }
static double ref_gelu_grad(double x) {
    const double th = std::tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
}
static double ref_sigmoid(double g) { return 1.0 / (1.0 + std::exp(-g)); }

// one operand in a buffer of n + 1 at element `off` (0 aligned, 1 misaligned), the spare
// element a poisoned guard (dev/test/test_util.h)
template <typename T>
using Slot = GuardedOperand<T>;

// random normal(0, 2) with special values mixed in (also inside vectors, not only at the start)
static std::vector<float> make_input(Rng& rng, size_t n) {
    static const float special[] = {8.0f, -8.0f, 0.0f, 1e-3f, -1e-3f, 1e-6f, -1e-6f, 5.0f, -5.0f, 3.0f, -3.0f, 0.5f, -0.5f};
    const size_t ns = sizeof(special) / sizeof(special[0]);
    std::vector<float> v = rng.normal(n, 0.0f, 2.0f);
    for (size_t i = 0; i < n; i++)
        if (i < ns) v[i] = special[i];
        else if (i % 5 == 3) v[i] = special[(i / 5) % ns];
    return v;
}

// one op: `run(misalign_mask)` allocates its operand slots (operand k misaligned if bit k
// is set), runs the wrapper, checks the guards and returns the output slots' bytes
struct OpResult {
    std::vector<std::vector<unsigned char>> out_bytes;
    std::vector<std::vector<float>> out_vals;
};

static void check_runs(Checker& ck, const std::string& tag, int n_operands, const std::function<OpResult(int, int)>& run,
                       const std::vector<std::string>& out_names, const std::vector<std::vector<double>>& refs, const Tol& tol) {
    // all aligned (the vector path where the sizes allow): against the reference
    const OpResult base = run(0, 0);
    for (size_t k = 0; k < out_names.size(); k++) ck.check(tag + " " + out_names[k], base.out_vals[k], refs[k], tol.atol, tol.rtol);
    // all misaligned (scalar path), then one operand misaligned at a time: bitwise equal
    std::vector<std::pair<int, std::string>> variants = {{(1 << n_operands) - 1, "all misaligned"}};
    if (n_operands > 1)
        for (int k = 0; k < n_operands; k++) variants.push_back({1 << k, "operand " + std::to_string(k) + " misaligned"});
    for (const auto& v : variants) {
        const OpResult r = run(v.first, 0);
        for (size_t k = 0; k < out_names.size(); k++)
            ck.check_equal_bytes(tag + " " + out_names[k] + " " + v.second + " == aligned", base.out_bytes[k], r.out_bytes[k]);
    }
    // the kernels launched directly, VEC = 16 / sizeof(T) (when the sizes allow) and VEC = 1
    for (int direct : {1, 2}) {
        const OpResult r = run(0, direct);
        if (r.out_bytes.empty()) continue;  // sizes do not allow the vector kernel
        for (size_t k = 0; k < out_names.size(); k++)
            ck.check_equal_bytes(tag + " " + out_names[k] + (direct == 1 ? " vector kernel" : " scalar kernel") + " == wrapper",
                                 base.out_bytes[k], r.out_bytes[k]);
    }
}

template <typename T>
static bool check_guards(Checker& ck, const std::string& tag, std::initializer_list<const Slot<T>*> outs) {
    bool ok = true;
    for (const Slot<T>* s : outs) ok = ok && s->guard_intact();
    if (!ok) {
        ck.checked++;
        ck.failed++;
        printf("  %-44s MISMATCH: element outside the output was written\n", tag.c_str());
    }
    return ok;
}

template <typename T>
static void run_gelu(Checker& ck, Rng& rng, size_t n) {
    constexpr int VEC = 16 / sizeof(T);
    const bool bf16 = sizeof(T) == 2;
    // fp32: a few ulp of fp32 math (tanhf, and the 1 +- tanh cancellation, absolute at |x| * 2^-24);
    // bf16: the same plus one rounding of the result to bf16 (unit roundoff 2^-8 = 3.9e-3 relative)
    const Tol t_fwd = bf16 ? Tol{1e-5, 8e-3} : Tol{2e-6, 2e-6};
    const Tol t_bwd = bf16 ? Tol{2e-5, 8e-3} : Tol{5e-6, 2e-6};
    char tag[96];
    snprintf(tag, sizeof tag, "%s gelu n=%zu (%s)", type_name<T>(), n, n % VEC == 0 ? "vector" : "scalar");
    printf("%s\n", tag);
    const std::vector<float> x = round_to<T>(make_input(rng, n));
    const std::vector<float> dy = round_to<T>(rng.normal(n));
    std::vector<double> y_ref(n), dx_ref(n);
    for (size_t i = 0; i < n; i++) {
        y_ref[i] = ref_gelu(x[i]);
        dx_ref[i] = (double)dy[i] * ref_gelu_grad(x[i]);
    }
    const std::string base = std::string(type_name<T>()) + " n=" + std::to_string(n);

    // forward: operands 0 = out, 1 = inp; direct 1 = vector kernel, 2 = scalar kernel
    auto fwd = [&](int mis, int direct) -> OpResult {
        if (direct == 1 && n % VEC != 0) return {};
        Slot<T> out(n, mis & 1), inp(n, (mis >> 1) & 1);
        inp.upload(x);
        if (direct == 1)
            launch_kernel(gelu_forward_kernel<T, VEC>, grid_stride_blocks(n / VEC, EW_BLOCK), EW_BLOCK, 0, 0, out.ptr(), inp.ptr(), n);
        else if (direct == 2)
            launch_kernel(gelu_forward_kernel<T, 1>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, 0, out.ptr(), inp.ptr(), n);
        else
            gelu_forward<T>(out.ptr(), inp.ptr(), n, 0);
        cudaCheck(cudaDeviceSynchronize());
        check_guards<T>(ck, base + " gelu fwd guard", {&out});
        return {{out.bytes()}, {out.download()}};
    };
    check_runs(ck, "gelu fwd", 2, fwd, {"out"}, {y_ref}, t_fwd);

    // backward: operands 0 = dinp, 1 = inp, 2 = dout
    auto bwd = [&](int mis, int direct) -> OpResult {
        if (direct == 1 && n % VEC != 0) return {};
        Slot<T> dinp(n, mis & 1), inp(n, (mis >> 1) & 1), dout(n, (mis >> 2) & 1);
        inp.upload(x);
        dout.upload(dy);
        if (direct == 1)
            launch_kernel(gelu_backward_kernel<T, VEC>, grid_stride_blocks(n / VEC, EW_BLOCK), EW_BLOCK, 0, 0, dinp.ptr(), inp.ptr(),
                          dout.ptr(), n);
        else if (direct == 2)
            launch_kernel(gelu_backward_kernel<T, 1>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, 0, dinp.ptr(), inp.ptr(), dout.ptr(), n);
        else
            gelu_backward<T>(dinp.ptr(), inp.ptr(), dout.ptr(), n, 0);
        cudaCheck(cudaDeviceSynchronize());
        check_guards<T>(ck, base + " gelu bwd guard", {&dinp});
        return {{dinp.bytes()}, {dinp.download()}};
    };
    check_runs(ck, "gelu bwd", 3, bwd, {"dinp"}, {dx_ref}, t_bwd);
}

template <typename T>
static void run_swiglu(Checker& ck, Rng& rng, int N, int F) {
    constexpr int VEC = 16 / sizeof(T);
    const bool bf16 = sizeof(T) == 2;
    const Tol t_fwd = bf16 ? Tol{1e-5, 8e-3} : Tol{2e-6, 2e-6};
    const Tol t_bwd = bf16 ? Tol{2e-5, 8e-3} : Tol{5e-6, 2e-6};
    char tag[96];
    snprintf(tag, sizeof tag, "%s swiglu N=%d F=%d (%s)", type_name<T>(), N, F, F % VEC == 0 ? "vector" : "scalar");
    printf("%s\n", tag);
    const size_t n = (size_t)N * F;
    const std::vector<float> fc = round_to<T>(make_input(rng, 2 * n));
    const std::vector<float> dy = round_to<T>(rng.normal(n));
    std::vector<double> y_ref(n), dfc_ref(2 * n);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < F; c++) {
            const size_t i = (size_t)r * F + c, gi = (size_t)r * 2 * F + c, ui = gi + F;
            const double g = fc[gi], u = fc[ui], s = ref_sigmoid(g);
            y_ref[i] = g * s * u;
            dfc_ref[gi] = dy[i] * u * s * (1.0 + g * (1.0 - s));
            dfc_ref[ui] = dy[i] * g * s;
        }
    const std::string base = std::string(type_name<T>()) + " N=" + std::to_string(N) + " F=" + std::to_string(F);

    // forward: operands 0 = out, 1 = fc
    auto fwd = [&](int mis, int direct) -> OpResult {
        if (direct == 1 && F % VEC != 0) return {};
        Slot<T> out(n, mis & 1), fcs(2 * n, (mis >> 1) & 1);
        fcs.upload(fc);
        if (direct == 1)
            launch_kernel(swiglu_forward_kernel<T, VEC>, grid_stride_blocks(n / VEC, EW_BLOCK), EW_BLOCK, 0, 0, out.ptr(), fcs.ptr(), N, F);
        else if (direct == 2)
            launch_kernel(swiglu_forward_kernel<T, 1>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, 0, out.ptr(), fcs.ptr(), N, F);
        else
            swiglu_forward<T>(out.ptr(), fcs.ptr(), N, F, 0);
        cudaCheck(cudaDeviceSynchronize());
        check_guards<T>(ck, base + " swiglu fwd guard", {&out});
        return {{out.bytes()}, {out.download()}};
    };
    check_runs(ck, "swiglu fwd", 2, fwd, {"out"}, {y_ref}, t_fwd);

    // backward: operands 0 = dfc, 1 = fc, 2 = dout
    auto bwd = [&](int mis, int direct) -> OpResult {
        if (direct == 1 && F % VEC != 0) return {};
        Slot<T> dfc(2 * n, mis & 1), fcs(2 * n, (mis >> 1) & 1), dout(n, (mis >> 2) & 1);
        fcs.upload(fc);
        dout.upload(dy);
        if (direct == 1)
            launch_kernel(swiglu_backward_kernel<T, VEC>, grid_stride_blocks(n / VEC, EW_BLOCK), EW_BLOCK, 0, 0, dfc.ptr(), fcs.ptr(),
                          dout.ptr(), N, F);
        else if (direct == 2)
            launch_kernel(swiglu_backward_kernel<T, 1>, grid_stride_blocks(n, EW_BLOCK), EW_BLOCK, 0, 0, dfc.ptr(), fcs.ptr(), dout.ptr(), N, F);
        else
            swiglu_backward<T>(dfc.ptr(), fcs.ptr(), dout.ptr(), N, F, 0);
        cudaCheck(cudaDeviceSynchronize());
        check_guards<T>(ck, base + " swiglu bwd guard", {&dfc});
        return {{dfc.bytes()}, {dfc.download()}};
    };
    check_runs(ck, "swiglu bwd", 3, bwd, {"dfc"}, {dfc_ref}, t_bwd);
}

template <typename T>
static void run_gelu_bias(Checker& ck, Rng& rng, int N, int F, int target_blocks = COLSUM_TARGET_BLOCKS) {
    constexpr int VEC = 16 / sizeof(T);
    const bool bf16 = sizeof(T) == 2;
    colsum_target_blocks = target_blocks;
    const ColsumPlan plan = colsum_plan(N, F);
    const size_t n = (size_t)N * F;
    char tag[160];
    snprintf(tag, sizeof tag, "%s gelu_backward_bias N=%d F=%d", type_name<T>(), N, F);
    printf("%s: %d splits of %d rows (the last %d), %s path%s\n", tag, plan.nsplit, plan.rows_per_split,
           N - (plan.nsplit - 1) * plan.rows_per_split, F % VEC == 0 ? "16-byte" : "scalar",
           target_blocks != COLSUM_TARGET_BLOCKS ? " (target blocks lowered)" : "");
    // dpre: as run_gelu's backward. dbias: fp32 sums of N values of order 1 (the same derivation
    // as test_matmul's bias tolerance: random-sign roundings of partial sums of size ~sqrt(N),
    // ~6e-8 N <= 1e-5 sqrt(N)), bf16 one rounding of the result (2^-8 relative, x2)
    const Tol t_bwd = bf16 ? Tol{2e-5, 8e-3} : Tol{5e-6, 2e-6};
    const Tol t_db = {1e-5 * std::sqrt((double)N), bf16 ? 8e-3 : 1e-5};
    const std::vector<float> x = round_to<T>(make_input(rng, n));
    const std::vector<float> dy = round_to<T>(rng.normal(n));
    const std::vector<float> db0 = round_to<T>(rng.normal(F));
    std::vector<double> dx_ref(n);
    for (size_t i = 0; i < n; i++) dx_ref[i] = (double)dy[i] * ref_gelu_grad(x[i]);
    DeviceBuffer<T> d_db(F);
    DeviceBuffer<float> d_scratch(gelu_backward_bias_scratch_floats(N, F));
    auto colsum_ref = [&](const std::vector<float>& db_start, const std::vector<float>& dpre) {
        std::vector<double> r(db_start.begin(), db_start.end());
        for (int row = 0; row < N; row++)
            for (int f = 0; f < F; f++) r[f] += dpre[(size_t)row * F + f];
        return r;
    };
    struct Out {
        std::vector<unsigned char> dpre, db;
        std::vector<float> dpre_vals, db_vals;
    };
    // operands 0 = dpre, 1 = pre, 2 = dact, misaligned where `mis` has the bit; db starts at db_start
    auto run = [&](int mis, const std::vector<float>& db_start) -> Out {
        Slot<T> dpre(n, mis & 1), pre(n, (mis >> 1) & 1), dact(n, (mis >> 2) & 1);
        pre.upload(x);
        dact.upload(dy);
        d_db.upload(db_start);
        d_scratch.poison();
        gelu_backward_bias<T>(dpre.ptr(), d_db.ptr, d_scratch.ptr, pre.ptr(), dact.ptr(), N, F, 0);
        cudaCheck(cudaDeviceSynchronize());
        check_guards<T>(ck, std::string(tag) + " guard", {&dpre});
        return {dpre.bytes(), d_db.bytes(), dpre.download(), d_db.download()};
    };
    const Out base = run(0, db0);
    ck.check("gelu_bwd_bias dpre", base.dpre_vals, dx_ref, t_bwd.atol, t_bwd.rtol);
    ck.check("gelu_bwd_bias db += colsum(dpre)", base.db_vals, colsum_ref(db0, base.dpre_vals), t_db.atol, t_db.rtol);
    {   // gelu_backward's dpre, then bias_backward's column sum of it (matmul.cuh: colsum_launch, ColsumRead)
        Slot<T> dpre(n, 0), pre(n, 0), dact(n, 0);
        pre.upload(x);
        dact.upload(dy);
        gelu_backward<T>(dpre.ptr(), pre.ptr(), dact.ptr(), n, 0);
        d_db.upload(db0);
        d_scratch.poison();
        if (F % VEC == 0) colsum_launch<VEC>(d_db.ptr, d_scratch.ptr, ColsumRead<T, VEC>{dpre.ptr()}, N, F, 0);
        else colsum_launch<1>(d_db.ptr, d_scratch.ptr, ColsumRead<T, 1>{dpre.ptr()}, N, F, 0);
        cudaCheck(cudaDeviceSynchronize());
        ck.check_equal_bytes("gelu_bwd_bias dpre == gelu_backward's", base.dpre, dpre.bytes());
        ck.check_equal_bytes("gelu_bwd_bias db == colsum(gelu_backward)", base.db, d_db.bytes());
    }
    // each operand misaligned alone (a missing alignment check: a misaligned vector access,
    // which UBSan and the GPU report) only on the small cases: they cost emulated time
    std::vector<std::pair<int, const char*>> variants = {{0, "rerun"}, {7, "all misaligned"}};
    if (n <= 1000) variants.insert(variants.end(), {{1, "dpre misaligned"}, {2, "pre misaligned"}, {4, "dact misaligned"}});
    for (const auto& v : variants) {
        const Out r = run(v.first, db0);
        ck.check_equal_bytes(std::string("gelu_bwd_bias ") + v.second + " dpre", base.dpre, r.dpre);
        ck.check_equal_bytes(std::string("gelu_bwd_bias ") + v.second + " db", base.db, r.db);
    }
    // a second call (the next micro-step) adds onto the db the first left
    const Out second = run(0, base.db_vals);
    ck.check("gelu_bwd_bias second call db +=", second.db_vals, colsum_ref(base.db_vals, second.dpre_vals), t_db.atol, t_db.rtol);
    colsum_target_blocks = COLSUM_TARGET_BLOCKS;
}

int main(int argc, char** argv) {
    skip_without_device("test_activation");
    Rng rng(test_seed());
    {  // the aligned runs rely on cudaMalloc's alignment
        DeviceBuffer<float> probe(3);
        if (!is_aligned(probe.ptr, 16)) {
            printf("FAIL: cudaMalloc returned %p, not 16-byte aligned\n", (void*)probe.ptr);
            return 1;
        }
    }
    // GELU n: vector (multiples of 8, one vector), scalar (odd, 1), fp32 vector / bf16 scalar (4 mod 8)
    std::vector<size_t> gelu_n = {4096, 1000, 8, 1001, 1, 4100};
    // SwiGLU (N, F): vector (F multiple of 8), scalar (F = 13, F = 1), fp32 vector / bf16 scalar (F = 12)
    std::vector<std::pair<int, int>> swiglu_nf = {{32, 64}, {37, 24}, {1, 8}, {5, 13}, {3, 1}, {9, 12}};
    if (argc > 1 && std::string(argv[1]) == "--big") {  // GPU only
        gelu_n.push_back((size_t)50 << 20);
        swiglu_nf.push_back({8192, 3072});
    }
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();
    for (size_t n : gelu_n) {
        run_gelu<float>(ck, rng, n);
        run_gelu<__nv_bfloat16>(ck, rng, n);
    }
    for (const auto& nf : swiglu_nf) {
        run_swiglu<float>(ck, rng, nf.first, nf.second);
        run_swiglu<__nv_bfloat16>(ck, rng, nf.first, nf.second);
    }
    // gelu_backward_bias (N, F, target blocks), COLSUM_MIN_ROWS 64: one row (16-byte); 3 splits of
    // 44 rows, the last 42 (warps of 6 and 5 rows: the unrolled loop and the remainder; 16-byte);
    // scalar (F 13); fp32 16-byte / bf16 scalar (F 12), 2 splits of 38 and 37; F 264 over 2
    // (bf16) / 3 (fp32) column blocks, the last partial; target lowered: 2 splits of 201 and 200
    const int gelu_bias_cases[][3] = {{1, 64, COLSUM_TARGET_BLOCKS}, {130, 64, COLSUM_TARGET_BLOCKS}, {37, 13, COLSUM_TARGET_BLOCKS},
                                      {75, 12, COLSUM_TARGET_BLOCKS}, {40, 264, COLSUM_TARGET_BLOCKS}, {401, 64, 2}};
    for (const auto& c : gelu_bias_cases) {
        run_gelu_bias<float>(ck, rng, c[0], c[1], c[2]);
        run_gelu_bias<__nv_bfloat16>(ck, rng, c[0], c[1], c[2]);
    }
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_activation");
}
