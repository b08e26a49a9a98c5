// cuda/memory.cuh - the device memory of train_gpt.cu's model: three arenas (parameters
// with master weights and optimizer state, gradients, activations with all scratch), the
// memory plan printed and checked before anything is allocated, the pinned staging of the
// batch uploads, and the transfers between the host's logical fp32 vectors and the device's
// padded layout (the MLP hidden width padded to FFN_PAD). The network that uses the buffers
// (forward, backward, the step) is train_gpt.cu's Model, built on DeviceMemory.
#pragma once
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../common/config.h"
#include "../common/layout.h"
#include "../common/run.h"
#include "../kernels/attention.cuh"
#include "../kernels/common.cuh"
#include "../kernels/flash_attention.cuh"
#include "../kernels/gradnorm.cuh"
#include "../kernels/matmul.cuh"
#include "../kernels/norm.cuh"
#include "parallel.cuh"

// host conversions between fp32 and the storage type
template <typename T> static inline T host_cast(float x);
template <> inline float host_cast<float>(float x) { return x; }
template <> inline __nv_bfloat16 host_cast<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
static inline float host_float(float x) { return x; }
static inline float host_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// ============================================================================
// Device memory: a bump allocator over one allocation. The first pass (base == nullptr)
// only counts, so the plan is known before anything is allocated.
// ============================================================================

struct Arena {
    char* base = nullptr;
    size_t used = 0;
    template <typename X>
    X* take(size_t n) {
        size_t off = (used + 255) / 256 * 256;   // 256-byte aligned (16-byte vectors, cuBLASLt)
        used = off + n * sizeof(X);
        return base ? reinterpret_cast<X*>(base + off) : nullptr;
    }
};

// ============================================================================
// MLP hidden width, padded on the device. cuBLASLt only picks its fast tensor-core kernels
// when every matrix row starts 16-byte aligned (8 bf16 elements); with ffn = 5461 (llama-1b)
// the GEMMs touching the hidden width fall back to slow align1/align2 kernels (2/3 of a step
// on an H200). So the device keeps the hidden width as Fp = round_up(ffn, FFN_PAD) units;
// 64 rather than 8 so the hidden width also fills whole GEMM tiles. The padded units have
// all-zero weights (fc rows, fc.b entries, mlp_proj columns): their activation is
// GELU(0) = 0 or silu(0) * 0 = 0, their weight gradients are exactly 0, and AdamW (m = v = 0,
// update 0 / (0 + eps), decay * 0) keeps them 0, so the padded model is the logical one
// exactly. Checkpoints, the CPU trainer, the tests and the FLOP count see only the logical
// table; remap_params converts at every host <-> device transfer.
// ============================================================================

constexpr int FFN_PAD = 64;
static inline int padded_ffn(int ffn) { return (ffn + FFN_PAD - 1) / FFN_PAD * FFN_PAD; }

// Copy a flat parameter-shaped vector from one layout of the parameter table to another:
// `from` laid out by table ta (hidden width Fa), `to` by tb (hidden width Fb): logical ->
// padded or padded -> logical. Tensor i is the same tensor in both tables; where its row
// count differs it is a stack of row blocks of the hidden width (gpt fc.w and fc.b: one
// block; llama fc.w: gate and up, two), each copied up to the smaller width, and where its
// column count differs (mlp_proj.w) each row is copied up to the smaller width. All other
// elements of `to` are zero. cvt converts an element (float <-> T).
template <typename D, typename S, typename Cvt>
static void remap_params(const ParamTable& ta, size_t Fa, const S* from, const ParamTable& tb, size_t Fb, D* to, Cvt cvt) {
    if (ta.t.size() != tb.t.size()) fatal("internal: remap_params between tables of %zu and %zu tensors", ta.t.size(), tb.t.size());
    memset((void*)to, 0, tb.total * sizeof(D));   // all-zero bits: +0 in float and bf16
    for (size_t i = 0; i < ta.t.size(); i++) {
        const ParamTensor &a = ta.t[i], &b = tb.t[i];
        size_t blocks = 1, ra = a.rows, rb = b.rows;   // row blocks, rows per block
        if (a.rows != b.rows) {
            blocks = a.rows / Fa;
            ra = Fa; rb = Fb;
        }
        if (a.name != b.name || blocks * ra != a.rows || blocks * rb != b.rows)
            fatal("internal: remap_params: %s (%zu x %zu) vs %s (%zu x %zu)", a.name.c_str(), a.rows, a.cols, b.name.c_str(), b.rows, b.cols);
        size_t rows = std::min(ra, rb), cols = std::min(a.cols, b.cols);
        for (size_t k = 0; k < blocks; k++)
            for (size_t r = 0; r < rows; r++) {
                const S* s = from + a.offset + (k * ra + r) * a.cols;
                D* d = to + b.offset + (k * rb + r) * b.cols;
                for (size_t c = 0; c < cols; c++) d[c] = cvt(s[c]);
            }
    }
}

