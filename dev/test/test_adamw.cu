// test_adamw.cu - kernels/adamw.cuh (the AdamW update) against torch.optim.AdamW semantics in
// double on the CPU, in the three precision modes as train_gpt.cu's Model::adamw_update
// calls it:
//   fp32       adamw_update<float, float>(param, nullptr, m, v, grad, ...)
//   bf16       adamw_update<bf16, float>(param, master, m, v, grad, ...): fp32 master, m, v;
//              param must be exactly round_to_bf16(master) after every step
//   pure bf16  adamw_update<bf16, bf16>(param, nullptr, m, v, grad, ...)
// The kernel arguments are formed on the host exactly as Model::adamw_update does (bias
// corrections in double, then step_size / inv_bc2 / decay as floats; the chunk table of
// gradnorm.cuh with a decay flag per chunk). Each case runs STEPS
// optimizer steps in a row from m = v = 0 (t = 1..STEPS: m, v and both bias corrections
// evolve), with a fresh gradient, learning rate and clip scale (grad_scale) every step. The
// gradients mix typical values, elements that are zero at every step (m = v = 0: only the
// decay acts), elements zero at one step only, large ones (|g| ~ 3e4, g^2 ~ 1e9) and tiny ones
// (|g| ~ 1e-9: eps dominates the denominator). Sizes: 1, below one block, one block + 1, one
// chunk + 1 and two chunks + 37 (GRADNORM_CHUNK elements per chunk and block, so the block's
// stride loop wraps and the last chunk is short); 2-D tensors (decay = 1 - lr * wd) and 1-D
// ones (decay = 1; in pure bf16 a decay of
// lr * wd = 1e-4 mostly vanishes in the rounding to bf16, so the fp32 and bf16 modes are the
// ones that pin the decay down). Every written array
// has one guard element past its end that must stay untouched, and every case runs twice
// from the same state: the final bytes must be identical. n = 0 must launch nothing. Then a
// trainer-like arena: three tensors back to back (the second at an odd offset, decayed, the
// others not) updated by one launch must give, bit for bit, what each tensor gives alone;
// the same with the clipping factor read from a StepStats in device memory (the trainer's
// path; the host's grad_scale then holds a wrong value that must be ignored), and a step
// whose StepStats says non-finite must leave every array bit for bit as it was. Then the
// sharded optimizer state of the trainer's ZeRO-1 (run_arena_sharded).
// Inputs are fresh random numbers each run (seed printed; SEED=... replays). Exit status
// non-zero on any mismatch. The update moves 4 elements at a time where the arrays allow
// (adamw_kernel's groups); every case also runs the one-element kernel and with arrays one
// element off alignment (the launcher's fallback): bit for bit the same.
// --bench (GPU only): the two kernels at gpt2-124m's size.
// Build: emulated (g++/clang++ -DCUDA_EMU, see dev/test/kernels.mk) or nvcc (real GPU).
#include "test_util.h"

#include "../../kernels/adamw.cuh"
#include "../../kernels/gradnorm.cuh"

constexpr int STEPS = 4;
static const float LR[STEPS] = {1e-3f, 6e-4f, 1e-3f, 3e-4f};      // a schedule's values
static const float GSCALE[STEPS] = {1.0f, 0.37f, 1.0f, 0.052f};   // clip_scale(norm, clip) values

enum class Mode { FP32, BF16, PURE_BF16 };
static const char* mode_name(Mode m) { return m == Mode::FP32 ? "fp32" : m == Mode::BF16 ? "bf16" : "pure_bf16"; }

struct Case {
    size_t n;
    bool decay;          // a 2-D tensor (decoupled weight decay) or not
    float beta2, wd;     // beta1 = 0.9, eps = 1e-8 throughout
};
constexpr float BETA1 = 0.9f, EPS = 1e-8f;

