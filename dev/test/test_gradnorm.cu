// test_gradnorm.cu - kernels/gradnorm.cuh: the host chunk table (gradnorm_chunks) and the
// per-chunk sums of squares on the device (sumsq_chunks), added per tensor on the host as
// train_gpt.cu's Model::grad_sq_per_tensor does, against a double reference.
//   - chunk tables (the test's layout; a contiguous one from 0; empty tensors only; none;
//     tensors of more than 2^31 elements at offsets past 2^32): every tensor's chunks are consecutive, in order, cover exactly its
//     elements, hold 1..GRADNORM_CHUNK elements each and never straddle two tensors
//   - gradients fp32 and bf16, tensors of 1, 3, a block, a block + 1, exactly one chunk, one
//     chunk - 1 / + 1, a few chunks plus a remainder, 0 elements and all zeros, scaled from
//     1e-2 to 1e2; between tensors (and around them) gap elements that hold NaN, which no
//     chunk may read. Every chunk's first and last element and every tensor's first and last
//     element is a spike (|x| = 30 x the tensor's scale: 1.4% of a full chunk's sum),
//     so losing or double-counting any end element is far outside the tolerance.
//   - the kernel reads 16-byte groups from indices that are multiples of 16 bytes, the
//     chunk's other elements one at a time (GAP = 3 puts tensors and chunks at every
//     alignment); all of it again with the gradient one element off a 16-byte boundary, where
//     the launcher must take the one-element kernel
//   - NaN / Inf: a tensor with one NaN element must sum to NaN, one with an Inf (inside its
//     second chunk) to +Inf, one with both to NaN; the tensors around them are unaffected.
//   - the partial sums are poisoned (NaN) before every launch, with one more (finite) element
//     past the last chunk that must stay as it is; a second run must give the same bits.
// The step's scalars (StepStats, computed on the device so that a training step needs no host
// round trip): loss_mean (the mean of N per-token losses into batch_loss, added onto loss_sum;
// N = 1, fewer than a block, several strides; two calls accumulate) and grad_norm_finalize
// (grad_sq = the sum of the chunk partials, norm = sqrt, clip = min(1, max_norm / (norm +
// 1e-6)) as torch.nn.utils.clip_grad_norm_, finite = loss_sum and norm finite) against double
// references: a norm above and below max_norm, max_norm 0 (no clipping), a NaN and an Inf
// partial, a NaN and an Inf loss; bitwise reruns.
// Inputs are fresh random numbers each run (seed printed; SEED=... replays). Exit status
// non-zero on any mismatch.
// Build: emulated (g++/clang++ -DCUDA_EMU, see dev/test/kernels.mk) or nvcc (real GPU).
#include "test_util.h"

#include "../../kernels/gradnorm.cuh"

enum class Special { None, Zero, NaN, Inf, NaNInf };
struct TensorSpec {
    size_t numel;
    double scale;  // values ~ scale * N(0, 1)
    Special special;
};

static void check_true(Checker& ck, const std::string& name, bool ok, const std::string& what) {
    ck.checked++;
    if (!ok) ck.failed++;
    printf("  %-44s %s\n", name.c_str(), ok ? "ok" : ("MISMATCH: " + what).c_str());
}

// ---------------------------------------------------------------------------------------
// the chunk table's contract (gradnorm.cuh and grad_sq_per_tensor rely on it); "" if it holds
static std::string chunk_table_error(const std::vector<std::pair<size_t, size_t>>& tensors, const GradNormChunks& c) {
    char buf[256];
    if (c.off.size() != c.len.size() || c.off.size() != c.owner.size()) return "off / len / owner differ in length";
    size_t k = 0;
    for (size_t t = 0; t < tensors.size(); t++) {
        const size_t start = tensors[t].first, end = start + tensors[t].second;
        size_t pos = start;  // next element of tensor t to be covered
        while (k < c.off.size() && c.owner[k] == (int)t) {
            if (c.len[k] < 1 || c.len[k] > GRADNORM_CHUNK) {
                snprintf(buf, sizeof buf, "chunk %zu has %d elements (1..%d allowed)", k, c.len[k], GRADNORM_CHUNK);
                return buf;
            }
            if (c.off[k] < 0 || (size_t)c.off[k] != pos) {
                snprintf(buf, sizeof buf, "chunk %zu of tensor %zu starts at %lld, expected %zu (gap, overlap or out of order)", k, t,
                         c.off[k], pos);
                return buf;
            }
            pos += (size_t)c.len[k];
            if (pos > end) {
                snprintf(buf, sizeof buf, "chunk %zu straddles the end of tensor %zu (%zu > %zu)", k, t, pos, end);
                return buf;
            }
            k++;
        }
        if (pos != end) {
            snprintf(buf, sizeof buf, "tensor %zu covered up to %zu of [%zu, %zu)", t, pos, start, end);
            return buf;
        }
    }
    if (k != c.off.size()) {
        snprintf(buf, sizeof buf, "chunk %zu has owner %d out of table order", k, c.owner[k]);
        return buf;
    }
    return "";
}