// Activations of one layer (N = B*T rows), as in train_gpt.cpp.
template <typename T>
struct LayerActs {
    T *sum1, *n1out; float *mean1, *rstd1;    // sum1 = x + attn branch
    T *qkv, *att, *atty;                      // qkv after RoPE; att = softmax probs (B,NH,T,T), matmul attention only; atty = P V
    float* lse;                               // flash attention: the rows' log-sum-exp (B,NH,T), for the backward
    T *sum2, *n2out; float *mean2, *rstd2;    // sum2 = h + mlp branch
    T *fc, *act;                              // fc: (N, ffn) gpt, (N, 2 ffn) llama; act: (N, ffn)
};

struct MemoryPlan {
    size_t params = 0, grads = 0, acts = 0;
    size_t total() const { return params + grads + acts; }
};

// The host side of a batch's uploads, in pinned memory (the copies are truly asynchronous):
// the token ids, the targets and the embedding backward's token buckets. Two sets alternate
// between forwards, so that with gradient accumulation the next micro-batch is written
// while the GPU may still be copying the previous one; a set is refilled only after its
// `uploaded` event (recorded behind its last copy) has passed.
struct BatchStaging {
    int *inputs = nullptr, *targets = nullptr, *btok = nullptr, *bstart = nullptr, *bpos = nullptr;
    cudaEvent_t uploaded = nullptr;
};

// What the activation plan depends on besides the shapes: the model's kernel paths.
struct PlanChoices {
    bool flash = false;         // flash attention: row log-sum-exps instead of the T x T scores
};

template <typename T>
struct DeviceMemory : DataParallel {
    ModelConfig cfg;
    ParamTable table;      // the logical parameter table: checkpoints, the host side, the FLOP count
    int ffn_dev = 0;       // the MLP hidden width on the device, padded_ffn(cfg.ffn)
    ParamTable dtable;     // the device layout: the same tensors in the same order, hidden width ffn_dev
    int precision = PREC_FP32;
    cudaStream_t stream = 0;
    // Forward only (set_forward_only, the analysis modes): no gradients, no optimizer state,
    // no backward buffers, and the layers share their scratch activations (each keeps its two
    // outputs, sum2 and n2out, one of which is the residual stream the analyses read). A
    // llama-7b analysis then needs the bf16 weights and little more (the plan at 8 x 256:
    // 14,403 MiB, against 112,573 MiB for training).
    bool forward_only = false;
    GradNormChunks chunks;    // the chunk table of the gradient norm, AdamW and the ZeRO shards (gradnorm.cuh)

    // arena 1, parameters: the compute weights (T), the fp32 master copy (bf16 mode only),
    // the AdamW moments m, v (fp32, or T in pure bf16); the last three for this rank's shard
    Arena param_arena, grad_arena, act_arena;
    T* params = nullptr;
    float* master = nullptr;
    void* m = nullptr;
    void* v = nullptr;
    // arena 2, gradients (T)
    T* grads = nullptr;
    Tensors<T> W, G;

