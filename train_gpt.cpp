/*
train_gpt.cpp: the CPU reference trainer for Mix-LN (fp32, OpenMP, BLAS).

One file: every op's forward and backward side by side, the model with AdamW, and
main. The host code shared with the CUDA trainer lives in common/: the training
driver (common/trainer.h: start or resume, banner, log, validation, sampling,
checkpoints, signals, the step loop), config and flags, the parameter table and
what derives from it (common/layout.h), checkpoint and shard formats, data loader,
schedule, RNG, log. The math is documented in dev/model.py, the PyTorch
reference this file is tested against (test_gpt.cpp includes this file).

Norm placement per layer l, K = post_ln_layers, N = LayerNorm (gpt) / RMSNorm (llama):
  l <  K  Post-LN:  sum1 = x + Attn(x);        h = N1(sum1);  sum2 = h + MLP(h);      y = N2(sum2)
  l >= K  Pre-LN:   sum1 = x + Attn(N1(x));    h = sum1;      sum2 = h + MLP(N2(h));  y = sum2
Both placements share the buffers sum1/sum2 (the residual sums) and n1out/n2out
(the norm outputs); only the wiring differs (see Model::forward).

Memory layout: activations are row-major (rows = B*T tokens, b-major), so a
(B*T, C) matrix row is one token. Weights are PyTorch's (out_features, in_features),
so a linear layer is out = inp @ W^T. The qkv row of a token is [q | k | v], each C
wide, head h owning columns [h*hd, (h+1)*hd) of each.
*/
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifndef NO_BLAS
#include <cblas.h>
#endif

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
// GEMM: C[M,N] = alpha * op(A) op(B) + beta * C, row-major, through BLAS, with a
// plain-loop fallback (build with -DNO_BLAS). Inside an OpenMP parallel region
// OpenBLAS (OpenMP build) runs single-threaded, so per-head attention GEMMs can
// be issued from parallel loops.
// ============================================================================

static void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
#ifndef NO_BLAS
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                A, lda, B, ldb, beta, C, ldc);
#else
    bool nested = false;
#ifdef _OPENMP
    nested = omp_in_parallel();
#endif
#pragma omp parallel for collapse(2) if (!nested)
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0.f;
            for (int k = 0; k < K; k++) {
                float a = transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
            }
            C[(size_t)i * ldc + j] = alpha * s + (beta == 0.f ? 0.f : beta * C[(size_t)i * ldc + j]);
        }
#endif
}

// ============================================================================
// exp for the hot loops (softmax, cross-entropy, SiLU, GELU's tanh): written so
// the compiler vectorizes it (libm's expf is a scalar call). x = n ln2 + r with
// |r| <= ln2/2 (Cody-Waite split of ln2), e^r by its degree-7 Taylor polynomial
// (truncation error < 6e-9 relative), times 2^n built in the exponent bits.
// Inputs are clamped to [-87.3, 88.7], so it never returns inf, NaN or a denormal.
// n is rounded with the 1.5 * 2^23 trick (floorf would stop GCC vectorizing).
// Row reductions (max, sum of exp) keep 16 partial results, so they vectorize
// without -ffast-math; their order is fixed, so results are deterministic.
// ============================================================================

static inline float exp_fast(float x) {
    x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
    float n = (x * 1.44269504f + 12582912.f) - 12582912.f;   // round to nearest
    float r = x - n * 0.693145752f - n * 1.42860677e-06f;
    float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720 + r * (1.f / 5040)))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}
static inline float max_f(float a, float b) { return a > b ? a : b; }

static inline float row_max(const float* z, int n) {
    float acc[16];
    for (int j = 0; j < 16; j++) acc[j] = -INFINITY;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] = max_f(acc[j], z[i + j]);
    float m = -INFINITY;
    for (; i < n; i++) m = max_f(m, z[i]);
    for (int j = 0; j < 16; j++) m = max_f(m, acc[j]);
    return m;
}
// sum_i exp(z[i] - shift); with out != nullptr also stores each exp(z[i] - shift)
static inline float row_sum_exp(float* out, const float* z, int n, float shift) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) {
            float e = exp_fast(z[i + j] - shift);
            if (out) out[i + j] = e;
            acc[j] += e;
        }
    float s = 0.f;
    for (; i < n; i++) {
        float e = exp_fast(z[i] - shift);
        if (out) out[i] = e;
        s += e;
    }
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

// ============================================================================
// Linear layer: out[N,OC] = inp[N,C] @ W[OC,C]^T + b (kernels/matmul.cuh's linear_forward /
// linear_backward on the GPU). `beta` = 1 accumulates into out (adds a branch onto the residual).
// ============================================================================

static void linear_forward(float* out, const float* inp, const float* W, const float* bias, int N, int C, int OC,
                           float beta = 0.f) {
    gemm(false, true, N, OC, C, 1.f, inp, C, W, C, beta, out, OC);
    if (bias) {
#pragma omp parallel for
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
    }
}

