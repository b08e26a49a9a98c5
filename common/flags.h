// Command-line flags shared by both trainers. Every flag has a long form, most a
// short form, and a help line; `--help` prints the table. A preset sets the model
// and the paper's recipe first, then explicit flags override it, whatever their
// position on the command line. Unknown flags and bad values are one-line errors.
#pragma once
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "config.h"
#include "util.h"

struct TrainConfig {
    ModelConfig model;
    std::string preset;
    std::string arch = "llama";
    std::string placement = "mix";   // raw --post_ln_layers value: an integer, or pre / post / mix
    // data
    std::string train_data, val_data, tokenizer;
    int B = 4, T = 256;
    long total_batch = 0;            // tokens per optimizer step; 0 = B*T (no accumulation)
    long shuffle_seed = 0;
    // optimizer and schedule
    float lr = 1e-3f, lr_floor = 0.1f, weight_decay = 0.0f, beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
    float grad_clip = 1.0f;
    long warmup = 100, steps = 1000;
    // evaluation, logging, output
    int val_every = 100, val_steps = 20, sample_every = 0, sample_tokens = 32, layer_norms_every = 1;
    int print_every = 1;
    std::string log_path, out_dir, init_from;
    int ckpt_every = 0, keep_ckpts = 3, milestone_every = 0, resume = 0, overwrite = 0;
    uint64_t run_id = 0;             // not a flag: this run's id in its checkpoints (common/run.h open_out_dir)
    std::string nonfinite = "skip";  // skip | stop
    int skip_limit = 5;              // --nonfinite skip: stop after this many consecutive skipped steps
    long inject_nan_at = -1;         // test hook (MIXLN_TEST_NAN_AT, common/trainer.h): poison the gradient at this step
    int debug_slow_ckpt_ms = 0;      // test hook (MIXLN_TEST_SLOW_CKPT_MS): slow checkpoint writes down
    // analysis modes
    std::string mode = "train";      // train | angular | layer_drop
    std::string analysis_out;
    long seed = 1337;
    int threads = 0;
};

struct FlagSpec {
    const char* name;   // long form, without "--"
    char short_name;    // 0: none
    char kind;          // 'i' int, 'l' long, 'f' float, 's' string
    void* ptr;
    const char* help;
};

