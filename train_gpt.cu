/*
train_gpt.cu: the single-file CUDA trainer for Mix-LN.

Same models, presets, flags, checkpoint and shard formats, data loader, schedule and log
lines as train_gpt.cpp (the CPU reference trainer; read it for the math of each op). The
host code both trainers share lives in common/; the kernels live in kernels/, one header
per family, forward and backward side by side:

  kernels/embedding.cuh   token (+ position) embedding; deterministic backward (no atomics)
  kernels/norm.cuh        LayerNorm / RMSNorm fused with the residual add, Pre-LN and Post-LN forms
  kernels/matmul.cuh      linear layers through kernels/cublas_wrap.cuh (cuBLASLt); GPT-2's GELU in a
                          cuBLASLt epilogue (--gelu_fusion 1, default; 2: the GELU gradient too; 0: kernels)
                          and the bias gradients in epilogues (--bias_grad epilogue, default) or in
                          column-sum kernels (kernel: common.cuh; fc's fused into the GELU gradient)
  kernels/rope.cuh        rotary position embedding (llama)
  kernels/flash_attention.cuh  causal attention in tiles, no T x T scores (bf16, tensor cores; default);
                          dQ recomputed in its own kernel (--flash_dq recompute, default) or summed from
                          the dK/dV kernel's fp32 partials (partials)
  kernels/attention.cuh   causal attention with the T x T scores (batched GEMMs + softmax kernels;
                          fp32 runs, head sizes over 64, --attention matmul)
  kernels/activation.cuh  GELU (gpt), SwiGLU (llama)
  kernels/classifier.cuh  fused softmax + cross-entropy + dlogits, padded vocab skipped
  kernels/adamw.cuh       AdamW for the three precision modes
  kernels/gradnorm.cuh    deterministic per-tensor sums of squares (global and per-layer norms)
  kernels/nccl_wrap.cuh   several GPUs (mpirun): gradient all-reduce, or with --zero 1 (ZeRO-1: the
                          optimizer state sharded) reduce to the owner and all-gather of the weights

Norm placement per layer l, K = post_ln_layers, N = LayerNorm (gpt) / RMSNorm (llama):
  l <  K  Post-LN:  sum1 = x + Attn(x);        h = N1(sum1);  sum2 = h + MLP(h);      y = N2(sum2)
  l >= K  Pre-LN:   sum1 = x + Attn(N1(x));    h = sum1;      sum2 = h + MLP(N2(h));  y = sum2
The activation buffers (sum1/n1out/sum2/n2out per layer) and the backward wiring are the
CPU trainer's; the residual add and the norm after it are one fused kernel.

Precision (--precision): bf16 (default: bf16 weights, activations and gradients, fp32 master
weights and AdamW state), pure_bf16 (everything bf16, the optimizer state too, like the
paper's code), fp32 (everything fp32, exact fp32 GEMMs). Matmuls go through cuBLASLt with fp32
accumulation. Checkpoints always hold fp32 values (the master weights where there are some),
so they are the CPU trainer's format; the precision is recorded in the training state and a
resume under another precision is refused.

Memory: three device allocations (parameters with master weights and optimizer state, of
this rank's shard with --zero 1; gradients; activations with all scratch), planned and
printed before anything is allocated; the analysis modes (--mode angular | layer_drop) plan
forwards only (the weights and activations; no gradients, optimizer state or backward
buffers). A plan that does not fit in the free device memory is a one-line error. On the device the
MLP hidden width is padded to a multiple of FFN_PAD with zero units (aligned GEMM rows);
the host, checkpoints and tests see the logical parameter table (remap_params).

Layout: activations row-major (B*T rows, one per token); weights as PyTorch's (out, in).
*/
#ifdef _OPENMP
#include <omp.h>
#endif
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/activation.cuh"
#include "kernels/adamw.cuh"
#include "kernels/attention.cuh"
#include "kernels/classifier.cuh"
#include "kernels/common.cuh"
#include "kernels/cublas_wrap.cuh"
#include "kernels/embedding.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/gradnorm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/nccl_wrap.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"

#include "common/analysis.h"
#include "common/checkpoint.h"
#include "common/config.h"
#include "common/dataloader.h"
#include "common/flags.h"
#include "common/init.h"
#include "common/logger.h"
#include "common/rng.h"
#include "common/run.h"
#include "common/sample.h"
#include "common/schedule.h"
#include "common/util.h"

// ============================================================================
// Precision modes
// ============================================================================

static int parse_precision(const std::string& s) {
    if (s == "fp32") return PREC_FP32;
    if (s == "bf16") return PREC_BF16;
    if (s == "pure_bf16") return PREC_PURE_BF16;
    fatal("--precision must be fp32, bf16 or pure_bf16, got '%s'", s.c_str());
}

// The kernel paths a run chooses between, each a flag of train_gpt.cu and test_gpt.cu; all of
// them compute the same function (tests/cuda.sh checks every one against the reference).
// Model::set_kernels applies them.
struct KernelChoices {
    bool flash = true;                        // --attention flash (where it applies) | matmul
    FlashDq flash_dq = FlashDq::Recompute;    // --flash_dq recompute | partials
    int gelu_fusion = 1;                      // --gelu_fusion 0 | 1 | 2
    BiasGrad bias_grad = BiasGrad::Epilogue;  // --bias_grad epilogue | kernel
};
static KernelChoices parse_kernel_choices(const std::string& attention, const std::string& flash_dq, int gelu_fusion,
                                          const std::string& bias_grad) {
    KernelChoices k;
    if (attention != "flash" && attention != "matmul") fatal("--attention must be flash or matmul, got '%s'", attention.c_str());
    k.flash = attention == "flash";
    if (flash_dq != "recompute" && flash_dq != "partials") fatal("--flash_dq must be recompute or partials, got '%s'", flash_dq.c_str());
    k.flash_dq = flash_dq == "partials" ? FlashDq::Partials : FlashDq::Recompute;
    if (gelu_fusion < 0 || gelu_fusion > 2) fatal("--gelu_fusion must be 0, 1 or 2, got %d", gelu_fusion);
    k.gelu_fusion = gelu_fusion;
    if (bias_grad != "epilogue" && bias_grad != "kernel") fatal("--bias_grad must be epilogue or kernel, got '%s'", bias_grad.c_str());
    k.bias_grad = bias_grad == "kernel" ? BiasGrad::Kernel : BiasGrad::Epilogue;
    return k;
}

// host conversions between fp32 and the storage type
template <typename T> static inline T host_cast(float x);
template <> inline float host_cast<float>(float x) { return x; }
template <> inline __nv_bfloat16 host_cast<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
static inline float host_float(float x) { return x; }
static inline float host_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// Fail cleanly when there is no device (an nvcc build on a machine without a GPU); take
// device `index` (a data-parallel rank's local rank: one process per GPU of the node).
[[maybe_unused]] static void require_cuda_device(int index = 0, int local_size = 1) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        fatal("no CUDA device found (cudaGetDeviceCount: %s, %d devices)", e == cudaSuccess ? "no error" : cudaGetErrorString(e), n);
    if (local_size > n) fatal("%d processes on this node but %d CUDA device(s): start one process per GPU (mpirun -np)", local_size, n);
    cudaCheck(cudaSetDevice(index));
}

// Dense peak FLOP/s of the device for MFU (bf16 tensor cores, or fp32 without them);
// 0 when the device is not in the table.
[[maybe_unused]] static double device_peak_flops(const std::string& name, bool bf16) {
    struct Row { const char* key; double bf16, fp32; };
    static const Row rows[] = {
        {"H200", 989e12, 67e12},         // H200 SXM (datasheet dense bf16)
        {"H100 PCIe", 756e12, 51e12},
        {"H100", 989e12, 67e12},         // H100 SXM
        {"A100", 312e12, 19.5e12},
    };
    for (const Row& r : rows)
        if (name.find(r.key) != std::string::npos) return bf16 ? r.bf16 : r.fp32;
    return 0.0;
}

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

// ============================================================================
// The model
// ============================================================================

// Pointers to one layer's tensors in a flat array (parameters or gradients).
template <typename T>
struct LayerTensors {
    T *norm1_w, *norm1_b, *qkv_w, *qkv_b, *attn_proj_w, *attn_proj_b;
    T *norm2_w, *norm2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;   // biases are null for llama
};
template <typename T>
struct Tensors {
    T *wte, *wpe, *norm_f_w, *norm_f_b, *lm_head;   // lm_head == wte for gpt (tied)
    std::vector<LayerTensors<T>> layer;
};

