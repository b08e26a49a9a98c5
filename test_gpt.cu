/*
test_gpt.cu: checks train_gpt.cu against the PyTorch reference states (as test_gpt.cpp does
for the CPU trainer), on a GPU or, in CI, through the CPU emulation of CUDA (dev/cuda_emu).

For every state file (default: all .bin files in dev/reference/) it loads the initial weights as a
checkpoint, runs forward and backward on the stored batch and compares logits, loss, the
gradient of every tensor of the model's parameter table (never a hand list), the per-layer
and global gradient norms; then the stored number of AdamW steps (schedule, clipping; the
training path with the classifier backward fused into the forward) and their losses and
gradient norms. One tolerance table for fp32, one per-tensor table for bf16 (below). After
the steps, the zero units that pad the MLP hidden width on the device (train_gpt.cu, FFN_PAD)
must still be exactly zero in the weights, master weights, m, v and gradients.
Then the resume check: train, checkpoint, continue; reload the checkpoint, continue; the
losses (and the final weights) must be bitwise equal. It runs on the first state whose MLP
is padded on the device (else the first state), so the checkpoint goes through the
padded <-> logical mapping of the weights and of m and v.
Exits non-zero on any failure; 77 (skip) when an nvcc build finds no device.

  ./test_gpt_cuda [flags] [state.bin ...]   (--help lists the flags: train_gpt.cu's precision and
                                             kernel-path flags, and the test's own)
*/
#define TESTING
#include "train_gpt.cu"

#include <unistd.h>

#include "common/refstate.h"
#include "dev/test/tensor_checker.h"

// ----------------------------------------------------------------------------
// Tolerances. The error of a tensor is max|a - r| / max(max|r|, 1e-12): relative to the
// tensor's scale (the reference is float64 PyTorch rounded to fp32).
//
// fp32: as the CPU trainer's test, with room for the GPU's own summation orders.
// bf16: bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 0.2%); weights, activations
// and gradients are all rounded, so the errors compound through the layers, and more so on the
// stored states, whose weights are sharpened so that every sublayer moves the stream
// (dev/make_reference.py, SHARP_*). The table is per tensor kind (the last component of the
// name), set to about 1.5-2x the largest error observed over the stored states in bf16 and
// pure bf16 (emulated). The scalar rows (bf16; observed in brackets): logits 3e-2 [1.8e-2],
// loss 1e-3 [2.4e-4], layer and global norms 2.5e-2 [1.4e-2], step losses 1e-2 [5.0e-3], step
// grad norms 1.5e-1 [8.4e-2: the third step of llama_pre; bf16's small errors in the first
// updates grow along a 10x LR warmup]. The step checks' precision is the fp32 run's job (1e-4).
struct Tolerances {
    double logits, loss, norm, step_loss, step_norm, lr;
    double grad(const std::string& name) const;
    bool bf16;
};
static const Tolerances TOL_FP32 = {1e-4, 1e-5, 1e-4, 1e-4, 1e-4, 1e-7, false};
static const Tolerances TOL_BF16 = {3e-2, 1e-3, 2.5e-2, 1e-2, 1.5e-1, 1e-7, true};

struct BF16GradTol { const char* suffix; double tol; };
static const BF16GradTol BF16_GRAD_TOLS[] = {
    // tensor kind      tol     (largest error observed over the 7 stored states, bf16 and pure bf16, emulated)
    {"wte",           4e-2},  // 2.2e-2
    {"wpe",           3e-2},  // 1.7e-2
    {"lm_head.w",     3e-2},  // 1.8e-2 (with norm_f.w)
    {"norm_f.w",      3e-2},  // 1.8e-2 (with lm_head.w)
    {"norm_f.b",      3e-2},  // 3.8e-3
    {"norm1.w",       6e-2},  // 4.1e-2
    {"norm1.b",       4e-2},  // 1.8e-2
    {"norm2.w",       5e-2},  // 2.8e-2
    {"norm2.b",       4e-2},  // 2.1e-2
    {"qkv.w",         8e-2},  // 4.3e-2
    {"qkv.b",         4e-2},  // 2.5e-2
    {"attn_proj.w",   4e-2},  // 2.3e-2
    {"attn_proj.b",   4e-2},  // 1.6e-2
    {"fc.w",          8e-2},  // 4.4e-2
    {"fc.b",          4e-2},  // 1.8e-2
    {"mlp_proj.w",    4e-2},  // 2.5e-2
    {"mlp_proj.b",    4e-2},  // 1.4e-2
};
double Tolerances::grad(const std::string& name) const {
    if (!bf16) return 1e-4;
    for (const BF16GradTol& t : BF16_GRAD_TOLS) {
        size_t n = strlen(t.suffix);
        if (name.size() >= n && name.compare(name.size() - n, n, t.suffix) == 0) return t.tol;
    }
    fatal("internal: no bf16 gradient tolerance for tensor %s", name.c_str());
}