// dinp[N,C] (=, or += when dinp_beta = 1) dout @ W;  dW[OC,C] += dout^T @ inp;  db[OC] += sum_n dout.
static void linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W,
                            int N, int C, int OC, float dinp_beta) {
    if (dinp) gemm(false, false, N, C, OC, 1.f, dout, OC, W, C, dinp_beta, dinp, C);
    gemm(true, false, OC, C, N, 1.f, dout, OC, inp, C, 1.f, dW, C);
    if (db) {   // channel blocks of 16 per thread, rows in order (deterministic)
#pragma omp parallel for
        for (int o0 = 0; o0 < OC; o0 += 16) {
            int no = std::min(16, OC - o0);
            float s[16] = {0};
            for (int n = 0; n < N; n++)
                for (int j = 0; j < no; j++) s[j] += dout[(size_t)n * OC + o0 + j];
            for (int j = 0; j < no; j++) db[o0 + j] += s[j];
        }
    }
}

// ============================================================================
// Embedding: x[b,t,:] = wte[tok[b,t]] (+ wpe[t] for gpt).
// Backward scatters into wte rows; to stay deterministic without atomics, each
// thread owns a range of channels and walks all tokens in order.
// ============================================================================

static void embedding_forward(float* out, const int* tok, const float* wte, const float* wpe, int B, int T, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            const float* e = wte + (size_t)tok[b * T + t] * C;
            for (int c = 0; c < C; c++) o[c] = e[c] + (wpe ? wpe[(size_t)t * C + c] : 0.f);
        }
}

static void embedding_backward(float* dwte, float* dwpe, const float* dout, const int* tok, int B, int T, int C) {
    const int CB = 16;   // channels per task: one 64-byte cache line of every row
#pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += CB) {
        int c1 = std::min(C, c0 + CB);
        for (int n = 0; n < B * T; n++) {
            const float* g = dout + (size_t)n * C;
            float* dw = dwte + (size_t)tok[n] * C;
            float* dp = dwpe ? dwpe + (size_t)(n % T) * C : nullptr;
            for (int c = c0; c < c1; c++) {
                dw[c] += g[c];
                if (dp) dp[c] += g[c];
            }
        }
    }
}

// ============================================================================
// Norms, per row of C channels:
//   LayerNorm: y = (x - mean) * rstd * w + b,  rstd = 1/sqrt(var + eps)
//   RMSNorm:   y = x * rstd * w,                rstd = 1/sqrt(mean(x^2) + eps)
// (rms = true, mean stored as 0). Backward with xhat = (x - mean) * rstd, g = dy * w:
//   LayerNorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   RMSNorm:   dx = rstd * (g - xhat * mean(g * xhat))
//   dw += sum_rows dy * xhat,  db += sum_rows dy
// ============================================================================

static void norm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                         int N, int C, float eps, bool rms) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        float* y = out + (size_t)n * C;
        float m = 0.f;
        if (!rms) {
            for (int c = 0; c < C; c++) m += x[c];
            m /= C;
        }
        float v = 0.f;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float s = 1.f / sqrtf(v / C + eps);
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * s * w[c] + (b ? b[c] : 0.f);
        mean[n] = m;
        rstd[n] = s;
    }
}

// dinp (= or += when accumulate) the gradient w.r.t. the norm input.
static void norm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                          const float* mean, const float* rstd, int N, int C, bool rms, bool accumulate) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        const float* dy = dout + (size_t)n * C;
        float* dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n], mg = 0.f, mgx = 0.f;
        for (int c = 0; c < C; c++) {
            float g = dy[c] * w[c];
            mg += g;
            mgx += g * (x[c] - m) * s;
        }
        mg = rms ? 0.f : mg / C;
        mgx /= C;
        for (int c = 0; c < C; c++) {
            float d = s * (dy[c] * w[c] - mg - (x[c] - m) * s * mgx);
            dx[c] = accumulate ? dx[c] + d : d;
        }
    }
    // weight/bias gradients: each thread owns a block of channels (one cache line
    // of every row) and sums the rows in order, so the result is deterministic
    const int CB = 16;
#pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += CB) {
        int nc = std::min(CB, C - c0);
        float sw[CB] = {0}, sb[CB] = {0};
        for (int n = 0; n < N; n++) {
            const float* dy = dout + (size_t)n * C + c0;
            const float* x = inp + (size_t)n * C + c0;
            float m = mean[n], r = rstd[n];
            for (int j = 0; j < nc; j++) {
                sw[j] += dy[j] * (x[j] - m) * r;
                sb[j] += dy[j];
            }
        }
        for (int j = 0; j < nc; j++) {
            dw[c0 + j] += sw[j];
            if (db) db[c0 + j] += sb[j];
        }
    }
}

// ============================================================================
// RoPE (llama), rotate-half, in place on the q and k parts of qkv (N = B*T rows):
// for each head and i < hd/2, with angle = t * theta^(-2i/hd):
//   (a, b) = (x[i], x[i + hd/2])  ->  (a cos - b sin, b cos + a sin)
// The backward applies the transposed rotation (angle -> -angle) to dq, dk.
// ============================================================================

