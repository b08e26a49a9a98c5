// Model configuration, presets and the parameter table, shared by both trainers.
//
// The parameter table is the single list of every parameter tensor, in
// checkpoint order (docs/FORMATS.md). Everything that walks over parameters
// (checkpoint I/O, the optimizer, gradient norms, the tests) is driven by it;
// no tensor list is typed anywhere else. The order is layer-major, so the
// parameters of layer l are one contiguous slice [layer_begin[l], layer_end[l])
// of the flat parameter (and gradient) array, and a per-layer gradient norm is
// one reduction over a contiguous range.
#pragma once
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "util.h"

enum Arch { ARCH_GPT = 0, ARCH_LLAMA = 1 };
inline const char* arch_name(int a) { return a == ARCH_GPT ? "gpt" : "llama"; }

struct ModelConfig {
    int arch = ARCH_LLAMA;
    int n_layer = 0, n_head = 0, d_model = 0;
    int ffn = 0;                 // MLP hidden size (gpt: 4*d_model; llama: SwiGLU hidden size)
    int vocab = 0;               // real vocabulary size
    int padded_vocab = 0;        // rows of the embedding / LM head (multiple of 128)
    int max_seq_len = 0;
    int post_ln_layers = 0;      // K: layers [0, K) Post-LN, [K, L) Pre-LN
    float norm_eps = 0;          // gpt LayerNorm 1e-5, llama RMSNorm 1e-6
    float rope_theta = 10000.f;
    float init_std = 0.02f;      // linear weights ~ N(0, init_std)
    float emb_std = 0.02f;       // token embedding ~ N(0, emb_std) (paper's code: sqrt(2/5))
    int scaled_init = 0;         // residual projections ~ N(0, init_std / sqrt(2L))

    int head_dim() const { return d_model / n_head; }
    bool post_ln(int layer) const { return layer < post_ln_layers; }
    bool gpt() const { return arch == ARCH_GPT; }
};

// Fill defaults that follow from the others, then check everything; on a bad
// value, a one-line error naming the flag.
// The size bounds are the checkpoint reader's (common/checkpoint.h), so that every model
// a trainer builds is one it can read back; all sizes derived from them fit in 64 bits.
static const int MAX_N_LAYER = 1024, MAX_D_MODEL = 1 << 16, MAX_FFN = 1 << 20, MAX_PADDED_VOCAB = 1 << 24,
                 MAX_SEQ_LEN = 1 << 20;
inline void finalize_config(ModelConfig& c) {
    if (c.arch != ARCH_GPT && c.arch != ARCH_LLAMA) fatal("--arch must be gpt or llama");
    if (c.n_layer < 1 || c.n_layer > MAX_N_LAYER) fatal("--n_layer must be in [1, %d], got %d", MAX_N_LAYER, c.n_layer);
    if (c.d_model < 1 || c.d_model > MAX_D_MODEL) fatal("--d_model must be in [1, %d], got %d", MAX_D_MODEL, c.d_model);
    if (c.n_head < 1) fatal("--n_head must be positive, got %d", c.n_head);
    if (c.d_model % c.n_head) fatal("--d_model (%d) must be divisible by --n_head (%d)", c.d_model, c.n_head);
    if (!c.gpt() && c.head_dim() % 2) fatal("llama needs an even head dimension for RoPE (d_model/n_head = %d)", c.head_dim());
    if (c.ffn == 0) {
        if (!c.gpt()) fatal("--ffn is required for llama (the SwiGLU hidden size)");
        c.ffn = 4 * c.d_model;
    }
    if (c.ffn < 1 || c.ffn > MAX_FFN) fatal("--ffn must be in [1, %d], got %d", MAX_FFN, c.ffn);
    if (c.vocab < 2 || c.vocab > MAX_PADDED_VOCAB) fatal("--vocab must be in [2, %d], got %d", MAX_PADDED_VOCAB, c.vocab);
    if (c.padded_vocab == 0) c.padded_vocab = (int)(((long long)c.vocab + 127) / 128 * 128);
    if (c.padded_vocab < c.vocab) fatal("padded_vocab %d < vocab %d", c.padded_vocab, c.vocab);
    if (c.max_seq_len < 1 || c.max_seq_len > MAX_SEQ_LEN) fatal("--max_seq_len must be in [1, %d], got %d", MAX_SEQ_LEN, c.max_seq_len);
    if (c.norm_eps == 0) c.norm_eps = c.gpt() ? 1e-5f : 1e-6f;
    if (!(c.norm_eps > 0) || !std::isfinite(c.norm_eps)) fatal("--norm_eps must be a positive finite number, got %g", c.norm_eps);
    if (c.post_ln_layers < 0 || c.post_ln_layers > c.n_layer)
        fatal("--post_ln_layers must be in [0, n_layer=%d], got %d", c.n_layer, c.post_ln_layers);
}