// Resolve every tensor by name through the parameter table.
template <typename T>
static Tensors<T> tensors_in(const ParamTable& pt, const ModelConfig& c, T* base) {
    auto at = [&](const std::string& name) -> T* {
        for (const ParamTensor& p : pt.t)
            if (p.name == name) return base + p.offset;
        return nullptr;
    };
    Tensors<T> w;
    w.wte = at("wte"); w.wpe = at("wpe"); w.norm_f_w = at("norm_f.w"); w.norm_f_b = at("norm_f.b");
    w.lm_head = c.gpt() ? w.wte : at("lm_head.w");
    for (int l = 0; l < c.n_layer; l++) {
        std::string p = "l" + std::to_string(l) + ".";
        w.layer.push_back({at(p + "norm1.w"), at(p + "norm1.b"), at(p + "qkv.w"), at(p + "qkv.b"), at(p + "attn_proj.w"),
                           at(p + "attn_proj.b"), at(p + "norm2.w"), at(p + "norm2.b"), at(p + "fc.w"), at(p + "fc.b"),
                           at(p + "mlp_proj.w"), at(p + "mlp_proj.b")});
    }
    return w;
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

template <typename T>
struct Model {
    ModelConfig cfg;
    ParamTable table;      // the logical parameter table: checkpoints, the host side, the FLOP count
    int ffn_dev = 0;       // the MLP hidden width on the device, padded_ffn(cfg.ffn)
    ParamTable dtable;     // the device layout: the same tensors in the same order, hidden width ffn_dev
    int precision = PREC_FP32;
    bool flash = false;                       // attention through kernels/flash_attention.cuh (set_attention)
    FlashDq flash_dq = FlashDq::Recompute;    // how its backward forms dQ (set_kernels)
    int gelu_fusion = 1;                      // GELU (gradient) in GEMM epilogues: 0, 1, 2 (set_gelu_fusion)
    BiasGrad bias_grad = BiasGrad::Epilogue;  // bias gradients in GEMM epilogues or kernels (set_bias_grad)
    cudaStream_t stream = 0;
    NormType norm_type = NormType::LayerNorm;
    // Data parallel (set_comm, more than one rank): the step's last backward averages each
    // bucket of gradients over the ranks as soon as the bucket is final (reduce_bucket), on a
    // stream of its own, so the all-reduce of layer l overlaps the backward of layers < l.
    const Comm* comm = nullptr;
    cudaStream_t comm_stream = nullptr;       // non-blocking: runs beside the legacy default stream
    cudaEvent_t bucket_ready = nullptr, comm_done = nullptr;
    bool reduce_in_backward = false;          // the current backward is the step's last micro-step
    bool comm_pending = false;                // reductions queued on comm_stream not yet waited for
    bool grads_reduced = false;               // this step's gradients were reduced (begin_step clears it)
    // bucket k is grads[bucket_bounds[k], bucket_bounds[k + 1]): k = 0 the embeddings (the start
    // of the table), k = l + 1 layer l, k = n_layer + 1 the final norm and the head (the end)
    std::vector<size_t> bucket_bounds;
    // ZeRO-1 (set_comm with zero, more than one rank): the optimizer state is sharded. Rank r
    // owns chunks [shard_chunk[r], shard_chunk[r + 1]) of the chunk table (gradnorm.cuh), which
    // are arena elements [shard_off[r], shard_off[r + 1]) (about 1/n of the parameters each,
    // cut at chunk boundaries). Only rank r keeps their master weights and AdamW moments,
    // receives their averaged gradients (reduce_bucket: a reduce to the owner instead of an
    // all-reduce), forms their gradient-norm partials and updates them; then each rank's
    // updated weights go to all (end_step). Not sharded: one shard, the whole arena.
    bool zero = false;
    // Forward only (set_forward_only, the analysis modes): no gradients, no optimizer state,
    // no backward buffers, and the layers share their scratch activations (each keeps its two
    // outputs, sum2 and n2out, one of which is the residual stream the analyses read). A
    // llama-7b analysis then needs the bf16 weights and little more (the plan at 8 x 256:
    // 14,403 MiB, against 112,573 MiB for training).
    bool forward_only = false;
    std::vector<int> shard_chunk;
    std::vector<size_t> shard_off;
    size_t state_base = 0, state_len = 0;    // this rank's master / m / v: arena elements [state_base, state_base + state_len)

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
    float* fa_dq_part = nullptr;              // and with --flash_dq partials the dQ partials (flash_attention.cuh)
    size_t fa_dq_part_floats = 0;             // their size: at most 2 GiB, the heads then taken in groups
    float* fscratch = nullptr;                // norm / bias weight-gradient partial sums
    float *rope_cos = nullptr, *rope_sin = nullptr;
    int *d_inputs = nullptr, *d_targets = nullptr, *d_btok = nullptr, *d_bstart = nullptr, *d_bpos = nullptr;
    int nbuckets = 0;                          // distinct tokens of the last batch (embedding backward)
    // The host side of a batch's uploads, in pinned memory (the copies are truly asynchronous):
    // the token ids, the targets and the embedding backward's token buckets. Two sets alternate
    // between forwards, so that with gradient accumulation the next micro-batch is written
    // while the GPU may still be copying the previous one; a set is refilled only after its
    // `uploaded` event (recorded behind its last copy) has passed.
    struct BatchStaging {
        int *inputs = nullptr, *targets = nullptr, *btok = nullptr, *bstart = nullptr, *bpos = nullptr;
        cudaEvent_t uploaded = nullptr;
    };
    BatchStaging staging[2];
    int cur_staging = 0;
    long long* d_chunk_off = nullptr;
    int* d_chunk_len = nullptr;
    unsigned char* d_chunk_decay = nullptr;   // per chunk: its tensor takes weight decay (AdamW)
    float* d_partial = nullptr;
    StepStats* d_stats = nullptr;              // the step's loss, norm, clip, finite flag (gradnorm.cuh)
    StepStats* h_stats = nullptr;              // pinned host copies of d_stats and d_partial, filled at the
    float* h_partial = nullptr;                //   end of a step by asynchronous copies (end_step)
    GradNormChunks chunks;
    MemoryPlan plan;

    bool logits_are_grad = false;             // the last forward fused the classifier backward
    int step = 0;                             // optimizer steps taken (AdamW bias correction)

    bool pure() const { return precision == PREC_PURE_BF16; }
    size_t state_elem_bytes() const { return pure() ? sizeof(T) : sizeof(float); }

    void init(const ModelConfig& c, int prec) {
        cfg = c;
        finalize_config(cfg);
        table = build_param_table(cfg);
        ModelConfig dc = cfg;
        dc.ffn = ffn_dev = padded_ffn(cfg.ffn);
        dtable = build_param_table(dc);
        precision = prec;
        norm_type = cfg.gpt() ? NormType::LayerNorm : NormType::RMSNorm;
        set_attention(true);
        std::vector<std::pair<size_t, size_t>> spans;
        for (const ParamTensor& p : dtable.t) spans.push_back({p.offset, p.numel()});
        chunks = gradnorm_chunks(spans);
    }

    bool sharded() const { return zero && data_parallel(); }
    int my_shard() const { return sharded() ? comm->rank : 0; }
    // The shards of the optimizer state (see zero above): rank r's starts at the first chunk
    // at or past r/n of the arena. state_base is rounded down to a multiple of 4, so that
    // AdamW's groups of 4 stay aligned in the state arrays too (the few elements before the
    // shard's start that this adds are never read or written).
    void plan_shards() {
        const size_t P = dtable.total;
        const int n = sharded() ? comm->nranks : 1, nch = (int)chunks.off.size();
        shard_chunk.assign(n + 1, nch);
        shard_off.assign(n + 1, P);
        shard_chunk[0] = 0;
        shard_off[0] = 0;
        for (int r = 1; r < n; r++) {
            int k = shard_chunk[r - 1];
            while (k < nch && (size_t)chunks.off[k] < P / n * r) k++;
            shard_chunk[r] = k;
            shard_off[r] = k < nch ? (size_t)chunks.off[k] : P;
        }
        state_base = shard_off[my_shard()] / 4 * 4;
        state_len = shard_off[my_shard() + 1] - state_base;
    }

    // Lay the three arenas out for batches up to B_ x T_ (base pointers null: count only).
    void layout(int B_, int T_) {
        B = B_; T_cap = T_;
        size_t P = dtable.total;   // the device layout (padded hidden width)
        plan_shards();
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
            x.att = flash ? nullptr : a.take<T>(att);
            x.lse = flash ? a.take<float>((size_t)B * cfg.n_head * T_) : nullptr;
            x.sum2 = a.take<T>(N * C); x.n2out = a.take<T>(N * C); x.mean2 = a.take<float>(N); x.rstd2 = a.take<float>(N);
            x.fc = a.take<T>(N * fcw); x.act = a.take<T>(N * F);
            resid[l + 1] = cfg.post_ln(l) ? x.n2out : x.sum2;
        }
        nf_out = a.take<T>(N * C); nf_mean = a.take<float>(N); nf_rstd = a.take<float>(N);
        losses = a.take<float>(N);
        logits = a.take<T>(N * Vp);
        branch = a.take<T>(N * C);
        attn_scratch = flash ? nullptr : a.take<T>(attention_scratch_elems(B, T_, (int)C, cfg.n_head));   // the forward's too
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
        dact = fused_dgelu() ? nullptr : a.take<T>(N * F);   // fused: the proj GEMM writes dfc directly
        fa_dsum = flash ? a.take<float>(flash_attention_scratch_floats(B, T_, cfg.n_head)) : nullptr;
        fa_dq_part_floats = flash && flash_dq == FlashDq::Partials ? flash_attention_dq_partial_floats(B, T_, (int)C, cfg.n_head) : 0;
        fa_dq_part = fa_dq_part_floats ? a.take<float>(fa_dq_part_floats) : nullptr;
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
    void allocate(int B_, int T_, bool verbose) {
        if (T_ > cfg.max_seq_len) fatal("sequence length %d does not fit the model's max_seq_len %d", T_, cfg.max_seq_len);
        layout(B_, T_);
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
            if (flash && flash_dq == FlashDq::Partials && !forward_only) {
                const size_t all = (size_t)B_ * cfg.n_head;
                const size_t fit = fa_dq_part_floats / flash_attention_dq_head_floats(T_, cfg.d_model, cfg.n_head);
                const std::string how = fit >= all ? "all heads at once" : "heads in groups of " + std::to_string(fit) + " of " + std::to_string(all);
                printf("memory plan: of the activations, %.1f MiB are flash attention's dQ partials (--flash_dq partials; %s)\n",
                       fa_dq_part_floats * 4.0 / MiB, how.c_str());
            }
        }
        if (plan.total() + (64u << 20) > free_b)   // + the GEMM workspace and a margin
            fatal("not enough GPU memory: the plan needs %.1f MiB (parameters %.1f, gradients %.1f, activations %.1f) and 64 MiB "
                  "for the GEMM workspace and a margin, but %.1f MiB are free; lower --batch_size (and raise --total_batch accumulation) or --seq_len",
                  plan.total() / MiB, plan.params / MiB, plan.grads / MiB, plan.acts / MiB, free_b / MiB);
        cudaCheck(cudaMalloc((void**)&param_arena.base, plan.params));
        if (plan.grads) cudaCheck(cudaMalloc((void**)&grad_arena.base, plan.grads));   // none when forward only
        cudaCheck(cudaMalloc((void**)&act_arena.base, plan.acts));
        layout(B_, T_);   // again, with the bases: real pointers
        cudaCheck(cudaMemset(act_arena.base, 0, plan.acts));
        if (plan.grads) cudaCheck(cudaMemset(grad_arena.base, 0, plan.grads));
        cudaCheck(cudaMemset(param_arena.base, 0, plan.params));
        if (!cfg.gpt()) {
            int half = cfg.head_dim() / 2;
            std::vector<float> cs((size_t)cfg.max_seq_len * half), sn(cs.size());
            for (int t = 0; t < cfg.max_seq_len; t++)
                for (int i = 0; i < half; i++) {
                    double ang = t * pow((double)cfg.rope_theta, -2.0 * i / cfg.head_dim());
                    cs[(size_t)t * half + i] = (float)cos(ang);
                    sn[(size_t)t * half + i] = (float)sin(ang);
                }
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
        comm = c;
        zero = zero_;
        if (!data_parallel() || comm_stream) return;
        bucket_bounds.assign(1, 0);
        for (int l = 0; l <= cfg.n_layer; l++)   // the first tensor of layer l (l = n_layer: the final norm)
            for (const ParamTensor& t : dtable.t)
                if (t.layer == l) {
                    bucket_bounds.push_back(t.offset);
                    break;
                }
        bucket_bounds.push_back(dtable.total);
        if ((int)bucket_bounds.size() != cfg.n_layer + 3) fatal("internal: a layer without tensors in the parameter table");
        cudaCheck(cudaStreamCreateWithFlags(&comm_stream, cudaStreamNonBlocking));
        cudaCheck(cudaEventCreateWithFlags(&bucket_ready, cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&comm_done, cudaEventDisableTiming));
    }
    bool data_parallel() const { return comm && comm->nranks > 1; }

    void free_all() {
        if (comm_stream) {
            cudaStreamDestroy(comm_stream); cudaEventDestroy(bucket_ready); cudaEventDestroy(comm_done);
            comm_stream = nullptr;
        }
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
    // An optimizer-state array, whole, on rank 0: each rank's shard of it is sent there (a
    // collective when sharded; the other ranks get an empty vector and hold no more than
    // their shard on the host meanwhile).
    template <typename X>
    std::vector<float> gather_state(const X* src) const {
        const size_t lo = shard_off[my_shard()], hi = shard_off[my_shard() + 1];
        std::vector<X> mine(hi - lo);
        cudaCheck(cudaMemcpy(mine.data(), src + (lo - state_base), (hi - lo) * sizeof(X), cudaMemcpyDeviceToHost));
        if (!sharded()) return to_logical(mine);   // one shard: the whole arena
        std::vector<X> all(comm->rank == 0 ? dtable.total : 0);
        comm_gather_ranges(all.data(), mine.data(), sizeof(X), shard_off, *comm);
        return comm->rank == 0 ? to_logical(all) : std::vector<float>();
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
        if (master) p = gather_state(master);
        else if (!data_parallel() || comm->rank == 0) p = download_flat(params);   // the same on every rank
        for (int k = 0; k < 2; k++) {
            std::vector<float>* dst = k ? vv : mm;
            const void* src = k ? v : m;
            if (dst) *dst = pure() ? gather_state((const T*)src) : gather_state((const float*)src);
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

    // ------------------------------------------------------------------ attention
    // Flash attention (tiles, no T x T matrices) where it applies: bf16 storage and head
    // size <= 64; else, or with want_flash = false (--attention matmul), the materialised
    // version. init() picks flash where it applies; call before allocate().
    void set_attention(bool want_flash) {
        flash = want_flash && std::is_same<T, __nv_bfloat16>::value && flash_attention_supported(cfg.d_model, cfg.n_head);
    }
    const char* attention_name() const {
        if (!flash) return "matmul (T x T scores via cuBLAS)";
        return flash_dq == FlashDq::Partials ? "flash (tiled, bf16 tensor cores; dQ from the dK/dV kernel's partials)"
                                             : "flash (tiled, bf16 tensor cores; dQ recomputed in its own kernel)";
    }
    // atty = attention(qkv); the flash path keeps lse, the other P (att)
    void attn_forward(LayerActs<T>& a, int B_, int T_) {
        const int C = cfg.d_model, NH = cfg.n_head;
        if constexpr (std::is_same<T, __nv_bfloat16>::value)
            if (flash) return flash_attention_forward(a.atty, a.lse, a.qkv, B_, T_, C, NH, stream);
        attention_forward(a.atty, a.att, a.qkv, attn_scratch, B_, T_, C, NH, stream);
    }
    // dqkv = d(attention)/d(qkv) given datty
    void attn_backward(const LayerActs<T>& a, int B_, int T_) {
        const int C = cfg.d_model, NH = cfg.n_head;
        if constexpr (std::is_same<T, __nv_bfloat16>::value)
            if (flash)
                return flash_attention_backward(dqkv, datty, a.qkv, a.atty, a.lse, fa_dsum, flash_dq, fa_dq_part, fa_dq_part_floats, B_, T_,
                                                C, NH, stream);
        attention_backward(dqkv, datty, a.qkv, a.att, attn_scratch, B_, T_, C, NH, stream);
    }

    // ------------------------------------------------------------------ GELU / bias-gradient fusion
    // For GPT-2 (llama has neither GELU nor biases), kernels/matmul.cuh:
    // --gelu_fusion
    //   0  gelu_forward / gelu_backward kernels
    //   1  (default) GELU in the fc GEMM's epilogue (GELU_AUX_BIAS, which also keeps the
    //      pre-activation for the backward); the GELU gradient stays a kernel
    //   2  as 1, and the GELU gradient with the fc bias gradient in the proj dinp GEMM
    //      (DGELU_BGRAD). Not the default: on the H200 cuBLASLt runs that epilogue as a
    //      separate kernel, 3.9 ms per gpt2-124m T=1024 step against gelu_backward's 0.9.
    // --bias_grad
    //   epilogue  (default) every bias gradient from its dW GEMM (BGRADB; on the H200 a
    //             separate cuBLASLt kernel, 1.14 ms per gpt2-124m T=1024 step)
    //   kernel    the column-sum kernels (common.cuh, 16-byte loads, one read of dout); the fc
    //             bias gradient inside the GELU-gradient kernel (gelu_backward_bias), which
    //             sums the dfc it writes: no extra read of the widest gradient at all
    //             (with --gelu_fusion 2 DGELU_BGRAD forms it)
    // Call before allocate() (level 2 needs no dact buffer).
    void set_gelu_fusion(int level) { gelu_fusion = level; }
    void set_bias_grad(BiasGrad bg) { bias_grad = bg; }
    // all four choices of KernelChoices at once (after init(), before allocate())
    void set_kernels(const KernelChoices& k) {
        set_attention(k.flash);
        flash_dq = k.flash_dq;
        set_gelu_fusion(k.gelu_fusion);
        set_bias_grad(k.bias_grad);
    }
    bool fused_gelu() const { return gelu_fusion >= 1 && cfg.gpt(); }    // GELU forward in the GEMM
    bool fused_dgelu() const { return gelu_fusion >= 2 && cfg.gpt(); }   // the GELU gradient too
    const char* gelu_fusion_name() const {
        if (!cfg.gpt()) return "n/a (llama: SwiGLU, no biases)";
        return gelu_fusion >= 2 ? "2 (GELU and its gradient in cuBLASLt GEMM epilogues)"
               : gelu_fusion    ? "1 (GELU in a cuBLASLt GEMM epilogue, GELU gradient kernel)"
                                : "0 (GELU and GELU-gradient kernels)";
    }
    const char* bias_grad_name() const {
        if (!cfg.gpt()) return "n/a (llama: no biases)";
        return bias_grad == BiasGrad::Epilogue ? "epilogue (cuBLASLt BGRADB in the dW GEMMs)"
               : fused_dgelu() ? "kernel (column sums; fc's from DGELU_BGRAD)"
                               : "kernel (column sums; fc's inside the GELU-gradient kernel)";
    }

    // ------------------------------------------------------------------ forward
    // Forward over B_ x T_ tokens. With targets, the mean loss goes to the device's StepStats
    // (batch_loss, and added onto the step's loss_sum); with sync it is downloaded and
    // returned (a training step leaves it on the device: end_step reads it). Returns -1
    // without targets or without sync. grad_scale > 0 fuses the classifier's backward: the
    // logits are then overwritten by d(loss * grad_scale)/dlogits for backward().
    float forward(const int* in, const int* tgt, int B_, int T_, float grad_scale = 0.f, int skip_layer = -1, bool sync = true) {
        if (!fits(B_, T_)) fatal("internal: batch %d x %d does not fit the activations planned for %d x %d", B_, T_, B, T_cap);
        const ModelConfig& c = cfg;
        int N = B_ * T_, C = c.d_model, F = ffn_dev, NH = c.n_head, V = c.vocab, Vp = c.padded_vocab;   // F: padded hidden width
        int fcw = c.gpt() ? F : 2 * F;
        float eps = c.norm_eps;
        cudaStream_t st = stream;
        BatchStaging& hb = staging[cur_staging ^= 1];   // the set not used by the previous forward
        cudaCheck(cudaEventSynchronize(hb.uploaded));    // its copies (two forwards ago) have run
        for (int i = 0; i < N; i++) {
            if (in[i] < 0 || in[i] >= V) fatal("input token id %d is outside the vocab [0, %d)", in[i], V);
            hb.inputs[i] = in[i];
            if (tgt) {
                if (tgt[i] < 0 || tgt[i] >= V) fatal("target token id %d is outside the vocab [0, %d)", tgt[i], V);
                hb.targets[i] = tgt[i];
            }
        }
        cudaCheck(cudaMemcpyAsync(d_inputs, hb.inputs, N * sizeof(int), cudaMemcpyHostToDevice, st));
        if (tgt) cudaCheck(cudaMemcpyAsync(d_targets, hb.targets, N * sizeof(int), cudaMemcpyHostToDevice, st));
        embedding_forward(encoded, d_inputs, W.wte, W.wpe, B_, T_, C, st);
        for (int l = 0; l < c.n_layer; l++) {
            const LayerTensors<T>& w = W.layer[l];
            LayerActs<T>& a = acts[l];
            const T* x = resid[l];
            if (l == skip_layer) {   // the block becomes the identity (layer-removal analysis)
                cudaCheck(cudaMemcpyAsync(resid[l + 1], x, sizeof(T) * N * C, cudaMemcpyDeviceToDevice, st));
                continue;
            }
            bool post = c.post_ln(l);
            // attention branch: input is N1(x) (Pre-LN) or x (Post-LN)
            if (!post) norm_forward(a.n1out, a.mean1, a.rstd1, x, w.norm1_w, w.norm1_b, N, C, eps, norm_type, st);
            const T* a_in = post ? x : a.n1out;
            linear_forward(a.qkv, a_in, w.qkv_w, w.qkv_b, N, C, 3 * C, st);
            if (!c.gpt()) rope_forward(a.qkv, rope_cos, rope_sin, B_, T_, C, NH, st);
            attn_forward(a, B_, T_);
            linear_forward(branch, a.atty, w.attn_proj_w, w.attn_proj_b, N, C, C, st);
            if (post)   // sum1 = x + branch; h = n1out = N1(sum1)
                postln_residual_norm_forward(a.n1out, a.sum1, a.mean1, a.rstd1, x, branch, w.norm1_w, w.norm1_b, N, C, eps, norm_type, st);
            else        // h = sum1 = x + branch; n2out = N2(h), the MLP input
                preln_residual_norm_forward(a.sum1, a.n2out, a.mean2, a.rstd2, x, branch, w.norm2_w, w.norm2_b, N, C, eps, norm_type, st);
            const T* h = post ? a.n1out : a.sum1;
            const T* m_in = post ? h : a.n2out;
            if (fused_gelu()) {   // act = GELU(fc), fc = m_in @ Wfc^T + bfc kept for the backward, one GEMM
                linear_gelu_forward(a.act, a.fc, m_in, w.fc_w, w.fc_b, N, C, F, st);
            } else {
                linear_forward(a.fc, m_in, w.fc_w, w.fc_b, N, C, fcw, st);
                if (c.gpt()) gelu_forward(a.act, a.fc, (size_t)N * F, st);
                else swiglu_forward(a.act, a.fc, N, F, st);
            }
            if (post) {   // sum2 = h + branch; y = n2out = N2(sum2)
                linear_forward(branch, a.act, w.mlp_proj_w, w.mlp_proj_b, N, F, C, st);
                postln_residual_norm_forward(a.n2out, a.sum2, a.mean2, a.rstd2, h, branch, w.norm2_w, w.norm2_b, N, C, eps, norm_type, st);
            } else {      // y = sum2 = h + act @ Wd^T + bd (one GEMM: cuBLASLt reads h as C, writes sum2)
                linear_forward_residual(a.sum2, h, a.act, w.mlp_proj_w, w.mlp_proj_b, N, F, C, st);
            }
        }
        norm_forward(nf_out, nf_mean, nf_rstd, resid[c.n_layer], W.norm_f_w, W.norm_f_b, N, C, eps, norm_type, st);
        linear_forward(logits, nf_out, W.lm_head, (const T*)nullptr, N, C, Vp, st);
        logits_are_grad = false;
        if (!tgt) {
            cudaCheck(cudaEventRecord(hb.uploaded, st));
            return -1.f;
        }
        classifier(logits, losses, d_targets, N, V, Vp, grad_scale / N, grad_scale > 0.f, st);
        loss_mean(d_stats, losses, N, st);
        logits_are_grad = grad_scale > 0.f;
        // The embedding backward's token buckets (a host sort of the N tokens, ~1 ms at
        // N = 16k) are made here, while the GPU runs the forward just queued, and uploaded
        // behind it (the backward reads them last). A forward-only model has no backward.
        if (!forward_only) {
            const EmbeddingBuckets bk = embedding_buckets(hb.inputs, N);
            nbuckets = (int)bk.tok.size();
            std::copy(bk.tok.begin(), bk.tok.end(), hb.btok);
            std::copy(bk.start.begin(), bk.start.end(), hb.bstart);
            std::copy(bk.pos.begin(), bk.pos.end(), hb.bpos);
            cudaCheck(cudaMemcpyAsync(d_btok, hb.btok, bk.tok.size() * sizeof(int), cudaMemcpyHostToDevice, st));
            cudaCheck(cudaMemcpyAsync(d_bstart, hb.bstart, bk.start.size() * sizeof(int), cudaMemcpyHostToDevice, st));
            cudaCheck(cudaMemcpyAsync(d_bpos, hb.bpos, bk.pos.size() * sizeof(int), cudaMemcpyHostToDevice, st));
        }
        cudaCheck(cudaEventRecord(hb.uploaded, st));
        if (!sync) return -1.f;
        cudaCheck(cudaMemcpyAsync(h_stats, d_stats, sizeof(StepStats), cudaMemcpyDeviceToHost, st));
        cudaCheck(cudaStreamSynchronize(st));
        return h_stats->batch_loss;
    }

    // ------------------------------------------------------------------ backward
    // Accumulates d(loss * grad_scale)/d(params) into grads (call zero_grad first;
    // grad_scale = 1/accumulation steps, the same value a fused forward was given).
    // last_micro (data parallel): this is the step's last micro-batch, so each gradient
    // bucket is final once its part of the backward has run and is averaged over the ranks
    // then: the head (norm_f, lm_head: the end of the table) after the classifier and the
    // final norm, layer l after its backward, the embeddings (the start of the table; gpt's
    // tied lm_head is wte) at the end. A bucket is a contiguous range of the gradient arena.
    void backward(int B_, int T_, float grad_scale = 1.f, bool last_micro = true) {
        if (forward_only) fatal("internal: backward of a forward-only model");
        reduce_in_backward = last_micro && data_parallel();
        const ModelConfig& c = cfg;
        int N = B_ * T_, C = c.d_model, F = ffn_dev, NH = c.n_head, V = c.vocab, Vp = c.padded_vocab;   // F: padded hidden width
        int fcw = c.gpt() ? F : 2 * F;
        cudaStream_t st = stream;
        NormType nt = norm_type;
        float* fs = fscratch;
        if (!logits_are_grad) classifier(logits, losses, d_targets, N, V, Vp, grad_scale / N, true, st);
        logits_are_grad = false;   // logits now hold dlogits
        const BiasGrad bg = bias_grad;
        linear_backward(d1, G.lm_head, (T*)nullptr, fs, logits, nf_out, W.lm_head, N, C, Vp, false, bg, st);
        norm_backward(dx, G.norm_f_w, G.norm_f_b, fs, d1, resid[c.n_layer], W.norm_f_w, nf_mean, nf_rstd, (const T*)nullptr, N, C, nt, st);
        reduce_bucket(c.n_layer + 1);

        for (int l = c.n_layer - 1; l >= 0; l--) {
            const LayerTensors<T>& w = W.layer[l];
            const LayerTensors<T>& g = G.layer[l];
            LayerActs<T>& a = acts[l];
            const T* x = resid[l];
            bool post = c.post_ln(l);
            // --- MLP sublayer. dx holds the gradient w.r.t. the layer output y.
            const T* dsum2;
            if (post) {   // y = N2(sum2): d1 = dsum2 = N2'(dy), which is also dh's skip part
                postln_residual_norm_backward(d1, g.norm2_w, g.norm2_b, fs, dx, a.sum2, w.norm2_w, a.mean2, a.rstd2, N, C, nt, st);
                dsum2 = d1;
            } else {      // y = sum2: the residual gradient flows through unchanged
                dsum2 = dx;
            }
            T* fc_b_grad = g.fc_b;   // the fc bias gradient, unless the GELU backward forms it
            if (fused_dgelu()) {   // dfc = (dsum2 @ Wproj) * GELU'(fc), fc.b's gradient with it; the proj gradients
                linear_dgelu_backward(dfc, g.fc_b, g.mlp_proj_w, g.mlp_proj_b, fs, dsum2, a.act, a.fc, w.mlp_proj_w, N, F, C, st);
                fc_b_grad = nullptr;
            } else {
                linear_backward(dact, g.mlp_proj_w, g.mlp_proj_b, fs, dsum2, a.act, w.mlp_proj_w, N, F, C, false, bg, st);
                if (c.gpt() && bg == BiasGrad::Kernel) {   // dfc = GELU'(fc) * dact, and fc.b += colsum(dfc) in the same pass
                    gelu_backward_bias(dfc, g.fc_b, fs, a.fc, dact, N, F, st);
                    fc_b_grad = nullptr;
                } else if (c.gpt()) {
                    gelu_backward(dfc, a.fc, dact, (size_t)N * F, st);
                } else {
                    swiglu_backward(dfc, a.fc, dact, N, F, st);
                }
            }
            if (post) {   // MLP input = h: d1 (= dh) += dfc @ Wfc; then dsum1 = N1'(dh) into dx
                linear_backward(d1, g.fc_w, fc_b_grad, fs, dfc, a.n1out, w.fc_w, N, C, fcw, true, bg, st);
                postln_residual_norm_backward(dx, g.norm1_w, g.norm1_b, fs, d1, a.sum1, w.norm1_w, a.mean1, a.rstd1, N, C, nt, st);
            } else {      // MLP input = N2(h): dx (= dh = dsum1) += N2'(dfc @ Wfc)
                linear_backward(d1, g.fc_w, fc_b_grad, fs, dfc, a.n2out, w.fc_w, N, C, fcw, false, bg, st);
                preln_residual_norm_backward(dx, g.norm2_w, g.norm2_b, fs, d1, dx, a.sum1, w.norm2_w, a.mean2, a.rstd2, N, C, nt, st);
            }
            // --- attention sublayer: dx = dsum1, the gradient w.r.t. sum1 = x + Attn(a_in)
            linear_backward(datty, g.attn_proj_w, g.attn_proj_b, fs, dx, a.atty, w.attn_proj_w, N, C, C, false, bg, st);
            attn_backward(a, B_, T_);
            if (!c.gpt()) rope_backward(dqkv, rope_cos, rope_sin, B_, T_, C, NH, st);
            if (post) {   // a_in = x: dx (the skip) += dqkv @ Wqkv
                linear_backward(dx, g.qkv_w, g.qkv_b, fs, dqkv, x, w.qkv_w, N, C, 3 * C, true, bg, st);
            } else {      // a_in = N1(x): dx += N1'(dqkv @ Wqkv)
                linear_backward(d1, g.qkv_w, g.qkv_b, fs, dqkv, a.n1out, w.qkv_w, N, C, 3 * C, false, bg, st);
                preln_residual_norm_backward(dx, g.norm1_w, g.norm1_b, fs, d1, dx, x, w.norm1_w, a.mean1, a.rstd1, N, C, nt, st);
            }
            reduce_bucket(l + 1);
        }
        embedding_backward(G.wte, G.wpe, dx, d_btok, d_bstart, d_bpos, nbuckets, B_, T_, C, st);
        reduce_bucket(0);
    }
    // average bucket k over the ranks on comm_stream once the default stream has written it
    // (an event orders the two streams)
    void reduce_bucket(int k) {
        if (!reduce_in_backward) return;
        const size_t begin = bucket_bounds[k], end = bucket_bounds[k + 1];
        if (end <= begin) return;
        cudaCheck(cudaEventRecord(bucket_ready, stream));
        cudaCheck(cudaStreamWaitEvent(comm_stream, bucket_ready, 0));
        if (sharded()) reduce_mean_to_owners(grads, begin, end, shard_off, *comm, comm_stream);   // ZeRO-1: each part to its owner
        else allreduce_mean(grads + begin, end - begin, *comm, comm_stream);
        comm_pending = grads_reduced = true;
    }
    // the default stream waits for every queued reduction (before anything reads the gradients)
    void wait_reductions() {
        if (!comm_pending) return;
        cudaCheck(cudaEventRecord(comm_done, comm_stream));
        cudaCheck(cudaStreamWaitEvent(stream, comm_done, 0));
        comm_pending = false;
    }

    void zero_grad() {
        if (forward_only) fatal("internal: zero_grad of a forward-only model");
        cudaCheck(cudaMemsetAsync(grads, 0, dtable.total * sizeof(T), stream));
    }

    // ------------------------------------------------------------------ gradient norms
    // Squared L2 norm of every tensor's gradient, in table order: per-chunk sums on the
    // device, the chunks of a tensor added in order in double on the host (deterministic).
    // The chunks cover the device layout (dtable); its tensors are table's, in the same
    // order, so sq[i] is logical tensor i (its padded elements hold exact zeros).
    std::vector<double> grad_sq_per_tensor() {
        int nch = (int)chunks.off.size();
        sumsq_chunks(d_partial, grads, d_chunk_off, d_chunk_len, nch, stream);
        cudaCheck(cudaMemcpyAsync(h_partial, d_partial, nch * sizeof(float), cudaMemcpyDeviceToHost, stream));
        cudaCheck(cudaStreamSynchronize(stream));
        return tensor_sq(h_partial);
    }
    std::vector<double> tensor_sq(const float* part) const {   // the chunk partials added per tensor
        std::vector<double> sq(table.t.size(), 0.0);
        for (size_t k = 0; k < chunks.off.size(); k++) sq[chunks.owner[k]] += part[k];
        return sq;
    }
    std::vector<float> layer_norms(const std::vector<double>& sq) const { return ::layer_norms(table, cfg.n_layer, sq); }   // common/run.h
    float group_norm(const std::vector<double>& sq, const char* prefix) const { return ::group_norm(table, sq, prefix); }
    // test hook (--inject_nan_at): one gradient element becomes NaN, the first element of
    // the middle tensor (element (0, 0) of a tensor is never a padded one)
    void poison_grad() {
        wait_reductions();
        cudaCheck(cudaStreamSynchronize(stream));
        T nan = host_cast<T>(NAN);
        cudaCheck(cudaMemcpy(grads + dtable.t[dtable.t.size() / 2].offset, &nan, sizeof(T), cudaMemcpyHostToDevice));
    }

    // ------------------------------------------------------------------ AdamW
    // As train_gpt.cpp (torch.optim.AdamW; decay on 2-D tensors), one launch over the whole
    // device layout, chunk by chunk (the gradient norm's chunk table + a decay flag per chunk;
    // padded elements: g = m = v = w = 0 stay 0). Sharded (ZeRO-1): this rank's chunks only.
    // stats non-null: the gradient scale and whether to update come from the device (end_step).
    void adamw_update(float lr, float beta1, float beta2, float eps, float wd, float grad_scale, const StepStats* stats = nullptr) {
        step++;
        double bc1 = 1.0 - pow((double)beta1, step), bc2_sqrt = sqrt(1.0 - pow((double)beta2, step));
        const AdamWArgs a{(float)(lr / bc1), (float)(1.0 / bc2_sqrt), beta1, beta2, eps, 1.f - lr * wd, grad_scale};
        const int c0 = shard_chunk[my_shard()], nch = shard_chunk[my_shard() + 1] - c0;
        const long long* off = d_chunk_off + c0;
        const int* len = d_chunk_len + c0;
        const unsigned char* dec = d_chunk_decay + c0;
        if (pure())
            ::adamw_update<T, T>(params, nullptr, (T*)m, (T*)v, grads, off, len, dec, nch, a, stream, stats, true, state_base);
        else
            ::adamw_update<T, float>(params, master, (float*)m, (float*)v, grads, off, len, dec, nch, a, stream, stats, true, state_base);
    }

    // ------------------------------------------------------------------ a training step
    // begin_step(); then for each micro-batch forward(in, tgt, B, T, 1 / accum, -1, false) and
    // backward(B, T, 1 / accum); then end_step(). From begin_step to the end of end_step the
    // host never waits for the GPU: the loss, the gradient norm, the clipping factor and the
    // decision to skip a non-finite step are formed on the device (StepStats, gradnorm.cuh),
    // AdamW reads them there, and one synchronisation at the end brings back the numbers
    // (and, for the per-layer norms, the chunk partials) in pinned memory. (Before, the
    // loss download after every forward and the norm download before the update each left
    // the GPU idle while the host caught up.) Data parallel (set_comm, more than one rank):
    // the gradients were averaged over the ranks during the last backward (reduce_bucket)
    // and the loss is averaged here (kernels/nccl_wrap.cuh), so the norm, the clipping, the
    // skip decision and the update are the same on every rank. Sharded (ZeRO-1): a rank holds
    // the averaged gradients of its shard only, so it forms the norm partials of its chunks,
    // the ranks sum the partial arrays (each chunk is non-zero on its owner alone: the sums
    // are exact and the norm is the unsharded one, bit for bit), each updates its shard, and
    // the updated weights are gathered on every rank before the next forward.
    struct StepResult {
        double loss;             // the mean loss over the step's micro-batches
        float norm;              // the global gradient norm before clipping
        bool finite;             // false: AdamW skipped the update (the step counter is not advanced)
        std::vector<double> sq;  // per tensor (table order) sum of g^2, when asked for
    };
    void begin_step() {
        grads_reduced = false;
        zero_grad();
        cudaCheck(cudaMemsetAsync(d_stats, 0, sizeof(StepStats), stream));
    }
    StepResult end_step(int accum, float lr, float beta1, float beta2, float eps, float wd, float max_norm, bool want_tensor_sq) {
        const int nch = (int)chunks.off.size();
        if (data_parallel()) {   // the gradients were averaged bucket by bucket in the last backward
            if (!grads_reduced) fatal("internal: a data-parallel step whose last backward did not reduce the gradients");
            wait_reductions();
            allreduce_mean(&d_stats->loss_sum, 1, *comm, stream);
        }
        if (sharded()) {
            const int c0 = shard_chunk[comm->rank], c1 = shard_chunk[comm->rank + 1];
            cudaCheck(cudaMemsetAsync(d_partial, 0, nch * sizeof(float), stream));
            sumsq_chunks(d_partial + c0, grads, d_chunk_off + c0, d_chunk_len + c0, c1 - c0, stream);
            allreduce_sum(d_partial, nch, *comm, stream);
        } else {
            sumsq_chunks(d_partial, grads, d_chunk_off, d_chunk_len, nch, stream);
        }
        grad_norm_finalize(d_stats, d_partial, nch, max_norm, stream);
        adamw_update(lr, beta1, beta2, eps, wd, 1.f, d_stats);
        if (sharded()) allgather_ranges(params, shard_off, *comm, stream);   // every shard's new weights to every rank
        cudaCheck(cudaMemcpyAsync(h_stats, d_stats, sizeof(StepStats), cudaMemcpyDeviceToHost, stream));
        if (want_tensor_sq) cudaCheck(cudaMemcpyAsync(h_partial, d_partial, nch * sizeof(float), cudaMemcpyDeviceToHost, stream));
        cudaCheck(cudaStreamSynchronize(stream));
        StepResult r{h_stats->loss_sum / accum, h_stats->norm, h_stats->finite != 0, {}};
        if (!r.finite) step--;   // AdamW wrote nothing: its bias correction did not advance either
        if (want_tensor_sq) r.sq = tensor_sq(h_partial);
        return r;
    }

    // Model FLOPs per token of a training step, as train_gpt.cpp: 6 per multiplied weight
    // (not wpe, not the llama input embedding lookup) plus 6 * L * C * T for attention's two
    // T x T products (the 6N + 6LCT of llm.c's MFU). N counts the logical parameters, not
    // the device's zero padding.
    double flops_per_token(int T_) const {
        double P = (double)table.total;
        if (cfg.gpt()) P -= (double)cfg.max_seq_len * cfg.d_model;
        else P -= (double)cfg.padded_vocab * cfg.d_model;
        return 6.0 * P + 6.0 * cfg.n_layer * cfg.d_model * (double)T_;
    }
};

// Mean loss over `steps` batches of a loader (validation), optionally with block skip_layer
// removed (--mode layer_drop). Data parallel: the loader's rank r of `world` reads batches r,
// r + world, ... of the same sequence of batches, and the sum over the ranks covers each of
// the `steps` batches once.
template <typename T>
[[maybe_unused]] static double evaluate(Model<T>& model, DataLoader& loader, int steps, const Comm& comm, int skip_layer = -1) {
    loader.reset();
    double s = 0.0;
    for (int i = loader.rank; i < steps; i += loader.world) {
        loader.next_batch();
        s += model.forward(loader.inputs.data(), loader.targets.data(), loader.B, loader.T, 0.f, skip_layer);
    }
    return comm_sum(s, comm) / steps;
}

// ----------------------------------------------------------------------------
// Analyses of a trained model (--mode angular | layer_drop; docs/ANALYSIS.md), as
// train_gpt.cpp's, the shared parts in common/analysis.h. Data parallel, the ranks split the
// batches (as evaluate) and add their sums; rank 0 writes the file. In the bf16 modes the
// residual streams and the losses are those of the bf16 model (--precision fp32 for the
// CPU trainer's numbers).

// the residual streams entering every layer at the last token of each sequence
template <typename T>
static AngularDistances angular_distances(Model<T>& model, DataLoader& loader, int steps, const Comm& comm) {
    const int L = model.cfg.n_layer, C = model.cfg.d_model, B_ = loader.B, T_ = loader.T;
    AngularDistances ad(L);
    std::vector<T> rows((size_t)(L + 1) * B_ * C);   // [l][b][C]
    std::vector<float> x((size_t)(L + 1) * C);
    std::vector<const float*> xp(L + 1);
    loader.reset();
    for (int i = loader.rank; i < steps; i += loader.world) {
        loader.next_batch();
        model.forward(loader.inputs.data(), nullptr, B_, T_);
        for (int l = 0; l <= L; l++)   // rows b*T + T-1 of resid[l], b = 0..B-1: one strided copy
            cudaCheck(cudaMemcpy2D(&rows[(size_t)l * B_ * C], C * sizeof(T), model.resid[l] + (size_t)(T_ - 1) * C,
                                   (size_t)T_ * C * sizeof(T), C * sizeof(T), B_, cudaMemcpyDeviceToHost));
        for (int b = 0; b < B_; b++) {
            for (int l = 0; l <= L; l++) {
                for (int k = 0; k < C; k++) x[(size_t)l * C + k] = host_float(rows[((size_t)l * B_ + b) * C + k]);
                xp[l] = &x[(size_t)l * C];
            }
            ad.add(xp, C);
        }
    }
    for (auto& r : ad.sum)   // every rank's sums (one process: as they are)
        for (double& v : r) v = comm_sum(v, comm);
    ad.samples = (long)comm_sum((double)ad.samples, comm);
    return ad;
}

template <typename T>
static int run_analysis(const TrainConfig& tc, Model<T>& model, const Comm& comm) {
    const ModelConfig& c = model.cfg;
    DataLoader val;
    val.init(tc.val_data, tc.B, tc.T, c.vocab, comm.rank, comm.nranks);
    printf("analysis: %s of %s, the first %d validation batches of %d x %d%s (precision %s)\n", tc.mode.c_str(),
           placement_name(c).c_str(), tc.val_steps, tc.B, tc.T,
           comm.nranks > 1 ? (", split over " + std::to_string(comm.nranks) + " ranks").c_str() : "", precision_name(model.precision));
    std::string out;
    if (tc.mode == "angular") {
        out = angular_distances(model, val, tc.val_steps, comm).json_and_print();
    } else {
        out = layer_drop(c, [&](int skip) { return evaluate(model, val, tc.val_steps, comm, skip); });
    }
    if (comm.rank == 0) write_text_atomically(tc.analysis_out, out);
    return comm_max(0, comm);   // no rank leaves before rank 0 has written
}

// The logits of position t - 1 after the forward on seq[0..t) (common/sample.h's callback),
// as fp32 in `row`.
template <typename T>
[[maybe_unused]] static const float* sample_logits(Model<T>& model, const std::vector<int>& seq, int t, std::vector<float>& row) {
    model.forward(seq.data(), nullptr, 1, t);
    row = model.download_logits(t);
    return row.data() + (size_t)(t - 1) * model.cfg.padded_vocab;
}

#ifndef TESTING
// ============================================================================
// Checkpoints in --out_dir: common/run.h (as train_gpt.cpp).
// ============================================================================

// ============================================================================
// Training
// ============================================================================

template <typename T>
static int train_main(TrainConfig& tc, int precision, const KernelChoices& kc, int zero, const Comm& comm) {
    Model<T> model;
    CheckpointHeader resume_h;
    std::string resume_from;
    std::vector<float> h_params, h_m, h_v;
    bool have_opt = false;
    // Data parallel (comm.nranks > 1): rank 0 alone writes the log and the checkpoints and
    // prints (main mutes the others' stdout); every rank reads the same starting point.
    const bool rank0 = comm.rank == 0;
    if (rank0) resume_from = open_out_dir(tc);   // lock --out_dir; the newest checkpoint that verifies, if resuming
    if (tc.resume) comm_bcast(&resume_from, comm);
    if (!resume_from.empty()) use_resume_config(tc, resume_from);   // --init_from X --resume 1: D's checkpoint wins
    if (!tc.init_from.empty() && resume_from.empty()) {
        CheckpointHeader h;
        read_checkpoint(tc.init_from, &h, h_params);
        model.init(h.cfg, precision);
        printf("init from %s (step %d)\n", tc.init_from.c_str(), h.step);
    } else {
        if (tc.model.n_layer == 0) fatal("no model given: use --preset NAME or --n_layer/--n_head/--d_model/--vocab (see --help)");
        tc.model.post_ln_layers = parse_placement(tc.placement, tc.model.n_layer);
        finalize_config(tc.model);
        model.init(tc.model, precision);
        if (!resume_from.empty()) {
            read_checkpoint(resume_from, &resume_h, h_params, &h_m, &h_v);
            check_resume_config(resume_h, tc, precision, resume_from.c_str());
            model.step = resume_h.step;
            have_opt = true;
        }
    }
    tc.model = model.cfg;
    check_train_config(tc, comm.nranks);
    const bool analysis = tc.mode != "train";   // --mode angular | layer_drop: analyse the model, no training
    if (analysis) check_analysis_flags(tc);
    else if (tc.train_data.empty()) fatal("--train_data is required (a glob of token shards; see data/ and README)");
    const ModelConfig& c = model.cfg;
    int accum = (int)(tc.total_batch / ((long)tc.B * tc.T * comm.nranks));   // micro-steps per rank

    cudaDeviceProp prop;
    int device = 0;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    printf("device: %s (sm_%d%d, %d SMs, %.1f GiB)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
           prop.totalGlobalMem / (double)(1 << 30));
    model.set_kernels(kc);
    model.set_comm(&comm, zero == 1);
    if (analysis) model.set_forward_only();   // no gradients or optimizer state: analyses fit where training would not
    model.allocate(tc.B, tc.T, true);   // the memory plan first: a run that cannot fit stops here

    if (h_params.empty()) {   // fresh: the paper's initialisation, drawn as train_gpt.cpp draws it
        h_params.assign(model.table.total, 0.f);
        init_params(model.table, c, (uint64_t)tc.seed, h_params.data());   // common/init.h, as train_gpt.cpp
    }
    if (analysis) {
        model.upload_state(h_params, nullptr, nullptr);
        const int rc = run_analysis(tc, model, comm);
        model.free_all();
        gemm_shutdown();
        return rc;
    }

    // rank r of n reads global batches r, r + n, ... (common/dataloader.h): one optimizer step
    // covers the same tokens as a single process with n times the micro-steps
    DataLoader train, val;
    train.init(tc.train_data, tc.B, tc.T, c.vocab, comm.rank, comm.nranks, (uint64_t)tc.shuffle_seed);
    bool have_val = !tc.val_data.empty();
    if (have_val) val.init(tc.val_data, tc.B, tc.T, c.vocab, comm.rank, comm.nranks);

    model.upload_state(h_params, have_opt ? &h_m : nullptr, have_opt ? &h_v : nullptr);

    Rng sample_rng((uint64_t)tc.seed + 17);
    long start_step = 0;
    int skipped = 0;
    if (!resume_from.empty()) {
        const TrainState& t = resume_h.train;
        train.set_position(LoaderPosition{t.loader_epoch, t.loader_shard, t.loader_window});
        memcpy(sample_rng.s, t.rng, sizeof t.rng);
        start_step = resume_h.step;
        skipped = t.skipped_steps;
    }
    bool bf16 = precision != PREC_FP32;
    double peak = device_peak_flops(prop.name, bf16);
    printf("precision: %s (%s)\n", precision_name(precision),
           precision == PREC_FP32 ? "fp32 weights, activations and GEMMs" :
           precision == PREC_BF16 ? "bf16 weights/activations/gradients, fp32 master weights and AdamW state, fp32 accumulation" :
                                    "bf16 everywhere, AdamW state too (the paper's code)");
    printf("attention: %s\n", model.attention_name());
    printf("gelu fusion: %s\n", model.gelu_fusion_name());
    printf("bias gradients: %s\n", model.bias_grad_name());
    printf("model: %s, %s, L=%d H=%d C=%d ffn=%d vocab=%d (padded %d), %.2fM parameters\n", arch_name(c.arch),
           placement_name(c).c_str(), c.n_layer, c.n_head, c.d_model, c.ffn, c.vocab, c.padded_vocab, model.table.total / 1e6);
    printf("init: linear std %g, embedding std %g%s, scaled residual init %s\n", c.init_std, c.emb_std,
           fabsf(c.emb_std - 0.632456f) < 1e-4f ? " (the paper's code's sqrt(2/5))" : "", c.scaled_init ? "on" : "off");
    printf("train: B=%d T=%d, %ld tokens/step (%d micro-steps%s), %ld steps, lr %g warmup %ld floor %g, wd %g, clip %g\n",
           tc.B, tc.T, tc.total_batch, accum, comm.nranks > 1 ? " per rank" : "", tc.steps, tc.lr, tc.warmup, tc.lr_floor,
           tc.weight_decay, tc.grad_clip);
    if (comm.nranks > 1)
        printf("data parallel: %d ranks, %d on this node (this one: rank %d, device %d); gradients and loss averaged over the "
               "ranks every step; tok/s counts all ranks, MFU is per GPU\n", comm.nranks, comm.local_size, comm.rank, device);
    if (comm.nranks == 1 && zero == 1) printf("zero: 1 has no effect in a single process (nothing to shard over)\n");
    if (comm.nranks > 1)
        printf("zero: %s\n", model.sharded() ? "1 (the master weights and AdamW moments sharded over the ranks; gradients reduced to "
                                               "their shard's owner, updated weights gathered on every rank after each step)"
                                             : "0 (every rank holds and updates the whole optimizer state)");
    printf("data: %s: %lld tokens in %zu shards%s; activations %.1f MiB\n", tc.train_data.c_str(), train.total_tokens(),
           train.shards.size(), have_val ? "" : " (no validation data)", model.plan.acts / (double)(1 << 20));
    if (peak > 0) printf("mfu: against %.0f TFLOP/s (%s dense peak of %s)\n", peak / 1e12, bf16 ? "bf16" : "fp32", prop.name);
    else printf("mfu: n/a (no peak FLOP/s known for %s)\n", prop.name);
    if (!resume_from.empty())
        printf("resume: %s (step %ld, data epoch %lld shard %lld window %lld)\n", resume_from.c_str(), start_step,
               (long long)train.pos.epoch, (long long)train.pos.shard, (long long)train.pos.window);

    Logger log;
    if (rank0) log.open(tc.log_path, resume_from.empty() ? -1 : resume_h.train.log_offset);
    if (resume_from.empty())
        log.write(JsonLine().str("kind", "config").str("arch", arch_name(c.arch)).i("n_layer", c.n_layer).i("n_head", c.n_head)
                      .i("d_model", c.d_model).i("ffn", c.ffn).i("vocab", c.vocab).i("post_ln_layers", c.post_ln_layers)
                      .str("placement", placement_name(c)).f("emb_std", c.emb_std).f("init_std", c.init_std)
                      .i("scaled_init", c.scaled_init).i("B", tc.B).i("T", tc.T).i("total_batch", tc.total_batch)
                      .i("steps", tc.steps).f("lr", tc.lr).i("warmup", tc.warmup).f("lr_floor", tc.lr_floor)
                      .f("weight_decay", tc.weight_decay).f("grad_clip", tc.grad_clip).i("seed", tc.seed)
                      .i("params", (long long)model.table.total).str("precision", precision_name(precision))
                      .str("device", prop.name));

    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    double flops_tok = model.flops_per_token(tc.T);
    double total_ms = 0.0;
    long timed_steps = 0;
    auto do_val = [&](long step) {
        if (!have_val || tc.val_steps == 0) return;
        const float vl = (float)evaluate(model, val, tc.val_steps, comm);
        printf("step %5ld | val loss %.4f | val ppl %.2f\n", step, vl, expf(vl));
        log.write(JsonLine().str("kind", "val").i("step", step).f("val_loss", vl).f("val_ppl", expf(vl)));
    };
    Sampler sampler;   // common/sample.h (as train_gpt.cpp): text with --tokenizer, else token ids
    sampler.init(tc, c.vocab);
    auto do_sample = [&]() {
        if (tc.sample_tokens == 0 || !rank0) return;
        int max_len = c.max_seq_len;   // the prefix is capped at what the activation buffers hold
        while (max_len > 1 && !model.fits(1, max_len)) max_len--;
        std::vector<float> row;
        sampler.print(sampler.sample(sampler.prompt(train.inputs[0]), tc.sample_tokens, max_len, sample_rng,
                                     [&](const std::vector<int>& seq, int t) { return sample_logits(model, seq, t, row); }));
    };
    // rank 0 writes; every rank learns whether it worked (the call is a collective, so no rank
    // exits while rank 0 is still writing); with the optimizer state sharded (--zero 1) every
    // rank first sends its shard to rank 0 (Model::download_state)
    auto save_rank0 = [&](long step, const std::vector<float>& p, const std::vector<float>& mm, const std::vector<float>& vv) -> bool {
        TrainState ts;
        ts.loader_epoch = train.pos.epoch; ts.loader_shard = train.pos.shard; ts.loader_window = train.pos.window;
        memcpy(ts.rng, sample_rng.s, sizeof ts.rng);
        ts.log_offset = log.offset();
        ts.B = tc.B; ts.T = tc.T; ts.total_batch = tc.total_batch; ts.shuffle_seed = tc.shuffle_seed; ts.skipped_steps = skipped;
        ts.precision = precision; ts.run_id = tc.run_id;
        std::string path = ckpt_path(tc.out_dir, step), err;
        if (!write_checkpoint(path, c, (int)step, p.data(), mm.data(), vv.data(), &ts, &err, tc.debug_slow_ckpt_ms)) {
            fprintf(stderr, "error: checkpoint at step %ld not saved: %s\n", step, err.c_str());
            return false;
        }
        printf("wrote checkpoint %s\n", path.c_str());
        prune_checkpoints(tc.out_dir, tc.keep_ckpts, tc.milestone_every, tc.run_id);
        return true;
    };
    auto save = [&](long step) -> bool {
        if (tc.out_dir.empty()) return false;
        std::vector<float> p, mm, vv;
        model.download_state(p, &mm, &vv);
        const int failed = rank0 ? !save_rank0(step, p, mm, vv) : 0;
        return comm_max(failed, comm) == 0;
    };

    for (long step = start_step; step < tc.steps; step++) {
        StepStart at(train, sample_rng, log);   // what a stop in the middle of this step returns to
        if (tc.val_every > 0 && step % tc.val_every == 0) do_val(step);
        if (tc.sample_every > 0 && step > 0 && step % tc.sample_every == 0) do_sample();
        bool layer_norms = tc.layer_norms_every > 0 && step % tc.layer_norms_every == 0;
        cudaCheck(cudaDeviceSynchronize());
        auto t0 = std::chrono::steady_clock::now();
        // one step, queued without waiting for the GPU (Model::begin_step / end_step)
        model.begin_step();
        int micro = 0;   // several ranks stop together at the end of the step (comm_max below)
        for (; micro < accum && !(comm.nranks == 1 && stop_requested()); micro++) {
            train.next_batch();
            model.forward(train.inputs.data(), train.targets.data(), tc.B, tc.T, 1.f / accum, -1, false);   // fused classifier backward
            model.backward(tc.B, tc.T, 1.f / accum, micro == accum - 1);
        }
        if (micro < accum) return at.stop(step, micro, accum, !tc.out_dir.empty(), save);   // SIGINT/SIGTERM mid-step
        if (step == tc.inject_nan_at) model.poison_grad();
        float lr = (float)lr_at(step, tc.lr, tc.warmup, tc.steps, tc.lr_floor);
        const typename Model<T>::StepResult r =
            model.end_step(accum, lr, tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay, tc.grad_clip, layer_norms);
        const double loss = r.loss;
        const float norm = r.norm;
        const bool finite = r.finite;   // false: the device skipped the update
        if (!finite) handle_nonfinite(step, loss, norm, tc, &skipped, save);
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (step > start_step || tc.steps - start_step == 1) { total_ms += ms; timed_steps++; }
        double tok_s = tc.total_batch / (ms / 1000.0);
        double eta_s = (timed_steps ? total_ms / timed_steps : ms) * (tc.steps - step - 1) / 1000.0;
        double mfu = peak > 0 ? 100.0 * flops_tok * tok_s / (peak * comm.nranks) : -1.0;   // per GPU
        if (step % tc.print_every == 0 || step == tc.steps - 1) {
            char mfu_s[32];
            if (mfu >= 0) snprintf(mfu_s, sizeof mfu_s, "MFU %.1f%%", mfu);
            else snprintf(mfu_s, sizeof mfu_s, "MFU n/a");
            printf("step %5ld/%ld | loss %.4f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s | %s | eta %.0fs\n", step + 1, tc.steps, loss,
                   norm, lr, ms, tok_s, mfu_s, eta_s);
        }
        JsonLine j = step_json(step, loss, norm, lr, ms, tok_s, finite, skipped);
        if (mfu >= 0) j.f("mfu", mfu / 100.0);
        if (layer_norms)
            add_layer_norms(j, model.layer_norms(r.sq), model.group_norm(r.sq, "w"), model.group_norm(r.sq, "norm_f"), !c.gpt(),
                            model.group_norm(r.sq, "lm_head"));
        log.write(j);
        if (comm.nranks > 1) g_stop_signal = comm_max((int)g_stop_signal, comm);   // a signal to any rank stops all at this step
        int rc = stop_if_signalled(step + 1, !tc.out_dir.empty(), save);
        if (rc >= 0) return rc;
        if (tc.ckpt_every > 0 && (step + 1) % tc.ckpt_every == 0 && step + 1 < tc.steps) save(step + 1);
    }
    do_val(tc.steps);
    do_sample();
    if (!tc.out_dir.empty() && !save(tc.steps)) return 1;
    if (log.failed) return 1;
    if (skipped) printf("%d update(s) skipped for non-finite values\n", skipped);
    size_t free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    printf("peak memory: %.1f MiB planned (device used %.1f MiB of %.1f)\n", model.plan.total() / (double)(1 << 20),
           (total_b - free_b) / (double)(1 << 20), total_b / (double)(1 << 20));
    if (timed_steps) {
        double avg = total_ms / timed_steps, tok_s = tc.total_batch / (avg / 1000.0);
        printf("summary: %.1f ms/step, %.0f tok/s, MFU %s over %ld timed steps\n", avg, tok_s,
               peak > 0 ? (std::to_string(100.0 * flops_tok * tok_s / (peak * comm.nranks)).substr(0, 5) + "%").c_str() : "n/a",
               timed_steps);
    }
    model.free_all();
    gemm_shutdown();
    return 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);   // progress lines appear as they happen, also in a log file
    // data parallel under mpirun (kernels/nccl_wrap.cuh): rank 0 prints, the others only report errors
    Comm comm;
    comm_init(&comm, &argc, &argv);
    if (comm.rank > 0 && !freopen("/dev/null", "w", stdout)) fatal("rank %d: cannot mute stdout", comm.rank);
    TrainConfig tc;
    std::string precision_s = "bf16", attention_s = "flash", flash_dq_s = "recompute", bias_grad_s = "epilogue";
    int gelu_fusion = 1, zero = 0;
    std::vector<FlagSpec> extra = {
        {"precision", 0, 's', &precision_s,
         "bf16 (bf16 weights/activations, fp32 master weights + AdamW state; default) | pure_bf16 (all bf16, the paper's code) | fp32"},
        {"attention", 0, 's', &attention_s,
         "flash (default: tiled, no T x T scores; bf16 modes with head size <= 64, else matmul) | matmul (T x T scores through cuBLAS)"},
        {"flash_dq", 0, 's', &flash_dq_s,
         "recompute (default): flash attention's dQ in its own kernel, recomputing S and dP | partials: from the dK/dV kernel's "
         "fp32 partials and a reduction (5 products instead of 7; B*NH*T^2*hd/32 floats of scratch, 428 MB at gpt2 16 x 1024)"},
        {"gelu_fusion", 0, 'i', &gelu_fusion,
         "1 (default): gpt's GELU in a cuBLASLt GEMM epilogue | 2: the GELU gradient too (slower on H200) | 0: GELU kernels"},
        {"bias_grad", 0, 's', &bias_grad_s,
         "epilogue (default): gpt's bias gradients in the dW GEMMs (cuBLASLt BGRADB) | kernel: column-sum kernels, fc's inside the GELU gradient"},
        {"zero", 0, 'i', &zero,
         "several GPUs: 0 (default): every rank holds the whole optimizer state | 1: ZeRO-1, the fp32 master weights and AdamW "
         "moments sharded over the ranks (12 of 16 bytes per parameter divided by the rank count; same results)"},
    };
    if (!parse_train_flags(argc, argv, tc, extra)) {   // --help
        printf("\nseveral GPUs: mpirun -np N %s [flags], one process per GPU (data parallel: each trains on its\n"
               "own B x T micro-batches, --total_batch a multiple of B*T*N; rank 0 logs and checkpoints; docs/CUDA.md)%s\n",
               argv[0],
#if defined(USE_MPI)
               ""
#else
               "\n(this build has no MPI: install libopenmpi-dev and rebuild)"
#endif
        );
        comm_destroy(&comm);
        return 0;
    }
    int precision = parse_precision(precision_s);
    const KernelChoices kc = parse_kernel_choices(attention_s, flash_dq_s, gelu_fusion, bias_grad_s);
    if (zero != 0 && zero != 1) fatal("--zero must be 0 or 1, got %d", zero);
#ifdef _OPENMP
    if (tc.threads > 0) omp_set_num_threads(tc.threads);   // host threads (the initialisation's normals, common/init.h)
#endif
    if (tc.total_batch == 0) tc.total_batch = (long)tc.B * tc.T * comm.nranks;
    require_cuda_device(comm.local_rank, comm.local_size);
    comm_connect(&comm);
    const int rc = precision == PREC_FP32 ? train_main<float>(tc, precision, kc, zero, comm)
                                          : train_main<__nv_bfloat16>(tc, precision, kc, zero, comm);
    comm_destroy(&comm);
    return rc;
}
#endif