static void check_table(Checker& ck, const std::string& name, const std::vector<std::pair<size_t, size_t>>& tensors) {
    const GradNormChunks c = gradnorm_chunks(tensors);
    const std::string err = chunk_table_error(tensors, c);
    check_true(ck, name + ": " + std::to_string(c.off.size()) + " chunks, exact cover", err.empty(), err);
}

// ---------------------------------------------------------------------------------------
// as Model::grad_sq_per_tensor (train_gpt.cu): the chunks' fp32 partials added per tensor,
// in chunk order, in double
static std::vector<double> per_tensor(const GradNormChunks& chunks, const std::vector<float>& part, size_t ntensors) {
    std::vector<double> sq(ntensors, 0.0);
    for (size_t k = 0; k < chunks.off.size(); k++) sq[chunks.owner[k]] += part[k];
    return sq;
}

// (offset, numel) of the tensors laid out as gap, tensor 0, gap, tensor 1, ..., gap; *total
// gets the array's length
static std::vector<std::pair<size_t, size_t>> layout(const std::vector<TensorSpec>& specs, size_t gap, size_t* total) {
    std::vector<std::pair<size_t, size_t>> tensors;
    size_t off = gap;
    for (const TensorSpec& s : specs) {
        tensors.push_back({off, s.numel});
        off += s.numel + gap;
    }
    *total = off;
    return tensors;
}

