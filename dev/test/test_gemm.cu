// test_gemm.cu - kernels/cublas_wrap.cuh (cuBLASLt on a GPU, CPU loops in emulation) against
// a plain fp64 loop: fp32 and bf16 storage, all four transpose combinations, with and
// without the bias epilogue and accumulation, odd sizes, and a strided batch; gemm_add
// (out = A B + bias + cin from another matrix, which must stay as it is). Outputs are poisoned before each call;
// exit status non-zero on any mismatch.
#include "../../kernels/cublas_wrap.cuh"
#include "test_util.h"

template <typename T>
// add_from_cin (batch 1, acc): gemm_add with the summand in its own buffer instead of out
static void run(Checker& ck, Rng& rng, int M, int N, int K, bool ta, bool tb, bool with_bias, bool acc, int batch,
                bool add_from_cin = false) {
    const bool bf16 = sizeof(T) == 2;
    const size_t sa = (size_t)M * K, sb = (size_t)K * N, so = (size_t)M * N;
    std::vector<float> a = round_to<T>(rng.normal(sa * batch)), b = round_to<T>(rng.normal(sb * batch));
    std::vector<float> bias = round_to<T>(rng.normal(N)), out0 = round_to<T>(rng.normal(so * batch));
    std::vector<double> ref(so * batch);
    for (int q = 0; q < batch; q++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int k = 0; k < K; k++) {
                    double x = ta ? a[q * sa + (size_t)k * M + i] : a[q * sa + (size_t)i * K + k];
                    double y = tb ? b[q * sb + (size_t)j * K + k] : b[q * sb + (size_t)k * N + j];
                    s += x * y;
                }
                if (with_bias) s += bias[j];
                if (acc) s += out0[q * so + (size_t)i * N + j];
                ref[q * so + (size_t)i * N + j] = s;
            }
    DeviceBuffer<T> d_a(sa * batch), d_b(sb * batch), d_bias(N), d_out(so * batch), d_cin(add_from_cin ? so : 1);
    d_a.upload(a);
    d_b.upload(b);
    d_bias.upload(bias);
    if (acc && !add_from_cin) d_out.upload(out0);
    else d_out.poison();
    if (add_from_cin) {
        d_cin.upload(out0);
        gemm_add<T>(d_out, d_cin, d_a, d_b, with_bias ? d_bias.ptr : nullptr, M, N, K, ta, tb, 0);
    } else {
        gemm<T>(d_out, d_a, d_b, with_bias ? d_bias.ptr : nullptr, M, N, K, ta, tb, acc, 0, batch, (long long)sa, (long long)sb,
                (long long)so);
    }
    cudaCheck(cudaDeviceSynchronize());
    char name[128];
    snprintf(name, sizeof name, "%s M=%d N=%d K=%d %c%c%s%s%s", type_name<T>(), M, N, K, ta ? 'T' : 'N', tb ? 'T' : 'N',
             with_bias ? " bias" : "", add_from_cin ? " gemm_add" : acc ? " acc" : "", batch > 1 ? " batch3" : "");
    if (add_from_cin) {   // the summand's buffer is only read
        const std::vector<float> c = d_cin.download();
        ck.check(std::string(name) + " cin unchanged", c, std::vector<double>(out0.begin(), out0.end()), 0, 0);
    }
    // fp32: exact-fp32 GEMM, error ~ K * eps * |terms|; bf16: output rounding 2^-9 plus fp32 sums
    ck.check(name, d_out.download(), ref, bf16 ? 3e-2 : 1e-4, bf16 ? 1e-2 : 1e-5);
}

int main() {
    skip_without_device("test_gemm");
    Rng rng(test_seed());
    Checker ck;
    gemm_init();
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int opt = 0; opt < 4; opt++) {
                const bool with_bias = opt & 1, acc = opt & 2;
                run<float>(ck, rng, 13, 24, 40, ta, tb, with_bias, acc, 1);
                run<__nv_bfloat16>(ck, rng, 16, 24, 40, ta, tb, with_bias, acc, 1);
            }
    // the trainer's shapes, small: linear forward / backward, and a strided batch (attention)
    run<float>(ck, rng, 64, 96, 32, false, true, true, false, 1);   // out = inp @ W^T + b
    run<float>(ck, rng, 32, 96, 64, true, false, false, true, 1);   // dW += dout^T @ inp
    run<__nv_bfloat16>(ck, rng, 64, 96, 32, false, true, true, false, 1);
    run<float>(ck, rng, 8, 8, 16, false, true, false, false, 3);
    run<__nv_bfloat16>(ck, rng, 8, 8, 16, false, true, false, false, 3);
    // out = resid + act @ W^T + b (the Pre-LN MLP output onto the residual stream), and odd sizes
    run<float>(ck, rng, 64, 32, 96, false, true, true, true, 1, true);
    run<__nv_bfloat16>(ck, rng, 64, 32, 96, false, true, true, true, 1, true);
    run<float>(ck, rng, 13, 24, 40, true, false, false, true, 1, true);
    gemm_shutdown();

    return ck.finish("test_gemm");
}
