// test_flash_attention.cu - kernels/flash_attention.cuh (bf16, mma.sync tensor-core tiles)
// against the double-precision reference of dev/test/attention_ref.h: the output, the
// stored log-sum-exp, dq, dk, dv, and the backward's D = rowsum(dY o Y) (16-byte and
// scalar paths, against the kernel's own output). Cases cover every padded head size (hd 8, 12 -> 16;
// 24, 32 -> 32; 40, 48, 56, 64 -> 64), T below, at and across the 64-row tiles (1, 5, 64, 65, 130),
// one and several heads and batches; outputs are poisoned with NaN first (a row or column
// the kernels forget to write fails), and a rerun must be bitwise identical (no atomics).
// The backward is checked both ways of forming dQ (FlashDq::Recompute, the dQ kernel; and
// FlashDq::Partials, the dK/dV kernel's fp32 partials and their reduction, whose scratch is
// poisoned too: a slot left unwritten fails; with scratch for all heads, and for one head at
// a time, the heads then in B * NH launches, which must give the same bits).
// Exit non-zero on any mismatch.
// --bench (GPU only): times the forward and the backward (both dQ modes) alone at gpt2-124m's
// T = 1024 shape (B 16, 12 heads of 64) and prints ms, TFLOP/s and the partials/recompute ratio.
#include "test_util.h"

#include "../../kernels/flash_attention.cuh"
#include "attention_ref.h"

struct Case { int B, T, C, NH; };