inline std::vector<FlagSpec> train_flags(TrainConfig& c) {
    ModelConfig& m = c.model;
    return {
        {"preset", 'p', 's', &c.preset, "llama-71m | llama-130m | llama-250m | llama-1b | llama-7b | gpt2-124m (sets model + paper recipe)"},
        {"arch", 'a', 's', &c.arch, "gpt (LayerNorm, GELU, learned pos, tied head) | llama (RMSNorm, SwiGLU, RoPE)"},
        {"n_layer", 0, 'i', &m.n_layer, "number of transformer blocks L"},
        {"n_head", 0, 'i', &m.n_head, "attention heads"},
        {"d_model", 0, 'i', &m.d_model, "model width C"},
        {"ffn", 0, 'i', &m.ffn, "MLP hidden size (gpt default 4C; llama: SwiGLU hidden size, required)"},
        {"vocab", 0, 'i', &m.vocab, "vocabulary size (padded to a multiple of 128 internally)"},
        {"max_seq_len", 0, 'i', &m.max_seq_len, "longest sequence the model accepts (gpt: rows of wpe)"},
        {"post_ln_layers", 'k', 's', &c.placement, "K: Post-LN in layers [0,K), Pre-LN after; integer, or pre (0) | post (L) | mix (floor(L/4), default)"},
        {"norm_eps", 0, 'f', &m.norm_eps, "norm epsilon (default gpt 1e-5, llama 1e-6)"},
        {"rope_theta", 0, 'f', &m.rope_theta, "RoPE base (llama)"},
        {"init_std", 0, 'f', &m.init_std, "std of linear weights at init"},
        {"emb_std", 0, 'f', &m.emb_std, "std of the token embedding at init (the paper's code used 0.632456 = sqrt(2/5))"},
        {"scaled_init", 0, 'i', &m.scaled_init, "1: residual output projections start with std init_std/sqrt(2L)"},
        {"train_data", 'i', 's', &c.train_data, "glob of training token shards"},
        {"val_data", 'j', 's', &c.val_data, "glob of validation token shards"},
        {"tokenizer", 0, 's', &c.tokenizer, "tokenizer file for decoding samples (optional)"},
        {"batch_size", 'b', 'i', &c.B, "micro-batch size B (sequences per forward/backward)"},
        {"seq_len", 't', 'i', &c.T, "sequence length T (<= max_seq_len)"},
        {"total_batch", 'd', 'l', &c.total_batch, "tokens per optimizer step (multiple of B*T; gradient accumulation); 0 = B*T"},
        {"shuffle_seed", 0, 'l', &c.shuffle_seed, "shuffle shards and batches with this seed (0: in order)"},
        {"lr", 'l', 'f', &c.lr, "peak learning rate"},
        {"lr_floor", 'q', 'f', &c.lr_floor, "cosine decays to lr_floor * lr (the paper: 0.1)"},
        {"warmup", 'u', 'l', &c.warmup, "linear warmup steps"},
        {"steps", 'x', 'l', &c.steps, "optimizer steps to run"},
        {"weight_decay", 'c', 'f', &c.weight_decay, "AdamW decoupled weight decay on 2-D tensors (the paper: 0)"},
        {"beta1", 0, 'f', &c.beta1, "AdamW beta1"},
        {"beta2", 0, 'f', &c.beta2, "AdamW beta2"},
        {"adam_eps", 0, 'f', &c.adam_eps, "AdamW epsilon"},
        {"grad_clip", 'g', 'f', &c.grad_clip, "clip the global gradient norm to this (0: off; the paper used none)"},
        {"val_every", 'v', 'i', &c.val_every, "validation loss every N steps (0: only at the end)"},
        {"val_steps", 'm', 'i', &c.val_steps, "validation batches per evaluation"},
        {"sample_every", 's', 'i', &c.sample_every, "generate a sample every N steps (0: only at the end)"},
        {"sample_tokens", 'n', 'i', &c.sample_tokens, "tokens per sample (0: never sample)"},
        {"layer_norms_every", 0, 'i', &c.layer_norms_every, "per-layer gradient norms every N steps (0: never)"},
        {"print_every", 0, 'i', &c.print_every, "print a step line every N steps"},
        {"log", 'o', 's', &c.log_path, "machine-readable log (JSON lines)"},
        {"out_dir", 0, 's', &c.out_dir, "folder for checkpoints"},
        {"ckpt_every", 0, 'i', &c.ckpt_every, "checkpoint every N steps (0: only at the end, if out_dir is set)"},
        {"keep_ckpts", 0, 'i', &c.keep_ckpts, "keep the newest N checkpoints in out_dir (older ones are deleted; milestones are kept)"},
        {"milestone_every", 0, 'i', &c.milestone_every, "checkpoints at multiples of N steps are kept forever (0: none)"},
        {"resume", 0, 'i', &c.resume, "1: continue from the newest complete checkpoint in out_dir (bit-exact), or start fresh if there is none"},
        {"overwrite", 0, 'i', &c.overwrite, "1: a fresh run (no --resume) into an out_dir that holds checkpoints deletes them (0: refused)"},
        {"nonfinite", 0, 's', &c.nonfinite, "on a NaN/Inf loss or gradient norm: skip (drop the update, count it) | stop (checkpoint the last good state, exit 1)"},
        {"skip_limit", 0, 'i', &c.skip_limit, "with --nonfinite skip: stop (exit 1) after this many consecutive skipped steps (0: never)"},
        {"init_from", 'e', 's', &c.init_from, "start from (or, in analysis modes, analyse) this checkpoint's weights; its config wins over model flags"},
        {"mode", 0, 's', &c.mode, "train | angular (angular distance between layers' hidden states) | layer_drop (val loss with each layer removed)"},
        {"analysis_out", 0, 's', &c.analysis_out, "JSON output file of an analysis mode"},
        {"seed", 'r', 'l', &c.seed, "random seed for init and sampling"},
        {"threads", 0, 'i', &c.threads, "OpenMP threads (0: OpenMP's default)"},
    };
}

// A flag's current value as text (its default, before parsing; "none" for an empty string).
inline std::string flag_value_text(const FlagSpec& f) {
    char b[64];
    switch (f.kind) {
        case 's': return ((std::string*)f.ptr)->empty() ? "none" : *(std::string*)f.ptr;
        case 'i': return std::to_string(*(int*)f.ptr);
        case 'l': return std::to_string(*(long*)f.ptr);
        default: snprintf(b, sizeof b, "%g", *(float*)f.ptr); return b;
    }
}