static void rope_apply(float* qkv, const float* cos_t, const float* sin_t, int B, int T, int C, int NH, float sign) {
    int hd = C / NH, half = hd / 2;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float* row = qkv + ((size_t)b * T + t) * 3 * C;
            const float* cs = cos_t + (size_t)t * half;
            const float* sn = sin_t + (size_t)t * half;
            for (int part = 0; part < 2; part++)          // q, then k
                for (int h = 0; h < NH; h++) {
                    float* x = row + part * C + h * hd;
                    for (int i = 0; i < half; i++) {
                        float a = x[i], bb = x[i + half], c = cs[i], s = sign * sn[i];
                        x[i] = a * c - bb * s;
                        x[i + half] = bb * c + a * s;
                    }
                }
        }
}
static void rope_forward(float* qkv, const float* c, const float* s, int B, int T, int C, int NH) { rope_apply(qkv, c, s, B, T, C, NH, 1.f); }
static void rope_backward(float* dqkv, const float* c, const float* s, int B, int T, int C, int NH) { rope_apply(dqkv, c, s, B, T, C, NH, -1.f); }

// ============================================================================
// Causal attention, per (b, h), with Q, K, V the (T, hd) slices of qkv (row stride 3C):
//   S = Q K^T / sqrt(hd);  P = softmax(S) over j <= i (P[i, j > i] = 0);  Y = P V
// P is kept (B, NH, T, T) for the backward:
//   dP = dY V^T;  dV = P^T dY;  dS = P * (dP - rowsum(P * dP)) / sqrt(hd)
//   dQ = dS K;    dK = dS^T Q
// Causal blocking: rows are taken in blocks of `blk`; row block [r0, r1) only
// needs columns [0, r1), so the GEMMs skip (almost) all of the masked upper
// triangle. For dV and dK (sums over rows i >= j) the blocks run over columns:
// column block [c0, c1) only needs rows [c0, T). Entries of P (and dS) right of
// a row block's r1 are never written nor read.
// ============================================================================

static void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH, int blk) {
    int hd = C / NH;
    float scale = 1.f / sqrtf((float)hd);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float* q = qkv + (size_t)b * T * 3 * C + h * hd;
            const float* k = q + C;
            const float* v = q + 2 * C;
            float* P = att + ((size_t)b * NH + h) * T * T;
            float* y = out + (size_t)b * T * C + h * hd;
            for (int r0 = 0; r0 < T; r0 += blk) {
                int r1 = std::min(T, r0 + blk);
                gemm(false, true, r1 - r0, r1, hd, scale, q + (size_t)r0 * 3 * C, 3 * C, k, 3 * C, 0.f, P + (size_t)r0 * T, T);
                for (int i = r0; i < r1; i++) {
                    float* p = P + (size_t)i * T;
                    float mx = row_max(p, i + 1);
                    float inv = 1.f / row_sum_exp(p, p, i + 1, mx);
                    for (int j = 0; j <= i; j++) p[j] *= inv;
                    for (int j = i + 1; j < r1; j++) p[j] = 0.f;
                }
                gemm(false, false, r1 - r0, hd, r1, 1.f, P + (size_t)r0 * T, T, v, 3 * C, 0.f, y + (size_t)r0 * C, C);
            }
        }
}

// dqkv is overwritten. scratch: T*T floats per OpenMP thread.
static void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv, const float* att,
                               int B, int T, int C, int NH, int blk) {
    int hd = C / NH;
    float scale = 1.f / sqrtf((float)hd);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            float* dS = scratch + (size_t)tid * T * T;
            const float* q = qkv + (size_t)b * T * 3 * C + h * hd;
            const float* k = q + C;
            const float* v = q + 2 * C;
            float* dq = dqkv + (size_t)b * T * 3 * C + h * hd;
            float* dk = dq + C;
            float* dv = dq + 2 * C;
            const float* P = att + ((size_t)b * NH + h) * T * T;
            const float* dy = dout + (size_t)b * T * C + h * hd;
            for (int r0 = 0; r0 < T; r0 += blk) {   // dP, then dS in place, then dQ, by row blocks
                int r1 = std::min(T, r0 + blk);
                gemm(false, true, r1 - r0, r1, hd, 1.f, dy + (size_t)r0 * C, C, v, 3 * C, 0.f, dS + (size_t)r0 * T, T);
                for (int i = r0; i < r1; i++) {
                    const float* p = P + (size_t)i * T;
                    float* d = dS + (size_t)i * T;
                    float dot = 0.f;
                    for (int j = 0; j <= i; j++) dot += p[j] * d[j];
                    for (int j = 0; j <= i; j++) d[j] = p[j] * (d[j] - dot) * scale;
                    for (int j = i + 1; j < r1; j++) d[j] = 0.f;
                }
                gemm(false, false, r1 - r0, hd, r1, 1.f, dS + (size_t)r0 * T, T, k, 3 * C, 0.f, dq + (size_t)r0 * 3 * C, 3 * C);
            }
            for (int c0 = 0; c0 < T; c0 += blk) {   // dV and dK, by column blocks
                int c1 = std::min(T, c0 + blk);
                gemm(true, false, c1 - c0, hd, T - c0, 1.f, P + (size_t)c0 * T + c0, T, dy + (size_t)c0 * C, C, 0.f,
                     dv + (size_t)c0 * 3 * C, 3 * C);
                gemm(true, false, c1 - c0, hd, T - c0, 1.f, dS + (size_t)c0 * T + c0, T, q + (size_t)c0 * 3 * C, 3 * C, 0.f,
                     dk + (size_t)c0 * 3 * C, 3 * C);
            }
        }
}