static void run_flash(Checker& ck, Rng& rng, const Case& cs) {
    using T = __nv_bfloat16;
    const int B = cs.B, T_ = cs.T, C = cs.C, NH = cs.NH, hd = C / NH;
    const size_t N = (size_t)B * T_;
    printf("flash attention B=%d T=%d C=%d NH=%d (hd %d, padded to %d)\n", B, T_, C, NH, C / NH, flash_attention_hd(C, NH));
    std::vector<float> qkv = round_to<T>(rng.normal(N * 3 * C)), dout = round_to<T>(rng.normal(N * C));
    std::vector<double> out_ref, dqkv_ref, lse_ref;
    ref_attention(qkv, dout, B, T_, C, NH, out_ref, dqkv_ref, &lse_ref);
    for (double& v : lse_ref) v /= std::log(2.0);   // the kernels keep it in base 2
    DeviceBuffer<T> d_qkv(N * 3 * C), d_out(N * C), d_dout(N * C), d_dqkv(N * 3 * C);
    DeviceBuffer<float> d_lse((size_t)B * NH * T_), d_dsum(flash_attention_scratch_floats(B, T_, NH));
    const size_t part_floats = flash_attention_dq_partial_floats(B, T_, C, NH), head_floats = flash_attention_dq_head_floats(T_, C, NH);
    DeviceBuffer<float> d_part(part_floats);
    d_qkv.upload(qkv);
    d_dout.upload(dout);
    std::vector<unsigned char> first_out, first_dqkv, first_dsum, first_dqkv_part;
    for (int rep = 0; rep < 2; rep++) {
        d_out.poison();
        d_lse.poison();
        d_dsum.poison();
        d_dqkv.poison();
        flash_attention_forward(d_out, d_lse, d_qkv, B, T_, C, NH, 0);
        flash_attention_backward(d_dqkv, d_dout, d_qkv, d_out, d_lse, d_dsum, FlashDq::Recompute, nullptr, 0, B, T_, C, NH, 0);
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<unsigned char> dqkv_recompute = d_dqkv.bytes();
        const std::vector<float> dqkv_recompute_f = d_dqkv.download();
        d_dqkv.poison();
        d_part.poison();
        flash_attention_backward(d_dqkv, d_dout, d_qkv, d_out, d_lse, d_dsum, FlashDq::Partials, d_part, part_floats, B, T_, C, NH, 0);
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<unsigned char> dqkv_partials = d_dqkv.bytes();
        if (rep == 0) {   // one head's scratch: the heads one launch at a time
            d_dqkv.poison();
            d_part.poison();
            flash_attention_backward(d_dqkv, d_dout, d_qkv, d_out, d_lse, d_dsum, FlashDq::Partials, d_part, head_floats, B, T_, C, NH, 0);
            cudaCheck(cudaDeviceSynchronize());
            ck.check_equal_bytes("flash dqkv from partials, one head per launch", dqkv_partials, d_dqkv.bytes());
        }
        if (rep == 0) {
            ck.check("flash forward out", d_out.download(), out_ref, 3e-2, 3e-2);
            ck.check("flash log-sum-exp (base 2)", d_lse.download(), lse_ref, 2e-2, 1e-2);
            const std::vector<float> dqkv_partials_f = d_dqkv.download();
            ck.check("flash backward dqkv (dQ recomputed)", dqkv_recompute_f, dqkv_ref, 6e-2, 3e-2);
            ck.check("flash backward dqkv (dQ from partials)", dqkv_partials_f, dqkv_ref, 6e-2, 3e-2);
            // dQ alone (the columns the two modes compute differently; dK, dV dominate the max above)
            auto q_cols = [&](const auto& v) {
                std::vector<typename std::decay_t<decltype(v)>::value_type> q(N * C);
                for (size_t r = 0; r < N; r++)
                    for (int c = 0; c < C; c++) q[r * C + c] = v[r * 3 * C + c];
                return q;
            };
            ck.check("flash backward dq (recomputed)", q_cols(dqkv_recompute_f), q_cols(dqkv_ref), 6e-2, 3e-2);
            ck.check("flash backward dq (from partials)", q_cols(dqkv_partials_f), q_cols(dqkv_ref), 6e-2, 3e-2);
            first_dqkv_part = dqkv_partials;
            first_out = d_out.bytes();
            first_dqkv = dqkv_recompute;
            first_dsum = d_dsum.bytes();
            // D directly (a wrong D moves dq, dk by little when P is diffuse): against the
            // row sums of the kernel's own out, and through the scalar fallback (pointers
            // one element off 16-byte alignment)
            const std::vector<float> y = d_out.download();
            std::vector<double> dsum_ref((size_t)B * NH * T_);
            for (int b = 0; b < B; b++)
                for (int h = 0; h < NH; h++)
                    for (int t = 0; t < T_; t++) {
                        double acc = 0;
                        for (int d = 0; d < hd; d++) {
                            const size_t i = ((size_t)b * T_ + t) * C + h * hd + d;
                            acc += (double)dout[i] * y[i];
                        }
                        dsum_ref[((size_t)b * NH + h) * T_ + t] = acc;
                    }
            ck.check("flash D (vector path where hd % 8 == 0)", d_dsum.download(), dsum_ref, 1e-5, 1e-5);
            GuardedOperand<T> g_dout(N * C, 1), g_y(N * C, 1);
            g_dout.upload(dout);
            g_y.upload(y);
            d_dsum.poison();
            flash_attention_dsum(d_dsum, g_dout.ptr(), g_y.ptr(), B, T_, C, NH, 0);
            cudaCheck(cudaDeviceSynchronize());
            ck.check("flash D (scalar path, misaligned)", d_dsum.download(), dsum_ref, 1e-5, 1e-5);
        } else {
            ck.check_equal_bytes("flash rerun out", first_out, d_out.bytes());
            ck.check_equal_bytes("flash rerun dqkv (dQ recomputed)", first_dqkv, dqkv_recompute);
            ck.check_equal_bytes("flash rerun dqkv (dQ from partials)", first_dqkv_part, dqkv_partials);
            ck.check_equal_bytes("flash rerun D", first_dsum, d_dsum.bytes());
        }
    }
}

