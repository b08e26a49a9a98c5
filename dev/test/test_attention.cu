// test_attention.cu - kernels/attention.cuh (split/merge heads, causal softmax forward and
// backward, the whole attention forward/backward through the GEMM wrapper) and
// kernels/classifier.cuh against double-precision CPU references, fp32 and bf16, odd
// sizes (T not a multiple of the lane group, one head, hd = 2), outputs poisoned with NaN
// first, and a rerun that must be bitwise identical. Exit non-zero on any mismatch.
#include "test_util.h"

#include "../../kernels/attention.cuh"
#include "../../kernels/classifier.cuh"

struct Case { int B, T, C, NH; };
static std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// reference attention in double: out (B,T,C), and the backward dqkv given dout
static void ref_attention(const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int C, int NH,
                          std::vector<double>& out, std::vector<double>& dqkv) {
    const int hd = C / NH;
    const double s = 1.0 / std::sqrt((double)hd);
    out.assign((size_t)B * T * C, 0.0);
    dqkv.assign((size_t)B * T * 3 * C, 0.0);
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

template <typename T>
static void run_attention(Checker& ck, Rng& rng, const Case& cs) {
    const int B = cs.B, T_ = cs.T, C = cs.C, NH = cs.NH;
    const size_t N = (size_t)B * T_;
    const bool bf16 = sizeof(T) == 2;
    const double atol = bf16 ? 3e-2 : 2e-5, rtol = bf16 ? 3e-2 : 2e-5;
    printf("%s attention B=%d T=%d C=%d NH=%d (lanes per row %d)\n", type_name<T>(), B, T_, C, NH, softmax_group(T_));
    std::vector<float> qkv = round_to<T>(rng.normal(N * 3 * C)), dout = round_to<T>(rng.normal(N * C));
    std::vector<double> out_ref, dqkv_ref;
    ref_attention(qkv, dout, B, T_, C, NH, out_ref, dqkv_ref);
    DeviceBuffer<T> d_qkv(N * 3 * C), d_out(N * C), d_att((size_t)B * NH * T_ * T_), d_scratch(attention_scratch_elems(B, T_, C, NH)),
        d_dout(N * C), d_dqkv(N * 3 * C);
    d_qkv.upload(qkv);
    d_dout.upload(dout);
    std::vector<unsigned char> first_out, first_dqkv;
    for (int rep = 0; rep < 2; rep++) {
        d_out.poison();
        d_att.poison();
        d_scratch.poison();
        d_dqkv.poison();
        attention_forward<T>(d_out, d_att, d_qkv, d_scratch, B, T_, C, NH, 0);
        d_scratch.poison();
        attention_backward<T>(d_dqkv, d_dout, d_qkv, d_att, d_scratch, B, T_, C, NH, 0);
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 0) {
            ck.check("attention forward out", d_out.download(), out_ref, atol, rtol);
            ck.check("attention backward dqkv", d_dqkv.download(), dqkv_ref, bf16 ? 6e-2 : atol, rtol);
            // P must be exactly 0 above the diagonal and rows must sum to 1
            std::vector<float> P = d_att.download();
            double worst = 0;
            bool upper_zero = true;
            for (size_t r = 0; r < (size_t)B * NH * T_; r++) {
                int i = (int)(r % T_);
                double sum = 0;
                for (int j = 0; j < T_; j++) {
                    if (j > i && P[r * T_ + j] != 0.0f) upper_zero = false;
                    if (j <= i) sum += P[r * T_ + j];
                }
                worst = std::max(worst, std::fabs(sum - 1.0));
            }
            ck.check("softmax rows sum to 1", {(float)worst}, {0.0}, bf16 ? 2e-2 : 1e-5, 0);
            ck.check("softmax masked entries are 0", {upper_zero ? 0.0f : 1.0f}, {0.0}, 0, 0);
            first_out = d_out.bytes();
            first_dqkv = d_dqkv.bytes();
        } else {
            ck.check_equal_bytes("attention rerun out", first_out, d_out.bytes());
            ck.check_equal_bytes("attention rerun dqkv", first_dqkv, d_dqkv.bytes());
        }
    }
}

template <typename T>
static void run_classifier(Checker& ck, Rng& rng, int N, int V, int Vp) {
    const bool bf16 = sizeof(T) == 2;
    printf("%s classifier N=%d V=%d Vp=%d (block %d)\n", type_name<T>(), N, V, Vp, classifier_block(V));
    std::vector<float> z = round_to<T>(rng.normal((size_t)N * Vp, 0.0f, 3.0f));
    std::vector<int> tgt(N);
    for (int n = 0; n < N; n++) tgt[n] = (int)(rng.gen() % V);
    const float dscale = 1.0f / N;
    std::vector<double> loss_ref(N), dz_ref((size_t)N * Vp);
    for (int n = 0; n < N; n++) {
        double mx = -1e300, s = 0;
        for (int v = 0; v < V; v++) mx = std::max(mx, (double)z[(size_t)n * Vp + v]);
        for (int v = 0; v < V; v++) s += std::exp(z[(size_t)n * Vp + v] - mx);
        double lse = std::log(s) + mx;
        loss_ref[n] = lse - z[(size_t)n * Vp + tgt[n]];
        for (int v = 0; v < Vp; v++)
            dz_ref[(size_t)n * Vp + v] = v < V ? (std::exp(z[(size_t)n * Vp + v] - lse) - (v == tgt[n])) * dscale : 0.0;
    }
    DeviceBuffer<T> d_z((size_t)N * Vp);
    DeviceBuffer<float> d_loss(N);
    DeviceBuffer<int> d_t(N);
    cudaCheck(cudaMemcpy(d_t.ptr, tgt.data(), N * sizeof(int), cudaMemcpyHostToDevice));
    d_z.upload(z);
    d_loss.poison();
    classifier<T>(d_z, d_loss, d_t, N, V, Vp, dscale, false, 0);  // loss only: logits untouched
    cudaCheck(cudaDeviceSynchronize());
    ck.check("classifier loss", d_loss.download(), loss_ref, bf16 ? 1e-4 : 1e-5, 1e-5);
    ck.check("classifier logits untouched", d_z.download(), to_double(z), 0, 0);
    d_loss.poison();
    classifier<T>(d_z, d_loss, d_t, N, V, Vp, dscale, true, 0);  // fused: logits become dlogits
    cudaCheck(cudaDeviceSynchronize());
    ck.check("classifier fused loss", d_loss.download(), loss_ref, bf16 ? 1e-4 : 1e-5, 1e-5);
    ck.check("classifier dlogits (padding 0)", d_z.download(), dz_ref, bf16 ? 1e-4 : 1e-8, bf16 ? 1e-2 : 1e-5);
}

int main() {
    skip_without_device("test_attention");
    Rng rng(test_seed());
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();
    // T = 13 (2 lanes per row, ragged), T = 40 (8 lanes), T = 7 with one head, hd = 2
    const Case cases[] = {{2, 13, 24, 3}, {1, 40, 16, 2}, {3, 7, 4, 2}, {1, 5, 8, 1}};
    for (const Case& c : cases) {
        run_attention<float>(ck, rng, c);
        run_attention<__nv_bfloat16>(ck, rng, c);
    }
    for (int v : {251, 300, 37}) {
        int vp = (v + 127) / 128 * 128;
        run_classifier<float>(ck, rng, 5, v, vp);
        run_classifier<__nv_bfloat16>(ck, rng, 3, v, vp);
    }
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_attention");
}
