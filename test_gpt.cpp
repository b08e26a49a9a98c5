/*
test_gpt.cpp: checks train_gpt.cpp against the PyTorch reference states.

For every state file (by default every .bin in dev/reference/, written by
dev/make_reference.py) it loads the initial weights as a checkpoint, runs forward
and backward on the stored batch and compares: logits, loss, the gradient of
every tensor in the model's parameter table (the list is never typed here), the
per-layer gradient norms, the global norm; then the stored number of AdamW steps
(schedule, clipping) and their losses and gradient norms. Prints each check's max
absolute error and its error relative to the tensor's scale against the
tolerance; exits non-zero on any failure.

  ./test_gpt [flags] [state.bin ...]
    --post_ln_layers K   build the model with this K instead of the state's (negative test)
    --perturb NAME       add a small error to the computed gradient of tensor NAME (negative test)
    --attn_block N       rows per causal attention block (default: the trainer's 64; small odd
                         values make the blocked paths run on the tiny stored configs)
    --min_k_margin X     a model with K one off must miss the stored logits by at least X times
                         their tolerance (default 100; 0: print the margin only)
*/
#define TESTING
#include "train_gpt.cpp"

#include "common/refstate.h"
#include "dev/test/tensor_checker.h"

// Tolerances (fp32 C++ against float64 PyTorch rounded to fp32): the error is
// measured as max|a - r| / max(max|r|, floor), i.e. relative to the tensor's scale.
static const double TOL_LOGITS = 1e-5, TOL_LOSS = 1e-6, TOL_GRAD = 2e-5, TOL_NORM = 1e-5, TOL_STEP_LOSS = 1e-5,
                    TOL_LR = 1e-7;

using Checker = TensorChecker;   // dev/test/tensor_checker.h

// The stored states are built to discriminate (dev/make_reference.py, SHARP_*): a model with K
// one off must miss the stored logits by at least min_margin x their tolerance (--min_k_margin,
// default 100; the unsharpened extra set of make_reference.py is run with 0: printed only), on logits
// alone. Prints the margin of each neighbour K; a state too weak to tell them apart fails.
static void check_wrong_k_margin(const RefState& s, const ModelConfig& cfg, int attn_block, double min_margin, Checker& ck) {
    size_t BT = (size_t)s.B * s.T;
    for (int k : {cfg.post_ln_layers - 1, cfg.post_ln_layers + 1}) {
        if (k < 0 || k > cfg.n_layer) continue;
        ModelConfig wrong = cfg;
        wrong.post_ln_layers = k;
        Model m;
        m.init(wrong);
        if (attn_block > 0) m.attn_block = attn_block;
        m.params = s.params;
        m.forward(s.inputs.data(), s.targets.data(), s.B, s.T);
        double err = 0.0, ref = 0.0;
        for (size_t n = 0; n < BT; n++)
            for (int v = 0; v < cfg.vocab; v++) {
                double r = s.logits[n * cfg.vocab + v];
                err = std::max(err, std::fabs((double)m.logits[n * cfg.padded_vocab + v] - r));
                ref = std::max(ref, std::fabs(r));
            }
        double margin = err / std::max(ref, 1e-12) / TOL_LOGITS;
        char msg[160];
        snprintf(msg, sizeof msg, "a wrong K=%d misses the logits by %.0fx their tolerance (at least %.0fx needed)", k,
                 margin, min_margin);
        if (min_margin > 0) ck.expect(margin >= min_margin, msg);
        else printf("  info %s\n", msg);
    }
}

