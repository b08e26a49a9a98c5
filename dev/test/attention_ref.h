// attention_ref.h - causal multi-head attention in double precision on the CPU, the
// reference of test_attention.cu (materialised kernels) and test_flash_attention.cu.
//   qkv (B, T, 3C) [q | k | v], dout (B, T, C) -> out (B, T, C), dqkv (B, T, 3C), and
//   lse (B, NH, T): the natural log-sum-exp of each row's scaled scores.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

static void ref_attention(const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int C, int NH,
                          std::vector<double>& out, std::vector<double>& dqkv, std::vector<double>* lse = nullptr) {
    const int hd = C / NH;
    const double s = 1.0 / std::sqrt((double)hd);
    out.assign((size_t)B * T * C, 0.0);
    dqkv.assign((size_t)B * T * 3 * C, 0.0);
    if (lse) lse->assign((size_t)B * NH * T, 0.0);
    auto at = [&](int b, int t, int part, int h, int d) { return (size_t)(b * T + t) * 3 * C + part * C + h * hd + d; };
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            std::vector<double> P((size_t)T * T, 0.0), dP((size_t)T * T, 0.0);
            for (int i = 0; i < T; i++) {
                double mx = -1e300;
                std::vector<double> sc(i + 1);
                for (int j = 0; j <= i; j++) {
                    double d = 0;
                    for (int k = 0; k < hd; k++) d += (double)qkv[at(b, i, 0, h, k)] * qkv[at(b, j, 1, h, k)];
                    sc[j] = d * s;
                    mx = std::max(mx, sc[j]);
                }
                double sum = 0;
                for (int j = 0; j <= i; j++) sum += std::exp(sc[j] - mx);
                if (lse) (*lse)[((size_t)b * NH + h) * T + i] = mx + std::log(sum);
                for (int j = 0; j <= i; j++) P[(size_t)i * T + j] = std::exp(sc[j] - mx) / sum;
                for (int k = 0; k < hd; k++) {
                    double y = 0;
                    for (int j = 0; j <= i; j++) y += P[(size_t)i * T + j] * qkv[at(b, j, 2, h, k)];
                    out[(size_t)(b * T + i) * C + h * hd + k] = y;
                }
            }
            for (int i = 0; i < T; i++) {
                const float* dy = &dout[(size_t)(b * T + i) * C + h * hd];
                double dot = 0;
                for (int j = 0; j <= i; j++) {
                    double d = 0;
                    for (int k = 0; k < hd; k++) d += (double)dy[k] * qkv[at(b, j, 2, h, k)];
                    dP[(size_t)i * T + j] = d;
                    dot += d * P[(size_t)i * T + j];
                    for (int k = 0; k < hd; k++) dqkv[at(b, j, 2, h, k)] += P[(size_t)i * T + j] * dy[k];  // dV
                }
                for (int j = 0; j <= i; j++) {
                    double ds = s * P[(size_t)i * T + j] * (dP[(size_t)i * T + j] - dot);
                    for (int k = 0; k < hd; k++) {
                        dqkv[at(b, i, 0, h, k)] += ds * qkv[at(b, j, 1, h, k)];  // dQ
                        dqkv[at(b, j, 1, h, k)] += ds * qkv[at(b, i, 0, h, k)];  // dK
                    }
                }
            }
        }
}