inline std::string placement_name(const ModelConfig& c) {
    if (c.post_ln_layers == 0) return "Pre-LN";
    if (c.post_ln_layers == c.n_layer) return "Post-LN";
    return "Mix-LN (Post-LN in layers 0.." + std::to_string(c.post_ln_layers - 1) + ")";
}

// ----------------------------------------------------------------------------
// Presets: the paper's LLaMA configs (Table 1 of arXiv 2412.13795) and GPT-2 124M,
// with the paper's training recipe. post_ln_layers = -1 means "the paper's
// Mix-LN", floor(0.25 * n_layer), resolved after flags are parsed.

struct Preset {
    const char* name;
    int arch, n_layer, n_head, d_model, ffn, vocab, max_seq_len;
    int steps, warmup;
    float lr;
};
static const Preset PRESETS[] = {
    // name         arch        L   H   C     ffn    vocab  T     steps   warmup  lr
    {"llama-71m",  ARCH_LLAMA, 12, 8,  512,  1368,  32000, 256,  10000,  1000,  1e-3f},
    {"llama-130m", ARCH_LLAMA, 12, 12, 768,  2048,  32000, 256,  20000,  2000,  1e-3f},
    {"llama-250m", ARCH_LLAMA, 24, 16, 768,  2560,  32000, 256,  40000,  4000,  1e-3f},
    {"llama-1b",   ARCH_LLAMA, 24, 32, 2048, 5461,  32000, 256,  100000, 1000,  5e-4f},
    {"llama-7b",   ARCH_LLAMA, 32, 32, 4096, 11008, 32000, 256,  13000,  10000, 5e-4f},
    {"gpt2-124m",  ARCH_GPT,   12, 12, 768,  3072,  50257, 1024, 19073,  700,   6e-4f},
};

inline const Preset* find_preset(const std::string& name) {
    for (const Preset& p : PRESETS)
        if (name == p.name) return &p;
    return nullptr;
}

// ----------------------------------------------------------------------------
// The parameter table (same order as dev/model.py Model.param_table()).

struct ParamTensor {
    std::string name;   // e.g. "l3.qkv.w"
    int layer;          // -1 embeddings, 0..L-1 blocks, L final norm / LM head
    size_t rows, cols;  // a vector has cols == 1
    size_t offset;      // into the flat parameter array, in elements
    bool decay;         // AdamW weight decay applies (2-D tensors)
    size_t numel() const { return rows * cols; }
};

struct ParamTable {
    std::vector<ParamTensor> t;
    size_t total = 0;
    std::vector<size_t> layer_begin, layer_end;   // per block l: its contiguous slice
    const ParamTensor& get(const std::string& name) const {
        for (const ParamTensor& p : t)
            if (p.name == name) return p;
        fatal("internal: no parameter named %s", name.c_str());
    }
};

inline ParamTable build_param_table(const ModelConfig& c) {
    ParamTable pt;
    size_t C = c.d_model, F = c.ffn, Vp = c.padded_vocab;
    auto add = [&](std::string name, int layer, size_t rows, size_t cols) {
        pt.t.push_back({name, layer, rows, cols, pt.total, cols > 1});
        pt.total += rows * cols;
    };
    add("wte", -1, Vp, C);
    if (c.gpt()) add("wpe", -1, c.max_seq_len, C);
    for (int l = 0; l < c.n_layer; l++) {
        std::string p = "l" + std::to_string(l) + ".";
        pt.layer_begin.push_back(pt.total);
        if (c.gpt()) {
            add(p + "norm1.w", l, C, 1);      add(p + "norm1.b", l, C, 1);
            add(p + "qkv.w", l, 3 * C, C);    add(p + "qkv.b", l, 3 * C, 1);
            add(p + "attn_proj.w", l, C, C);  add(p + "attn_proj.b", l, C, 1);
            add(p + "norm2.w", l, C, 1);      add(p + "norm2.b", l, C, 1);
            add(p + "fc.w", l, F, C);         add(p + "fc.b", l, F, 1);
            add(p + "mlp_proj.w", l, C, F);   add(p + "mlp_proj.b", l, C, 1);
        } else {
            add(p + "norm1.w", l, C, 1);
            add(p + "qkv.w", l, 3 * C, C);
            add(p + "attn_proj.w", l, C, C);
            add(p + "norm2.w", l, C, 1);
            add(p + "fc.w", l, 2 * F, C);     // rows [0,F) gate, [F,2F) up
            add(p + "mlp_proj.w", l, C, F);
        }
        pt.layer_end.push_back(pt.total);
    }
    add("norm_f.w", c.n_layer, C, 1);
    if (c.gpt()) add("norm_f.b", c.n_layer, C, 1);
    else add("lm_head.w", c.n_layer, Vp, C);
    return pt;
}