// ============================================================================
// MLP activations.
// GELU (tanh approximation): y = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// SwiGLU: fc row = [gate (F) | up (F)];  y = silu(gate) * up,  silu(g) = g * sigmoid(g)
//   dgate = dy * up * s (1 + g (1 - s)),  dup = dy * silu(g),  s = sigmoid(g)
// ============================================================================

static const float GELU_K = 0.7978845608028654f;   // sqrt(2/pi)
static inline float tanh_fast(float u) { return 1.f - 2.f / (exp_fast(2.f * u) + 1.f); }   // tanh u = 1 - 2/(e^2u + 1)

static void gelu_forward(float* out, const float* inp, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.f + tanh_fast(GELU_K * (x + 0.044715f * x * x * x)));
    }
}
static void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], th = tanh_fast(GELU_K * (x + 0.044715f * x * x * x));
        float d = 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * GELU_K * (1.f + 3.f * 0.044715f * x * x);
        dinp[i] = d * dout[i];
    }
}

static void swiglu_forward(float* out, const float* fc, int N, int F) {
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int i = 0; i < F; i++) {
            float g = fc[(size_t)n * 2 * F + i], u = fc[(size_t)n * 2 * F + F + i];
            out[(size_t)n * F + i] = g / (1.f + exp_fast(-g)) * u;
        }
}
static void swiglu_backward(float* dfc, const float* fc, const float* dout, int N, int F) {
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int i = 0; i < F; i++) {
            float g = fc[(size_t)n * 2 * F + i], u = fc[(size_t)n * 2 * F + F + i], dy = dout[(size_t)n * F + i];
            float s = 1.f / (1.f + exp_fast(-g));
            dfc[(size_t)n * 2 * F + i] = dy * u * s * (1.f + g * (1.f - s));
            dfc[(size_t)n * 2 * F + F + i] = dy * g * s;
        }
}

// ============================================================================
// Classifier: cross-entropy over the first V of Vp logits per row, and its
// gradient written over the logits (no separate probability buffer):
//   lse_n  = logsumexp(z_n[:V]),  loss_n = lse_n - z_n[target_n]
//   dz_n[v] = (exp(z_n[v] - lse_n) - [v == target_n]) * dscale  for v < V, 0 for padding
// The forward keeps lse_n so the backward is one exp pass. Returns the mean loss.
// (kernels/classifier.cuh's classifier does both in one kernel on the GPU.)
// ============================================================================

static float classifier_forward(float* losses, float* lse, const float* logits, const int* targets, int N, int V, int Vp) {
    double total = 0.0;
#pragma omp parallel for reduction(+ : total)
    for (int n = 0; n < N; n++) {
        const float* z = logits + (size_t)n * Vp;
        float mx = row_max(z, V);
        lse[n] = logf(row_sum_exp(nullptr, z, V, mx)) + mx;
        losses[n] = lse[n] - z[targets[n]];
        total += losses[n];
    }
    return (float)(total / N);
}

static void classifier_backward(float* logits, const float* lse, const int* targets, int N, int V, int Vp, float dscale) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        float* z = logits + (size_t)n * Vp;
        float l = lse[n];
        for (int v = 0; v < V; v++) z[v] = exp_fast(z[v] - l) * dscale;
        z[targets[n]] -= dscale;
        for (int v = V; v < Vp; v++) z[v] = 0.f;
    }
}

// ============================================================================
// The model
// ============================================================================

// The named tensors of a flat parameter or gradient array: common/layout.h.
using LayerW = LayerTensors<float>;

// Activations of one layer (N = B*T rows). See the header comment for the wiring.
struct LayerActs {
    float *sum1, *n1out, *mean1, *rstd1;      // sum1 = x + attn branch
    float *qkv, *att, *atty;                  // qkv after RoPE; att = softmax probs (B,NH,T,T); atty = P V
    float *sum2, *n2out, *mean2, *rstd2;      // sum2 = h + mlp branch
    float *fc, *act;                          // fc: (N, ffn) gpt, (N, 2 ffn) llama; act: (N, ffn)
};

struct Model {
    ModelConfig cfg;
    ParamTable table;
    std::vector<float> params, grads, m, v;
    Tensors<float> W, G;   // parameters and gradients by name (common/layout.h)
    int B = 0, T = 0;                          // activation capacity
    std::vector<float> arena;                  // all activations, one allocation
    std::vector<LayerActs> acts;
    float *encoded = nullptr, *nf_out = nullptr, *nf_mean = nullptr, *nf_rstd = nullptr, *logits = nullptr, *losses = nullptr, *lse = nullptr;
    std::vector<float*> resid;                 // resid[l] = input of layer l, resid[L] = last block's output
    std::vector<float> dbuf;                   // backward scratch: dx, d1, d2, dqkv, datty, dfc, dact, attention scratch
    std::vector<float> rope_cos, rope_sin;     // (max_seq_len, hd/2)
    std::vector<int> inputs, targets;
    float loss = 0.f;
    int attn_block = 64;                       // causal blocking of attention (rows per block)
    int step = 0;                              // optimizer steps taken (AdamW bias correction)

