/*
train_gpt.cu: the single-file CUDA trainer for Mix-LN.

Same models, presets, flags, checkpoint and shard formats, data loader, schedule and log
lines as train_gpt.cpp (the CPU reference trainer; read it for the math of each op). The
host code both trainers share lives in common/ (the training driver: common/trainer.h); this
file holds the model (forward, backward, the optimizer step) and main. The model's device
memory (arenas, the memory plan, pinned staging, the padded <-> logical layout) is
cuda/memory.cuh, its data-parallel machinery (gradient buckets, ZeRO-1 shards) cuda/parallel.cuh.
The kernels live in kernels/, one header per family, forward and backward side by side:

  kernels/embedding.cuh   token (+ position) embedding; deterministic backward (no atomics)
  kernels/norm.cuh        LayerNorm / RMSNorm fused with the residual add, Pre-LN and Post-LN forms
  kernels/matmul.cuh      linear layers through kernels/cublas_wrap.cuh (cuBLASLt); GPT-2's GELU in a
                          cuBLASLt epilogue (--gelu_fusion 1, default; 0: kernels) and the bias
                          gradients in the dW GEMMs' epilogues
  kernels/rope.cuh        rotary position embedding (llama)
  kernels/flash_attention.cuh  causal attention in tiles, no T x T scores (bf16, tensor cores; default);
                          dQ recomputed in its own kernel
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

#include "cuda/memory.cuh"
#include "cuda/parallel.cuh"

#include "common/analysis.h"
#include "common/checkpoint.h"
#include "common/config.h"
#include "common/dataloader.h"
#include "common/flags.h"
#include "common/init.h"
#include "common/layout.h"
#include "common/logger.h"
#include "common/rng.h"
#include "common/run.h"
#include "common/sample.h"
#include "common/schedule.h"
#include "common/trainer.h"
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

// The kernel paths a run chooses between; all of them compute the same function (tests/cuda.sh
// checks every one against the reference). Model::set_kernels applies them.
struct KernelChoices {
    bool flash = true;                        // --attention flash (where it applies) | matmul
    int gelu_fusion = 1;                      // --gelu_fusion 0 | 1
};

// The flags of both CUDA programs (train_gpt.cu and test_gpt.cu) that choose the precision and
// the kernel paths, declared once: the table fills KernelFlags (common/flags.h FlagSpec), and
// kernel_choices checks and converts it.
struct KernelFlags {
    std::string precision = "bf16", attention = "flash";
    int gelu_fusion = 1;
};
static std::vector<FlagSpec> kernel_flags(KernelFlags& k) {
    return {
        {"precision", 0, 's', &k.precision,
         "bf16 (bf16 weights/activations, fp32 master weights + AdamW state; the trainer's default) | pure_bf16 (all bf16, "
         "the paper's code) | fp32 (test_gpt's default)"},
        {"attention", 0, 's', &k.attention,
         "flash (default: tiled, no T x T scores; bf16 modes with head size <= 64, else matmul) | matmul (T x T scores through cuBLAS)"},
        {"gelu_fusion", 0, 'i', &k.gelu_fusion,
         "1 (default): gpt's GELU in a cuBLASLt GEMM epilogue | 0: GELU and GELU-gradient kernels"},
    };
}
static KernelChoices kernel_choices(const KernelFlags& f) {
    KernelChoices k;
    if (f.attention != "flash" && f.attention != "matmul") fatal("--attention must be flash or matmul, got '%s'", f.attention.c_str());
    k.flash = f.attention == "flash";
    if (f.gelu_fusion < 0 || f.gelu_fusion > 1) fatal("--gelu_fusion must be 0 or 1, got %d", f.gelu_fusion);
    k.gelu_fusion = f.gelu_fusion;
    return k;
}

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
// The model: the network's forward, backward and optimizer step. Its buffers, the memory
// plan and the host <-> device transfers are cuda/memory.cuh's DeviceMemory; the
// data-parallel machinery (gradient buckets, ZeRO-1 shards) is cuda/parallel.cuh's
// DataParallel. The named tensors (LayerTensors, Tensors) are common/layout.h's.
// ============================================================================

template <typename T>
struct Model : DeviceMemory<T> {
    using Mem = DeviceMemory<T>;   // the names the network uses from its memory and data-parallel parts
    using Mem::cfg, Mem::table, Mem::dtable, Mem::ffn_dev, Mem::precision, Mem::stream, Mem::forward_only, Mem::chunks;
    using Mem::params, Mem::master, Mem::m, Mem::v, Mem::grads, Mem::W, Mem::G, Mem::B, Mem::T_cap, Mem::plan, Mem::pure, Mem::fits;
    using Mem::acts, Mem::resid, Mem::encoded, Mem::nf_out, Mem::nf_mean, Mem::nf_rstd, Mem::logits, Mem::losses, Mem::branch;
    using Mem::dx, Mem::d1, Mem::dqkv, Mem::datty, Mem::dfc, Mem::dact, Mem::attn_scratch, Mem::fa_dsum;
    using Mem::fscratch, Mem::rope_cos, Mem::rope_sin, Mem::staging;
    using Mem::d_inputs, Mem::d_targets, Mem::d_btok, Mem::d_bstart, Mem::d_bpos;
    using Mem::d_chunk_off, Mem::d_chunk_len, Mem::d_chunk_decay, Mem::d_partial, Mem::d_stats, Mem::h_stats, Mem::h_partial;
    using Mem::comm, Mem::reduce_in_backward, Mem::grads_reduced, Mem::data_parallel, Mem::sharded, Mem::my_shard;
    using Mem::shard_chunk, Mem::shard_off, Mem::state_base, Mem::reduce_bucket, Mem::wait_reductions;

    KernelChoices kc;                         // the kernel paths (set_kernels); kc.flash where flash applies
    NormType norm_type = NormType::LayerNorm;
    int cur_staging = 0;                      // the BatchStaging set of the last forward
    int nbuckets = 0;                         // distinct tokens of the last batch (embedding backward)
    bool logits_are_grad = false;             // the last forward fused the classifier backward
    int step = 0;                             // optimizer steps taken (AdamW bias correction)

    void init(const ModelConfig& c, int prec) {
        this->init_tables(c, prec);
        norm_type = cfg.gpt() ? NormType::LayerNorm : NormType::RMSNorm;
        set_attention(true);
    }
    // Plan the memory for batches up to B_ x T_ (printed with verbose), check it fits, allocate.
    void allocate(int B_, int T_, bool verbose) {
        Mem::allocate(B_, T_, verbose, PlanChoices{kc.flash});
    }

    // ------------------------------------------------------------------ attention
    // Flash attention (tiles, no T x T matrices) where it applies: bf16 storage and head
    // size <= 64; else, or with want_flash = false (--attention matmul), the materialised
    // version. init() picks flash where it applies; call before allocate().
    void set_attention(bool want_flash) {
        kc.flash = want_flash && std::is_same<T, __nv_bfloat16>::value && flash_attention_supported(cfg.d_model, cfg.n_head);
    }
    const char* attention_name() const {
        if (!kc.flash) return "matmul (T x T scores via cuBLAS)";
        return "flash (tiled, bf16 tensor cores; dQ recomputed in its own kernel)";
    }
    // atty = attention(qkv); the flash path keeps lse, the other P (att)
    void attn_forward(LayerActs<T>& a, int B_, int T_) {
        const int C = cfg.d_model, NH = cfg.n_head;
        if constexpr (std::is_same<T, __nv_bfloat16>::value)
            if (kc.flash) return flash_attention_forward(a.atty, a.lse, a.qkv, B_, T_, C, NH, stream);
        attention_forward(a.atty, a.att, a.qkv, attn_scratch, B_, T_, C, NH, stream);
    }
    // dqkv = d(attention)/d(qkv) given datty
    void attn_backward(const LayerActs<T>& a, int B_, int T_) {
        const int C = cfg.d_model, NH = cfg.n_head;
        if constexpr (std::is_same<T, __nv_bfloat16>::value)
            if (kc.flash)
                return flash_attention_backward(dqkv, datty, a.qkv, a.atty, a.lse, fa_dsum, FlashDq::Recompute, nullptr, 0, B_, T_,
                                                C, NH, stream);
        attention_backward(dqkv, datty, a.qkv, a.att, attn_scratch, B_, T_, C, NH, stream);
    }

    // ------------------------------------------------------------------ GELU fusion
    // For GPT-2 (llama has neither GELU nor biases), kernels/matmul.cuh: --gelu_fusion 1
    // (default) puts the GELU into the fc GEMM's epilogue (GELU_AUX_BIAS, which also keeps the
    // pre-activation for the backward), and the GELU gradient is a kernel; 0 runs the
    // gelu_forward / gelu_backward kernels. The bias gradients come from the dW GEMMs'
    // epilogues (BGRADB; on the H200 a separate cuBLASLt kernel, 1.14 ms per gpt2-124m T=1024 step).
    // All the choices of KernelChoices at once (after init(), before allocate()).
    void set_kernels(const KernelChoices& k) {
        kc = k;
        set_attention(k.flash);
    }
    bool fused_gelu() const { return kc.gelu_fusion >= 1 && cfg.gpt(); }    // GELU forward in the GEMM
    const char* gelu_fusion_name() const {
        if (!cfg.gpt()) return "n/a (llama: SwiGLU, no biases)";
        return kc.gelu_fusion ? "1 (GELU in a cuBLASLt GEMM epilogue, GELU gradient kernel)" : "0 (GELU and GELU-gradient kernels)";
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
        BatchStaging& hb = staging[cur_staging ^= 1];   // the set not used by the previous forward (cuda/memory.cuh)
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
    // grad_scale = 1/accumulation steps, the same value the fused forward gets).
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
        const BiasGrad bg = BiasGrad::Epilogue;   // the bias gradients in the dW GEMMs (kernels/matmul.cuh)
        linear_backward(d1, G.lm_head, (T*)nullptr, fs, logits, nf_out, W.lm_head, N, C, Vp, false, bg, st);
        norm_backward(dx, G.norm_f_w, G.norm_f_b, fs, d1, resid[c.n_layer], W.norm_f_w, nf_mean, nf_rstd, (const T*)nullptr, N, C, nt, st);
        reduce_bucket(grads, c.n_layer + 1, stream);

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
            linear_backward(dact, g.mlp_proj_w, g.mlp_proj_b, fs, dsum2, a.act, w.mlp_proj_w, N, F, C, false, bg, st);
            if (c.gpt()) gelu_backward(dfc, a.fc, dact, (size_t)N * F, st);
            else swiglu_backward(dfc, a.fc, dact, N, F, st);
            if (post) {   // MLP input = h: d1 (= dh) += dfc @ Wfc; then dsum1 = N1'(dh) into dx
                linear_backward(d1, g.fc_w, g.fc_b, fs, dfc, a.n1out, w.fc_w, N, C, fcw, true, bg, st);
                postln_residual_norm_backward(dx, g.norm1_w, g.norm1_b, fs, d1, a.sum1, w.norm1_w, a.mean1, a.rstd1, N, C, nt, st);
            } else {      // MLP input = N2(h): dx (= dh = dsum1) += N2'(dfc @ Wfc)
                linear_backward(d1, g.fc_w, g.fc_b, fs, dfc, a.n2out, w.fc_w, N, C, fcw, false, bg, st);
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
            reduce_bucket(grads, l + 1, stream);
        }
        embedding_backward(G.wte, G.wpe, dx, d_btok, d_bstart, d_bpos, nbuckets, B_, T_, C, st);
        reduce_bucket(grads, 0, stream);
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
    // test hook (MIXLN_TEST_NAN_AT, common/trainer.h): one gradient element becomes NaN, the first element of
    // the middle tensor (element (0, 0) of a tensor is never a padded one)
    void poison_grad() {
        wait_reductions(stream);
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
    // (and, for the per-layer norms, the chunk partials) in pinned memory (a download of the
    // loss after every forward, or of the norm before the update, would leave the GPU idle
    // while the host caught up). Data parallel (set_comm, more than one rank):
    // the gradients were averaged over the ranks during the last backward (reduce_bucket)
    // and the loss is averaged here (kernels/nccl_wrap.cuh), so the norm, the clipping, the
    // skip decision and the update are the same on every rank. Sharded (ZeRO-1): a rank holds
    // the averaged gradients of its shard only, so it forms the norm partials of its chunks,
    // the ranks sum the partial arrays (each chunk is non-zero on its owner alone: the sums
    // are exact and the norm is the unsharded one, bit for bit), each updates its shard, and
    // the updated weights are gathered on every rank before the next forward. The numbers come
    // back as common/trainer.h's StepResult.
    void begin_step() {
        grads_reduced = false;
        zero_grad();
        cudaCheck(cudaMemsetAsync(d_stats, 0, sizeof(StepStats), stream));
    }
    StepResult end_step(int accum, float lr, float beta1, float beta2, float eps, float wd, float max_norm, bool want_tensor_sq) {
        const int nch = (int)chunks.off.size();
        if (data_parallel()) {   // the gradients were averaged bucket by bucket in the last backward
            if (!grads_reduced) fatal("internal: a data-parallel step whose last backward did not reduce the gradients");
            wait_reductions(stream);
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
        StepResult r{h_stats->loss_sum / accum, h_stats->norm, h_stats->finite != 0, {}, -1};
        if (!r.finite) step--;   // AdamW wrote nothing: its bias correction did not advance either
        if (want_tensor_sq) r.sq = tensor_sq(h_partial);
        return r;
    }
};

// ----------------------------------------------------------------------------
// Analyses of a trained model (--mode angular | layer_drop; docs/ANALYSIS.md): common/trainer.h
// runs them, common/analysis.h forms the results. Data parallel, the ranks split the batches
// (as evaluate) and add their sums; rank 0 writes the file. In the bf16 modes the
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

#ifndef TESTING
// ============================================================================
// Training: common/trainer.h drives the run (start or resume, banner, log, validation,
// sampling, checkpoints, signals, the step loop); CudaRun is this trainer's side of it.
// Data parallel (comm.nranks > 1): rank 0 alone writes the log and the checkpoints and
// prints (main mutes the others' stdout); every rank reads the same starting point.
// ============================================================================

template <typename T>
struct CudaRun {
    Model<T> model;
    int precision;
    KernelChoices kc;
    int zero;
    const Comm& comm;
    cudaDeviceProp prop{};
    int device = 0;
    double peak = 0.0;        // dense peak FLOP/s of the device (0: unknown), for MFU
    std::vector<float> row;   // sample_logits' fp32 logits
    CudaRun(int precision_, const KernelChoices& kc_, int zero_, const Comm& comm_)
        : precision(precision_), kc(kc_), zero(zero_), comm(comm_) {}

    int rank() const { return comm.rank; }
    int nranks() const { return comm.nranks; }
    void bcast(std::string* s) { comm_bcast(s, comm); }
    int all_max(int x) { return comm_max(x, comm); }
    double all_sum(double x) { return comm_sum(x, comm); }

    void init_model(const ModelConfig& c) { model.init(c, precision); }
    // the device, the kernel paths, the data-parallel set-up, the memory plan (printed; a run
    // that cannot fit stops here); the analysis modes plan forwards only (no gradients or
    // optimizer state: analyses fit where training would not)
    void prepare(const TrainConfig& tc, bool analysis) {
        cudaCheck(cudaGetDevice(&device));
        cudaCheck(cudaGetDeviceProperties(&prop, device));
        printf("device: %s (sm_%d%d, %d SMs, %.1f GiB)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
               prop.totalGlobalMem / (double)(1 << 30));
        model.set_kernels(kc);
        model.set_comm(&comm, zero == 1);
        if (analysis) model.set_forward_only();
        model.allocate(tc.B, tc.T, true);
        peak = device_peak_flops(prop.name, precision != PREC_FP32);
    }
    void upload(const std::vector<float>& p, const std::vector<float>* m, const std::vector<float>* v) { model.upload_state(p, m, v); }
    float loss(const int* in, const int* tgt, int B, int T_, int skip_layer) { return model.forward(in, tgt, B, T_, 0.f, skip_layer); }
    AngularDistances angular_distances(DataLoader& val, int steps) { return ::angular_distances(model, val, steps, comm); }

    void sync() { cudaCheck(cudaDeviceSynchronize()); }
    // one step, queued without waiting for the GPU (Model::begin_step / end_step); a stop
    // request before a micro-step ends the step there, nothing applied (StepResult::stopped_after)
    StepResult step(DataLoader& train, int accum, float lr, const TrainConfig& tc, bool poison, bool want_sq) {
        model.begin_step();
        for (int micro = 0; micro < accum; micro++) {
            if (stop_before_micro_step(nranks())) return StepResult::stopped(micro);
            train.next_batch();
            model.forward(train.inputs.data(), train.targets.data(), tc.B, tc.T, 1.f / accum, -1, false);   // fused classifier backward
            model.backward(tc.B, tc.T, 1.f / accum, micro == accum - 1);
        }
        if (poison) model.poison_grad();   // test hook (MIXLN_TEST_NAN_AT, common/trainer.h)
        return model.end_step(accum, lr, tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay, tc.grad_clip, want_sq);
    }

    int sample_max_len() const {   // the prefix is capped at what the activation buffers hold
        int max_len = model.cfg.max_seq_len;
        while (max_len > 1 && !model.fits(1, max_len)) max_len--;
        return max_len;
    }
    // the logits of position t - 1 after the forward on seq[0..t), as fp32
    const float* sample_logits(const std::vector<int>& seq, int t) {
        model.forward(seq.data(), nullptr, 1, t);
        row = model.download_logits(t);
        return row.data() + (size_t)(t - 1) * model.cfg.padded_vocab;
    }
    // every rank takes part (with the optimizer state sharded, each sends its shard to rank 0:
    // Model::download_state); rank 0 writes
    bool save(const std::string& path, long step, const TrainState& ts, std::string* err, int slow_ms) {
        std::vector<float> p, mm, vv;
        model.download_state(p, &mm, &vv);
        return comm.rank != 0 || write_checkpoint(path, model.cfg, (int)step, p.data(), mm.data(), vv.data(), &ts, err, slow_ms);
    }

    void banner_head() const {
        printf("precision: %s (%s)\n", precision_name(precision),
               precision == PREC_FP32 ? "fp32 weights, activations and GEMMs" :
               precision == PREC_BF16 ? "bf16 weights/activations/gradients, fp32 master weights and AdamW state, fp32 accumulation" :
                                        "bf16 everywhere, AdamW state too (the paper's code)");
        printf("attention: %s\n", model.attention_name());
        printf("gelu fusion: %s\n", model.gelu_fusion_name());
    }
    void banner_parallel() const {
        if (comm.nranks > 1)
            printf("data parallel: %d ranks, %d on this node (this one: rank %d, device %d); gradients and loss averaged over the "
                   "ranks every step; tok/s counts all ranks, MFU is per GPU\n", comm.nranks, comm.local_size, comm.rank, device);
        if (comm.nranks == 1 && zero == 1) printf("zero: 1 has no effect in a single process (nothing to shard over)\n");
        if (comm.nranks > 1)
            printf("zero: %s\n", model.sharded() ? "1 (the master weights and AdamW moments sharded over the ranks; gradients reduced to "
                                                   "their shard's owner, updated weights gathered on every rank after each step)"
                                                 : "0 (every rank holds and updates the whole optimizer state)");
    }
    void banner_tail() const {
        if (peak > 0) printf("mfu: against %.0f TFLOP/s (%s dense peak of %s)\n", peak / 1e12, precision != PREC_FP32 ? "bf16" : "fp32", prop.name);
        else printf("mfu: n/a (no peak FLOP/s known for %s)\n", prop.name);
    }
    std::string memory_mib() const {   // the banner's memory (the whole plan: the memory line above)
        char b[64];
        snprintf(b, sizeof b, "activations %.1f MiB", model.plan.acts / (double)(1 << 20));
        return b;
    }
    void config_json(JsonLine& j) const { j.str("precision", precision_name(precision)).str("device", prop.name); }
    double mfu(double flops_tok, double tok_s) const { return peak > 0 ? 100.0 * flops_tok * tok_s / (peak * comm.nranks) : -1.0; }   // per GPU
    std::string rate(double, double, double mfu_pct) const {
        char s[32];
        if (mfu_pct >= 0) snprintf(s, sizeof s, "MFU %.1f%%", mfu_pct);
        else snprintf(s, sizeof s, "MFU n/a");
        return s;
    }
    void report_end(double total_ms, long timed_steps, double flops_tok, const TrainConfig& tc) const {
        size_t free_b = 0, total_b = 0;
        cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        printf("peak memory: %.1f MiB planned (device used %.1f MiB of %.1f)\n", model.plan.total() / (double)(1 << 20),
               (total_b - free_b) / (double)(1 << 20), total_b / (double)(1 << 20));
        if (!timed_steps) return;
        double avg = total_ms / timed_steps, tok_s = tc.total_batch / (avg / 1000.0);
        printf("summary: %.1f ms/step, %.0f tok/s, MFU %s over %ld timed steps\n", avg, tok_s,
               peak > 0 ? (std::to_string(100.0 * flops_tok * tok_s / (peak * comm.nranks)).substr(0, 5) + "%").c_str() : "n/a",
               timed_steps);
    }
    void shutdown() {
        model.free_all();
        gemm_shutdown();
    }
};

template <typename T>
static int train_main(TrainConfig& tc, int precision, const KernelChoices& kc, int zero, const Comm& comm) {
    CudaRun<T> run(precision, kc, zero, comm);
    return train_or_analyse(tc, run);   // common/trainer.h
}

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);   // progress lines appear as they happen, also in a log file
    // data parallel under mpirun (kernels/nccl_wrap.cuh): rank 0 prints, the others only report errors
    Comm comm;
    comm_init(&comm, &argc, &argv);
    if (comm.rank > 0 && !freopen("/dev/null", "w", stdout)) fatal("rank %d: cannot mute stdout", comm.rank);
    TrainConfig tc;
    KernelFlags kf;
    int zero = 0;
    std::vector<FlagSpec> extra = kernel_flags(kf);
    extra.push_back({"zero", 0, 'i', &zero,
                     "several GPUs: 0 (default): every rank holds the whole optimizer state | 1: ZeRO-1, the fp32 master weights and "
                     "AdamW moments sharded over the ranks (12 of 16 bytes per parameter divided by the rank count; same results)"});
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
    int precision = parse_precision(kf.precision);
    const KernelChoices kc = kernel_choices(kf);
    if (zero != 0 && zero != 1) fatal("--zero must be 0 or 1, got %d", zero);
    require_cuda_device(comm.local_rank, comm.local_size);
    comm_connect(&comm);
    const int rc = precision == PREC_FP32 ? train_main<float>(tc, precision, kc, zero, comm)
                                          : train_main<__nv_bfloat16>(tc, precision, kc, zero, comm);
    comm_destroy(&comm);
    return rc;
}
#endif
