"""
PyTorch reference model for the Mix-LN trainer: the source of truth.

Everything the C++ and CUDA trainers compute is checked against this file
(dev/make_reference.py runs it and writes the reference states). It is written
to be read: one class per piece, the math in plain torch ops, no fused kernels.
Runs on Debian's python3-torch 1.13 (CPU): `/usr/bin/python3`.

Two architectures (docs/FORMATS.md lists their parameter tables):

  gpt    LayerNorm (weight+bias), learned positions, causal MHA with biases,
         MLP 4C with tanh-GELU and biases, LM head tied to the token embedding
  llama  RMSNorm (weight only), RoPE (rotate-half), causal MHA without biases,
         SwiGLU MLP down(silu(gate x) * up x), untied LM head

Norm placement, per layer l (0-based), with K = post_ln_layers and N the norm:
  l <  K  Post-LN:  h = N_a(x + Attn(x));     y = N_f(h + MLP(h))
  l >= K  Pre-LN:   h = x + Attn(N_a(x));     y = h + MLP(N_f(h))
The final norm is always applied before the LM head. K = 0 is Pre-LN, K = L is
Post-LN, the paper's Mix-LN is K = floor(0.25 L).

The vocabulary is padded to `padded_vocab` rows (a multiple of 128) in the
embedding and LM head so matmuls stay aligned; the padded rows start at zero
and the loss only looks at the first `vocab` logits, so they never train.
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("gpt", "llama")


@dataclass
class Config:
    arch: str = "llama"
    n_layer: int = 12
    n_head: int = 8
    d_model: int = 512
    ffn: int = 0                 # MLP hidden size; 0 means 4*d_model (gpt) / required for llama
    vocab: int = 32000
    padded_vocab: int = 0        # 0 means round vocab up to a multiple of 128
    max_seq_len: int = 256
    post_ln_layers: int = 0      # K: layers [0, K) are Post-LN, [K, L) Pre-LN
    norm_eps: float = 0.0        # 0 means the architecture's default
    rope_theta: float = 10000.0
    init_std: float = 0.02       # std of every linear weight
    emb_std: float = 0.02        # std of the token embedding (the paper's code: sqrt(2/5))
    scaled_init: int = 0         # 1: residual output projections get init_std/sqrt(2L)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.ffn == 0:
            if self.arch == "llama":
                raise ValueError("llama needs an explicit ffn (SwiGLU hidden size)")
            self.ffn = 4 * self.d_model
        if self.padded_vocab == 0:
            self.padded_vocab = (self.vocab + 127) // 128 * 128
        if self.norm_eps == 0.0:
            self.norm_eps = 1e-5 if self.arch == "gpt" else 1e-6
        if not 0 <= self.post_ln_layers <= self.n_layer:
            raise ValueError(f"post_ln_layers must be in [0, n_layer={self.n_layer}], "
                             f"got {self.post_ln_layers}")
        if self.d_model % self.n_head:
            raise ValueError("d_model must be divisible by n_head")
        if self.arch == "llama" and (self.d_model // self.n_head) % 2:
            raise ValueError("RoPE needs an even head dimension")
        if self.padded_vocab < self.vocab:
            raise ValueError("padded_vocab < vocab")


# ----------------------------------------------------------------------------- norms

class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * w + b, biased variance over the last dim."""
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * w."""
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(cfg):
    return LayerNorm(cfg.d_model, cfg.norm_eps) if cfg.arch == "gpt" else RMSNorm(cfg.d_model, cfg.norm_eps)


# ----------------------------------------------------------------------------- attention

def rope_tables(cfg, T, dtype):
    """cos/sin of shape (T, hd/2): angle(t, i) = t * theta^(-2i/hd)."""
    hd = cfg.d_model // cfg.n_head
    inv_freq = cfg.rope_theta ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2.0 / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Rotate-half RoPE on x of shape (B, H, T, hd): pairs (i, i + hd/2) are rotated."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Causal multi-head attention with a fused qkv projection.
    qkv weight is (3C, C): rows [0,C) make q, [C,2C) k, [2C,3C) v; head h owns
    columns [h*hd, (h+1)*hd) of each."""
    def __init__(self, cfg):
        super().__init__()
        bias = cfg.arch == "gpt"
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=bias)

    def forward(self, x):
        B, T, C = x.shape
        H = self.cfg.n_head
        hd = C // H
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))   # (B, H, T, hd)
        if self.cfg.arch == "llama":
            cos, sin = rope_tables(self.cfg, T, x.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)                     # (B, H, T, T)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.proj(y)