    void init(const ModelConfig& c) {
        cfg = c;
        finalize_config(cfg);
        table = build_param_table(cfg);
        require_host_memory(16.0 * table.total + 4.0 * cfg.max_seq_len * (cfg.gpt() ? 0 : cfg.head_dim()),
                            "the model's parameters, gradients and AdamW state (--n_layer/--d_model/--ffn/--vocab/--max_seq_len)");
        params.assign(table.total, 0.f);
        grads.assign(table.total, 0.f);
        m.assign(table.total, 0.f);
        v.assign(table.total, 0.f);
        W = tensors_in(table, cfg, params.data());
        G = tensors_in(table, cfg, grads.data());
        if (!cfg.gpt()) rope_tables(cfg, rope_cos, rope_sin);   // common/layout.h
    }

    // Allocate activations for batches up to B_ x T_: one arena, laid out twice
    // (the first pass with base == nullptr only counts).
    void alloc_acts(int B_, int T_) {
        if (T_ > cfg.max_seq_len) fatal("sequence length %d does not fit the model's max_seq_len %d", T_, cfg.max_seq_len);
        if (B_ <= B && T_ <= T && !acts.empty()) return;
        B = std::max(B, B_); T = std::max(T, T_);
        size_t total = layout_acts(nullptr);
        require_host_memory(16.0 * table.total + 4.0 * total + 4.0 * (double)B * T * (8.0 * cfg.d_model + 3.0 * cfg.ffn),
                            "training with these -b/-t (the activations) and this model");
        arena.assign(total, 0.f);
        layout_acts(arena.data());
        size_t N = (size_t)B * T, C = cfg.d_model, F = cfg.ffn, fcw = cfg.gpt() ? F : 2 * F;
        int nthreads = 1;
#ifdef _OPENMP
        nthreads = omp_get_max_threads();
#endif
        dbuf.assign(3 * N * C + 3 * N * C + N * C + N * fcw + N * F + (size_t)nthreads * T * T, 0.f);
        inputs.assign(N, 0);
        targets.assign(N, 0);
    }
    size_t layout_acts(float* base) {
        size_t N = (size_t)B * T, C = cfg.d_model, F = cfg.ffn, fcw = cfg.gpt() ? F : 2 * F, Vp = cfg.padded_vocab;
        size_t used = 0;
        auto take = [&](size_t n) { float* r = base ? base + used : nullptr; used += n; return r; };
        acts.resize(cfg.n_layer);
        encoded = take(N * C);
        resid.assign(cfg.n_layer + 1, nullptr);
        resid[0] = encoded;
        for (int l = 0; l < cfg.n_layer; l++) {
            LayerActs& a = acts[l];
            a.sum1 = take(N * C); a.n1out = take(N * C); a.mean1 = take(N); a.rstd1 = take(N);
            a.qkv = take(3 * N * C); a.att = take((size_t)B * cfg.n_head * T * T); a.atty = take(N * C);
            a.sum2 = take(N * C); a.n2out = take(N * C); a.mean2 = take(N); a.rstd2 = take(N);
            a.fc = take(N * fcw); a.act = take(N * F);
            resid[l + 1] = cfg.post_ln(l) ? a.n2out : a.sum2;
        }
        nf_out = take(N * C); nf_mean = take(N); nf_rstd = take(N); losses = take(N); lse = take(N);
        logits = take(N * Vp);
        return used;
    }

