// test_attention.cu - kernels/attention.cuh (split/merge heads, causal softmax forward and
// backward, the whole attention forward/backward through the GEMM wrapper) against
// double-precision CPU references, fp32 and bf16, odd sizes (T not a multiple of the lane group, one head, hd = 2), outputs poisoned with NaN
// first, and a rerun that must be bitwise identical. Exit non-zero on any mismatch.
#include "test_util.h"

#include "../../kernels/attention.cuh"
#include "attention_ref.h"

struct Case { int B, T, C, NH; };

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
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_attention");
}