static void run_state(const std::string& path, int override_k, const std::string& perturb, int attn_block,
                      double min_k_margin, Checker& ck) {
    RefState s = read_refstate(path);
    ModelConfig cfg = s.ckpt.cfg;
    printf("%s: %s, %s, L=%d C=%d H=%d ffn=%d vocab=%d (padded %d), B=%d T=%d\n", path.c_str(), arch_name(cfg.arch),
           placement_name(cfg).c_str(), cfg.n_layer, cfg.d_model, cfg.n_head, cfg.ffn, cfg.vocab, cfg.padded_vocab, s.B,
           s.T);
    if (override_k >= 0) {
        if (override_k > cfg.n_layer) fatal("--post_ln_layers must be in [0, n_layer=%d], got %d", cfg.n_layer, override_k);
        printf("  (negative test: model built with post_ln_layers=%d instead of %d)\n", override_k, cfg.post_ln_layers);
        cfg.post_ln_layers = override_k;
    }
    Model model;
    model.init(cfg);
    if (attn_block > 0) model.attn_block = attn_block;

    // the C++ parameter table must be PyTorch's, tensor for tensor
    const ParamTable& pt = model.table;
    if (!check_param_table(ck, pt, s.table, "C++")) return;   // dev/test/tensor_checker.h
    model.params = s.params;

    // forward + backward on the stored batch
    float loss = model.forward(s.inputs.data(), s.targets.data(), s.B, s.T);
    size_t BT = (size_t)s.B * s.T;
    std::vector<float> logits(BT * cfg.vocab);
    for (size_t n = 0; n < BT; n++)
        memcpy(&logits[n * cfg.vocab], model.logits + n * cfg.padded_vocab, sizeof(float) * cfg.vocab);
    ck.check("logits", logits.data(), s.logits.data(), logits.size(), TOL_LOGITS);
    ck.check1("loss", loss, s.loss, TOL_LOSS);
    model.zero_grad();
    model.backward(s.B, s.T);
    if (!perturb.empty()) {
        const ParamTensor& p = pt.get(perturb);
        float* g = model.grads.data() + p.offset;
        float mx = 0.f;
        for (size_t i = 0; i < p.numel(); i++) mx = std::max(mx, fabsf(g[i]));
        g[p.numel() / 2] += 1e-3f * mx;
        printf("  (negative test: gradient of %s perturbed by 1e-3 of its scale at one element)\n", perturb.c_str());
    }
    for (const ParamTensor& p : pt.t)
        ck.check("grad " + p.name, model.grads.data() + p.offset, s.grads.data() + p.offset, p.numel(), TOL_GRAD);
    std::vector<double> sq = model.grad_sq_per_tensor();
    std::vector<float> ln = model.layer_norms(sq);
    ck.check("layer grad norms", ln.data(), s.layer_norms.data(), ln.size(), TOL_NORM);
    double tot = 0.0;
    for (double x : sq) tot += x;
    ck.check1("global grad norm", (float)sqrt(tot), s.total_norm, TOL_NORM);

    check_wrong_k_margin(s, cfg, attn_block, min_k_margin, ck);

    // N optimizer steps on the same batch, from the initial weights
    model.params = s.params;
    std::fill(model.m.begin(), model.m.end(), 0.f);
    std::fill(model.v.begin(), model.v.end(), 0.f);
    model.step = 0;
    std::vector<float> lrs, losses, norms;
    for (int step = 0; step < s.n_steps; step++) {
        float lr = (float)lr_at(step, s.lr, s.warmup, s.sched_total, s.lr_floor);
        model.zero_grad();
        losses.push_back(model.forward(s.inputs.data(), s.targets.data(), s.B, s.T));
        model.backward(s.B, s.T);
        float norm = global_norm(model.grad_sq_per_tensor());   // common/run.h, as the trainers
        model.adamw_update(lr, s.beta1, s.beta2, s.eps, s.weight_decay, clip_scale(norm, s.grad_clip));
        lrs.push_back(lr);
        norms.push_back(norm);
    }
    ck.check("schedule lr (" + std::to_string(s.n_steps) + " steps)", lrs.data(), s.lrs.data(), lrs.size(), TOL_LR);
    ck.check("step losses", losses.data(), s.losses.data(), losses.size(), TOL_STEP_LOSS);
    ck.check("step grad norms", norms.data(), s.grad_norms.data(), norms.size(), TOL_NORM);
}

int main(int argc, char** argv) {
    int override_k = -1, attn_block = 0;
    double min_k_margin = 100.0;
    std::string perturb;
    std::vector<std::string> files;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--post_ln_layers" && i + 1 < argc) {
            char* end;
            override_k = (int)strtol(argv[++i], &end, 10);
            if (*end || override_k < 0) fatal("--post_ln_layers expects a non-negative integer, got '%s'", argv[i]);
        } else if (a == "--attn_block" && i + 1 < argc) {
            char* end;
            attn_block = (int)strtol(argv[++i], &end, 10);
            if (*end || attn_block < 1) fatal("--attn_block expects a positive integer, got '%s'", argv[i]);
        } else if (a == "--min_k_margin" && i + 1 < argc) {
            char* end;
            min_k_margin = strtod(argv[++i], &end);
            if (*end || !(min_k_margin >= 0 && min_k_margin < 1e12)) fatal("--min_k_margin expects a number >= 0, got '%s'", argv[i]);
        } else if (a == "--perturb" && i + 1 < argc) {
            perturb = argv[++i];
        } else if (a == "--help" || a == "-h") {
            printf("usage: %s [--post_ln_layers K] [--perturb TENSOR] [--attn_block N] [--min_k_margin X (default 100)] [state.bin ...]\n", argv[0]);
            return 0;
        } else if (a.rfind("--", 0) == 0) {
            fatal("unknown flag %s (see --help)", a.c_str());
        } else {
            files.push_back(a);
        }
    }
    if (files.empty()) files = glob_files("dev/reference/*.bin");
    if (files.empty()) fatal("no reference states found (dev/reference/*.bin; run `make reference`)");
    Checker ck;
    for (const std::string& f : files) {
        int before = ck.failures;
        run_state(f, override_k, perturb, attn_block, min_k_margin, ck);
        printf("%s: %s\n\n", f.c_str(), ck.failures == before ? "OK" : "MISMATCH");
    }
    printf("worst check relative to its tolerance: %.3f (%s)\n", ck.worst_rel, ck.worst_what.c_str());
    printf("test_gpt: %d checks, %d failed, %zu state files\n", ck.checks, ck.failures, files.size());
    return ck.failures ? 1 : 0;
}
