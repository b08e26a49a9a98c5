// test_classifier.cu - kernels/classifier.cuh (the fused softmax + cross-entropy + dlogits)
// against double-precision CPU references, fp32 and bf16: vocabularies with and without
// padding, several warps per row, the scalar path (Vp not a multiple of the vector width, a
// misaligned row start), the loss-only and the fused modes, and a rerun that must be bitwise
// identical. Exit non-zero on any mismatch.
#include "test_util.h"

#include "../../kernels/classifier.cuh"

// Rows are random N(0, 3) logits except: row 0 has its max at the very end (V - 1, also the
// target), row 1 rises steadily so the running max grows at every vector (the online
// rescaling), row 2 is shifted by +80 (exp would overflow without the max) and has its max
// first. Padding columns [V, Vp) hold NaN: the kernel must neither read them into the loss
// nor leave them (dlogits there are 0). `misalign` offsets the logits by one element, which
// forces the scalar path even when Vp is a multiple of the vector width.
template <typename T>
static void run_classifier(Checker& ck, Rng& rng, int N, int V, int Vp, bool misalign = false) {
    const bool bf16 = sizeof(T) == 2;
    const bool vec = Vp % (16 / (int)sizeof(T)) == 0 && !misalign;
    printf("%s classifier N=%d V=%d Vp=%d (block %d, %s path)\n", type_name<T>(), N, V, Vp, classifier_block(Vp, vec ? 16 / (int)sizeof(T) : 1),
           vec ? "16-byte vector" : "scalar");
    std::vector<float> z = rng.normal((size_t)N * Vp, 0.0f, 3.0f);
    std::vector<int> tgt(N);
    for (int n = 0; n < N; n++) tgt[n] = (int)(rng.gen() % V);
    if (N > 0) {
        z[(size_t)V - 1] = 12.0f;  // max at the end of row 0
        tgt[0] = V - 1;
    }
    if (N > 1)
        for (int v = 0; v < V; v++) z[(size_t)Vp + v] = -6.0f + 14.0f * v / V + 0.1f * z[(size_t)Vp + v];  // rising
    if (N > 2) {
        for (int v = 0; v < V; v++) z[(size_t)2 * Vp + v] += 80.0f;
        z[(size_t)2 * Vp] = 95.0f;  // max first
    }
    for (int n = 0; n < N; n++)
        for (int v = V; v < Vp; v++) z[(size_t)n * Vp + v] = NAN;
    z = round_to<T>(z);
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
    const size_t off = misalign ? 1 : 0;
    DeviceBuffer<T> d_buf((size_t)N * Vp + off), d_z0((size_t)N * Vp);
    T* d_z = d_buf.ptr + off;
    DeviceBuffer<float> d_loss(N);
    DeviceBuffer<int> d_t(N);
    cudaCheck(cudaMemcpy(d_t.ptr, tgt.data(), N * sizeof(int), cudaMemcpyHostToDevice));
    d_z0.upload(z);
    const std::vector<unsigned char> z_bytes = d_z0.bytes();
    auto reset = [&] { cudaCheck(cudaMemcpy(d_z, d_z0.ptr, (size_t)N * Vp * sizeof(T), cudaMemcpyDeviceToDevice)); };
    auto z_now = [&] {
        std::vector<unsigned char> b((size_t)N * Vp * sizeof(T));
        cudaCheck(cudaMemcpy(b.data(), d_z, b.size(), cudaMemcpyDeviceToHost));
        return b;
    };
    auto z_float = [&] {  // the logits buffer as floats
        std::vector<T> h((size_t)N * Vp);
        cudaCheck(cudaMemcpy(h.data(), d_z, h.size() * sizeof(T), cudaMemcpyDeviceToHost));
        std::vector<float> f(h.size());
        for (size_t i = 0; i < h.size(); i++) f[i] = host_to_float(h[i]);
        return f;
    };
    const double loss_atol = 1e-5, loss_rtol = 1e-5;  // inputs are exact in T: only fp32 math error
    reset();
    d_loss.poison();
    classifier<T>(d_z, d_loss, d_t, N, V, Vp, dscale, false, 0);  // loss only: logits untouched
    cudaCheck(cudaDeviceSynchronize());
    ck.check("classifier loss", d_loss.download(), loss_ref, loss_atol, loss_rtol);
    ck.check_equal_bytes("classifier logits untouched", z_bytes, z_now());
    std::vector<unsigned char> first_loss, first_dz;
    for (int rep = 0; rep < 2; rep++) {
        reset();
        d_loss.poison();
        classifier<T>(d_z, d_loss, d_t, N, V, Vp, dscale, true, 0);  // fused: logits become dlogits
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 0) {
            ck.check("classifier fused loss", d_loss.download(), loss_ref, loss_atol, loss_rtol);
            // dz = (p - [v == t]) * dscale: relative tolerance, except at the targets, where
            // p - 1 cancels and the error is a multiple of p * dscale (fp32 exp: ~1e-7); bf16
            // output rounding is at most 2^-8 relative
            const std::vector<float> dz = z_float();
            std::vector<float> got_t, got_o;
            std::vector<double> ref_t, ref_o;
            for (int n = 0; n < N; n++)
                for (int v = 0; v < Vp; v++) {
                    const size_t i = (size_t)n * Vp + v;
                    (v == tgt[n] ? got_t : got_o).push_back(dz[i]);
                    (v == tgt[n] ? ref_t : ref_o).push_back(dz_ref[i]);
                }
            const double dz_rtol = bf16 ? 5e-3 : 1e-5;
            ck.check("classifier dlogits (padding 0)", got_o, ref_o, 1e-10 * dscale, dz_rtol);
            ck.check("classifier dlogits at targets", got_t, ref_t, 1e-6 * dscale, dz_rtol);
            first_loss = d_loss.bytes();
            first_dz = z_now();
        } else {
            ck.check_equal_bytes("classifier rerun loss", first_loss, d_loss.bytes());
            ck.check_equal_bytes("classifier rerun dlogits", first_dz, z_now());
        }
    }
}

int main() {
    skip_without_device("test_classifier");
    Rng rng(test_seed());
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();
    // classifier: V a multiple of 8 with Vp = V; padded V (1000 -> 1024, 251 -> 256, 37 -> 128;
    // 8000 -> 8192: several warps per row); Vp not a multiple of the vector width (scalar
    // path); a misaligned row start (scalar path)
    const int vocabs[][2] = {{256, 256}, {1000, 1024}, {251, 256}, {37, 128}, {8000, 8192}, {251, 251}, {300, 302}};
    for (const auto& vv : vocabs) {
        run_classifier<float>(ck, rng, 5, vv[0], vv[1]);
        run_classifier<__nv_bfloat16>(ck, rng, 4, vv[0], vv[1]);
    }
    run_classifier<float>(ck, rng, 3, 1000, 1024, true);
    run_classifier<__nv_bfloat16>(ck, rng, 3, 1000, 1024, true);
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_classifier");
}