template <typename T>
static void run_type(Checker& ck, Rng& rng, const std::vector<TensorSpec>& specs, size_t gap, bool misaligned) {
    printf("%s gradients%s\n", type_name<T>(), misaligned ? ", base pointer one element off 16 bytes (one-element kernel)" : "");
    size_t total = 0;
    const std::vector<std::pair<size_t, size_t>> tensors = layout(specs, gap, &total);  // the gaps hold NaN
    const GradNormChunks chunks = gradnorm_chunks(tensors);
    const int nch = (int)chunks.off.size();

    std::vector<float> g(total, NAN);
    for (size_t t = 0; t < specs.size(); t++) {
        const TensorSpec& s = specs[t];
        const size_t o = tensors[t].first, n = s.numel;
        const std::vector<float> z = rng.normal(n);
        for (size_t i = 0; i < n; i++) g[o + i] = s.special == Special::Zero ? 0.0f : (float)(s.scale * z[i]);
        if (s.special == Special::Zero) continue;
        auto spike = [&](size_t i) { g[o + i] = (float)((i % 2 ? -30.0 : 30.0) * s.scale); };
        for (size_t c0 = 0; c0 < n; c0 += GRADNORM_CHUNK) {  // every chunk's ends (this covers the tensor's)
            spike(c0);
            spike(std::min(n, c0 + GRADNORM_CHUNK) - 1);
        }
        if (s.special == Special::NaN || s.special == Special::NaNInf) g[o + n / 2] = NAN;
        if (s.special == Special::Inf || s.special == Special::NaNInf) g[o + std::min(n - 1, (size_t)GRADNORM_CHUNK + 5)] = -INFINITY;
    }
    g = round_to<T>(g);

    // double reference of the stored values
    std::vector<double> ref(specs.size(), 0.0);
    for (size_t t = 0; t < specs.size(); t++)
        for (size_t i = 0; i < tensors[t].second; i++) {
            const double x = g[tensors[t].first + i];
            ref[t] += x * x;
        }

    // misaligned: the gradient starts one element into its allocation (the launcher must take
    // the one-element kernel; a 16-byte access there faults on a GPU and stops the emulation)
    DeviceBuffer<T> d_g(total + (misaligned ? 1 : 0));
    if (misaligned) g.insert(g.begin(), NAN);
    d_g.upload(g);
    const T* g_base = d_g.ptr + (misaligned ? 1 : 0);
    DeviceBuffer<long long> d_off(nch);
    DeviceBuffer<int> d_len(nch);
    cudaCheck(cudaMemcpy(d_off.ptr, chunks.off.data(), nch * sizeof(long long), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_len.ptr, chunks.len.data(), nch * sizeof(int), cudaMemcpyHostToDevice));
    // one more partial past the last chunk, a guard that must stay as it is: finite (0x5A bytes,
    // 1.5e16), since a stray block summing the NaN gaps could store the poison's own NaN bits
    DeviceBuffer<float> d_partial(nch + 1);

    std::vector<unsigned char> first_bytes;
    std::vector<double> first_sq;
    for (int rep = 0; rep < 2; rep++) {
        d_partial.poison();  // NaN: a chunk left unwritten cannot pass
        cudaCheck(cudaMemset(d_partial.ptr + nch, 0x5A, sizeof(float)));
        sumsq_chunks<T>(d_partial.ptr, g_base, d_off.ptr, d_len.ptr, nch, 0);
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<unsigned char> bytes = d_partial.bytes();
        std::vector<float> part = d_partial.download();
        const std::vector<double> sq = per_tensor(chunks, part, specs.size());
        if (rep == 1) {
            ck.check_equal_bytes(std::string(type_name<T>()) + " rerun: chunk partials", first_bytes, bytes);
            std::vector<unsigned char> a(sizeof(double) * sq.size()), b(a.size());
            std::memcpy(a.data(), first_sq.data(), a.size());
            std::memcpy(b.data(), sq.data(), b.size());
            ck.check_equal_bytes(std::string(type_name<T>()) + " rerun: per-tensor sums", a, b);
            break;
        }
        first_bytes = bytes;
        first_sq = sq;
        bool guard = true;
        for (size_t k = (size_t)nch * sizeof(float); k < bytes.size(); k++) guard = guard && bytes[k] == 0x5A;
        check_true(ck, std::string(type_name<T>()) + " element past the last chunk untouched", guard, "it was written");

        // Tolerance: squares and sums of non-negative terms, so the fp32 error is relative to
        // the sum: a square (1 rounding), a thread's sequential sum over at most
        // ceil(GRADNORM_CHUNK / GRADNORM_BLOCK) terms, the warp's 5 butterfly levels, the sum
        // over the block's warps, each rounding at most 2^-24 of the running total; the host's
        // double additions add nothing measurable. Worst case (6e-5 emulated, 1.6e-5 on a GPU;
        // seen: fp32 inputs ~1e-8..1e-7, bf16 ~1.4e-6, a bias of the running sums' roundings
        // with the short squares of bf16 values, the same in a host simulation):
        // (+2: a thread may also add one element of the chunk's head and one of its tail)
        const int k_adds = (GRADNORM_CHUNK + GRADNORM_BLOCK - 1) / GRADNORM_BLOCK + 2 + 1 + 5 + GRADNORM_BLOCK / 32;
        const double rtol = k_adds * std::ldexp(1.0, -24);
        for (size_t t = 0; t < specs.size(); t++) {
            const TensorSpec& s = specs[t];
            const size_t nt = (s.numel + GRADNORM_CHUNK - 1) / GRADNORM_CHUNK;
            char name[128];
            snprintf(name, sizeof name, "%s tensor %zu: %zu elements, %zu chunk%s", type_name<T>(), t, s.numel, nt, nt == 1 ? "" : "s");
            if (s.special == Special::NaN || s.special == Special::NaNInf)
                check_true(ck, std::string(name) + " (NaN) sum is NaN", std::isnan(sq[t]), "got " + std::to_string(sq[t]));
            else if (s.special == Special::Inf)
                check_true(ck, std::string(name) + " (-Inf) sum is +Inf", std::isinf(sq[t]) && sq[t] > 0, "got " + std::to_string(sq[t]));
            else  // as a float vector for Checker (sums < 1e12: the float rounding is 6e-8 of rtol's ~1e-5)
                ck.check(name, {(float)sq[t]}, {ref[t]}, 0.0, rtol + std::ldexp(1.0, -24));
        }
    }
}

// ---------------------------------------------------------------------------------------
// StepStats: loss_mean and grad_norm_finalize
static StepStats get_stats(const DeviceBuffer<StepStats>& d) {
    StepStats s;
    cudaCheck(cudaMemcpy(&s, d.ptr, sizeof s, cudaMemcpyDeviceToHost));
    return s;
}
static void put_stats(DeviceBuffer<StepStats>& d, double loss_sum) {
    StepStats s;
    std::memset(&s, 0xFF, sizeof s);   // every field poisoned (NaN / -1) but the one given
    s.loss_sum = loss_sum;
    cudaCheck(cudaMemcpy(d.ptr, &s, sizeof s, cudaMemcpyHostToDevice));
}
static bool close_rel(double a, double b, double rtol) { return std::fabs(a - b) <= rtol * std::fabs(b); }