    // arena 3, activations for batches up to B x T, and every scratch buffer
    int B = 0, T_cap = 0;
    std::vector<LayerActs<T>> acts;
    T *encoded = nullptr, *nf_out = nullptr, *logits = nullptr, *branch = nullptr;
    float *nf_mean = nullptr, *nf_rstd = nullptr, *losses = nullptr;
    std::vector<T*> resid;                    // resid[l] = input of layer l, resid[L] = last block's output
    T *dx = nullptr, *d1 = nullptr, *dqkv = nullptr, *datty = nullptr, *dfc = nullptr, *dact = nullptr, *attn_scratch = nullptr;
    float* fa_dsum = nullptr;                 // flash attention backward: D = rowsum(dY * Y), (B,NH,T)
    float* fscratch = nullptr;                // norm / bias weight-gradient partial sums
    float *rope_cos = nullptr, *rope_sin = nullptr;
    int *d_inputs = nullptr, *d_targets = nullptr, *d_btok = nullptr, *d_bstart = nullptr, *d_bpos = nullptr;
    BatchStaging staging[2];                  // pinned host side of the uploads, alternating (BatchStaging)
    long long* d_chunk_off = nullptr;
    int* d_chunk_len = nullptr;
    unsigned char* d_chunk_decay = nullptr;   // per chunk: its tensor takes weight decay (AdamW)
    float* d_partial = nullptr;
    StepStats* d_stats = nullptr;              // the step's loss, norm, clip, finite flag (gradnorm.cuh)
    StepStats* h_stats = nullptr;              // pinned host copies of d_stats and d_partial, filled at the
    float* h_partial = nullptr;                //   end of a step by asynchronous copies (end_step)
    MemoryPlan plan;

    bool pure() const { return precision == PREC_PURE_BF16; }
    size_t state_elem_bytes() const { return pure() ? sizeof(T) : sizeof(float); }

    // The logical and device tables of a model config (finalised here), and the chunk table.
    void init_tables(const ModelConfig& c, int prec) {
        cfg = c;
        finalize_config(cfg);
        table = build_param_table(cfg);
        ModelConfig dc = cfg;
        dc.ffn = ffn_dev = padded_ffn(cfg.ffn);
        dtable = build_param_table(dc);
        precision = prec;
        std::vector<std::pair<size_t, size_t>> spans;
        for (const ParamTensor& p : dtable.t) spans.push_back({p.offset, p.numel()});
        chunks = gradnorm_chunks(spans);
    }

    // Lay the three arenas out for batches up to B_ x T_ (base pointers null: count only).
    void layout(int B_, int T_, const PlanChoices& pc) {
        B = B_; T_cap = T_;
        size_t P = dtable.total;   // the device layout (padded hidden width)
        plan_shards(chunks, P);
        const size_t S = state_len;
        const bool train = !forward_only;
        param_arena.used = 0;
        params = param_arena.take<T>(P);
        master = train && precision == PREC_BF16 ? param_arena.take<float>(S) : nullptr;
        m = !train ? nullptr : pure() ? (void*)param_arena.take<T>(S) : (void*)param_arena.take<float>(S);
        v = !train ? nullptr : pure() ? (void*)param_arena.take<T>(S) : (void*)param_arena.take<float>(S);
        grad_arena.used = 0;
        grads = train ? grad_arena.take<T>(P) : nullptr;
        if (param_arena.base) {
            W = tensors_in(dtable, cfg, params);
            if (train) G = tensors_in(dtable, cfg, grads);
        }

        Arena& a = act_arena;
        a.used = 0;
        size_t N = (size_t)B * T_, C = cfg.d_model, F = ffn_dev, fcw = cfg.gpt() ? F : 2 * F, Vp = cfg.padded_vocab;
        size_t att = (size_t)B * cfg.n_head * T_ * T_;
        acts.resize(cfg.n_layer);
        encoded = a.take<T>(N * C);
        resid.assign(cfg.n_layer + 1, nullptr);
        resid[0] = encoded;
        for (int l = 0; l < cfg.n_layer; l++) {
            LayerActs<T>& x = acts[l];
            if (!train && l > 0) {   // forward only: layer 0's scratch, outputs of its own
                x = acts[0];
                x.sum2 = a.take<T>(N * C); x.n2out = a.take<T>(N * C);
                resid[l + 1] = cfg.post_ln(l) ? x.n2out : x.sum2;
                continue;
            }
            x.sum1 = a.take<T>(N * C); x.n1out = a.take<T>(N * C); x.mean1 = a.take<float>(N); x.rstd1 = a.take<float>(N);
            x.qkv = a.take<T>(3 * N * C); x.atty = a.take<T>(N * C);
            x.att = pc.flash ? nullptr : a.take<T>(att);
            x.lse = pc.flash ? a.take<float>((size_t)B * cfg.n_head * T_) : nullptr;
            x.sum2 = a.take<T>(N * C); x.n2out = a.take<T>(N * C); x.mean2 = a.take<float>(N); x.rstd2 = a.take<float>(N);
            x.fc = a.take<T>(N * fcw); x.act = a.take<T>(N * F);
            resid[l + 1] = cfg.post_ln(l) ? x.n2out : x.sum2;
        }
        nf_out = a.take<T>(N * C); nf_mean = a.take<float>(N); nf_rstd = a.take<float>(N);
        losses = a.take<float>(N);
        logits = a.take<T>(N * Vp);
        branch = a.take<T>(N * C);
        attn_scratch = pc.flash ? nullptr : a.take<T>(attention_scratch_elems(B, T_, (int)C, cfg.n_head));   // the forward's too
        int half = cfg.head_dim() / 2;
        rope_cos = cfg.gpt() ? nullptr : a.take<float>((size_t)cfg.max_seq_len * half);
        rope_sin = cfg.gpt() ? nullptr : a.take<float>((size_t)cfg.max_seq_len * half);
        d_inputs = a.take<int>(N); d_targets = a.take<int>(N);
        d_stats = a.take<StepStats>(1);
        if (!train) {
            dx = d1 = dqkv = datty = dfc = dact = nullptr;
            fa_dsum = fscratch = d_partial = nullptr;
            d_btok = d_bstart = d_bpos = d_chunk_len = nullptr;
            d_chunk_off = nullptr;
            d_chunk_decay = nullptr;
            plan.params = param_arena.used; plan.grads = grad_arena.used; plan.acts = act_arena.used;
            return;
        }
        // backward buffers
        dx = a.take<T>(N * C); d1 = a.take<T>(N * C); dqkv = a.take<T>(3 * N * C); datty = a.take<T>(N * C);
        dfc = a.take<T>(N * fcw);
        dact = a.take<T>(N * F);
        fa_dsum = pc.flash ? a.take<float>(flash_attention_scratch_floats(B, T_, cfg.n_head)) : nullptr;
        size_t widest = std::max({3 * C, fcw, C});
        fscratch = a.take<float>(std::max(norm_backward_scratch_floats((int)N, (int)C), bias_grad_scratch_floats((int)N, (int)widest)));
        d_btok = a.take<int>(N); d_bstart = a.take<int>(N + 1); d_bpos = a.take<int>(N);
        d_chunk_off = a.take<long long>(chunks.off.size());
        d_chunk_len = a.take<int>(chunks.len.size());
        d_chunk_decay = a.take<unsigned char>(chunks.len.size());
        d_partial = a.take<float>(chunks.off.size());
        plan.params = param_arena.used; plan.grads = grad_arena.used; plan.acts = act_arena.used;
    }


