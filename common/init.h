// init.h - the paper's initialisation (dev/model.py Model.reset_parameters), shared by both
// trainers so that a seed gives the same weights on the CPU and on the GPU:
//   norm weights 1, biases 0; wte ~ N(0, emb_std); attn_proj.w and mlp_proj.w ~
//   N(0, init_std / sqrt(2 L)) with scaled_init, else like every other matrix N(0, init_std);
//   the padded vocabulary rows of wte / lm_head.w are 0.
// Draws: one Rng stream (common/rng.h) over the tensors in table order, one Box-Muller normal
// (two raw draws) per random element, the padded rows included (then zeroed). The raw draws
// are made in order, chunk by chunk (cheap); the log/sqrt/cos that turn them into normals
// run in parallel with OpenMP (the expensive part: 1.1e9 normals for llama-1b). Same values
// as one sequential loop, with or without OpenMP.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "config.h"
#include "rng.h"

inline void init_params(const ParamTable& table, const ModelConfig& cfg, uint64_t seed, float* params) {
    Rng rng(seed);
    const size_t CHUNK = (size_t)1 << 22;   // normals per batch of raw draws (64 MiB of draws)
    std::vector<uint64_t> raw;
    for (const ParamTensor& p : table.t) {
        float* w = params + p.offset;
        const bool is_norm_w = p.name.find("norm") != std::string::npos && p.name.back() == 'w';
        const bool is_bias = p.name.size() > 2 && p.name.substr(p.name.size() - 2) == ".b";
        if (is_norm_w) { std::fill(w, w + p.numel(), 1.f); continue; }
        if (is_bias) { std::fill(w, w + p.numel(), 0.f); continue; }
        float std_ = cfg.init_std;
        if (p.name == "wte") std_ = cfg.emb_std;
        const bool resid_proj = p.name.find("attn_proj.w") != std::string::npos || p.name.find("mlp_proj.w") != std::string::npos;
        if (cfg.scaled_init && resid_proj) std_ = cfg.init_std / sqrtf(2.f * cfg.n_layer);
        for (size_t start = 0; start < p.numel(); start += CHUNK) {
            const long long n = (long long)std::min(CHUNK, p.numel() - start);
            raw.resize(2 * (size_t)n);
            for (long long i = 0; i < 2 * n; i++) raw[i] = rng.next_u64();
            float* out = w + start;
#pragma omp parallel for schedule(static)
            for (long long i = 0; i < n; i++) out[i] = (float)(Rng::normal_from(raw[2 * i], raw[2 * i + 1]) * std_);
        }
        if (p.name == "wte" || p.name == "lm_head.w")   // padded vocab rows stay zero
            std::fill(w + (size_t)cfg.vocab * p.cols, w + p.numel(), 0.f);
    }
}