static void run_step_stats(Checker& ck, Rng& rng) {
    printf("step stats: loss_mean\n");
    DeviceBuffer<StepStats> d(1);
    for (int N : {1, 37, 1000}) {
        std::vector<float> a = rng.normal(N, 5.0f, 1.0f), b = rng.normal(N, 3.0f, 2.0f);
        DeviceBuffer<float> da(N), db(N);
        da.upload(a);
        db.upload(b);
        double ra = 0, rb = 0;
        for (int i = 0; i < N; i++) ra += a[i], rb += b[i];
        ra /= N, rb /= N;
        put_stats(d, 0.25);
        loss_mean(d.ptr, da.ptr, N, 0);
        loss_mean(d.ptr, db.ptr, N, 0);
        cudaCheck(cudaDeviceSynchronize());
        const StepStats s = get_stats(d);
        char name[96];
        snprintf(name, sizeof name, "N=%d: loss_sum = 0.25 + mean(a) + mean(b)", N);
        // double sums of N floats: relative error ~N 2^-53, far below 1e-12
        check_true(ck, name, close_rel(s.loss_sum, 0.25 + ra + rb, 1e-12), "got " + std::to_string(s.loss_sum));
        snprintf(name, sizeof name, "N=%d: batch_loss = mean(b), the last call's", N);
        check_true(ck, name, close_rel(s.batch_loss, rb, 1e-7), "got " + std::to_string(s.batch_loss));
        // rerun: the same bits
        put_stats(d, 0.25);
        loss_mean(d.ptr, da.ptr, N, 0);
        loss_mean(d.ptr, db.ptr, N, 0);
        cudaCheck(cudaDeviceSynchronize());
        const StepStats s2 = get_stats(d);
        snprintf(name, sizeof name, "N=%d: rerun, same bits", N);
        check_true(ck, name, std::memcmp(&s.loss_sum, &s2.loss_sum, 8) == 0 && std::memcmp(&s.batch_loss, &s2.batch_loss, 4) == 0, "bits differ");
    }

    printf("step stats: grad_norm_finalize\n");
    struct Case {
        int nch;
        float max_norm;   // relative to the norm: < 0 means 0 (no clipping)
        int special;      // 0 none, 1 NaN partial, 2 Inf partial, 3 NaN loss, 4 Inf loss
    };
    const Case cases[] = {{1, 2.0f, 0}, {300, 0.5f, 0}, {300, 1.5f, 0}, {5000, 0.1f, 0}, {300, -1.0f, 0},
                          {300, 0.5f, 1}, {5000, 0.5f, 2}, {37, 0.5f, 3}, {37, 0.5f, 4}};
    for (const Case& c : cases) {
        std::vector<float> part(c.nch);
        for (float& x : part) x = std::fabs(rng.normal(1, 0.0f, 3.0f)[0]) + 1e-3f;
        if (c.special == 1) part[c.nch / 2] = NAN;
        if (c.special == 2) part[c.nch - 1] = INFINITY;
        double sq = 0;
        for (float x : part) sq += x;
        const float ref_norm = (float)std::sqrt(sq);
        const float max_norm = c.max_norm < 0 ? 0.0f : c.max_norm * ref_norm;
        const double loss = c.special == 3 ? NAN : c.special == 4 ? INFINITY : 2.5;
        DeviceBuffer<float> dp(c.nch);
        dp.upload(part);
        std::vector<unsigned char> first;
        for (int rep = 0; rep < 2; rep++) {
            put_stats(d, loss);
            grad_norm_finalize(d.ptr, dp.ptr, c.nch, max_norm, 0);
            cudaCheck(cudaDeviceSynchronize());
            const StepStats s = get_stats(d);
            std::vector<unsigned char> bytes(sizeof s);
            std::memcpy(bytes.data(), &s, sizeof s);
            char name[128];
            snprintf(name, sizeof name, "nch=%d max_norm=%s special=%d", c.nch, c.max_norm < 0 ? "0" : (std::to_string(c.max_norm) + " x norm").c_str(),
                     c.special);
            if (rep == 1) {
                check_true(ck, std::string(name) + ": rerun, same bits", bytes == first, "bits differ");
                break;
            }
            first = bytes;
            const bool want_finite = c.special == 0;
            check_true(ck, std::string(name) + ": finite flag", s.finite == (want_finite ? 1 : 0), "got " + std::to_string(s.finite));
            check_true(ck, std::string(name) + ": loss_sum kept", std::memcmp(&s.loss_sum, &loss, 8) == 0, "loss_sum changed");
            if (!want_finite && c.special <= 2) {
                check_true(ck, std::string(name) + ": norm not finite", !std::isfinite(s.norm), "got " + std::to_string(s.norm));
                continue;
            }
            if (c.special > 2) continue;
            // grad_sq: double sums of nch floats; norm: its float square root (1 ulp)
            check_true(ck, std::string(name) + ": grad_sq", close_rel(s.grad_sq, sq, 1e-12), "got " + std::to_string(s.grad_sq));
            check_true(ck, std::string(name) + ": norm", close_rel(s.norm, ref_norm, 1.2e-7), "got " + std::to_string(s.norm));
            // clip: torch's clip_grad_norm_ factor, in float from the device's norm
            const float ref_clip = max_norm <= 0.0f ? 1.0f : std::min(1.0f, max_norm / (s.norm + 1e-6f));
            check_true(ck, std::string(name) + ": clip = min(1, max_norm / (norm + 1e-6))", s.clip == ref_clip,
                       "got " + std::to_string(s.clip) + ", want " + std::to_string(ref_clip));
        }
    }
}

