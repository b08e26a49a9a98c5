// layout.h - what both trainers derive from the parameter table (common/config.h): named
// pointers to every tensor of a flat parameter (or gradient) array, the RoPE tables, and the
// model FLOPs per token.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "config.h"

// Pointers to one layer's tensors in a flat array (parameters or gradients).
template <typename T>
struct LayerTensors {
    T *norm1_w, *norm1_b, *qkv_w, *qkv_b, *attn_proj_w, *attn_proj_b;
    T *norm2_w, *norm2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;   // biases are null for llama
};
template <typename T>
struct Tensors {
    T *wte, *wpe, *norm_f_w, *norm_f_b, *lm_head;   // lm_head == wte for gpt (tied)
    std::vector<LayerTensors<T>> layer;
};

// Resolve every tensor by name through the parameter table (the same for parameters and
// gradients; a tensor the architecture does not have is null).
template <typename T>
inline Tensors<T> tensors_in(const ParamTable& pt, const ModelConfig& c, T* base) {
    auto at = [&](const std::string& name) -> T* {
        for (const ParamTensor& p : pt.t)
            if (p.name == name) return base + p.offset;
        return nullptr;
    };
    Tensors<T> w;
    w.wte = at("wte"); w.wpe = at("wpe"); w.norm_f_w = at("norm_f.w"); w.norm_f_b = at("norm_f.b");
    w.lm_head = c.gpt() ? w.wte : at("lm_head.w");
    for (int l = 0; l < c.n_layer; l++) {
        std::string p = "l" + std::to_string(l) + ".";
        w.layer.push_back({at(p + "norm1.w"), at(p + "norm1.b"), at(p + "qkv.w"), at(p + "qkv.b"), at(p + "attn_proj.w"),
                           at(p + "attn_proj.b"), at(p + "norm2.w"), at(p + "norm2.b"), at(p + "fc.w"), at(p + "fc.b"),
                           at(p + "mlp_proj.w"), at(p + "mlp_proj.b")});
    }
    return w;
}

// RoPE tables (llama), (max_seq_len, hd/2) each: cos and sin of t * theta^(-2i/hd), computed
// in double and rounded once.
inline void rope_tables(const ModelConfig& c, std::vector<float>& cos_t, std::vector<float>& sin_t) {
    const int half = c.head_dim() / 2;
    cos_t.assign((size_t)c.max_seq_len * half, 0.f);
    sin_t.assign(cos_t.size(), 0.f);
    for (int t = 0; t < c.max_seq_len; t++)
        for (int i = 0; i < half; i++) {
            double ang = t * pow((double)c.rope_theta, -2.0 * i / c.head_dim());
            cos_t[(size_t)t * half + i] = (float)cos(ang);
            sin_t[(size_t)t * half + i] = (float)sin(ang);
        }
}

// Model FLOPs per token of a training step: 6 per matmul weight (forward 2, backward 4) over
// every weight that is multiplied (not wpe, not the llama input embedding lookup), plus
// 6 * L * C * T for attention's two T x T products (counted causally: half of 12 L C T; the
// 6N + 6LCT of llm.c's MFU). The logical table: a device's zero padding is not counted.
inline double flops_per_token(const ParamTable& table, const ModelConfig& c, int T) {
    double P = (double)table.total;
    if (c.gpt()) P -= (double)c.max_seq_len * c.d_model;
    else P -= (double)c.padded_vocab * c.d_model;
    return 6.0 * P + 6.0 * c.n_layer * c.d_model * (double)T;
}
