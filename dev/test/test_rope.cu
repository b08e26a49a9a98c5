// test_rope.cu - kernels/rope.cuh (rotary position embedding, rotate-half convention, in place
// on the q and k parts of qkv) against a double-precision CPU reference, storage fp32 and bf16.
// The cos/sin tables are built exactly as train_gpt.cu's allocate() builds them:
// max_seq_len rows of hd/2 floats, cos/sin of the double angle t * theta^(-2i/hd), rounded to
// float; the reference uses those same float values (in double), so it checks the kernel,
// not the table. For each (B, T, C, NH, theta): T = 1 (identity), T > 256 (large angles),
// B > 1 (position t = n % T), head dims 6 (odd hd/2), 8, 16, 32, 128, theta 1e4 and 5e5.
//   forward   q, k pairs (x[i], x[i + hd/2]) rotated by +angle; v bitwise unchanged
//   backward  on a random gradient: the rotation by -angle; v bitwise unchanged
//   round trip backward(forward(x)) == x
//   rerun     forward twice from the same input: bitwise identical
// The errors are measured per rotated pair, in units of the pair's norm |(a, b)| (a rotation
// preserves it; an element-relative error would be meaningless for a component near 0 next
// to a large one): each rotated component is compared as component / |pair| with an absolute
// tolerance. Inputs are fresh random numbers each run (seed printed; SEED=... replays). Exit
// status non-zero on any mismatch.
// Build: emulated (g++/clang++ -DCUDA_EMU, see dev/test/kernels.mk) or nvcc (real GPU).
#include "../../kernels/rope.cuh"
#include "test_util.h"

struct Case {
    int B, T, C, NH, max_seq_len;
    float theta;
};

// the tables of train_gpt.cu (allocate())
static void make_tables(const Case& cs, std::vector<float>& cs_t, std::vector<float>& sn_t) {
    const int hd = cs.C / cs.NH, half = hd / 2;
    cs_t.assign((size_t)cs.max_seq_len * half, 0.0f);
    sn_t.assign(cs_t.size(), 0.0f);
    for (int t = 0; t < cs.max_seq_len; t++)
        for (int i = 0; i < half; i++) {
            double ang = t * pow((double)cs.theta, -2.0 * i / hd);
            cs_t[(size_t)t * half + i] = (float)cos(ang);
            sn_t[(size_t)t * half + i] = (float)sin(ang);
        }
}

// fp64 rotation of the q and k pairs of x (N, 3C) by sign * angle; v copied
static std::vector<double> ref_rotate(const std::vector<float>& x, const Case& cs, const std::vector<float>& cos_t,
                                      const std::vector<float>& sin_t, double sign) {
    const int N = cs.B * cs.T, C = cs.C, hd = C / cs.NH, half = hd / 2;
    std::vector<double> y(x.begin(), x.end());
    for (int n = 0; n < N; n++)
        for (int part = 0; part < 2; part++)
            for (int h = 0; h < cs.NH; h++)
                for (int i = 0; i < half; i++) {
                    const size_t o = (size_t)n * 3 * C + part * C + h * hd + i;
                    const double c = cos_t[(size_t)(n % cs.T) * half + i], s = sign * sin_t[(size_t)(n % cs.T) * half + i];
                    const double a = x[o], b = x[o + half];
                    y[o] = a * c - b * s;
                    y[o + half] = b * c + a * s;
                }
    return y;
}

// the q and k components of got and ref, each divided by the norm of its pair in `pairs`
// (the input of the rotation); v is left out (checked bitwise)
static void scale_by_pair(const std::vector<float>& got, const std::vector<double>& ref, const std::vector<float>& pairs, const Case& cs,
                          std::vector<float>& got_s, std::vector<double>& ref_s) {
    const int N = cs.B * cs.T, C = cs.C, hd = C / cs.NH, half = hd / 2;
    got_s.clear();
    ref_s.clear();
    for (int n = 0; n < N; n++)
        for (int part = 0; part < 2; part++)
            for (int h = 0; h < cs.NH; h++)
                for (int j = 0; j < hd; j++) {
                    const size_t o = (size_t)n * 3 * C + part * C + h * hd + j, p = j < half ? o : o - half;
                    const double pn = std::max(std::hypot((double)pairs[p], (double)pairs[p + half]), 1e-30);
                    got_s.push_back((float)(got[o] / pn));
                    ref_s.push_back(ref[o] / pn);
                }
}
static std::vector<float> v_part(const std::vector<float>& x, const Case& cs) {
    std::vector<float> v;
    for (int n = 0; n < cs.B * cs.T; n++) v.insert(v.end(), x.begin() + (size_t)n * 3 * cs.C + 2 * cs.C, x.begin() + (size_t)(n + 1) * 3 * cs.C);
    return v;
}
static std::vector<double> v_part_d(const std::vector<float>& x, const Case& cs) {
    std::vector<float> v = v_part(x, cs);
    return std::vector<double>(v.begin(), v.end());
}