    // ------------------------------------------------------------------ forward
    // Forward over B_ x T_ tokens. With targets, computes the mean loss into
    // `loss` (and keeps logits for backward); returns it (or -1 without targets).
    float forward(const int* in, const int* tgt, int B_, int T_, int skip_layer = -1) {
        alloc_acts(B_, T_);
        const ModelConfig& c = cfg;
        int N = B_ * T_, C = c.d_model, F = c.ffn, NH = c.n_head, V = c.vocab, Vp = c.padded_vocab;
        bool rms = !c.gpt();
        for (int i = 0; i < N; i++) {
            if (in[i] < 0 || in[i] >= V) fatal("input token id %d is outside the vocab [0, %d)", in[i], V);
            inputs[i] = in[i];
            if (tgt) {
                if (tgt[i] < 0 || tgt[i] >= V) fatal("target token id %d is outside the vocab [0, %d)", tgt[i], V);
                targets[i] = tgt[i];
            }
        }
        embedding_forward(encoded, inputs.data(), W.wte, W.wpe, B_, T_, C);
        for (int l = 0; l < c.n_layer; l++) {
            const LayerW& w = W.layer[l];
            LayerActs& a = acts[l];
            const float* x = resid[l];
            if (l == skip_layer) {   // the block becomes the identity (layer-removal analysis)
                memcpy(resid[l + 1], x, sizeof(float) * N * C);
                continue;
            }
            bool post = c.post_ln(l);
            // attention branch: input is N1(x) (Pre-LN) or x (Post-LN)
            if (!post) norm_forward(a.n1out, a.mean1, a.rstd1, x, w.norm1_w, w.norm1_b, N, C, c.norm_eps, rms);
            const float* a_in = post ? x : a.n1out;
            linear_forward(a.qkv, a_in, w.qkv_w, w.qkv_b, N, C, 3 * C);
            if (!c.gpt()) rope_forward(a.qkv, rope_cos.data(), rope_sin.data(), B_, T_, C, NH);
            attention_forward(a.atty, a.att, a.qkv, B_, T_, C, NH, attn_block);
            memcpy(a.sum1, x, sizeof(float) * N * C);                           // sum1 = x + atty @ Wo^T + bo
            linear_forward(a.sum1, a.atty, w.attn_proj_w, w.attn_proj_b, N, C, C, 1.f);
            if (post) norm_forward(a.n1out, a.mean1, a.rstd1, a.sum1, w.norm1_w, w.norm1_b, N, C, c.norm_eps, rms);
            const float* h = post ? a.n1out : a.sum1;
            // MLP branch: input is N2(h) (Pre-LN) or h (Post-LN)
            if (!post) norm_forward(a.n2out, a.mean2, a.rstd2, h, w.norm2_w, w.norm2_b, N, C, c.norm_eps, rms);
            const float* m_in = post ? h : a.n2out;
            if (c.gpt()) {
                linear_forward(a.fc, m_in, w.fc_w, w.fc_b, N, C, F);
                gelu_forward(a.act, a.fc, (size_t)N * F);
            } else {
                linear_forward(a.fc, m_in, w.fc_w, nullptr, N, C, 2 * F);
                swiglu_forward(a.act, a.fc, N, F);
            }
            memcpy(a.sum2, h, sizeof(float) * N * C);                           // sum2 = h + act @ Wd^T + bd
            linear_forward(a.sum2, a.act, w.mlp_proj_w, w.mlp_proj_b, N, F, C, 1.f);
            if (post) norm_forward(a.n2out, a.mean2, a.rstd2, a.sum2, w.norm2_w, w.norm2_b, N, C, c.norm_eps, rms);
        }
        norm_forward(nf_out, nf_mean, nf_rstd, resid[c.n_layer], W.norm_f_w, W.norm_f_b, N, C, c.norm_eps, rms);
        linear_forward(logits, nf_out, W.lm_head, nullptr, N, C, Vp);
        if (!tgt) return -1.f;
        loss = classifier_forward(losses, lse, logits, targets.data(), N, V, Vp);
        return loss;
    }

    // ------------------------------------------------------------------ backward
    // Accumulates d(loss * grad_scale)/d(params) into grads (call zero_grad
    // first; grad_scale = 1/accumulation steps). Uses the last forward's batch.
    void backward(int B_, int T_, float grad_scale = 1.f) {
        const ModelConfig& c = cfg;
        int N = B_ * T_, C = c.d_model, F = c.ffn, NH = c.n_head, V = c.vocab, Vp = c.padded_vocab;
        int fcw = c.gpt() ? F : 2 * F;
        bool rms = !c.gpt();
        size_t NC = (size_t)N * C;
        float* dx = dbuf.data();               // gradient w.r.t. the residual stream, updated in place
        float* d1 = dx + NC;                   // branch-input / norm scratch
        float* d2 = d1 + NC;
        float* dqkv = d2 + NC;
        float* datty = dqkv + 3 * NC;
        float* dfc = datty + NC;
        float* dact = dfc + (size_t)N * fcw;
        float* scratch = dact + (size_t)N * F;

        classifier_backward(logits, lse, targets.data(), N, V, Vp, grad_scale / N);   // logits now hold dlogits
        linear_backward(d1, G.lm_head, nullptr, logits, nf_out, W.lm_head, N, C, Vp, 0.f);
        norm_backward(dx, G.norm_f_w, G.norm_f_b, d1, resid[c.n_layer], W.norm_f_w, nf_mean, nf_rstd, N, C, rms, false);

        for (int l = c.n_layer - 1; l >= 0; l--) {
            const LayerW& w = W.layer[l];
            const LayerW& g = G.layer[l];
            LayerActs& a = acts[l];
            const float* x = resid[l];
            bool post = c.post_ln(l);
            const float* h = post ? a.n1out : a.sum1;
            const float* m_in = post ? h : a.n2out;
            const float* a_in = post ? x : a.n1out;

            // --- MLP sublayer: dsum2 is the gradient w.r.t. sum2 = h + MLP(m_in)
            float* dsum2;
            float* dh;
            if (post) {   // y = N2(sum2): dsum2 = N2'(dy); dh starts as the skip gradient
                norm_backward(d1, g.norm2_w, g.norm2_b, dx, a.sum2, w.norm2_w, a.mean2, a.rstd2, N, C, rms, false);
                dsum2 = d1;
                dh = d2;
                memcpy(dh, dsum2, sizeof(float) * NC);
            } else {      // y = sum2: the residual gradient flows through unchanged
                dsum2 = dx;
                dh = dx;
            }
            linear_backward(dact, g.mlp_proj_w, g.mlp_proj_b, dsum2, a.act, w.mlp_proj_w, N, F, C, 0.f);
            if (c.gpt()) gelu_backward(dfc, a.fc, dact, (size_t)N * F);
            else swiglu_backward(dfc, a.fc, dact, N, F);
            if (post) {   // m_in = h: add the branch gradient onto dh
                linear_backward(dh, g.fc_w, g.fc_b, dfc, m_in, w.fc_w, N, C, fcw, 1.f);
            } else {      // m_in = N2(h): dh += N2'(dm_in)
                linear_backward(d1, g.fc_w, g.fc_b, dfc, m_in, w.fc_w, N, C, fcw, 0.f);
                norm_backward(dh, g.norm2_w, g.norm2_b, d1, a.sum1, w.norm2_w, a.mean2, a.rstd2, N, C, rms, true);
            }

            // --- attention sublayer: dsum1 is the gradient w.r.t. sum1 = x + Attn(a_in)
            float* dsum1 = dx;
            if (post)     // h = N1(sum1)
                norm_backward(dsum1, g.norm1_w, g.norm1_b, dh, a.sum1, w.norm1_w, a.mean1, a.rstd1, N, C, rms, false);
            // (Pre-LN: h = sum1, and dh already is dx)
            linear_backward(datty, g.attn_proj_w, g.attn_proj_b, dsum1, a.atty, w.attn_proj_w, N, C, C, 0.f);
            attention_backward(dqkv, scratch, datty, a.qkv, a.att, B_, T_, C, NH, attn_block);
            if (!c.gpt()) rope_backward(dqkv, rope_cos.data(), rope_sin.data(), B_, T_, C, NH);
            if (post) {   // a_in = x: dx (= dsum1, the skip) += branch gradient
                linear_backward(dx, g.qkv_w, g.qkv_b, dqkv, a_in, w.qkv_w, N, C, 3 * C, 1.f);
            } else {      // a_in = N1(x)
                linear_backward(d1, g.qkv_w, g.qkv_b, dqkv, a_in, w.qkv_w, N, C, 3 * C, 0.f);
                norm_backward(dx, g.norm1_w, g.norm1_b, d1, x, w.norm1_w, a.mean1, a.rstd1, N, C, rms, true);
            }
        }
        embedding_backward(G.wte, G.wpe, dx, inputs.data(), B_, T_, C);
    }