// `extra`: flags only one trainer has (the CUDA trainer's --precision), listed after the shared ones.
inline void print_help(const char* prog, TrainConfig& c, const std::vector<FlagSpec>& extra = {}) {
    printf("usage: %s [flags]   (--name value, --name=value, or -x value)\n\n", prog);
    std::vector<FlagSpec> all = train_flags(c);
    all.insert(all.end(), extra.begin(), extra.end());
    for (const FlagSpec& f : all) {
        char sh[8] = "    ";
        if (f.short_name) snprintf(sh, sizeof sh, "-%c, ", f.short_name);
        printf("  %s--%-18s %s [default: %s]\n", sh, f.name, f.help, flag_value_text(f).c_str());
    }
    printf("\npresets:\n");
    for (const Preset& p : PRESETS)
        printf("  %-11s %-5s L=%-2d H=%-2d C=%-4d ffn=%-5d vocab=%d T=%d steps=%d warmup=%d lr=%g\n", p.name,
               arch_name(p.arch), p.n_layer, p.n_head, p.d_model, p.ffn, p.vocab, p.max_seq_len, p.steps, p.warmup, p.lr);
}

inline void set_flag_value(const FlagSpec& f, const char* v) {
    char* end = nullptr;
    errno = 0;
    switch (f.kind) {
        case 's': *(std::string*)f.ptr = v; return;
        case 'i': case 'l': {
            long x = strtol(v, &end, 10);
            if (!*v || *end) fatal("--%s expects an integer, got '%s'", f.name, v);
            if (errno) fatal("--%s value %s is out of range", f.name, v);
            if (f.kind == 'i') {
                if (x < -2147483647L || x > 2147483647L) fatal("--%s value %s is out of range", f.name, v);
                *(int*)f.ptr = (int)x;
            } else {
                *(long*)f.ptr = x;
            }
            return;
        }
        case 'f': {   // parsed as a double, then it must be a finite float (no NaN, Inf, overflow or underflow)
            double x = strtod(v, &end);
            if (!*v || *end) fatal("--%s expects a number, got '%s'", f.name, v);
            if (std::isnan(x) || std::isinf(x)) fatal("--%s must be a finite number, got '%s'", f.name, v);
            if (fabs(x) > FLT_MAX || (x != 0 && fabs(x) < FLT_MIN)) fatal("--%s value %s is out of range (not a normal float)", f.name, v);
            *(float*)f.ptr = (float)x;
            return;
        }
    }
}

inline void apply_preset(TrainConfig& c, const std::string& name) {
    const Preset* p = find_preset(name);
    if (!p) {
        std::string names;
        for (const Preset& q : PRESETS) names += std::string(names.empty() ? "" : ", ") + q.name;
        fatal("--preset: unknown preset '%s' (have: %s)", name.c_str(), names.c_str());
    }
    c.arch = arch_name(p->arch);
    c.model.n_layer = p->n_layer; c.model.n_head = p->n_head; c.model.d_model = p->d_model;
    c.model.ffn = p->ffn; c.model.vocab = p->vocab; c.model.max_seq_len = p->max_seq_len;
    c.T = p->max_seq_len;
    c.steps = p->steps; c.warmup = p->warmup; c.lr = p->lr;
    if (p->arch == ARCH_LLAMA) {   // the paper's recipe: Adam(0.9, 0.999), no decay, no clipping
        c.beta2 = 0.999f; c.weight_decay = 0.f; c.grad_clip = 0.f; c.total_batch = 512L * p->max_seq_len;
    } else {                       // llm.c's GPT-2 recipe
        c.beta2 = 0.95f; c.weight_decay = 0.1f; c.grad_clip = 1.f; c.total_batch = 524288;
    }
}

// Resolve --post_ln_layers: an integer, or pre / post / mix.
inline int parse_placement(const std::string& v, int n_layer) {
    if (v == "pre") return 0;
    if (v == "post") return n_layer;
    if (v == "mix") return n_layer / 4;
    char* end = nullptr;
    long k = strtol(v.c_str(), &end, 10);
    if (v.empty() || *end) fatal("--post_ln_layers expects an integer or pre/post/mix, got '%s'", v.c_str());
    if (k < 0 || k > n_layer) fatal("--post_ln_layers must be in [0, n_layer=%d], got %ld", n_layer, k);
    return (int)k;
}