template <typename T>
static void run_case(Checker& ck, Rng& rng, const Case& cs) {
    const int B = cs.B, T_ = cs.T, C = cs.C, NH = cs.NH, N = B * T_;
    const size_t n3 = (size_t)N * 3 * C;
    const bool bf16 = sizeof(T) == 2;
    // tolerances, in units of the pair norm |p| = |(a, b)|:
    // fp32: two products and a sum (or an FMA) in fp32 round by <= 2^-24 of |a c| + |b s| <= sqrt2 |p|
    //       each, ~2e-7 |p|; 1e-6. Round trip: twice that, 2e-6 (cos^2 + sin^2 of the float table
    //       differs from 1 by ~1e-7 too).
    // bf16: the fp32 error plus one rounding of each output component to bf16, <= 2^-8 |y_k| <=
    //       3.9e-3 |p|; 5e-3. Round trip: the forward's rounding error (a vector of norm <= sqrt2
    //       2^-8 |p|, which the backward rotation preserves) plus the backward's rounding (2^-8 |p|),
    //       (sqrt2 + 1) 2^-8 = 9.4e-3; 1.2e-2.
    const double t_rot = bf16 ? 5e-3 : 1e-6, t_trip = bf16 ? 1.2e-2 : 2e-6;
    char tag[128];
    snprintf(tag, sizeof tag, "%s B=%d T=%d C=%d NH=%d hd=%d theta=%g", type_name<T>(), B, T_, C, NH, C / NH, (double)cs.theta);
    printf("%s\n", tag);

    std::vector<float> cos_t, sin_t;
    make_tables(cs, cos_t, sin_t);
    DeviceBuffer<float> d_cos(cos_t.size()), d_sin(sin_t.size());
    d_cos.upload(cos_t);
    d_sin.upload(sin_t);
    const std::vector<float> x = round_to<T>(rng.normal(n3));
    const std::vector<float> dy = round_to<T>(rng.normal(n3));
    DeviceBuffer<T> d_qkv(n3);
    std::vector<float> got_s;
    std::vector<double> ref_s;

    // forward (twice from the same input: bitwise identical)
    const std::vector<double> y_ref = ref_rotate(x, cs, cos_t, sin_t, 1.0);
    std::vector<unsigned char> first;
    for (int rep = 0; rep < 2; rep++) {
        d_qkv.upload(x);
        rope_forward<T>(d_qkv, d_cos, d_sin, B, T_, C, NH, 0);
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 1) {
            ck.check_equal_bytes("fwd rerun", first, d_qkv.bytes());
            break;
        }
        first = d_qkv.bytes();
        const std::vector<float> y = d_qkv.download();
        scale_by_pair(y, y_ref, x, cs, got_s, ref_s);
        ck.check("fwd q,k (error / |pair|)", got_s, ref_s, t_rot, 0);
        ck.check("fwd v unchanged", v_part(y, cs), v_part_d(x, cs), 0, 0);
    }
    // round trip: backward on the forward's output (still in d_qkv) gives x back
    rope_backward<T>(d_qkv, d_cos, d_sin, B, T_, C, NH, 0);
    cudaCheck(cudaDeviceSynchronize());
    {
        const std::vector<float> xr = d_qkv.download();
        scale_by_pair(xr, std::vector<double>(x.begin(), x.end()), x, cs, got_s, ref_s);
        ck.check("bwd(fwd(x)) == x (error / |pair|)", got_s, ref_s, t_trip, 0);
        ck.check("bwd(fwd(x)) v unchanged", v_part(xr, cs), v_part_d(x, cs), 0, 0);
    }
    // backward on a random gradient: rotation by -angle
    const std::vector<double> dx_ref = ref_rotate(dy, cs, cos_t, sin_t, -1.0);
    d_qkv.upload(dy);
    rope_backward<T>(d_qkv, d_cos, d_sin, B, T_, C, NH, 0);
    cudaCheck(cudaDeviceSynchronize());
    {
        const std::vector<float> dx = d_qkv.download();
        scale_by_pair(dx, dx_ref, dy, cs, got_s, ref_s);
        ck.check("bwd dq,dk (error / |pair|)", got_s, ref_s, t_rot, 0);
        ck.check("bwd dv unchanged", v_part(dx, cs), v_part_d(dy, cs), 0, 0);
    }
}

int main() {
    skip_without_device("test_rope");
    Rng rng(test_seed());
    const std::vector<Case> cases = {
        {2, 7, 64, 4, 16, 10000.0f},     // hd 16, B > 1
        {1, 1, 32, 2, 4, 10000.0f},      // T = 1: angle 0, the identity
        {3, 33, 96, 3, 40, 10000.0f},    // hd 32
        {1, 300, 128, 1, 512, 500000.0f},  // hd 128, llama-3 theta, angles up to 299 rad
        {2, 5, 12, 2, 8, 10000.0f},      // hd 6: odd hd/2
        {1, 64, 48, 6, 64, 10000.0f},    // hd 8, T = max_seq_len
    };
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();
    for (const Case& cs : cases) {
        run_case<float>(ck, rng, cs);
        run_case<__nv_bfloat16>(ck, rng, cs);
    }
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_rope");
}
