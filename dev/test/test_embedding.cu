// test_embedding.cu - kernels/embedding.cuh (token + position embedding, forward and the
// deterministic bucketed backward) against a double-precision CPU reference, storage fp32
// and bf16, called as train_gpt.cu calls it:
//   forward   embedding_forward(out, tok, wte, wpe, B, T, C)       wpe = null for llama
//   backward  buckets = embedding_buckets(host ids, N) (checked here too), copied to the
//             device; embedding_backward(dwte, dwpe, dout, buckets..., B, T, C)
// Cases: gpt (with wpe) and llama (wpe null); C a multiple of 8 (vector path in fp32 and
// bf16), C = 20 and 300 (fp32 vector, bf16 scalar), C = 13 (scalar in both), C = 264 / 300
// (more channels than the backward's 256 threads); token patterns with one token at many
// positions (a third of them, or all), tokens that never occur, every token once, and the ids
// 0 and V-1. The forward output is poisoned (NaN) first, and also written through a
// misaligned pointer (the scalar path) and by the VEC = 1 kernel launched directly: all
// bitwise equal; likewise the backward's VEC = 1 kernels against the wrapper's vector ones
// (C = 2056: more vectors than threads). The backward accumulates (dwte, dwpe += ...), so it starts from random
// gradients: rows of tokens that never occur, and wpe rows >= T, must keep their bits. Every
// launch runs twice: the reruns must be bitwise identical.
// Inputs are fresh random numbers each run (seed printed; SEED=... replays). Exit status
// non-zero on any mismatch.
// Build: emulated (g++/clang++ -DCUDA_EMU, see dev/test/kernels.mk) or nvcc (real GPU).
#include "../../kernels/embedding.cuh"
#include "test_util.h"

struct Tol {
    double atol, rtol;
};

enum class Tokens { Mixed, Single, Distinct };
static const char* tokens_name(Tokens p) { return p == Tokens::Mixed ? "mixed" : p == Tokens::Single ? "single" : "distinct"; }

struct Case {
    int B, T, C, V;  // V: rows of wte (the trainer's padded vocab)
    bool gpt;        // wpe present (gpt) or null (llama)
    Tokens tokens;
};

static std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

static void upload_ints(DeviceBuffer<int>& d, const std::vector<int>& h) {
    cudaCheck(cudaMemcpy(d.ptr, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice));
}

// a pass/fail check that is not a tensor comparison
static void check_true(Checker& ck, const std::string& name, bool ok, const std::string& why) {
    ck.checked++;
    printf("  %-44s %s\n", name.c_str(), ok ? "ok" : ("MISMATCH: " + why).c_str());
    if (!ok) ck.failed++;
}

// the token ids of a case
static std::vector<int> make_tokens(Rng& rng, int N, int V, Tokens p) {
    std::vector<int> tok(N);
    if (p == Tokens::Single) {
        std::fill(tok.begin(), tok.end(), V / 2);
    } else if (p == Tokens::Distinct) {  // distinct ids, shuffled (N <= V)
        std::vector<int> ids(V);
        for (int v = 0; v < V; v++) ids[v] = v;
        std::shuffle(ids.begin(), ids.end(), rng.gen);
        std::copy(ids.begin(), ids.begin() + N, tok.begin());
    } else {  // a hot token at every third position, the rest from the ids = 1 mod 3 (ids = 2 mod 3 never occur), 0 and V-1 once
        const int hot = 3 * (V / 6);  // = 0 mod 3, not 0 for V >= 6
        std::uniform_int_distribution<int> pick(0, (V - 2) / 3);
        for (int n = 0; n < N; n++) tok[n] = n % 3 == 0 ? hot : std::min(V - 1, 3 * pick(rng.gen) + 1);
        tok[1 % N] = 0;
        tok[N - 1] = V - 1;
    }
    return tok;
}