// --bench: forward, backward at B 16, T 1024, C 768, 12 heads. FLOPs: a causal product of the
// head's (T, T) scores with (T, 64) is 2 B NH T^2 hd / 2; the forward makes 2 (S, P V), the
// backward 5 as FlashAttention counts it (S, dP, dV, dK, dQ); the recompute mode does 7 (dK/dV
// kernel: S, dP, dV, dK; dQ kernel: S, dP, dQ), so its rate is given on the 5 useful ones, like
// the partials mode's, and the two are comparable. The rounds alternate the two dQ modes.
[[maybe_unused]] static void bench_flash() {
    using T = __nv_bfloat16;
    const int B = 16, T_ = 1024, C = 768, NH = 12;
    const size_t N = (size_t)B * T_;
    Rng rng(1);
    DeviceBuffer<T> d_qkv(N * 3 * C), d_out(N * C), d_dout(N * C), d_dqkv(N * 3 * C);
    DeviceBuffer<float> d_lse((size_t)B * NH * T_), d_dsum(flash_attention_scratch_floats(B, T_, NH));
    DeviceBuffer<float> d_part(flash_attention_dq_partial_floats(B, T_, C, NH));
    d_qkv.upload(rng.normal(N * 3 * C));
    d_dout.upload(rng.normal(N * C));
    cudaEvent_t e0, e1, e2, e3;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    cudaCheck(cudaEventCreate(&e2));
    cudaCheck(cudaEventCreate(&e3));
    const int reps = 20;
    double f = 0, bw_rec = 0, bw_part = 0;
    for (int r = -2; r < reps; r++) {   // two warm-up rounds
        cudaCheck(cudaEventRecord(e0));
        flash_attention_forward(d_out, d_lse, d_qkv, B, T_, C, NH, 0);
        cudaCheck(cudaEventRecord(e1));
        flash_attention_backward(d_dqkv, d_dout, d_qkv, d_out, d_lse, d_dsum, FlashDq::Recompute, nullptr, 0, B, T_, C, NH, 0);
        cudaCheck(cudaEventRecord(e2));
        flash_attention_backward(d_dqkv, d_dout, d_qkv, d_out, d_lse, d_dsum, FlashDq::Partials, d_part, d_part.n, B, T_, C, NH, 0);
        cudaCheck(cudaEventRecord(e3));
        cudaCheck(cudaEventSynchronize(e3));
        float a = 0, c = 0, d = 0;
        cudaCheck(cudaEventElapsedTime(&a, e0, e1));
        cudaCheck(cudaEventElapsedTime(&c, e1, e2));
        cudaCheck(cudaEventElapsedTime(&d, e2, e3));
        if (r >= 0) f += a, bw_rec += c, bw_part += d;
    }
    f /= reps, bw_rec /= reps, bw_part /= reps;
    const double product = 2.0 * B * NH * (double)T_ * T_ * 64 / 2;
    printf("flash bench B=16 T=1024 C=768 NH=12 (one layer): forward %.3f ms (%.0f TFLOP/s), backward with D: dQ recomputed %.3f ms "
           "(%.0f TFLOP/s), dQ from partials %.3f ms (%.0f TFLOP/s), partials/recompute time %.3f\n",
           f, 2 * product / f / 1e9, bw_rec, 5 * product / bw_rec / 1e9, bw_part, 5 * product / bw_part / 1e9, bw_part / bw_rec);
}

int main(int argc, char** argv) {
    skip_without_device("test_flash_attention");
    if (argc > 1 && std::string(argv[1]) == "--bench") {
#if defined(CUDA_EMU)
        printf("test_flash_attention --bench: needs a GPU (emulated build)\n");
#else
        bench_flash();
#endif
        return 0;
    }
    Rng rng(test_seed());
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();
    const Case cases[] = {
        {2, 5, 16, 2},     // hd 8 -> 16, one partial tile
        {1, 65, 24, 2},    // hd 12 -> 16, a tile and one row
        {2, 64, 32, 2},    // hd 16, exactly one tile
        {1, 1, 48, 2},     // hd 24 -> 32, a single token
        {1, 130, 64, 2},   // hd 32, three tiles (the last ragged)
        {1, 9, 80, 2},     // hd 40 -> 64 (5 chunks of 8 for D: groups of 8 lanes, 3 idle)
        {1, 70, 96, 2},    // hd 48 -> 64
        {2, 3, 112, 2},    // hd 56 -> 64
        {1, 130, 128, 2},  // hd 64, the production head size
    };
    for (const Case& c : cases) run_flash(ck, rng, c);
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_flash_attention");
}