    // Plan the memory for B_ x T_, print the plan, refuse it when it does not fit, allocate.
    void allocate(int B_, int T_, bool verbose, const PlanChoices& pc) {
        if (T_ > cfg.max_seq_len) fatal("sequence length %d does not fit the model's max_seq_len %d", T_, cfg.max_seq_len);
        layout(B_, T_, pc);
        size_t free_b = 0, total_b = 0;
        cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        const double MiB = 1 << 20;
        const char* pdesc = forward_only ? (precision == PREC_FP32 ? "fp32 weights" : "bf16 weights")
                            : precision == PREC_FP32 ? "fp32 weights + fp32 AdamW m, v"
                            : precision == PREC_BF16 ? "bf16 weights + fp32 master + fp32 AdamW m, v"
                                                     : "bf16 weights + bf16 AdamW m, v";
        if (verbose) {
            printf("memory plan (%s%s): parameters %.1f MiB (%s), gradients %.1f MiB, activations %.1f MiB (B=%d T=%d), total %.1f MiB; "
                   "device free %.1f of %.1f MiB\n",
                   precision_name(precision), forward_only ? ", forward only" : "", plan.params / MiB, pdesc, plan.grads / MiB,
                   plan.acts / MiB, B_, T_, plan.total() / MiB, free_b / MiB, total_b / MiB);
            if (sharded() && !forward_only)
                printf("memory plan: ZeRO-1, this rank holds the master weights and AdamW moments of %zu of the %zu parameters "
                       "(%.1f%%, shard %d of %d)\n", shard_off[comm->rank + 1] - shard_off[comm->rank], dtable.total,
                       100.0 * (shard_off[comm->rank + 1] - shard_off[comm->rank]) / dtable.total, comm->rank, comm->nranks);
            if (ffn_dev != cfg.ffn)
                printf("memory plan: ffn %d padded to %d on the device (zero units, for aligned GEMM rows; %.2fM parameters stored)\n",
                       cfg.ffn, ffn_dev, dtable.total / 1e6);
        }
        if (plan.total() + (64u << 20) > free_b)   // + the GEMM workspace and a margin
            fatal("not enough GPU memory: the plan needs %.1f MiB (parameters %.1f, gradients %.1f, activations %.1f) and 64 MiB "
                  "for the GEMM workspace and a margin, but %.1f MiB are free; lower --batch_size (and raise --total_batch accumulation) or --seq_len",
                  plan.total() / MiB, plan.params / MiB, plan.grads / MiB, plan.acts / MiB, free_b / MiB);
        cudaCheck(cudaMalloc((void**)&param_arena.base, plan.params));
        if (plan.grads) cudaCheck(cudaMalloc((void**)&grad_arena.base, plan.grads));   // none when forward only
        cudaCheck(cudaMalloc((void**)&act_arena.base, plan.acts));
        layout(B_, T_, pc);   // again, with the bases: real pointers
        cudaCheck(cudaMemset(act_arena.base, 0, plan.acts));
        if (plan.grads) cudaCheck(cudaMemset(grad_arena.base, 0, plan.grads));
        cudaCheck(cudaMemset(param_arena.base, 0, plan.params));
        if (!cfg.gpt()) {
            std::vector<float> cs, sn;
            rope_tables(cfg, cs, sn);   // common/layout.h
            cudaCheck(cudaMemcpy(rope_cos, cs.data(), cs.size() * 4, cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(rope_sin, sn.data(), sn.size() * 4, cudaMemcpyHostToDevice));
        }
        if (!forward_only) {   // the chunk table of the gradient norm and AdamW (gradnorm.cuh)
            cudaCheck(cudaMemcpy(d_chunk_off, chunks.off.data(), chunks.off.size() * sizeof(long long), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(d_chunk_len, chunks.len.data(), chunks.len.size() * sizeof(int), cudaMemcpyHostToDevice));
            std::vector<unsigned char> decay(chunks.owner.size());
            for (size_t k = 0; k < decay.size(); k++) decay[k] = dtable.t[chunks.owner[k]].decay ? 1 : 0;
            cudaCheck(cudaMemcpy(d_chunk_decay, decay.data(), decay.size(), cudaMemcpyHostToDevice));
        }
        const size_t N = (size_t)B_ * T_;
        for (BatchStaging& hb : staging) {
            cudaCheck(cudaMallocHost((void**)&hb.inputs, N * sizeof(int)));
            cudaCheck(cudaMallocHost((void**)&hb.targets, N * sizeof(int)));
            cudaCheck(cudaMallocHost((void**)&hb.btok, N * sizeof(int)));
            cudaCheck(cudaMallocHost((void**)&hb.bstart, (N + 1) * sizeof(int)));
            cudaCheck(cudaMallocHost((void**)&hb.bpos, N * sizeof(int)));
            cudaCheck(cudaEventCreateWithFlags(&hb.uploaded, cudaEventDisableTiming));
        }
        cudaCheck(cudaMallocHost((void**)&h_stats, sizeof(StepStats)));
        cudaCheck(cudaMallocHost((void**)&h_partial, std::max<size_t>(1, chunks.off.size()) * sizeof(float)));
    }


    // Call before allocate(): a model that only runs forwards (see forward_only above).
    void set_forward_only() {
        if (param_arena.base) fatal("internal: set_forward_only after allocate");
        forward_only = true;
    }
    // Call before allocate() (the shards of the optimizer state decide the memory plan).
    void set_comm(const Comm* c, bool zero_ = false) {
        if (param_arena.base) fatal("internal: set_comm after allocate");
        connect(c, zero_, dtable, cfg.n_layer);   // cuda/parallel.cuh
    }

    void free_all() {
        disconnect();
        cudaFree(param_arena.base); cudaFree(grad_arena.base); cudaFree(act_arena.base);
        param_arena.base = grad_arena.base = act_arena.base = nullptr;
        cudaFreeHost(h_stats); cudaFreeHost(h_partial);
        h_stats = nullptr; h_partial = nullptr;
        for (BatchStaging& hb : staging) {
            int* bufs[] = {hb.inputs, hb.targets, hb.btok, hb.bstart, hb.bpos};
            for (int* p : bufs) cudaFreeHost(p);
            if (hb.uploaded) cudaEventDestroy(hb.uploaded);
            hb = BatchStaging{};
        }
    }

    // ------------------------------------------------------------------ state transfer
    // Every transfer goes through the logical <-> padded mapping (remap_params): the host
    // side holds logical fp32 vectors (table), the device the padded layout (dtable) in its
    // storage type X (T, or float for the master weights and the fp32 optimizer state).
    // state = true: dst is an optimizer-state array (master, m, v), which holds arena elements
    // [state_base, state_base + state_len) only.
    template <typename X>
    void upload_flat(X* dst, const std::vector<float>& src, bool state = false) const {
        if (src.size() != table.total) fatal("internal: %zu values given, the model has %zu parameters", src.size(), table.total);
        std::vector<X> tmp(dtable.total);
        remap_params(table, cfg.ffn, src.data(), dtable, ffn_dev, tmp.data(), [](float x) { return host_cast<X>(x); });
        const size_t lo = state ? state_base : 0, n = state ? state_len : tmp.size();
        cudaCheck(cudaMemcpy(dst, tmp.data() + lo, n * sizeof(X), cudaMemcpyHostToDevice));
    }
    template <typename X>
    std::vector<float> download_flat(const X* src) const {
        std::vector<X> tmp(dtable.total);
        cudaCheck(cudaMemcpy(tmp.data(), src, tmp.size() * sizeof(X), cudaMemcpyDeviceToHost));
        return to_logical(tmp);
    }
    template <typename X>
    std::vector<float> to_logical(const std::vector<X>& padded) const {
        std::vector<float> out(table.total);
        remap_params(dtable, ffn_dev, padded.data(), table, cfg.ffn, out.data(), [](X x) { return host_float(x); });
        return out;
    }
    // An optimizer-state array, whole, on rank 0 (DataParallel::gather_state)
    template <typename X>
    std::vector<float> gather(const X* src) const {
        return gather_state(src, dtable.total, [&](const std::vector<X>& x) { return to_logical(x); });
    }
    // fp32 values (a checkpoint's) -> the device: master (bf16 mode) and the compute copy
    // (rounded to T); m and v (zero when null). Sharded: this rank's part of the state.
    void upload_state(const std::vector<float>& p, const std::vector<float>* mm, const std::vector<float>* vv) {
        upload_flat(params, p);
        if (master) upload_flat(master, p, true);
        for (int k = 0; k < 2; k++) {
            const std::vector<float>* src = k ? vv : mm;
            void* dst = k ? v : m;
            if (!dst) continue;   // forward only: no optimizer state
            if (!src) cudaCheck(cudaMemset(dst, 0, state_len * state_elem_bytes()));
            else if (pure()) upload_flat((T*)dst, *src, true);
            else upload_flat((float*)dst, *src, true);
        }
    }
    // The device state as fp32: the master weights where there are some, else the weights.
    // Data parallel, every rank calls it (a collective when sharded); rank 0 gets the whole
    // state, the other ranks empty vectors.
    void download_state(std::vector<float>& p, std::vector<float>* mm, std::vector<float>* vv) const {
        p.clear();
        if (mm) mm->clear();
        if (vv) vv->clear();
        if (data_parallel() && !sharded() && comm->rank != 0) return;
        if (master) p = gather(master);
        else if (!data_parallel() || comm->rank == 0) p = download_flat(params);   // the same on every rank
        for (int k = 0; k < 2; k++) {
            std::vector<float>* dst = k ? vv : mm;
            const void* src = k ? v : m;
            if (dst) *dst = pure() ? gather((const T*)src) : gather((const float*)src);
        }
    }
    // the gradient of every parameter as fp32 (tests)
    std::vector<float> download_grads() const { return download_flat(grads); }
    // logits row n (padded width) as fp32
    std::vector<float> download_logits(int nrows) const {
        std::vector<T> tmp((size_t)nrows * cfg.padded_vocab);
        cudaCheck(cudaMemcpy(tmp.data(), logits, tmp.size() * sizeof(T), cudaMemcpyDeviceToHost));
        std::vector<float> z(tmp.size());
        for (size_t i = 0; i < z.size(); i++) z[i] = host_float(tmp[i]);
        return z;
    }

    // Would a batch of B_ x T_ fit the activation buffers laid out for B x T_cap?
    bool fits(int B_, int T_) const {
        return T_ <= cfg.max_seq_len && (size_t)B_ * T_ <= (size_t)B * T_cap && (size_t)B_ * T_ * T_ <= (size_t)B * T_cap * T_cap;
    }
};