int main() {
    skip_without_device("test_gradnorm");
    Rng rng(test_seed());
    const size_t C = GRADNORM_CHUNK, B = GRADNORM_BLOCK;
    printf("GRADNORM_CHUNK %zu, GRADNORM_BLOCK %zu\n", C, B);
    const std::vector<TensorSpec> specs = {
        {1, 1.0, Special::None},           // a single element
        {3, 1e2, Special::None},           // a few
        {B, 1e-2, Special::None},          // one element per thread
        {B + 1, 1.0, Special::None},       // thread 0 takes two
        {1000, 10.0, Special::None},
        {C, 1.0, Special::None},           // exactly one chunk
        {C - 1, 0.1, Special::None},
        {C + 1, 1.0, Special::None},       // one chunk + a 1-element remainder
        {3 * C + 777, 1.0, Special::None}, // a few chunks plus a remainder
        {0, 1.0, Special::None},           // empty: no chunk, sum 0
        {17, 1.0, Special::Zero},          // all zeros: sum exactly 0
        {5, 1.0, Special::NaN},
        {2 * C + 9, 1.0, Special::Inf},    // -Inf inside the second chunk
        {7, 1.0, Special::None},           // between two non-finite tensors
        {C + 3, 1.0, Special::NaNInf},
        {2, 1e-2, Special::None},          // the last tensor
    };
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();

    const size_t GAP = 3;
    printf("chunk tables\n");
    {
        size_t total = 0;
        check_table(ck, "the test's layout", layout(specs, GAP, &total));
        check_table(ck, "contiguous, from 0", {{0, C}, {C, 1}, {C + 1, 2 * C}, {3 * C + 1, 5}});
        check_table(ck, "empty tensors only", {{0, 0}, {0, 0}});
        check_table(ck, "no tensors", {});
        // offsets past 2^32 (long long chunk offsets), a tensor of more than 2^31 elements
        const size_t big = ((size_t)1 << 31) + 12345;
        check_table(ck, "offsets past 2^32", {{0, big}, {big, 1}, {((size_t)1 << 33) + 7, big}, {((size_t)1 << 34), C + 1}});
    }

    for (bool misaligned : {false, true}) {
        run_type<float>(ck, rng, specs, GAP, misaligned);
        run_type<__nv_bfloat16>(ck, rng, specs, GAP, misaligned);
    }

    // no chunks: no launch (the partials stay poisoned)
    {
        DeviceBuffer<float> p(1);
        DeviceBuffer<float> g(1);
        p.poison();
        sumsq_chunks<float>(p.ptr, g.ptr, nullptr, nullptr, 0, 0);
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<unsigned char> b = p.bytes();
        check_true(ck, "0 chunks: nothing written", b[0] == 0xFF && b[1] == 0xFF && b[2] == 0xFF && b[3] == 0xFF, "partial written");
    }
    run_step_stats(ck, rng);
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_gradnorm");
}