// The host half of Model::adamw_update (train_gpt.cu) for optimizer step t (1-based).
static AdamWArgs trainer_args(int t, float lr, float beta1, float beta2, float eps, float wd, float grad_scale) {
    double bc1 = 1.0 - pow((double)beta1, t), bc2_sqrt = sqrt(1.0 - pow((double)beta2, t));
    return AdamWArgs{(float)(lr / bc1), (float)(1.0 / bc2_sqrt), beta1, beta2, eps, 1.f - lr * wd, grad_scale};
}
// the chunk table of tensors (offset, numel, decayed?) on the device, as Model builds it
struct DeviceChunks {
    GradNormChunks c;
    int n;
    DeviceBuffer<long long> off;
    DeviceBuffer<int> len;
    DeviceBuffer<unsigned char> decay;
    DeviceChunks(const std::vector<std::pair<size_t, size_t>>& tensors, const std::vector<bool>& decayed)
        : c(gradnorm_chunks(tensors)), n((int)c.off.size()), off(n), len(n), decay(n) {
        std::vector<unsigned char> flags(n);
        for (int k = 0; k < n; k++) flags[k] = decayed[c.owner[k]] ? 1 : 0;
        if (n) {
            cudaCheck(cudaMemcpy(off.ptr, c.off.data(), n * sizeof(long long), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(len.ptr, c.len.data(), n * sizeof(int), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(decay.ptr, flags.data(), n, cudaMemcpyHostToDevice));
        }
    }
};

// ---------------------------------------------------------------------------------------
// torch.optim.AdamW, one step in double on one element (hyperparameters are the float values
// the trainer passes, widened). Besides the values it carries their magnitudes, the same
// recurrences on absolute values (M for m, W for w; v has no cancellation, its own magnitude):
// a rounding error of the kernel's fp32 arithmetic is a small multiple of 2^-24 times these.
struct RefElem {
    double m = 0, v = 0, w = 0, M = 0, W = 0;
};
static void ref_step(RefElem& e, double grad, int t, double lr, double beta1, double beta2, double eps, double wd, double grad_scale,
                     bool decay) {
    const double g = grad * grad_scale;
    const double bc1 = 1.0 - std::pow(beta1, t), bc2 = 1.0 - std::pow(beta2, t);
    const double dec = decay ? 1.0 - lr * wd : 1.0;  // param.mul_(1 - lr * weight_decay)
    e.m = beta1 * e.m + (1.0 - beta1) * g;           // exp_avg.lerp_(grad, 1 - beta1)
    e.M = beta1 * e.M + (1.0 - beta1) * std::fabs(g);
    e.v = beta2 * e.v + (1.0 - beta2) * g * g;       // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    const double step_size = lr / bc1;
    const double denom = std::sqrt(e.v) / std::sqrt(bc2) + eps;
    e.w = e.w * dec - step_size * e.m / denom;       // param.addcdiv_(exp_avg, denom, value=-step_size)
    e.W = e.W * dec + step_size * e.M / denom;
}

// ---------------------------------------------------------------------------------------
// n elements of T in a buffer of n + 1 whose last element, the guard, must stay as it is. The
// guard is finite (0x5A bytes: 1.5e16 in fp32 and bf16), not NaN: an update of it from
// NaN inputs could store the same NaN bits again and go unseen; from 1.5e16 it changes.
constexpr unsigned char GUARD_BYTE = 0x5A;
template <typename T>
struct Guarded : GuardedOperand<T> {   // dev/test/test_util.h, the guard after the operand
    explicit Guarded(size_t count, int offset = 0) : GuardedOperand<T>(count, offset, GUARD_BYTE) {}   // offset 1: guard before
};

// half the spacing of bf16 numbers at magnitude a (8 significant bits: for a in [2^e, 2^(e+1))
// the spacing is 2^(e-7)): the most that rounding a value of magnitude <= a to nearest moves it
static double bf16_half_ulp(double a) { return a > 0 ? std::ldexp(1.0, std::ilogb(a) - 8) : 0.0; }

// |got - ref| <= tol elementwise, NaN/Inf in got fails, where tol = rtol * mag, mag the
// magnitude the kernel's fp32 rounding errors scale with (see RefElem), plus for a value
// stored in bf16 the rounding of that fp32 result to nearest bf16: half a bf16 ulp at
// |ref| + rtol * mag. The arrays hold STEPS steps of n elements, step after step.
static bool check_scaled(Checker& ck, const std::string& name, const std::vector<float>& got, const std::vector<double>& ref,
                         const std::vector<double>& mag, double rtol, bool bf16_stored, size_t n) {
    double max_abs = 0, max_rel = 0, worst = 0, max_beyond = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        const double g = got[i], r = ref[i], e = rtol * mag[i], half_ulp = bf16_stored ? bf16_half_ulp(std::fabs(r) + e) : 0.0;
        const double tol = e + half_ulp;
        double err = std::fabs(g - r);
        if (mag[i] > 0) max_beyond = std::max(max_beyond, std::max(err - half_ulp, 0.0) / mag[i]);
        const bool ok = std::isfinite(g) && err <= tol;
        if (!std::isfinite(g)) err = INFINITY;
        if (!ok && bad++ == 0) first_bad = i;
        max_abs = std::max(max_abs, err);
        if (mag[i] > 0 || err > 0) max_rel = std::max(max_rel, err / std::max(mag[i], 1e-300));
        if (tol > 0 || err > 0) worst = std::max(worst, err / std::max(tol, 1e-300));
    }
    ck.checked++;
    // (bf16: the rounding bound is tight, err/tol near 1 is expected; "beyond ulp/2" is the
    // part of the error the fp32 allowance must cover, in units of mag)
    char beyond[48] = "";
    if (bf16_stored) snprintf(beyond, sizeof beyond, " beyond ulp/2 %.1e*mag", max_beyond);
    printf("  %-40s max_abs %.2e max_err/mag %.2e err/tol %.3f%s (tol %.0e*mag%s) %s\n", name.c_str(), max_abs, max_rel, worst,
           beyond, rtol, bf16_stored ? " + bf16 ulp/2" : "", bad ? "MISMATCH" : "ok");
    if (bad) {
        ck.failed++;
        printf("    MISMATCH: %zu of %zu values out of tolerance; first at step %zu element %zu: got %.9g ref %.9g mag %.3g\n", bad,
               ref.size(), first_bad / n + 1, first_bad % n, (double)got[first_bad], ref[first_bad], mag[first_bad]);
    }
    return bad == 0;
}

static void check_true(Checker& ck, const std::string& name, bool ok, const char* what) {
    ck.checked++;
    if (!ok) ck.failed++;
    printf("  %-40s %s\n", name.c_str(), ok ? "ok" : what);
}

// ---------------------------------------------------------------------------------------
// the device side: STEPS launches as the trainer makes them; the state after every step
struct Run {
    std::vector<std::vector<float>> w, master, m, v;     // [step][i]: param (as float), master, m, v
    std::vector<std::vector<unsigned char>> param_bits;  // [step]: param's bytes
    std::vector<unsigned char> final_bytes;              // param, master, m, v after the last step
    bool guards = true;
};

template <typename TP, typename TS>
static Run run_device(const Case& c, bool use_master, const std::vector<float>& w0, const std::vector<std::vector<float>>& grads,
                      bool vectorize = true, int offset = 0) {
    const size_t n = c.n;
    Guarded<TP> param(n, offset);   // offset 1: every written array one element past its allocation's start
    DeviceBuffer<TP> grad(n);  // read only: exact size (ASan sees a read past the end)
    Guarded<float> master(n, offset);
    Guarded<TS> m(n, offset), v(n, offset);
    param.upload(w0);                                    // the compute copy (rounded to TP)
    if (use_master) master.upload(w0);                   // the fp32 master
    const std::vector<float> zeros(n, 0.0f);
    m.upload(zeros);
    v.upload(zeros);
    const DeviceChunks ch({{0, n}}, {c.decay});
    Run r;
    for (int s = 0; s < STEPS; s++) {
        grad.upload(grads[s]);
        const AdamWArgs a = trainer_args(s + 1, LR[s], BETA1, c.beta2, EPS, c.wd, GSCALE[s]);
        adamw_update<TP, TS>(param.ptr(), use_master ? master.ptr() : nullptr, m.ptr(), v.ptr(), grad.ptr, ch.off.ptr, ch.len.ptr,
                             ch.decay.ptr, ch.n, a, 0, nullptr, vectorize);
        cudaCheck(cudaDeviceSynchronize());
        r.w.push_back(param.download());
        r.param_bits.push_back(param.bytes());
        if (use_master) r.master.push_back(master.download());
        r.m.push_back(m.download());
        r.v.push_back(v.download());
    }
    for (const std::vector<unsigned char>& b : {param.bytes(), master.bytes(), m.bytes(), v.bytes()})
        r.final_bytes.insert(r.final_bytes.end(), b.begin(), b.end());
    r.guards = param.guard_intact() && master.guard_intact() && m.guard_intact() && v.guard_intact();
    return r;
}

// gradients for step s (0-based), rounded to the gradient storage type TP
template <typename TP>
static std::vector<float> make_grad(Rng& rng, size_t n, int s) {
    std::vector<float> g = rng.normal(n, 0.0f, 1e-2f);  // typical
    const std::vector<float> z = rng.normal(n);
    for (size_t i = 0; i < n; i++) {
        if (i % 7 == 3) g[i] = 0.0f;                      // zero at every step
        else if (s == 1 && i % 5 == 1) g[i] = 0.0f;       // zero at step 2 only
        else if (i % 11 == 5) g[i] = 3e4f * z[i];         // large
        else if (i % 13 == 7) g[i] = 1e-9f * z[i];        // tiny: sqrt(v_hat) ~ 1e-9 < eps
    }
    return round_to<TP>(g);
}

template <typename TP, typename TS>
static void run_case(Checker& ck, Rng& rng, Mode mode, const Case& c) {
    const size_t n = c.n;
    const bool use_master = mode == Mode::BF16;
    char tag[128];
    snprintf(tag, sizeof tag, "%s n=%zu %s beta2=%g wd=%g", mode_name(mode), n, c.decay ? "2-D (decay)" : "1-D (no decay)",
             (double)c.beta2, (double)c.wd);
    printf("%s\n", tag);

    // initial weights ~ N(0, 0.02) (the paper's init), a few exactly 0
    std::vector<float> w0 = rng.normal(n, 0.0f, 0.02f);
    for (size_t i = 0; i < n; i++)
        if (i % 17 == 9) w0[i] = 0.0f;
    if (!use_master) w0 = round_to<TP>(w0);  // the only copy is TP; with a master, w0 is the fp32 master
    std::vector<std::vector<float>> grads;
    for (int s = 0; s < STEPS; s++) grads.push_back(make_grad<TP>(rng, n, s));

    const Run r = run_device<TP, TS>(c, use_master, w0, grads);

    // references for every step, concatenated: [step * n + i]
    std::vector<double> m_ref, v_ref, w_ref, M, V, W;
    if (mode != Mode::PURE_BF16) {
        // fp32 state (m, v and the weights: param in fp32 mode, master in bf16 mode): one
        // free-running double trajectory from the initial state, as torch would run it
        std::vector<RefElem> e(n);
        for (size_t i = 0; i < n; i++) e[i].w = w0[i], e[i].W = std::fabs(w0[i]);
        for (int s = 0; s < STEPS; s++)
            for (size_t i = 0; i < n; i++) {
                ref_step(e[i], grads[s][i], s + 1, LR[s], BETA1, c.beta2, EPS, c.wd, GSCALE[s], c.decay);
                m_ref.push_back(e[i].m), M.push_back(e[i].M);
                v_ref.push_back(e[i].v), V.push_back(e[i].v);
                w_ref.push_back(e[i].w), W.push_back(e[i].W);
            }
    } else {
        // pure bf16: m, v and w are rounded to bf16 by design after every step, so a
        // free-running reference would measure those roundings, not the kernel: every step
        // starts from the device's stored state after the previous one
        for (int s = 0; s < STEPS; s++)
            for (size_t i = 0; i < n; i++) {
                RefElem e;
                e.w = s ? r.w[s - 1][i] : w0[i];
                e.W = std::fabs(e.w);
                e.m = s ? r.m[s - 1][i] : 0.0;
                e.M = std::fabs(e.m);
                e.v = s ? r.v[s - 1][i] : 0.0;
                ref_step(e, grads[s][i], s + 1, LR[s], BETA1, c.beta2, EPS, c.wd, GSCALE[s], c.decay);
                m_ref.push_back(e.m), M.push_back(e.M);
                v_ref.push_back(e.v), V.push_back(e.v);
                w_ref.push_back(e.w), W.push_back(e.W);
            }
    }
    auto flat = [](const std::vector<std::vector<float>>& x) {
        std::vector<float> f;
        for (const auto& s : x) f.insert(f.end(), s.begin(), s.end());
        return f;
    };

    // Tolerances.
    // fp32 arithmetic: per step a handful of roundings of 2^-24 = 6e-8 each (g * grad_scale;
    // the products and sums of m and v; step_size, inv_bc2 and decay rounded to float on the
    // host; sqrt, the denominator's product and sum, the quotient, the product with step_size,
    // w * decay and the difference), each relative to the magnitudes M, v, W of RefElem. The
    // fp32 state carries the earlier steps' errors (times beta1, beta2, decay <= 1), so after
    // STEPS = 4 steps the bound with every rounding at its worst and of one sign is ~ 4 x 8 x
    // 6e-8 = 2e-6; errors of either sign make the largest seen over thousands of values 2-3e-7
    // (max_err/mag in the output): 1e-6 relative to the magnitude.
    const double FP32_REL = 1e-6;
    // bf16 storage (m, v, param in pure bf16; param in bf16 mode): that fp32 result rounded to
    // nearest bf16, i.e. at most half a bf16 ulp further (a tight bound: err/tol near 1 there
    // is a value that the rounding moved by almost half an ulp, expected among many values).
    const bool pure = mode == Mode::PURE_BF16;
    const std::string st = " (steps 1-" + std::to_string(STEPS) + ")";
    check_scaled(ck, "m" + st, flat(r.m), m_ref, M, FP32_REL, pure, n);
    check_scaled(ck, "v" + st, flat(r.v), v_ref, V, FP32_REL, pure, n);
    if (mode == Mode::BF16) {
        check_scaled(ck, "master" + st, flat(r.master), w_ref, W, FP32_REL, false, n);
        // the compute copy is the master rounded to nearest bf16, bit for bit
        bool exact = true;
        size_t first = 0;
        for (int s = 0; s < STEPS && exact; s++)
            for (size_t i = 0; i < n && exact; i++) {
                const __nv_bfloat16 b = host_from_float<__nv_bfloat16>(r.master[s][i]);
                if (std::memcmp(&b, &r.param_bits[s][i * sizeof(b)], sizeof(b)) != 0) exact = false, first = s * n + i;
            }
        check_true(ck, "param == round_to_bf16(master)" + st, exact, "MISMATCH: param is not the master rounded to bf16");
        if (!exact) printf("    first at step %zu element %zu\n", first / n + 1, first % n);
        check_scaled(ck, "param" + st, flat(r.w), w_ref, W, FP32_REL, true, n);
    } else {
        check_scaled(ck, "param" + st, flat(r.w), w_ref, W, FP32_REL, pure, n);
    }
    check_true(ck, "elements past the end untouched", r.guards, "MISMATCH: an element past n was written");

    // the same steps again from the same state: bitwise the same
    const Run r2 = run_device<TP, TS>(c, use_master, w0, grads);
    ck.check_equal_bytes("rerun: param, master, m, v after the last step", r.final_bytes, r2.final_bytes);
    // the one-element kernel (vectorize = false) against the groups-of-4 kernel: the same bits
    const Run r1 = run_device<TP, TS>(c, use_master, w0, grads, false);
    ck.check_equal_bytes("one-element kernel == groups-of-4 kernel (param, master, m, v)", r.final_bytes, r1.final_bytes);
    // arrays one element off a 4-element boundary: the launcher must fall back to one element
    // at a time (a groups-of-4 access there is misaligned: a fault on a GPU, UBSan in emulation)
    const Run ro = run_device<TP, TS>(c, use_master, w0, grads, true, 1);
    ck.check_equal_bytes("misaligned arrays (one-element fallback) == aligned", r.final_bytes, ro.final_bytes);
    check_true(ck, "misaligned arrays: guards before the arrays untouched", ro.guards, "MISMATCH: an element before the array was written");
}

// n = 0: adamw_update returns without a launch (nothing is touched)
static void run_empty(Checker& ck) {
    printf("n=0\n");
    Guarded<float> p(0), m(0), v(0), g(0);
    const AdamWArgs a = trainer_args(1, 1e-3f, BETA1, 0.95f, EPS, 0.1f, 1.0f);
    adamw_update<float, float>(p.ptr(), nullptr, m.ptr(), v.ptr(), g.ptr(), nullptr, nullptr, nullptr, 0, a, 0);
    cudaCheck(cudaDeviceSynchronize());
    check_true(ck, "n=0 writes nothing", p.guard_intact() && m.guard_intact() && v.guard_intact(), "MISMATCH: memory written");
}

// Three tensors in one arena, one launch per step, against each tensor run alone
// (run_device): every step's param, master, m and v bit for bit.
// device_stats: the clipping factor comes from a StepStats in device memory (as the trainer's
// end_step passes it) while the host's a.grad_scale holds a wrong value that must be ignored;
// then one more step with stats->finite = 0 must leave every array bit for bit as it was.
template <typename TP, typename TS>
static void run_arena(Checker& ck, Rng& rng, Mode mode, bool device_stats) {
    const bool use_master = mode == Mode::BF16;
    const std::vector<Case> parts = {{37, false, 0.95f, 0.1f}, {(size_t)GRADNORM_CHUNK + 3, true, 0.95f, 0.1f}, {5, false, 0.95f, 0.1f}};
    printf("%s arena of %zu tensors, one launch%s\n", mode_name(mode), parts.size(),
           device_stats ? ", clip and finite flag from device StepStats" : "");
    DeviceBuffer<StepStats> d_stats(1);
    auto set_stats = [&](float clip, int finite) {
        StepStats st{};
        st.clip = clip;
        st.finite = finite;
        cudaCheck(cudaMemcpy(d_stats.ptr, &st, sizeof st, cudaMemcpyHostToDevice));
    };
    std::vector<std::pair<size_t, size_t>> spans;
    std::vector<bool> decayed;
    size_t total = 0;
    for (const Case& c : parts) spans.push_back({total, c.n}), decayed.push_back(c.decay), total += c.n;
    std::vector<float> w0 = rng.normal(total, 0.0f, 0.02f);
    if (!use_master) w0 = round_to<TP>(w0);
    std::vector<std::vector<float>> grads;
    for (int s = 0; s < STEPS; s++) grads.push_back(make_grad<TP>(rng, total, s));
    Guarded<TP> param(total);
    DeviceBuffer<TP> grad(total);
    Guarded<float> master(total);
    Guarded<TS> m(total), v(total);
    param.upload(w0);
    if (use_master) master.upload(w0);
    m.upload(std::vector<float>(total, 0.0f));
    v.upload(std::vector<float>(total, 0.0f));
    const DeviceChunks ch(spans, decayed);
    std::vector<Run> alone;
    for (size_t k = 0; k < parts.size(); k++) {
        auto slice = [&](const std::vector<float>& x) { return std::vector<float>(x.begin() + spans[k].first, x.begin() + spans[k].first + spans[k].second); };
        std::vector<std::vector<float>> g;
        for (int s = 0; s < STEPS; s++) g.push_back(slice(grads[s]));
        alone.push_back(run_device<TP, TS>(parts[k], use_master, slice(w0), g));
    }
    bool same = true;
    for (int s = 0; s < STEPS; s++) {
        grad.upload(grads[s]);
        // every Case shares beta2 and wd: the decay flag alone differs
        const AdamWArgs a = trainer_args(s + 1, LR[s], BETA1, parts[0].beta2, EPS, parts[0].wd, device_stats ? 123.0f : GSCALE[s]);
        if (device_stats) set_stats(GSCALE[s], 1);
        adamw_update<TP, TS>(param.ptr(), use_master ? master.ptr() : nullptr, m.ptr(), v.ptr(), grad.ptr, ch.off.ptr, ch.len.ptr,
                             ch.decay.ptr, ch.n, a, 0, device_stats ? d_stats.ptr : nullptr);
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<float> W = param.download(), MA = master.download(), Mm = m.download(), Vv = v.download();
        for (size_t k = 0; k < parts.size(); k++)
            for (size_t i = 0; i < spans[k].second; i++) {
                const size_t j = spans[k].first + i;
                const Run& r = alone[k];
                if (W[j] != r.w[s][i] || Mm[j] != r.m[s][i] || Vv[j] != r.v[s][i] || (use_master && MA[j] != r.master[s][i])) same = false;
            }
    }
    check_true(ck, "one launch over the arena == each tensor alone (bitwise, every step)", same,
               device_stats ? "MISMATCH: the chunk table mixes tensors up, or the device clip was not used"
                            : "MISMATCH: the chunk table mixes tensors up");
    if (device_stats) {   // a skipped step: non-finite flag, fresh gradients, lr and decay that would move everything
        const std::vector<unsigned char> before = param.bytes(), mb = master.bytes(), m_b = m.bytes(), vb = v.bytes();
        grad.upload(make_grad<TP>(rng, total, 0));
        set_stats(1.0f, 0);
        const AdamWArgs a = trainer_args(STEPS + 1, 1e-2f, BETA1, parts[0].beta2, EPS, 0.5f, 1.0f);
        adamw_update<TP, TS>(param.ptr(), use_master ? master.ptr() : nullptr, m.ptr(), v.ptr(), grad.ptr, ch.off.ptr, ch.len.ptr,
                             ch.decay.ptr, ch.n, a, 0, d_stats.ptr);
        cudaCheck(cudaDeviceSynchronize());
        check_true(ck, "stats->finite = 0: param, master, m, v unchanged", before == param.bytes() && mb == master.bytes() &&
                   m_b == m.bytes() && vb == v.bytes(), "MISMATCH: a skipped step wrote");
    }
    check_true(ck, "arena: elements past the end untouched", param.guard_intact() && master.guard_intact() && m.guard_intact() && v.guard_intact(),
               "MISMATCH: an element past the arena was written");
}

// Sharded state (the trainer's ZeRO-1): the arena of run_arena cut into three shards at
// chunk boundaries (chunks [0,1), [1,3), [3,4): the middle one spans two tensors and starts at
// the odd offset 37). Each shard runs STEPS updates of its chunks alone, with full-size param
// and grad but master / m / v holding only its range from state_base on (exactly sized,
// guarded): state_base at the shard's first element, or rounded down to a multiple of 4 (the
// trainer's choice: the groups of 4 stay usable). Against one launch over the whole arena:
// inside the shard param, master, m, v bit for bit the same at every step, outside it param
// untouched, and nothing written past the state arrays.
template <typename TP, typename TS>
static void run_arena_sharded(Checker& ck, Rng& rng, Mode mode) {
    const bool use_master = mode == Mode::BF16;
    const std::vector<size_t> sizes = {37, (size_t)GRADNORM_CHUNK + 3, 5};
    const std::vector<bool> decayed = {false, true, false};
    std::vector<std::pair<size_t, size_t>> spans;
    size_t total = 0;
    for (size_t n : sizes) spans.push_back({total, n}), total += n;
    const DeviceChunks ch(spans, decayed);
    const std::vector<int> shard_chunk = {0, 1, 3, ch.n};
    printf("%s arena of 3 tensors (%d chunks) in 3 shards: sharded AdamW state\n", mode_name(mode), ch.n);
    std::vector<float> w0 = rng.normal(total, 0.0f, 0.02f);
    if (!use_master) w0 = round_to<TP>(w0);
    std::vector<std::vector<float>> grads;
    for (int s = 0; s < STEPS; s++) grads.push_back(make_grad<TP>(rng, total, s));
    auto args = [&](int s) { return trainer_args(s + 1, LR[s], BETA1, 0.95f, EPS, 0.1f, GSCALE[s]); };
    // the whole arena, one launch per step: [step] param, master, m, v
    std::vector<std::vector<float>> fw, fmaster, fm, fv;
    {
        Guarded<TP> param(total);
        DeviceBuffer<TP> grad(total);
        Guarded<float> master(total);
        Guarded<TS> m(total), v(total);
        param.upload(w0);
        master.upload(w0);
        m.upload(std::vector<float>(total, 0.0f));
        v.upload(std::vector<float>(total, 0.0f));
        for (int s = 0; s < STEPS; s++) {
            grad.upload(grads[s]);
            adamw_update<TP, TS>(param.ptr(), use_master ? master.ptr() : nullptr, m.ptr(), v.ptr(), grad.ptr, ch.off.ptr, ch.len.ptr,
                                 ch.decay.ptr, ch.n, args(s), 0);
            cudaCheck(cudaDeviceSynchronize());
            fw.push_back(param.download()), fmaster.push_back(master.download()), fm.push_back(m.download()), fv.push_back(v.download());
        }
    }
    const std::vector<float> w0_stored = [&] {   // w0 as the param array stores it
        Guarded<TP> p(total);
        p.upload(w0);
        return p.download();
    }();
    for (bool round_base : {true, false})
        for (int r = 0; r < 3; r++) {
            const int c0 = shard_chunk[r], c1 = shard_chunk[r + 1];
            const size_t lo = (size_t)ch.c.off[c0], hi = c1 < ch.n ? (size_t)ch.c.off[c1] : total;
            const size_t base = round_base ? lo / 4 * 4 : lo, len = hi - base;
            Guarded<TP> param(total);
            DeviceBuffer<TP> grad(total);
            Guarded<float> master(len);
            Guarded<TS> m(len), v(len);
            param.upload(w0);
            master.upload(std::vector<float>(w0.begin() + base, w0.begin() + hi));
            m.upload(std::vector<float>(len, 0.0f));
            v.upload(std::vector<float>(len, 0.0f));
            bool same = true, outside = true;
            for (int s = 0; s < STEPS; s++) {
                grad.upload(grads[s]);
                adamw_update<TP, TS>(param.ptr(), use_master ? master.ptr() : nullptr, m.ptr(), v.ptr(), grad.ptr, ch.off.ptr + c0,
                                     ch.len.ptr + c0, ch.decay.ptr + c0, c1 - c0, args(s), 0, nullptr, true, base);
                cudaCheck(cudaDeviceSynchronize());
                const std::vector<float> W = param.download(), MA = master.download(), Mm = m.download(), Vv = v.download();
                for (size_t i = 0; i < total; i++) {
                    if (i < lo || i >= hi) {
                        if (W[i] != w0_stored[i]) outside = false;
                        continue;
                    }
                    const size_t j = i - base;
                    if (W[i] != fw[s][i] || Mm[j] != fm[s][i] || Vv[j] != fv[s][i] || (use_master && MA[j] != fmaster[s][i])) same = false;
                }
            }
            char name[96];
            snprintf(name, sizeof name, "shard %d [%zu, %zu) state_base %zu", r, lo, hi, base);
            check_true(ck, std::string(name) + ": == whole arena (bitwise, every step)", same, "MISMATCH: the shard's update differs");
            check_true(ck, std::string(name) + ": param outside untouched", outside, "MISMATCH: an element outside the shard was written");
            check_true(ck, std::string(name) + ": state guards", master.guard_intact() && m.guard_intact() && v.guard_intact() && param.guard_intact(),
                       "MISMATCH: written past the state arrays");
        }
}

// --bench: the bf16-mode update (bf16 param and gradient, fp32 master, m, v) of a
// gpt2-124m-sized arena cut into its chunk table, the groups-of-4 kernel against the
// one-element one: us per update and GB/s of the 28 bytes per parameter it must move
[[maybe_unused]] static void bench_adamw() {
    const size_t n = 124475904;   // GPT-2 124M with the vocab padded to 50304 (llm.c's count)
    using T = __nv_bfloat16;
    DeviceBuffer<T> param(n), grad(n);
    DeviceBuffer<float> master(n), m(n), v(n);
    cudaCheck(cudaMemset(param.ptr, 0, n * sizeof(T)));
    cudaCheck(cudaMemset(grad.ptr, 0, n * sizeof(T)));
    cudaCheck(cudaMemset(master.ptr, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m.ptr, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(v.ptr, 0, n * sizeof(float)));
    const DeviceChunks ch({{0, n}}, {true});
    const AdamWArgs a = trainer_args(1, 1e-3f, BETA1, 0.95f, EPS, 0.1f, 1.0f);
    double us[2];
    for (int vec = 0; vec < 2; vec++) {
        us[vec] = gpu_time_us([&] { adamw_update<T, float>(param.ptr, master.ptr, m.ptr, v.ptr, grad.ptr, ch.off.ptr, ch.len.ptr, ch.decay.ptr,
                                                            ch.n, a, 0, nullptr, vec == 1); }, 20, 3);
        printf("adamw bench bf16 n=%zu, %s kernel: %.1f us per update (%.0f GB/s)\n", n, vec ? "groups-of-4" : "one-element", us[vec],
               28.0 * n / (us[vec] * 1e-6) / 1e9);
    }
    printf("adamw bench bf16: one-element / groups-of-4 = %.2f\n", us[0] / us[1]);
}

int main(int argc, char** argv) {
    skip_without_device("test_adamw");
    if (argc > 1 && std::string(argv[1]) == "--bench") {
#if defined(CUDA_EMU)
        printf("test_adamw --bench: needs a GPU (emulated build)\n");
#else
        bench_adamw();
#endif
        return 0;
    }
    Rng rng(test_seed());
    // one block per chunk of GRADNORM_CHUNK elements, EW_BLOCK threads striding over it
    const size_t chunk = GRADNORM_CHUNK;
    printf("EW_BLOCK %d threads per block, a block per chunk of %zu elements\n", EW_BLOCK, chunk);
    const std::vector<Case> cases = {
        {1, false, 0.95f, 0.1f},                    // a single element
        {37, true, 0.95f, 0.1f},                    // less than one block's threads
        {(size_t)EW_BLOCK + 1, false, 0.95f, 0.1f}, // one block's threads + 1: thread 0 strides once
        {chunk + 1, true, 0.95f, 0.1f},             // one chunk + 1: a second block with one element
        {2 * chunk + 37, true, 0.95f, 0.1f},        // two chunks + 37, 2-D
        {2 * chunk + 37, false, 0.95f, 0.1f},       // the same, 1-D
        {2 * chunk + 37, true, 0.999f, 0.0f},       // flags.h defaults: beta2 0.999, no decay
    };
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();
    for (const Case& c : cases) {
        run_case<float, float>(ck, rng, Mode::FP32, c);
        run_case<__nv_bfloat16, float>(ck, rng, Mode::BF16, c);
        run_case<__nv_bfloat16, __nv_bfloat16>(ck, rng, Mode::PURE_BF16, c);
    }
    run_empty(ck);
    for (bool device_stats : {false, true}) {
        run_arena<float, float>(ck, rng, Mode::FP32, device_stats);
        run_arena<__nv_bfloat16, float>(ck, rng, Mode::BF16, device_stats);
        run_arena<__nv_bfloat16, __nv_bfloat16>(ck, rng, Mode::PURE_BF16, device_stats);
    }
    run_arena_sharded<float, float>(ck, rng, Mode::FP32);
    run_arena_sharded<__nv_bfloat16, float>(ck, rng, Mode::BF16);
    run_arena_sharded<__nv_bfloat16, __nv_bfloat16>(ck, rng, Mode::PURE_BF16);
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_adamw");
}