// embedding_buckets(ids): distinct tokens ascending, positions of each ascending, all N covered
static bool buckets_valid(const EmbeddingBuckets& e, const std::vector<int>& tok, std::string& why) {
    const int N = (int)tok.size(), nb = (int)e.tok.size();
    if ((int)e.start.size() != nb + 1 || (int)e.pos.size() != N || e.start[0] != 0 || e.start[nb] != N) {
        why = "bad sizes / ends";
        return false;
    }
    std::vector<int> seen(N, 0);
    for (int b = 0; b < nb; b++) {
        if (b > 0 && e.tok[b] <= e.tok[b - 1]) {
            why = "tokens not strictly ascending";
            return false;
        }
        if (e.start[b + 1] <= e.start[b]) {
            why = "empty bucket";
            return false;
        }
        for (int j = e.start[b]; j < e.start[b + 1]; j++) {
            const int n = e.pos[j];
            if (n < 0 || n >= N || tok[n] != e.tok[b] || seen[n]++ || (j > e.start[b] && n <= e.pos[j - 1])) {
                why = "position " + std::to_string(n) + " misplaced";
                return false;
            }
        }
    }
    return true;
}

template <typename T>
static void run_case(Checker& ck, Rng& rng, const Case& cs) {
    const int B = cs.B, T_ = cs.T, C = cs.C, V = cs.V, N = B * T_;
    const int maxT = T_ + 3;  // wpe has max_seq_len rows; the rows >= T are not used
    constexpr int VEC = 16 / sizeof(T);
    const bool bf16 = sizeof(T) == 2;
    // forward: out = wte + wpe added in fp32 and rounded once to T: error <= the unit roundoff
    // 2^-24 (fp32) / 2^-8 = 3.9e-3 (bf16) times |out|; margin x2-x16. llama (no wpe): a copy, exact.
    const Tol t_fwd = bf16 ? Tol{0, 8e-3} : Tol{0, 1e-6};
    // backward: dwte[v] = dwte0[v] + the sum of up to N (<= 48) dout rows, added in fp32 then
    // rounded to T. fp32: each of the <= 48 additions rounds by half an ulp of a partial sum
    // (|sum| <~ 30, ulp 1.9e-6), random-signed: a few ulp, 2e-5 is ~10 ulp. bf16: the fp32 sum
    // of bf16 values is nearly exact (~1e-6), then one rounding to bf16 (2^-8 |result|), x2.
    const Tol t_bwd = bf16 ? Tol{1e-5, 8e-3} : Tol{2e-5, 1e-5};
    char tag[128];
    snprintf(tag, sizeof tag, "%s %s B=%d T=%d C=%d V=%d tokens %s (forward %s)", type_name<T>(), cs.gpt ? "gpt" : "llama", B, T_, C,
             V, tokens_name(cs.tokens), C % VEC == 0 ? "vector" : "scalar");
    printf("%s\n", tag);

    const std::vector<int> tok = make_tokens(rng, N, V, cs.tokens);
    const std::vector<float> wte = round_to<T>(rng.normal((size_t)V * C));
    const std::vector<float> wpe = round_to<T>(rng.normal((size_t)maxT * C, 0.0f, 0.5f));
    const std::vector<float> dout = round_to<T>(rng.normal((size_t)N * C));
    const std::vector<float> dwte0 = round_to<T>(rng.normal((size_t)V * C, 0.0f, 0.5f));
    const std::vector<float> dwpe0 = round_to<T>(rng.normal((size_t)maxT * C, 0.0f, 0.5f));

    DeviceBuffer<int> d_tok(N);
    upload_ints(d_tok, tok);
    DeviceBuffer<T> d_wte(V * (size_t)C), d_wpe(maxT * (size_t)C), d_out((size_t)N * C), d_dout((size_t)N * C), d_dwte(V * (size_t)C),
        d_dwpe(maxT * (size_t)C);
    d_wte.upload(wte);
    d_wpe.upload(wpe);
    d_dout.upload(dout);
    const T* wpe_ptr = cs.gpt ? d_wpe.ptr : nullptr;

    // ---- forward
    std::vector<double> out_ref((size_t)N * C);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            out_ref[(size_t)n * C + c] = (double)wte[(size_t)tok[n] * C + c] + (cs.gpt ? (double)wpe[(size_t)(n % T_) * C + c] : 0.0);
    std::vector<unsigned char> first_out;
    for (int rep = 0; rep < 2; rep++) {
        d_out.poison();
        embedding_forward<T>(d_out, d_tok, d_wte, wpe_ptr, B, T_, C, 0);
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 0) {
            ck.check("fwd out", d_out.download(), out_ref, t_fwd.atol, t_fwd.rtol);
            first_out = d_out.bytes();
        } else {
            ck.check_equal_bytes("fwd rerun", first_out, d_out.bytes());
        }
    }
    {  // the output one element past a 16-byte boundary: the wrapper must take the scalar path
        DeviceBuffer<T> d_mis((size_t)N * C + 1);
        d_mis.poison();
        embedding_forward<T>(d_mis.ptr + 1, d_tok, d_wte, wpe_ptr, B, T_, C, 0);
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<unsigned char> all = d_mis.bytes();
        ck.check_equal_bytes("fwd misaligned out == aligned", first_out, std::vector<unsigned char>(all.begin() + sizeof(T), all.end()));
        check_true(ck, "fwd misaligned out: element before untouched",
                   std::all_of(all.begin(), all.begin() + sizeof(T), [](unsigned char b) { return b == 0xFF; }), "overwritten");
    }
    {  // the scalar kernel launched directly
        d_out.poison();
        launch_kernel(embedding_forward_kernel<T, 1>, grid_stride_blocks((size_t)N * C, EW_BLOCK), EW_BLOCK, 0, 0, d_out.ptr, d_tok.ptr,
                      d_wte.ptr, wpe_ptr, N, T_, C);
        cudaCheck(cudaDeviceSynchronize());
        ck.check_equal_bytes("fwd scalar kernel == wrapper", first_out, d_out.bytes());
    }

    // ---- backward: host buckets as train_gpt.cu builds them, copied to the device
    const EmbeddingBuckets e = embedding_buckets(tok.data(), N);
    std::string why;
    const bool valid = buckets_valid(e, tok, why);
    check_true(ck, "embedding_buckets (" + std::to_string(e.tok.size()) + " distinct tokens)", valid, why);
    if (!valid) return;
    const int nb = (int)e.tok.size();
    DeviceBuffer<int> d_btok(nb), d_bstart(nb + 1), d_bpos(N);
    upload_ints(d_btok, e.tok);
    upload_ints(d_bstart, e.start);
    upload_ints(d_bpos, e.pos);

    std::vector<double> dwte_ref = to_double(dwte0), dwpe_ref = to_double(dwpe0);
    std::vector<char> present(V, 0);
    for (int n = 0; n < N; n++) {
        present[tok[n]] = 1;
        for (int c = 0; c < C; c++) {
            dwte_ref[(size_t)tok[n] * C + c] += dout[(size_t)n * C + c];
            dwpe_ref[(size_t)(n % T_) * C + c] += dout[(size_t)n * C + c];
        }
    }
    // rows that must keep their bits: absent tokens, wpe rows >= T
    auto rows = [C](const std::vector<float>& v, const std::vector<int>& which) {
        std::vector<float> r;
        for (int i : which) r.insert(r.end(), v.begin() + (size_t)i * C, v.begin() + (size_t)(i + 1) * C);
        return r;
    };
    std::vector<int> absent, unused_pos;
    for (int v = 0; v < V; v++)
        if (!present[v]) absent.push_back(v);
    for (int t = T_; t < maxT; t++) unused_pos.push_back(t);

    std::vector<unsigned char> first_dwte, first_dwpe;
    for (int rep = 0; rep < 2; rep++) {
        d_dwte.upload(dwte0);
        d_dwpe.upload(dwpe0);
        embedding_backward<T>(d_dwte, cs.gpt ? d_dwpe.ptr : nullptr, d_dout, d_btok, d_bstart, d_bpos, nb, B, T_, C, 0);
        cudaCheck(cudaDeviceSynchronize());
        if (rep == 0) {
            const std::vector<float> g_wte = d_dwte.download(), g_wpe = d_dwpe.download();
            ck.check("bwd dwte (+= onto dwte0)", g_wte, dwte_ref, t_bwd.atol, t_bwd.rtol);
            if (!absent.empty())
                ck.check("bwd dwte rows of " + std::to_string(absent.size()) + " absent tokens unchanged", rows(g_wte, absent),
                         to_double(rows(dwte0, absent)), 0, 0);
            if (cs.gpt) {
                ck.check("bwd dwpe (+= onto dwpe0)", g_wpe, dwpe_ref, t_bwd.atol, t_bwd.rtol);
                ck.check("bwd dwpe rows >= T unchanged", rows(g_wpe, unused_pos), to_double(rows(dwpe0, unused_pos)), 0, 0);
            } else {
                ck.check("bwd dwpe untouched (llama: null)", g_wpe, to_double(dwpe0), 0, 0);
            }
            first_dwte = d_dwte.bytes();
            first_dwpe = d_dwpe.bytes();
        } else {
            ck.check_equal_bytes("bwd rerun dwte", first_dwte, d_dwte.bytes());
            if (cs.gpt) ck.check_equal_bytes("bwd rerun dwpe", first_dwpe, d_dwpe.bytes());
        }
    }
    {  // the scalar kernels launched directly: the same bits as the wrapper's (vector where C allows)
        d_dwte.upload(dwte0);
        d_dwpe.upload(dwpe0);
        const int block = embedding_block(C);
        if (nb > 0)
            launch_kernel(embedding_backward_wte_kernel<T, 1>, nb, block, 0, 0, d_dwte.ptr, d_dout.ptr, d_btok.ptr, d_bstart.ptr, d_bpos.ptr, C);
        if (cs.gpt) launch_kernel(embedding_backward_wpe_kernel<T, 1>, T_, block, 0, 0, d_dwpe.ptr, d_dout.ptr, B, T_, C);
        cudaCheck(cudaDeviceSynchronize());
        ck.check_equal_bytes("bwd scalar kernels == wrapper (dwte)", first_dwte, d_dwte.bytes());
        if (cs.gpt) ck.check_equal_bytes("bwd scalar kernels == wrapper (dwpe)", first_dwpe, d_dwpe.bytes());
    }
}