// Every flag's range, from the flags alone: called by parse_train_flags, so a bad value
// stops the run before it creates, locks or deletes any file. One line naming the flag.
inline void check_flag_values(const TrainConfig& c) {
    auto in = [](const char* flag, double x, double lo, double hi, bool lo_open, bool hi_open) {
        if (!((lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi))) return;
        if (hi >= FLT_MAX) fatal("--%s must be %s %g, got %g", flag, lo_open ? ">" : ">=", lo, x);
        fatal("--%s must be in %c%g, %g%c, got %g", flag, lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']', x);
    };
    in("lr", c.lr, 0, 10, true, false);
    in("lr_floor", c.lr_floor, 0, 1, false, false);
    in("weight_decay", c.weight_decay, 0, 100, false, false);
    in("beta1", c.beta1, 0, 1, false, true);
    in("beta2", c.beta2, 0, 1, false, true);
    in("adam_eps", c.adam_eps, 0, 1, true, false);
    in("grad_clip", c.grad_clip, 0, FLT_MAX, false, false);   // 0: off
    in("norm_eps", c.model.norm_eps, 0, 1, false, false);      // 0: the arch's default
    in("rope_theta", c.model.rope_theta, 0, FLT_MAX, true, false);
    in("init_std", c.model.init_std, 0, 100, true, false);
    in("emb_std", c.model.emb_std, 0, 100, true, false);
    if (c.B < 1) fatal("--batch_size must be positive, got %d", c.B);
    if (c.T < 1) fatal("--seq_len must be positive, got %d", c.T);
    if (c.total_batch < 0) fatal("--total_batch must be >= 0 (0: B*T), got %ld", c.total_batch);
    if (c.warmup < 0 || c.steps < 0) fatal("--warmup and --steps must be >= 0");
    if (c.val_every < 0 || c.val_steps < 0 || c.sample_every < 0 || c.sample_tokens < 0 || c.layer_norms_every < 0 ||
        c.ckpt_every < 0 || c.threads < 0 || c.print_every < 1 || c.keep_ckpts < 0 || c.milestone_every < 0 ||
        c.debug_slow_ckpt_ms < 0 || c.skip_limit < 0)
        fatal("interval and count flags must be >= 0 (--print_every >= 1)");
    if (c.nonfinite != "skip" && c.nonfinite != "stop") fatal("--nonfinite must be skip or stop, got '%s'", c.nonfinite.c_str());
    if (c.mode != "train" && c.mode != "angular" && c.mode != "layer_drop")
        fatal("--mode must be train, angular or layer_drop, got '%s'", c.mode.c_str());
    if (c.resume != 0 && c.resume != 1) fatal("--resume must be 0 or 1");
    if (c.overwrite != 0 && c.overwrite != 1) fatal("--overwrite must be 0 or 1");
    if (c.resume && c.overwrite) fatal("--resume 1 continues the run in --out_dir, --overwrite 1 deletes it: use one");
    if (c.resume && c.out_dir.empty()) fatal("--resume needs --out_dir (the folder holding the checkpoints)");
}

// Checks that need the final model config (after flags or --init_from). The product of
// sizes is formed in 64 bits, and a step has at most 2^20 micro-steps.
inline void check_train_config(const TrainConfig& c, int world = 1) {
    check_flag_values(c);
    if (c.T > c.model.max_seq_len) fatal("--seq_len %d does not fit the model's max_seq_len %d", c.T, c.model.max_seq_len);
    long long bt = (long long)c.B * c.T * world;
    if (c.total_batch % bt) fatal("--total_batch %ld is not a multiple of B*T*ranks = %lld", c.total_batch, bt);
    if (c.total_batch / bt > (1 << 20))
        fatal("--total_batch %ld is %lld micro-steps of B*T*ranks = %lld tokens; at most %d (raise -b/-t or lower -d)",
              c.total_batch, c.total_batch / bt, bt, 1 << 20);
}

// The model flags (when the model comes from flags, not --init_from) checked right after
// parsing too, so that a bad model stops the run before any file is touched.
inline void check_model_flags(const TrainConfig& c) {
    if (!c.init_from.empty() || c.model.n_layer == 0) return;
    TrainConfig t = c;
    t.model.post_ln_layers = parse_placement(t.placement, t.model.n_layer);
    finalize_config(t.model);
    if (t.total_batch == 0) t.total_batch = (long)t.B * t.T;
    check_train_config(t);
}