# ----------------------------------------------------------------------------- MLPs

class GeluMLP(nn.Module):
    """proj(gelu_tanh(fc x)), fc: (ffn, C), proj: (C, ffn)."""
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.ffn)
        self.proj = nn.Linear(cfg.ffn, cfg.d_model)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class SwiGLU(nn.Module):
    """down(silu(gate x) * up x). gate and up are fused in one (2*ffn, C) weight:
    rows [0, ffn) are gate, rows [ffn, 2*ffn) are up; down is (C, ffn)."""
    def __init__(self, cfg):
        super().__init__()
        self.ffn = cfg.ffn
        self.fc = nn.Linear(cfg.d_model, 2 * cfg.ffn, bias=False)
        self.proj = nn.Linear(cfg.ffn, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.fc(x).split(self.ffn, dim=-1)
        return self.proj(F.silu(gate) * up)


# ----------------------------------------------------------------------------- block

class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.post_ln = layer < cfg.post_ln_layers
        self.norm1 = make_norm(cfg)
        self.attn = Attention(cfg)
        self.norm2 = make_norm(cfg)
        self.mlp = GeluMLP(cfg) if cfg.arch == "gpt" else SwiGLU(cfg)

    def forward(self, x):
        if self.post_ln:                      # Post-LN: normalise the residual sum
            h = self.norm1(x + self.attn(x))
            return self.norm2(h + self.mlp(h))
        h = x + self.attn(self.norm1(x))      # Pre-LN: normalise the branch input
        return h + self.mlp(self.norm2(h))


# ----------------------------------------------------------------------------- model

class Model(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.padded_vocab, cfg.d_model)
        if cfg.arch == "gpt":
            self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, l) for l in range(cfg.n_layer))
        self.norm_f = make_norm(cfg)
        if cfg.arch == "llama":
            self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab, bias=False)
        self.reset_parameters(torch.Generator().manual_seed(0))

    def reset_parameters(self, gen):
        """The paper's initialisation: linear weights N(0, init_std), residual
        output projections N(0, init_std/sqrt(2L)) with scaled_init, norm weights
        1, biases 0, token embedding N(0, emb_std), padded vocab rows 0."""
        cfg = self.cfg
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm_f.weight":
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    std = cfg.init_std
                    if name == "wte.weight":
                        std = cfg.emb_std
                    elif cfg.scaled_init and (name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight")):
                        std = cfg.init_std / math.sqrt(2 * cfg.n_layer)
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)
            self.wte.weight[cfg.vocab:].zero_()
            if cfg.arch == "llama":
                self.lm_head.weight[cfg.vocab:].zero_()

    def head_weight(self):
        return self.wte.weight if self.cfg.arch == "gpt" else self.lm_head.weight

    def hidden_states(self, idx, skip_layer=-1):
        """Residual stream entering each layer: list of L+1 tensors (B, T, C),
        the last one is the output of the last block (before the final norm).
        skip_layer >= 0 replaces that block by the identity."""
        B, T = idx.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}")
        x = self.wte(idx)
        if self.cfg.arch == "gpt":
            x = x + self.wpe(torch.arange(T))
        hs = [x]
        for l, block in enumerate(self.blocks):
            if l != skip_layer:
                x = block(x)
            hs.append(x)
        return hs

    def forward(self, idx, targets=None, skip_layer=-1):
        """Returns logits over the real vocabulary (B, T, vocab) and the mean
        cross-entropy loss when targets are given."""
        x = self.hidden_states(idx, skip_layer)[-1]
        logits = self.norm_f(x) @ self.head_weight().t()
        logits = logits[..., : self.cfg.vocab]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    # ------------------------------------------------------------------ parameter table
    def param_table(self):
        """(name, tensor, layer, decay) in the checkpoint order of docs/FORMATS.md:
        layer-major, so all parameters of one layer are one contiguous slice.
        layer = -1 for the embeddings, n_layer for the final norm and LM head.
        decay: AdamW weight decay applies to 2-D tensors (matrices, embeddings)."""
        L = self.cfg.n_layer
        rows = [("wte", self.wte.weight, -1)]
        if self.cfg.arch == "gpt":
            rows.append(("wpe", self.wpe.weight, -1))
        for l, b in enumerate(self.blocks):
            p = f"l{l}."
            if self.cfg.arch == "gpt":
                rows += [(p + "norm1.w", b.norm1.weight, l), (p + "norm1.b", b.norm1.bias, l),
                         (p + "qkv.w", b.attn.qkv.weight, l), (p + "qkv.b", b.attn.qkv.bias, l),
                         (p + "attn_proj.w", b.attn.proj.weight, l), (p + "attn_proj.b", b.attn.proj.bias, l),
                         (p + "norm2.w", b.norm2.weight, l), (p + "norm2.b", b.norm2.bias, l),
                         (p + "fc.w", b.mlp.fc.weight, l), (p + "fc.b", b.mlp.fc.bias, l),
                         (p + "mlp_proj.w", b.mlp.proj.weight, l), (p + "mlp_proj.b", b.mlp.proj.bias, l)]
            else:
                rows += [(p + "norm1.w", b.norm1.weight, l), (p + "qkv.w", b.attn.qkv.weight, l),
                         (p + "attn_proj.w", b.attn.proj.weight, l), (p + "norm2.w", b.norm2.weight, l),
                         (p + "fc.w", b.mlp.fc.weight, l), (p + "mlp_proj.w", b.mlp.proj.weight, l)]
        if self.cfg.arch == "gpt":
            rows += [("norm_f.w", self.norm_f.weight, L), ("norm_f.b", self.norm_f.bias, L)]
        else:
            rows += [("norm_f.w", self.norm_f.weight, L), ("lm_head.w", self.lm_head.weight, L)]
        return [(n, t, l, int(t.dim() >= 2)) for n, t, l in rows]

    def layer_grad_norms(self):
        """sqrt(sum over the parameters of layer l of ||grad||^2), l = 0..L-1."""
        sq = [0.0] * self.cfg.n_layer
        for _, t, l, _ in self.param_table():
            if 0 <= l < self.cfg.n_layer and t.grad is not None:
                sq[l] += float((t.grad.double() ** 2).sum())
        return [math.sqrt(s) for s in sq]


# ----------------------------------------------------------------------------- schedule

def lr_at(step, max_lr, warmup, total, floor):
    """Linear warmup over `warmup` steps (step 0 already gets max_lr/warmup), then
    cosine decay from max_lr to floor*max_lr at step `total`-1 and after."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if total <= warmup + 1:
        return max_lr * floor
    progress = min(1.0, (step - warmup) / (total - warmup - 1))
    return max_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model, lr, beta1, beta2, eps, weight_decay):
    """AdamW (decoupled weight decay) with decay only on 2-D tensors."""
    decay = [t for _, t, _, d in model.param_table() if d]
    no_decay = [t for _, t, _, d in model.param_table() if not d]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(beta1, beta2), eps=eps)


def config_dict(cfg):
    return asdict(cfg)