using Checker = TensorChecker;   // dev/test/tensor_checker.h

// The device keeps the MLP hidden width padded with zero units (train_gpt.cu, FFN_PAD); they
// must stay exactly zero through training. Reads the raw padded device arrays (weights, fp32
// master, m, v, and the last step's gradients) and checks that every element outside the
// logical tensors (found by mapping a logical vector of ones onto the device layout) is 0.
template <typename T>
static void check_padding(const Model<T>& model, int steps, Checker& ck) {
    const size_t PD = model.dtable.total;
    size_t npad = PD - model.table.total;
    if (npad == 0) {
        printf("  (no MLP padding on the device: ffn %d is a multiple of %d)\n", model.cfg.ffn, FFN_PAD);
        return;
    }
    std::vector<float> ones(model.table.total, 1.f), real(PD);
    remap_params(model.table, model.cfg.ffn, ones.data(), model.dtable, model.ffn_dev, real.data(), [](float x) { return x; });
    if ((size_t)std::count(real.begin(), real.end(), 0.f) != npad) {
        ck.expect(false, "padding: the logical -> device mapping does not cover the logical parameters exactly once");
        return;
    }
    auto raw = [&](const void* d, bool as_T) {
        std::vector<float> out(PD);
        if (as_T) {
            std::vector<T> tmp(PD);
            cudaCheck(cudaMemcpy(tmp.data(), d, PD * sizeof(T), cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < PD; i++) out[i] = host_float(tmp[i]);
        } else {
            cudaCheck(cudaMemcpy(out.data(), d, PD * sizeof(float), cudaMemcpyDeviceToHost));
        }
        return out;
    };
    struct Buf { const char* name; const void* d; bool as_T; };
    std::vector<Buf> bufs = {{"weights", model.params, true}, {"master", model.master, false}, {"m", model.m, model.pure()},
                             {"v", model.v, model.pure()}, {"grads", model.grads, true}};
    std::string what;
    size_t bad = 0;
    for (const Buf& b : bufs) {
        if (!b.d) continue;
        std::vector<float> x = raw(b.d, b.as_T);
        size_t nb = 0;
        for (size_t i = 0; i < PD; i++)
            if (real[i] == 0.f && x[i] != 0.f) nb++;
        bad += nb;
        what += std::string(what.empty() ? "" : ", ") + b.name + (nb ? " (" + std::to_string(nb) + " nonzero)" : "");
    }
    char msg[256];
    snprintf(msg, sizeof msg, "padding: ffn %d padded to %d, %zu padded elements per array, after %d steps %s (%s)", model.cfg.ffn,
             model.ffn_dev, npad, steps, bad ? "NOT all zero" : "all exactly zero", what.c_str());
    ck.expect(bad == 0, msg);
}

template <typename T>
static void run_state(const RefState& s, int precision, const KernelChoices& kc, int override_k, const std::string& perturb, int max_steps,
                      Checker& ck) {
    ModelConfig cfg = s.ckpt.cfg;
    const Tolerances& tol = precision == PREC_FP32 ? TOL_FP32 : TOL_BF16;
    if (override_k >= 0) {
        if (override_k > cfg.n_layer) fatal("--post_ln_layers must be in [0, n_layer=%d], got %d", cfg.n_layer, override_k);
        printf("  (negative test: model built with post_ln_layers=%d instead of %d)\n", override_k, cfg.post_ln_layers);
        cfg.post_ln_layers = override_k;
    }
    Model<T> model;
    model.init(cfg, precision);
    model.set_kernels(kc);
    const ParamTable& pt = model.table;
    if (!check_param_table(ck, pt, s.table, "CUDA")) return;   // dev/test/tensor_checker.h
    model.allocate(s.B, s.T, false);
    model.upload_state(s.params, nullptr, nullptr);

    // forward + backward on the stored batch (separate classifier backward: logits kept)
    float loss = model.forward(s.inputs.data(), s.targets.data(), s.B, s.T);
    size_t BT = (size_t)s.B * s.T;
    std::vector<float> zp = model.download_logits((int)BT), logits(BT * cfg.vocab);
    for (size_t n = 0; n < BT; n++) memcpy(&logits[n * cfg.vocab], &zp[n * cfg.padded_vocab], sizeof(float) * cfg.vocab);
    ck.check("logits", logits.data(), s.logits.data(), logits.size(), tol.logits);
    ck.check1("loss", loss, s.loss, tol.loss);
    model.zero_grad();
    model.backward(s.B, s.T);
    std::vector<float> g = model.download_grads();
    if (!perturb.empty()) {
        const ParamTensor& p = pt.get(perturb);
        float mx = 0.f;
        for (size_t i = 0; i < p.numel(); i++) mx = std::max(mx, fabsf(g[p.offset + i]));
        float bump = (float)(tol.grad(p.name) * 10) * mx;
        g[p.offset + p.numel() / 2] += bump;
        printf("  (negative test: gradient of %s perturbed by %g x its scale at one element)\n", perturb.c_str(), tol.grad(p.name) * 10);
    }
    for (const ParamTensor& p : pt.t)
        ck.check("grad " + p.name, g.data() + p.offset, s.grads.data() + p.offset, p.numel(), tol.grad(p.name));
    std::vector<double> sq = model.grad_sq_per_tensor();
    std::vector<float> ln = model.layer_norms(sq);
    ck.check("layer grad norms", ln.data(), s.layer_norms.data(), ln.size(), tol.norm);
    double tot = 0.0;
    for (double x : sq) tot += x;
    ck.check1("global grad norm", (float)sqrt(tot), s.total_norm, tol.norm);

    // N optimizer steps on the same batch, from the initial weights, on the training path
    // (train_gpt.cu's: begin_step, the forward with the classifier backward fused and the
    // loss left on the device, backward, end_step with the norm, clipping and skip decision
    // on the device)
    model.upload_state(s.params, nullptr, nullptr);
    model.step = 0;
    int n = std::min(s.n_steps, max_steps);
    std::vector<float> lrs, losses, norms;
    int finite_steps = 0;
    for (int step = 0; step < n; step++) {
        float lr = (float)lr_at(step, s.lr, s.warmup, s.sched_total, s.lr_floor);
        model.begin_step();
        model.forward(s.inputs.data(), s.targets.data(), s.B, s.T, 1.f, -1, false);
        model.backward(s.B, s.T, 1.f);
        const auto r = model.end_step(1, lr, s.beta1, s.beta2, s.eps, s.weight_decay, s.grad_clip, step == 0);
        finite_steps += r.finite ? 1 : 0;
        if (step == 0)   // the per-layer norms the trainer logs come from end_step's chunk partials
            ck.check("step 0 layer grad norms (end_step)", model.layer_norms(r.sq).data(), s.layer_norms.data(), s.layer_norms.size(), tol.norm);
        lrs.push_back(lr);
        losses.push_back((float)r.loss);
        norms.push_back(r.norm);
    }
    if (n > 0) {
        ck.expect(finite_steps == n, "every step finite: the device applied " + std::to_string(finite_steps) + " of " + std::to_string(n) +
                                         " updates");
        ck.check("schedule lr (" + std::to_string(n) + " steps)", lrs.data(), s.lrs.data(), n, tol.lr);
        ck.check("step losses", losses.data(), s.losses.data(), n, tol.step_loss);
        ck.check("step grad norms", norms.data(), s.grad_norms.data(), n, tol.step_norm);
    }
    check_padding(model, n, ck);
    model.free_all();
}

// Train K steps, checkpoint (to a file, through the checkpoint format), train K more; then a
// fresh model reloads the checkpoint and trains the same K: losses, gradient norms and the
// final weights must be bitwise equal.
template <typename T>
static void resume_check(const RefState& s, int precision, const KernelChoices& kc, int K, Checker& ck) {
    const ModelConfig& cfg = s.ckpt.cfg;
    auto one_step = [&](Model<T>& m, int step, float* loss, float* norm) {
        float lr = (float)lr_at(step, s.lr, s.warmup, s.sched_total, s.lr_floor);
        m.begin_step();
        m.forward(s.inputs.data(), s.targets.data(), s.B, s.T, 1.f, -1, false);
        m.backward(s.B, s.T, 1.f);
        const auto r = m.end_step(1, lr, s.beta1, s.beta2, s.eps, s.weight_decay, s.grad_clip, false);
        *loss = (float)r.loss;
        *norm = r.norm;
    };
    char path[256];
    snprintf(path, sizeof path, "%s/test_gpt_cuda_resume_%d.bin", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    std::vector<float> la(K), na(K), lb(K), nb(K), pa, pb;
    {
        Model<T> a;
        a.init(cfg, precision);
        a.set_kernels(kc);
        a.allocate(s.B, s.T, false);
        a.upload_state(s.params, nullptr, nullptr);
        float l, nn;
        for (int i = 0; i < K; i++) one_step(a, i, &l, &nn);
        std::vector<float> p, m, v;
        a.download_state(p, &m, &v);
        TrainState ts;
        ts.B = s.B; ts.T = s.T; ts.total_batch = (long)s.B * s.T; ts.precision = precision;
        std::string err;
        if (!write_checkpoint(path, cfg, a.step, p.data(), m.data(), v.data(), &ts, &err)) fatal("resume check: %s", err.c_str());
        for (int i = 0; i < K; i++) one_step(a, K + i, &la[i], &na[i]);
        a.download_state(pa, nullptr, nullptr);
        a.free_all();
    }
    {
        CheckpointHeader h;
        std::vector<float> p, m, v;
        read_checkpoint(path, &h, p, &m, &v);
        unlink(path);
        Model<T> b;
        b.init(h.cfg, precision);
        b.set_kernels(kc);
        b.allocate(s.B, s.T, false);
        b.upload_state(p, &m, &v);
        b.step = h.step;
        ck.expect(h.train.precision == precision, std::string("checkpoint records precision ") + precision_name(h.train.precision));
        for (int i = 0; i < K; i++) one_step(b, K + i, &lb[i], &nb[i]);
        b.download_state(pb, nullptr, nullptr);
        b.free_all();
    }
    bool same_l = memcmp(la.data(), lb.data(), K * 4) == 0, same_n = memcmp(na.data(), nb.data(), K * 4) == 0;
    bool same_p = pa.size() == pb.size() && memcmp(pa.data(), pb.data(), pa.size() * 4) == 0;
    for (int i = 0; i < K; i++) printf("    step %d: loss %.9g / %.9g  norm %.9g / %.9g\n", K + i + 1, la[i], lb[i], na[i], nb[i]);
    ck.expect(same_l, std::string("resume: losses after the checkpoint ") + (same_l ? "bitwise equal" : "DIFFER"));
    ck.expect(same_n, std::string("resume: gradient norms after the checkpoint ") + (same_n ? "bitwise equal" : "DIFFER"));
    ck.expect(same_p, std::string("resume: final weights ") + (same_p ? "bitwise equal" : "DIFFER"));
}

int main(int argc, char** argv) {
    int override_k = -1, max_steps = 1 << 30, resume_steps = 2;
    bool reference = true;
    std::string perturb;
    std::vector<std::string> files;
    KernelFlags kf;               // the precision and kernel-path flags: train_gpt.cu's table
    kf.precision = "fp32";
    std::vector<FlagSpec> flags = kernel_flags(kf);
    flags.insert(flags.end(), {
        {"steps", 0, 'i', &max_steps, "run at most N of the stored optimizer steps (emulation is slow)"},
        {"resume_steps", 0, 'i', &resume_steps, "steps before and after the checkpoint in the resume check (default 2; 0: no check)"},
        {"post_ln_layers", 0, 'i', &override_k, "build the model with this K instead of the state's (negative test)"},
        {"perturb", 0, 's', &perturb, "add a small error to the computed gradient of tensor NAME (negative test)"},
    });
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        const FlagSpec* f = nullptr;
        for (const FlagSpec& s : flags)
            if (a == std::string("--") + s.name) f = &s;
        if (a == "--no_reference") {
            reference = false;
        } else if (a == "--help" || a == "-h") {
            printf("usage: %s [flags] [state.bin ...]\n  --no_reference         skip the comparisons with the reference (resume check only)\n", argv[0]);
            for (const FlagSpec& s : flags) printf("  --%-20s %s\n", s.name, s.help);
            return 0;
        } else if (f) {
            if (i + 1 >= argc) fatal("%s needs a value", a.c_str());
            set_flag_value(*f, argv[++i]);
        } else if (a.rfind("--", 0) == 0) {
            fatal("unknown flag %s (see --help)", a.c_str());
        } else {
            files.push_back(a);
        }
    }
    if (max_steps < 0 || resume_steps < 0 || (override_k < 0 && override_k != -1))
        fatal("--steps, --resume_steps and --post_ln_layers must be non-negative");
    const int precision = parse_precision(kf.precision);
    const KernelChoices kc = kernel_choices(kf);
#if !defined(CUDA_EMU)
    {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess || n == 0) {
            printf("SKIP test_gpt_cuda: no CUDA device (cudaGetDeviceCount: %s, count %d); this nvcc build needs a GPU\n",
                   e == cudaSuccess ? "no error" : cudaGetErrorString(e), n);
            return 77;
        }
        cudaDeviceProp prop;
        cudaCheck(cudaGetDeviceProperties(&prop, 0));
        printf("test_gpt_cuda: device %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    }
#else
    printf("test_gpt_cuda: emulated CUDA device (dev/cuda_emu)\n");
#endif
    if (files.empty()) files = glob_files("dev/reference/*.bin");
    if (files.empty()) fatal("no reference states found (dev/reference/*.bin; run `make reference`)");
    printf("precision %s, attention %s, gelu fusion %d (gpt states)\n", precision_name(precision),
           precision == PREC_FP32 ? "matmul (fp32)" : !kc.flash ? "matmul" : "flash", kc.gelu_fusion);
    size_t resume_fi = 0;   // the first state with a padded MLP on the device, else the first
    for (size_t fi = files.size(); fi-- > 0;) {
        int ffn = read_refstate(files[fi]).ckpt.cfg.ffn;
        if (padded_ffn(ffn) != ffn) resume_fi = fi;
    }
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();
    for (size_t fi = 0; fi < files.size(); fi++) {
        const std::string& f = files[fi];
        RefState s = read_refstate(f);
        const ModelConfig& cfg = s.ckpt.cfg;
        printf("%s: %s, %s, L=%d C=%d H=%d ffn=%d vocab=%d (padded %d), B=%d T=%d\n", f.c_str(), arch_name(cfg.arch),
               placement_name(cfg).c_str(), cfg.n_layer, cfg.d_model, cfg.n_head, cfg.ffn, cfg.vocab, cfg.padded_vocab, s.B, s.T);
        int before = ck.failures;
        auto t1 = std::chrono::steady_clock::now();
        if (reference) {
            if (precision == PREC_FP32) run_state<float>(s, precision, kc, override_k, perturb, max_steps, ck);
            else run_state<__nv_bfloat16>(s, precision, kc, override_k, perturb, max_steps, ck);
        }
        if (resume_steps > 0 && fi == resume_fi) {   // the resume check on one state
            if (precision == PREC_FP32) resume_check<float>(s, precision, kc, resume_steps, ck);
            else resume_check<__nv_bfloat16>(s, precision, kc, resume_steps, ck);
        }
        printf("%s: %s (%.1f s)\n\n", f.c_str(), ck.failures == before ? "OK" : "MISMATCH",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
    }
    printf("worst check relative to its tolerance: %.3f (%s)\n", ck.worst_rel, ck.worst_what.c_str());
    printf("test_gpt_cuda (%s): %d checks, %d failed, %zu state files, %.1f s\n", precision_name(precision), ck.checks, ck.failures,
           files.size(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.failures ? 1 : 0;
}
