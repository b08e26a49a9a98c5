// common/analysis.h - the analyses of a trained model (--mode angular | layer_drop), the parts
// both trainers share: the angular-distance sums, the layer-drop table, their JSON files and
// printed summaries (formats in docs/ANALYSIS.md). Each trainer runs its own forwards and
// hands over what they give: the residual streams at one token (angular), the mean validation
// loss with each layer removed (layer_drop).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "config.h"
#include "flags.h"
#include "logger.h"
#include "util.h"

// The flags an analysis mode needs (one-line errors).
inline void check_analysis_flags(const TrainConfig& tc) {
    if (tc.val_data.empty()) fatal("--mode %s needs --val_data (the batches to analyse)", tc.mode.c_str());
    if (tc.analysis_out.empty()) fatal("--mode %s needs --analysis_out FILE.json", tc.mode.c_str());
    if (tc.val_steps < 1) fatal("--val_steps must be >= 1 in --mode %s", tc.mode.c_str());
}

// Angular distance between the residual streams entering layers i and j (x_0 the embedding
// output, x_L the last block's output), one sample per sequence (its last token):
//   d(i, j) = mean over samples of arccos(cos(x_i, x_j)) / pi
// add() takes one sample; sum holds the sums until finish() divides by the sample count (a
// data-parallel caller first adds the ranks' sums and counts).
struct AngularDistances {
    int L = 0;
    std::vector<std::vector<double>> sum;
    long samples = 0;
    explicit AngularDistances(int n_layer) : L(n_layer), sum(n_layer + 1, std::vector<double>(n_layer + 1, 0.0)) {}
    // x[i] (i = 0..L): C floats, the stream entering layer i at the sample's token
    void add(const std::vector<const float*>& x, int C) {
        for (int i = 0; i <= L; i++)
            for (int j = i + 1; j <= L; j++) {
                double xy = 0, xx = 0, yy = 0;
                for (int c = 0; c < C; c++) {
                    xy += (double)x[i][c] * x[j][c];
                    xx += (double)x[i][c] * x[i][c];
                    yy += (double)x[j][c] * x[j][c];
                }
                double cs = xy / std::max(sqrt(xx * yy), 1e-30);
                cs = std::max(-1.0, std::min(1.0, cs));
                const double d = acos(cs) / M_PI;
                sum[i][j] += d;
                sum[j][i] += d;
            }
        samples++;
    }
    std::vector<std::vector<double>> mean() const {
        std::vector<std::vector<double>> D = sum;
        for (auto& r : D)
            for (double& x : r) x /= std::max(1L, samples);
        return D;
    }
    // {"kind":"angular_distance","n_layer":L,"samples":S,"distance":[[...]]}, and d(l, l+1) printed
    std::string json_and_print() const {
        const std::vector<std::vector<double>> D = mean();
        std::string out = "{\"kind\":\"angular_distance\",\"n_layer\":" + std::to_string(L) + ",\"samples\":" + std::to_string(samples) +
                          ",\"distance\":[";
        for (size_t i = 0; i < D.size(); i++) {
            out += i ? ",[" : "[";
            for (size_t j = 0; j < D[i].size(); j++) out += (j ? "," : "") + JsonLine::num(D[i][j]);
            out += "]";
        }
        out += "]}\n";
        printf("angular distance over %ld last-token hidden states, d(l, l+1):", samples);
        for (int l = 0; l < L; l++) printf(" %.3f", D[l][l + 1]);
        printf("\n");
        return out;
    }
};

// The printed line of one layer_drop result as it is measured: l = -1 the full model (loss
// full), else the loss lo without layer l.
inline void print_layer_drop(const ModelConfig& c, int l, double lo, double full) {
    if (l < 0) printf("full model: val loss %.4f, ppl %.2f\n", full, exp(full));
    else printf("without layer %2d (%s): val loss %.4f (%+.4f), ppl %.2f (%+.2f)\n", l, c.post_ln(l) ? "Post-LN" : "Pre-LN ", lo,
                lo - full, exp(lo), exp(lo) - exp(full));
}
// {"kind":"layer_drop","n_layer":L,"full_loss":..,"full_ppl":..,"layers":[{"layer":l,"loss":..,"ppl":..,
// "delta_loss":..,"delta_ppl":..},...]} from the full model's loss and without[l] (layer l removed)
inline std::string layer_drop_json(const ModelConfig& c, double full, const std::vector<double>& without) {
    std::string out = "{\"kind\":\"layer_drop\",\"n_layer\":" + std::to_string(c.n_layer) + ",\"full_loss\":" + JsonLine::num(full) +
                      ",\"full_ppl\":" + JsonLine::num(exp(full)) + ",\"layers\":[";
    for (int l = 0; l < c.n_layer; l++) {
        const double lo = without[l];
        out += std::string(l ? "," : "") + "{\"layer\":" + std::to_string(l) + ",\"loss\":" + JsonLine::num(lo) +
               ",\"ppl\":" + JsonLine::num(exp(lo)) + ",\"delta_loss\":" + JsonLine::num(lo - full) +
               ",\"delta_ppl\":" + JsonLine::num(exp(lo) - exp(full)) + "}";
    }
    out += "]}\n";
    return out;
}

// The layer_drop analysis: the full model's validation loss, then the loss with each block
// removed, each line printed as it is measured; returns the JSON file's text. loss(l) is the
// mean validation loss with block l skipped (l = -1: none), from the trainer's own forward.
template <typename LossFn>
std::string layer_drop(const ModelConfig& c, LossFn loss) {
    const double full = loss(-1);
    print_layer_drop(c, -1, full, full);
    std::vector<double> without(c.n_layer);
    for (int l = 0; l < c.n_layer; l++) {
        without[l] = loss(l);
        print_layer_drop(c, l, without[l], full);
    }
    return layer_drop_json(c, full, without);
}

// the analysis file, written under a temporary name and renamed (never half-written)
inline void write_text_atomically(const std::string& path, const std::string& text) {
    AtomicFile f(path);
    f.write(text.data(), text.size());
    f.commit_or_die();
    printf("wrote %s\n", path.c_str());
}