int main() {
    skip_without_device("test_embedding");
    Rng rng(test_seed());
    const std::vector<Case> cases = {
        {2, 24, 64, 40, true, Tokens::Mixed},      // gpt, vector path in fp32 and bf16
        {3, 7, 20, 30, true, Tokens::Mixed},       // gpt, C = 20: fp32 vector, bf16 scalar
        {2, 16, 13, 50, false, Tokens::Mixed},     // llama, C odd: scalar
        {1, 32, 264, 20, false, Tokens::Mixed},    // llama, C > 256 backward threads, vector
        {4, 5, 300, 12, true, Tokens::Mixed},      // gpt, C > 256, fp32 vector / bf16 scalar, several b per t
        {2, 20, 8, 10, true, Tokens::Single},      // one token at all 40 positions, one vector per row
        {1, 40, 24, 64, false, Tokens::Distinct},  // every token at most once
        {1, 1, 16, 6, true, Tokens::Mixed},        // a single position
        {2, 6, 2056, 10, true, Tokens::Mixed},     // 257 bf16 / 514 fp32 vectors: the backward's threads stride past 256
    };
    Checker ck;
    auto t0 = std::chrono::steady_clock::now();
    for (const Case& cs : cases) {
        run_case<float>(ck, rng, cs);
        run_case<__nv_bfloat16>(ck, rng, cs);
    }
    printf("time %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return ck.finish("test_embedding");
}
