/*
train_gpt.cpp: the CPU reference trainer for Mix-LN (fp32, OpenMP, BLAS).

One file: every op's forward and backward side by side, the model, AdamW, the
schedule and the training loop. The host code shared with the CUDA trainer
(config and flags, checkpoint and shard formats, data loader, schedule, RNG,
log) lives in common/. The math is documented in dev/model.py, the PyTorch
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
#include "common/logger.h"
#include "common/rng.h"
#include "common/run.h"
#include "common/sample.h"
#include "common/schedule.h"
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
// Linear layer: out[N,OC] = inp[N,C] @ W[OC,C]^T + b.
// `beta` = 1 accumulates into out (used to add a branch onto the residual).
// ============================================================================

static void matmul_forward(float* out, const float* inp, const float* W, const float* bias, int N, int C, int OC,
                           float beta = 0.f) {
    gemm(false, true, N, OC, C, 1.f, inp, C, W, C, beta, out, OC);
    if (bias) {
#pragma omp parallel for
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
    }
}

// dinp[N,C] (=, or += when dinp_beta = 1) dout @ W;  dW[OC,C] += dout^T @ inp;  db[OC] += sum_n dout.
static void matmul_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W,
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
// ============================================================================

static float crossentropy_forward(float* losses, float* lse, const float* logits, const int* targets, int N, int V, int Vp) {
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

static void crossentropy_backward(float* logits, const float* lse, const int* targets, int N, int V, int Vp, float dscale) {
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

// Pointers to one layer's tensors inside a flat array (parameters or gradients).
struct LayerTensors {
    float *norm1_w, *norm1_b, *qkv_w, *qkv_b, *attn_proj_w, *attn_proj_b;
    float *norm2_w, *norm2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;   // biases are null for llama
};
struct Tensors {
    float *wte, *wpe, *norm_f_w, *norm_f_b, *lm_head;   // lm_head == wte for gpt (tied)
    std::vector<LayerTensors> layer;
};

// Resolve every tensor by name through the parameter table (same for params and grads).
static Tensors tensors_in(const ParamTable& pt, const ModelConfig& c, float* base) {
    auto at = [&](const std::string& name) -> float* {
        for (const ParamTensor& p : pt.t)
            if (p.name == name) return base + p.offset;
        return nullptr;
    };
    Tensors w;
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
    Tensors W, G;
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
        if (!cfg.gpt()) {
            int half = cfg.head_dim() / 2;
            rope_cos.resize((size_t)cfg.max_seq_len * half);
            rope_sin.resize((size_t)cfg.max_seq_len * half);
            for (int t = 0; t < cfg.max_seq_len; t++)
                for (int i = 0; i < half; i++) {
                    double ang = t * pow((double)cfg.rope_theta, -2.0 * i / cfg.head_dim());
                    rope_cos[(size_t)t * half + i] = (float)cos(ang);
                    rope_sin[(size_t)t * half + i] = (float)sin(ang);
                }
        }
    }

    // The paper's initialisation (see dev/model.py Model.reset_parameters).
    void random_init(uint64_t seed) { init_params(table, cfg, seed, params.data()); }

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
            const LayerTensors& w = W.layer[l];
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
            matmul_forward(a.qkv, a_in, w.qkv_w, w.qkv_b, N, C, 3 * C);
            if (!c.gpt()) rope_forward(a.qkv, rope_cos.data(), rope_sin.data(), B_, T_, C, NH);
            attention_forward(a.atty, a.att, a.qkv, B_, T_, C, NH, attn_block);
            memcpy(a.sum1, x, sizeof(float) * N * C);                           // sum1 = x + atty @ Wo^T + bo
            matmul_forward(a.sum1, a.atty, w.attn_proj_w, w.attn_proj_b, N, C, C, 1.f);
            if (post) norm_forward(a.n1out, a.mean1, a.rstd1, a.sum1, w.norm1_w, w.norm1_b, N, C, c.norm_eps, rms);
            const float* h = post ? a.n1out : a.sum1;
            // MLP branch: input is N2(h) (Pre-LN) or h (Post-LN)
            if (!post) norm_forward(a.n2out, a.mean2, a.rstd2, h, w.norm2_w, w.norm2_b, N, C, c.norm_eps, rms);
            const float* m_in = post ? h : a.n2out;
            if (c.gpt()) {
                matmul_forward(a.fc, m_in, w.fc_w, w.fc_b, N, C, F);
                gelu_forward(a.act, a.fc, (size_t)N * F);
            } else {
                matmul_forward(a.fc, m_in, w.fc_w, nullptr, N, C, 2 * F);
                swiglu_forward(a.act, a.fc, N, F);
            }
            memcpy(a.sum2, h, sizeof(float) * N * C);                           // sum2 = h + act @ Wd^T + bd
            matmul_forward(a.sum2, a.act, w.mlp_proj_w, w.mlp_proj_b, N, F, C, 1.f);
            if (post) norm_forward(a.n2out, a.mean2, a.rstd2, a.sum2, w.norm2_w, w.norm2_b, N, C, c.norm_eps, rms);
        }
        norm_forward(nf_out, nf_mean, nf_rstd, resid[c.n_layer], W.norm_f_w, W.norm_f_b, N, C, c.norm_eps, rms);
        matmul_forward(logits, nf_out, W.lm_head, nullptr, N, C, Vp);
        if (!tgt) return -1.f;
        loss = crossentropy_forward(losses, lse, logits, targets.data(), N, V, Vp);
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

        crossentropy_backward(logits, lse, targets.data(), N, V, Vp, grad_scale / N);   // logits now hold dlogits
        matmul_backward(d1, G.lm_head, nullptr, logits, nf_out, W.lm_head, N, C, Vp, 0.f);
        norm_backward(dx, G.norm_f_w, G.norm_f_b, d1, resid[c.n_layer], W.norm_f_w, nf_mean, nf_rstd, N, C, rms, false);

        for (int l = c.n_layer - 1; l >= 0; l--) {
            const LayerTensors& w = W.layer[l];
            const LayerTensors& g = G.layer[l];
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
            matmul_backward(dact, g.mlp_proj_w, g.mlp_proj_b, dsum2, a.act, w.mlp_proj_w, N, F, C, 0.f);
            if (c.gpt()) gelu_backward(dfc, a.fc, dact, (size_t)N * F);
            else swiglu_backward(dfc, a.fc, dact, N, F);
            if (post) {   // m_in = h: add the branch gradient onto dh
                matmul_backward(dh, g.fc_w, g.fc_b, dfc, m_in, w.fc_w, N, C, fcw, 1.f);
            } else {      // m_in = N2(h): dh += N2'(dm_in)
                matmul_backward(d1, g.fc_w, g.fc_b, dfc, m_in, w.fc_w, N, C, fcw, 0.f);
                norm_backward(dh, g.norm2_w, g.norm2_b, d1, a.sum1, w.norm2_w, a.mean2, a.rstd2, N, C, rms, true);
            }

            // --- attention sublayer: dsum1 is the gradient w.r.t. sum1 = x + Attn(a_in)
            float* dsum1 = dx;
            if (post)     // h = N1(sum1)
                norm_backward(dsum1, g.norm1_w, g.norm1_b, dh, a.sum1, w.norm1_w, a.mean1, a.rstd1, N, C, rms, false);
            // (Pre-LN: h = sum1, and dh already is dx)
            matmul_backward(datty, g.attn_proj_w, g.attn_proj_b, dsum1, a.atty, w.attn_proj_w, N, C, C, 0.f);
            attention_backward(dqkv, scratch, datty, a.qkv, a.att, B_, T_, C, NH, attn_block);
            if (!c.gpt()) rope_backward(dqkv, rope_cos.data(), rope_sin.data(), B_, T_, C, NH);
            if (post) {   // a_in = x: dx (= dsum1, the skip) += branch gradient
                matmul_backward(dx, g.qkv_w, g.qkv_b, dqkv, a_in, w.qkv_w, N, C, 3 * C, 1.f);
            } else {      // a_in = N1(x)
                matmul_backward(d1, g.qkv_w, g.qkv_b, dqkv, a_in, w.qkv_w, N, C, 3 * C, 0.f);
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

    // Model FLOPs per token of a training step: 6 per matmul weight (forward 2,
    // backward 4) over every weight that is multiplied (not wpe, not the llama
    // input embedding lookup), plus 6 * L * C * T for attention's two T x T
    // products (counted causally: half of 12 L C T).
    double flops_per_token(int T_) const {
        double P = (double)table.total;
        if (cfg.gpt()) P -= (double)cfg.max_seq_len * cfg.d_model;
        else P -= (double)cfg.padded_vocab * cfg.d_model;
        return 6.0 * P + 6.0 * cfg.n_layer * cfg.d_model * (double)T_;
    }
};

// Mean loss over `steps` batches of a loader (validation).
[[maybe_unused]] static float evaluate(Model& model, DataLoader& loader, int steps) {
    loader.reset();
    double s = 0.0;
    for (int i = 0; i < steps; i++) {
        loader.next_batch();
        s += model.forward(loader.inputs.data(), loader.targets.data(), loader.B, loader.T);
    }
    return (float)(s / steps);
}

// The logits of position t - 1 after the forward on seq[0..t) (common/sample.h's callback).
[[maybe_unused]] static const float* sample_logits(Model& model, const std::vector<int>& seq, int t) {
    model.forward(seq.data(), nullptr, 1, t);
    return model.logits + (size_t)(t - 1) * model.cfg.padded_vocab;
}

// ============================================================================
// Analyses of a trained model (docs/ANALYSIS.md)
// ============================================================================

// The residual streams at the last token of every sequence of the first `batches`
// validation batches (common/analysis.h forms the distances).
static AngularDistances angular_distances(Model& model, DataLoader& val, int batches) {
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

// Mean validation loss over the first `batches` batches, optionally with one block removed.
static double val_loss_skipping(Model& model, DataLoader& val, int batches, int skip_layer) {
    val.reset();
    double s = 0.0;
    for (int it = 0; it < batches; it++) {
        val.next_batch();
        s += model.forward(val.inputs.data(), val.targets.data(), val.B, val.T, skip_layer);
    }
    return s / batches;
}

[[maybe_unused]] static int run_analysis(TrainConfig& tc, Model& model) {
    check_analysis_flags(tc);
    for (std::vector<float>* x : {&model.grads, &model.m, &model.v}) std::vector<float>().swap(*x);   // forwards only: the weights alone
    const ModelConfig& c = model.cfg;
    DataLoader val;
    val.init(tc.val_data, tc.B, tc.T, c.vocab);
    std::string out;
    if (tc.mode == "angular") {
        out = angular_distances(model, val, tc.val_steps).json_and_print();
    } else {
        out = layer_drop(c, [&](int skip) { return val_loss_skipping(model, val, tc.val_steps, skip); });
    }
    write_text_atomically(tc.analysis_out, out);
    return 0;
}

#ifndef TESTING
// ============================================================================
// Training
// ============================================================================

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);   // progress lines appear as they happen, also in a log file
    TrainConfig tc;
    if (!parse_train_flags(argc, argv, tc)) return 0;
#ifdef _OPENMP
    if (tc.threads > 0) omp_set_num_threads(tc.threads);
#endif
    if (tc.total_batch == 0) tc.total_batch = (long)tc.B * tc.T;
    Model model;
    CheckpointHeader resume_h;
    std::string resume_from = open_out_dir(tc);   // lock --out_dir; the newest checkpoint that verifies, if resuming
    if (!tc.init_from.empty() && resume_from.empty()) {
        CheckpointHeader h;
        std::vector<float> p;
        read_checkpoint(tc.init_from, &h, p);
        model.init(h.cfg);
        model.params = p;
        printf("init from %s (step %d)\n", tc.init_from.c_str(), h.step);
    } else {
        if (tc.model.n_layer == 0) fatal("no model given: use --preset NAME or --n_layer/--n_head/--d_model/--vocab (see --help)");
        tc.model.post_ln_layers = parse_placement(tc.placement, tc.model.n_layer);
        finalize_config(tc.model);
        model.init(tc.model);
        if (!resume_from.empty()) {
            std::vector<float> p;
            read_checkpoint(resume_from, &resume_h, p, &model.m, &model.v);
            check_resume_config(resume_h, tc, PREC_FP32, resume_from.c_str());
            model.params = p;
            model.step = resume_h.step;
        } else {
            model.random_init((uint64_t)tc.seed);
        }
    }
    tc.model = model.cfg;
    check_train_config(tc);
    if (tc.mode != "train") return run_analysis(tc, model);
    if (tc.train_data.empty()) fatal("--train_data is required (a glob of token shards; see data/ and README)");
    const ModelConfig& c = model.cfg;
    int accum = (int)(tc.total_batch / ((long)tc.B * tc.T));

    DataLoader train, val;
    train.init(tc.train_data, tc.B, tc.T, c.vocab, 0, 1, (uint64_t)tc.shuffle_seed);
    bool have_val = !tc.val_data.empty();
    if (have_val) val.init(tc.val_data, tc.B, tc.T, c.vocab);
    model.alloc_acts(tc.B, tc.T);
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

    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
#ifndef NO_BLAS
    printf("blas: %s, %d OpenMP threads\n", openblas_get_config(), nthreads);
#else
    printf("blas: none (plain-loop matmuls, -DNO_BLAS), %d OpenMP threads\n", nthreads);
#endif
    printf("model: %s, %s, L=%d H=%d C=%d ffn=%d vocab=%d (padded %d), %.2fM parameters\n", arch_name(c.arch),
           placement_name(c).c_str(), c.n_layer, c.n_head, c.d_model, c.ffn, c.vocab, c.padded_vocab, model.table.total / 1e6);
    printf("init: linear std %g, embedding std %g%s, scaled residual init %s\n", c.init_std, c.emb_std,
           fabsf(c.emb_std - 0.632456f) < 1e-4f ? " (the paper's code's sqrt(2/5))" : "", c.scaled_init ? "on" : "off");
    printf("train: B=%d T=%d, %ld tokens/step (%d micro-steps), %ld steps, lr %g warmup %ld floor %g, wd %g, clip %g\n",
           tc.B, tc.T, tc.total_batch, accum, tc.steps, tc.lr, tc.warmup, tc.lr_floor, tc.weight_decay, tc.grad_clip);
    printf("data: %s: %lld tokens in %zu shards%s; memory %.1f MiB (weights, gradients, AdamW %.1f; activations %.1f)\n",
           tc.train_data.c_str(), train.total_tokens(), train.shards.size(), have_val ? "" : " (no validation data)",
           (16.0 * model.table.total + 4.0 * (model.arena.size() + model.dbuf.size())) / (1 << 20),
           16.0 * model.table.total / (1 << 20), 4.0 * (model.arena.size() + model.dbuf.size()) / (1 << 20));
    if (!resume_from.empty())
        printf("resume: %s (step %ld, data epoch %lld shard %lld window %lld)\n", resume_from.c_str(), start_step,
               (long long)train.pos.epoch, (long long)train.pos.shard, (long long)train.pos.window);

    Logger log;
    log.open(tc.log_path, resume_from.empty() ? -1 : resume_h.train.log_offset);
    if (resume_from.empty())
        log.write(JsonLine().str("kind", "config").str("arch", arch_name(c.arch)).i("n_layer", c.n_layer).i("n_head", c.n_head)
                      .i("d_model", c.d_model).i("ffn", c.ffn).i("vocab", c.vocab).i("post_ln_layers", c.post_ln_layers)
                      .str("placement", placement_name(c)).f("emb_std", c.emb_std).f("init_std", c.init_std)
                      .i("scaled_init", c.scaled_init).i("B", tc.B).i("T", tc.T).i("total_batch", tc.total_batch)
                      .i("steps", tc.steps).f("lr", tc.lr).i("warmup", tc.warmup).f("lr_floor", tc.lr_floor)
                      .f("weight_decay", tc.weight_decay).f("grad_clip", tc.grad_clip).i("seed", tc.seed)
                      .i("params", (long long)model.table.total).i("threads", nthreads));

    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    double flops_tok = model.flops_per_token(tc.T);
    double total_ms = 0.0;
    long timed_steps = 0;
    auto do_val = [&](long step) {
        if (!have_val || tc.val_steps == 0) return;
        float vl = evaluate(model, val, tc.val_steps);
        printf("step %5ld | val loss %.4f | val ppl %.2f\n", step, vl, expf(vl));
        log.write(JsonLine().str("kind", "val").i("step", step).f("val_loss", vl).f("val_ppl", expf(vl)));
    };
    Sampler sampler;   // common/sample.h: text with --tokenizer, else token ids
    sampler.init(tc, c.vocab);
    auto do_sample = [&]() {
        if (tc.sample_tokens == 0) return;
        sampler.print(sampler.sample(sampler.prompt(train.inputs[0]), tc.sample_tokens, c.max_seq_len, sample_rng,
                                     [&](const std::vector<int>& seq, int t) { return sample_logits(model, seq, t); }));
    };
    // Write a checkpoint of the state after `step` optimizer steps; prune old ones.
    auto save = [&](long step) -> bool {
        if (tc.out_dir.empty()) return false;
        TrainState ts;
        ts.loader_epoch = train.pos.epoch; ts.loader_shard = train.pos.shard; ts.loader_window = train.pos.window;
        memcpy(ts.rng, sample_rng.s, sizeof ts.rng);
        ts.log_offset = log.offset();
        ts.B = tc.B; ts.T = tc.T; ts.total_batch = tc.total_batch; ts.shuffle_seed = tc.shuffle_seed; ts.skipped_steps = skipped;
        ts.run_id = tc.run_id;
        std::string path = ckpt_path(tc.out_dir, step), err;
        if (!write_checkpoint(path, c, (int)step, model.params.data(), model.m.data(), model.v.data(), &ts, &err,
                              tc.debug_slow_ckpt_ms)) {
            fprintf(stderr, "error: checkpoint at step %ld not saved: %s\n", step, err.c_str());
            return false;
        }
        printf("wrote checkpoint %s\n", path.c_str());
        prune_checkpoints(tc.out_dir, tc.keep_ckpts, tc.milestone_every, tc.run_id);
        return true;
    };

    for (long step = start_step; step < tc.steps; step++) {
        StepStart at(train, sample_rng, log);   // what a stop in the middle of this step returns to
        if (tc.val_every > 0 && step % tc.val_every == 0) do_val(step);   // (a resumed run repeats the val its checkpoint preceded)
        if (tc.sample_every > 0 && step > 0 && step % tc.sample_every == 0) do_sample();
        auto t0 = std::chrono::steady_clock::now();
        model.zero_grad();
        double loss = 0.0;
        int micro = 0;
        for (; micro < accum && !stop_requested(); micro++) {
            train.next_batch();
            loss += model.forward(train.inputs.data(), train.targets.data(), tc.B, tc.T);
            model.backward(tc.B, tc.T, 1.f / accum);
        }
        if (micro < accum) return at.stop(step, micro, accum, !tc.out_dir.empty(), save);   // SIGINT/SIGTERM mid-step
        loss /= accum;
        if (step == tc.inject_nan_at) model.grads[model.grads.size() / 2] = NAN;
        std::vector<double> sq = model.grad_sq_per_tensor();
        float norm = global_norm(sq);
        float lr = (float)lr_at(step, tc.lr, tc.warmup, tc.steps, tc.lr_floor);
        bool finite = std::isfinite(loss) && std::isfinite(norm);
        if (finite) model.adamw_update(lr, tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay, clip_scale(norm, tc.grad_clip));
        else handle_nonfinite(step, loss, norm, tc, &skipped, save);
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (step > start_step || tc.steps - start_step == 1) { total_ms += ms; timed_steps++; }
        double tok_s = tc.total_batch / (ms / 1000.0);
        double eta_s = (timed_steps ? total_ms / timed_steps : ms) * (tc.steps - step - 1) / 1000.0;
        bool layer_norms = tc.layer_norms_every > 0 && step % tc.layer_norms_every == 0;
        if (step % tc.print_every == 0 || step == tc.steps - 1)
            printf("step %5ld/%ld | loss %.4f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s | %.1f GFLOP/s | eta %.0fs\n", step + 1,
                   tc.steps, loss, norm, lr, ms, tok_s, flops_tok * tok_s / 1e9, eta_s);
        JsonLine j = step_json(step, loss, norm, lr, ms, tok_s, finite, skipped);
        if (layer_norms)
            add_layer_norms(j, model.layer_norms(sq), model.group_norm(sq, "w"), model.group_norm(sq, "norm_f"), !c.gpt(),
                            model.group_norm(sq, "lm_head"));
        log.write(j);
        int rc = stop_if_signalled(step + 1, !tc.out_dir.empty(), save);
        if (rc >= 0) return rc;
        if (tc.ckpt_every > 0 && (step + 1) % tc.ckpt_every == 0 && step + 1 < tc.steps) save(step + 1);
    }
    do_val(tc.steps);
    do_sample();
    if (!tc.out_dir.empty() && !save(tc.steps)) return 1;
    if (skipped) printf("%d update(s) skipped for non-finite values\n", skipped);
    return log.failed ? 1 : 0;
}
#endif