    void zero_grad() { std::fill(grads.begin(), grads.end(), 0.f); }

    // ------------------------------------------------------------------ gradient norms
    // Squared L2 norm of every tensor's gradient (double accumulation), in table order.
    std::vector<double> grad_sq_per_tensor() const {
        std::vector<double> sq(table.t.size());
        for (size_t i = 0; i < table.t.size(); i++) {
            const float* g = grads.data() + table.t[i].offset;
            long n = (long)table.t[i].numel();
            double s = 0.0;
#pragma omp parallel for reduction(+ : s)
            for (long j = 0; j < n; j++) s += (double)g[j] * g[j];
            sq[i] = s;
        }
        return sq;
    }
    std::vector<float> layer_norms(const std::vector<double>& sq) const { return ::layer_norms(table, cfg.n_layer, sq); }   // common/run.h
    float group_norm(const std::vector<double>& sq, const char* prefix) const { return ::group_norm(table, sq, prefix); }

    // ------------------------------------------------------------------ AdamW
    // Decoupled weight decay (2-D tensors only), as torch.optim.AdamW:
    //   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
    //   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
    // with gradients first scaled by grad_scale (clipping).
    void adamw_update(float lr, float beta1, float beta2, float eps, float wd, float grad_scale) {
        step++;
        double bc1 = 1.0 - pow((double)beta1, step), bc2_sqrt = sqrt(1.0 - pow((double)beta2, step));
        float step_size = (float)(lr / bc1), inv_bc2 = (float)(1.0 / bc2_sqrt);
        for (const ParamTensor& p : table.t) {
            float decay = p.decay ? 1.f - lr * wd : 1.f;
            float* w = params.data() + p.offset;
            const float* g = grads.data() + p.offset;
            float* mm = m.data() + p.offset;
            float* vv = v.data() + p.offset;
            long n = (long)p.numel();
#pragma omp parallel for
            for (long i = 0; i < n; i++) {
                float gi = g[i] * grad_scale;
                mm[i] = beta1 * mm[i] + (1.f - beta1) * gi;
                vv[i] = beta2 * vv[i] + (1.f - beta2) * gi * gi;
                w[i] = w[i] * decay - step_size * mm[i] / (sqrtf(vv[i]) * inv_bc2 + eps);
            }
        }
    }
};

// ============================================================================
// Analyses of a trained model (docs/ANALYSIS.md)
// ============================================================================

// The residual streams at the last token of every sequence of the first `batches`
// validation batches (common/analysis.h forms the distances).
[[maybe_unused]] static AngularDistances angular_distances(Model& model, DataLoader& val, int batches) {
    const int L = model.cfg.n_layer, C = model.cfg.d_model, T = val.T;
    AngularDistances ad(L);
    val.reset();
    for (int it = 0; it < batches; it++) {
        val.next_batch();
        model.forward(val.inputs.data(), nullptr, val.B, T);
        for (int b = 0; b < val.B; b++) {
            const size_t row = ((size_t)b * T + T - 1) * C;
            std::vector<const float*> x(L + 1);
            for (int i = 0; i <= L; i++) x[i] = model.resid[i] + row;
            ad.add(x, C);
        }
    }
    return ad;
}