// Say what a preset decided that the explicit flags did not (a user who overrides -b/-t
// keeps the preset's tokens per step; --d_model keeps its ffn), warn when the warmup
// outlasts the run, and warn about a flag given twice (the last value wins).
inline void explain_flags(const TrainConfig& c, const std::string& preset,
                          const std::vector<std::pair<std::string, std::string>>& given) {
    auto has = [&](const char* n) {
        for (const auto& g : given) if (g.first == n) return true;
        return false;
    };
    for (size_t i = 0; i < given.size(); i++) {   // warn once per repeated flag, at its first occurrence
        size_t count = 0;
        std::string last;
        bool first = true;
        for (size_t j = 0; j < given.size(); j++) {
            if (given[j].first != given[i].first) continue;
            if (j < i) first = false;
            count++;
            last = given[j].second;
        }
        if (count > 1 && first)
            fprintf(stderr, "warning: --%s is given %zu times; the last value, '%s', is used\n", given[i].first.c_str(), count,
                    last.c_str());
    }
    if (!preset.empty() && (has("batch_size") || has("seq_len")) && !has("total_batch"))
        printf("note: --total_batch %ld (tokens per optimizer step) comes from preset %s; with B=%d T=%d a step is %ld "
               "micro-steps (set -d to change it)\n", c.total_batch, preset.c_str(), c.B, c.T, c.total_batch / ((long)c.B * c.T));
    if (!preset.empty() && (has("d_model") || has("n_layer") || has("n_head")) && !has("ffn"))
        printf("note: --ffn %d comes from preset %s, not from the model flags given (set --ffn to change it)\n",
               c.model.ffn, preset.c_str());
    if (c.warmup > c.steps && c.mode == "train")
        printf("note: --warmup %ld%s is longer than --steps %ld: the whole run is warmup\n", c.warmup,
               has("warmup") || preset.empty() ? "" : (" (from preset " + preset + ")").c_str(), c.steps);
}

// Parse argv into c (and into the targets of `extra`, flags only one trainer has).
// Returns false after printing --help.
inline bool parse_train_flags(int argc, char** argv, TrainConfig& c, const std::vector<FlagSpec>& extra = {}) {
    std::vector<FlagSpec> flags = train_flags(c);
    flags.insert(flags.end(), extra.begin(), extra.end());
    struct Pair { const FlagSpec* f; const char* v; };
    std::vector<Pair> pairs;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") { print_help(argv[0], c, extra); return false; }
        const FlagSpec* f = nullptr;
        const char* v = nullptr;
        if (a.rfind("--", 0) == 0) {
            std::string name = a.substr(2), val;
            size_t eq = name.find('=');
            if (eq != std::string::npos) { val = name.substr(eq + 1); name = name.substr(0, eq); }
            for (const FlagSpec& s : flags) if (name == s.name) f = &s;
            if (!f) fatal("unknown flag --%s (see --help)", name.c_str());
            if (eq != std::string::npos) v = argv[i] + 2 + eq + 1;
        } else if (a.size() == 2 && a[0] == '-') {
            for (const FlagSpec& s : flags) if (s.short_name && a[1] == s.short_name) f = &s;
            if (!f) fatal("unknown flag %s (see --help)", a.c_str());
        } else {
            fatal("unexpected argument '%s' (flags look like --name value; see --help)", a.c_str());
        }
        if (!v) {
            if (i + 1 >= argc) fatal("flag %s needs a value", a.c_str());
            v = argv[++i];
        }
        pairs.push_back({f, v});
    }
    std::string preset;
    for (const Pair& p : pairs)   // the preset first
        if (std::string(p.f->name) == "preset") apply_preset(c, preset = p.v);
    for (const Pair& p : pairs)
        if (std::string(p.f->name) != "preset") set_flag_value(*p.f, p.v);
    if (c.arch == "gpt") c.model.arch = ARCH_GPT;
    else if (c.arch == "llama") c.model.arch = ARCH_LLAMA;
    else fatal("--arch must be gpt or llama, got '%s'", c.arch.c_str());
    std::vector<std::pair<std::string, std::string>> given;
    for (const Pair& p : pairs) given.push_back({p.f->name, p.v});
    check_flag_values(c);   // before the trainer touches any file
    check_model_flags(c);
    explain_flags(c, preset, given);
    return true;
}