#ifndef TESTING
// ============================================================================
// Training: common/trainer.h drives the run (start or resume, banner, log, validation,
// sampling, checkpoints, signals, the step loop); CpuRun is this trainer's side of it.
// ============================================================================

struct CpuRun {
    Model model;
    int precision = PREC_FP32;   // always: the CPU trainer is fp32
    int nthreads = 1;
    // one process: the collectives are identities
    int rank() const { return 0; }
    int nranks() const { return 1; }
    void bcast(std::string*) {}
    int all_max(int x) { return x; }
    double all_sum(double x) { return x; }

    void init_model(const ModelConfig& c) { model.init(c); }
    void prepare(const TrainConfig& tc, bool analysis) {
        if (analysis)   // forwards only: the weights alone
            for (std::vector<float>* x : {&model.grads, &model.m, &model.v}) std::vector<float>().swap(*x);
        model.alloc_acts(tc.B, tc.T);
#ifdef _OPENMP
        nthreads = omp_get_max_threads();
#endif
    }
    // copied into the model's arrays (W and G point into them)
    void upload(const std::vector<float>& p, const std::vector<float>* m, const std::vector<float>* v) {
        if (p.size() != model.params.size()) fatal("internal: %zu values given, the model has %zu parameters", p.size(), model.params.size());
        std::copy(p.begin(), p.end(), model.params.begin());
        if (m) model.m = *m;
        if (v) model.v = *v;
    }
    float loss(const int* in, const int* tgt, int B, int T, int skip_layer) { return model.forward(in, tgt, B, T, skip_layer); }
    AngularDistances angular_distances(DataLoader& val, int steps) { return ::angular_distances(model, val, steps); }

    void sync() {}
    // zero the gradients, forward + backward over `accum` micro-batches, the norm, and AdamW
    // with clipping unless the loss or the norm is not finite; a stop request before a
    // micro-step ends the step there, nothing applied (StepResult::stopped_after)
    StepResult step(DataLoader& train, int accum, float lr, const TrainConfig& tc, bool poison, bool /*want_sq: always*/) {
        model.zero_grad();
        double loss = 0.0;
        for (int micro = 0; micro < accum; micro++) {
            if (stop_before_micro_step(nranks())) return StepResult::stopped(micro);
            train.next_batch();
            loss += model.forward(train.inputs.data(), train.targets.data(), tc.B, tc.T);
            model.backward(tc.B, tc.T, 1.f / accum);
        }
        loss /= accum;
        if (poison) model.grads[model.grads.size() / 2] = NAN;   // test hook (MIXLN_TEST_NAN_AT, common/trainer.h)
        StepResult r{loss, 0.f, false, model.grad_sq_per_tensor(), -1};
        r.norm = global_norm(r.sq);
        r.finite = std::isfinite(loss) && std::isfinite(r.norm);
        if (r.finite) model.adamw_update(lr, tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay, clip_scale(r.norm, tc.grad_clip));
        return r;
    }

    int sample_max_len() const { return model.cfg.max_seq_len; }
    // the logits of position t - 1 after the forward on seq[0..t)
    const float* sample_logits(const std::vector<int>& seq, int t) {
        model.forward(seq.data(), nullptr, 1, t);
        return model.logits + (size_t)(t - 1) * model.cfg.padded_vocab;
    }
    bool save(const std::string& path, long step, const TrainState& ts, std::string* err, int slow_ms) {
        return write_checkpoint(path, model.cfg, (int)step, model.params.data(), model.m.data(), model.v.data(), &ts, err, slow_ms);
    }

    void banner_head() const {
#ifndef NO_BLAS
        printf("blas: %s, %d OpenMP threads\n", openblas_get_config(), nthreads);
#else
        printf("blas: none (plain-loop matmuls, -DNO_BLAS), %d OpenMP threads\n", nthreads);
#endif
    }
    void banner_parallel() const {}
    void banner_tail() const {}
    std::string memory_mib() const {   // the banner's memory: AdamW's 16 bytes per parameter, the fp32 activations
        const double w = 16.0 * model.table.total / (1 << 20), a = 4.0 * (model.arena.size() + model.dbuf.size()) / (1 << 20);
        char b[128];
        snprintf(b, sizeof b, "memory %.1f MiB (weights, gradients, AdamW %.1f; activations %.1f)", w + a, w, a);
        return b;
    }
    void config_json(JsonLine& j) const { j.i("threads", nthreads); }
    double mfu(double, double) const { return -1.0; }   // no peak FLOP/s: the step line shows GFLOP/s
    std::string rate(double flops_tok, double tok_s, double) const {
        char b[48];
        snprintf(b, sizeof b, "%.1f GFLOP/s", flops_tok * tok_s / 1e9);
        return b;
    }
    void report_end(double, long, double, const TrainConfig&) const {}
    void shutdown() {}
};

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);   // progress lines appear as they happen, also in a log file
    TrainConfig tc;
    if (!parse_train_flags(argc, argv, tc)) return 0;
    CpuRun run;
    return train_or_analyse(tc, run);   // common/trainer.h
}
#endif
