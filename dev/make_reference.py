"""
Writes the reference states that test_gpt.cpp (and later test_gpt.cu) check
against: one file per tiny config, format in docs/FORMATS.md ("Reference state").

    /usr/bin/python3 dev/make_reference.py [--out dev/reference]
    /usr/bin/python3 dev/make_reference.py --check dev/reference   # regenerate to a temp dir, compare
    /usr/bin/python3 dev/make_reference.py --set extra --out DIR   # the unstored shapes (tests)
    /usr/bin/python3 dev/make_reference.py --margins               # how well the states discriminate

The model runs in float64 from float32-rounded weights, so the stored values
(rounded to float32) are the exact answer to within float32 rounding; the C++
fp32 code is then judged by its own error alone.
"""
import argparse
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Model, lr_at, make_optimizer  # noqa: E402
import formats  # noqa: E402

# The stored configs: {gpt, llama} x {Pre-LN, Mix-LN, Post-LN}, plus one deeper
# llama with odd sizes. Vocab sizes are deliberately not multiples of 64.
CONFIGS = {
    "gpt_pre":    dict(arch="gpt", n_layer=4, n_head=4, d_model=32, vocab=251, max_seq_len=24, post_ln_layers=0),
    "gpt_mix":    dict(arch="gpt", n_layer=4, n_head=4, d_model=32, vocab=251, max_seq_len=24, post_ln_layers=1,
                       scaled_init=1),
    "gpt_post":   dict(arch="gpt", n_layer=4, n_head=4, d_model=32, vocab=251, max_seq_len=24, post_ln_layers=4),
    "llama_pre":  dict(arch="llama", n_layer=4, n_head=2, d_model=32, ffn=88, vocab=251, max_seq_len=16,
                       post_ln_layers=0),
    "llama_mix":  dict(arch="llama", n_layer=4, n_head=2, d_model=32, ffn=88, vocab=251, max_seq_len=16,
                       post_ln_layers=1, emb_std=math.sqrt(2 / 5)),
    "llama_post": dict(arch="llama", n_layer=4, n_head=2, d_model=32, ffn=88, vocab=251, max_seq_len=16,
                       post_ln_layers=4),
    "llama_mix6": dict(arch="llama", n_layer=6, n_head=4, d_model=48, ffn=100, vocab=300, max_seq_len=20,
                       post_ln_layers=2, scaled_init=1),
}
BATCH = {"llama_mix6": (3, 20)}          # (B, T); default (2, 16)

# A second set, not stored: generated at test time into a scratch folder (--set extra) and
# checked like the stored ones, so the trainers also meet shapes they were not developed
# against: head sizes 8, 12, 16, 24 (not multiples of 16; 12 not of 8: the scalar paths)
# and 80 (over flash attention's 64: the materialised attention in bf16 too), sequences of
# 9-70 tokens (70 crosses a 64-row flash tile), B = 1 and 3, one head, odd vocabs.
EXTRA_CONFIGS = {
    "x_gpt_odd":   dict(arch="gpt", n_layer=3, n_head=3, d_model=48, vocab=257, max_seq_len=20, post_ln_layers=2),
    "x_gpt_hd12":  dict(arch="gpt", n_layer=2, n_head=3, d_model=36, vocab=77, max_seq_len=12, post_ln_layers=0),
    "x_gpt_t70":   dict(arch="gpt", n_layer=2, n_head=2, d_model=48, vocab=301, max_seq_len=80, post_ln_layers=1,
                        scaled_init=1),
    "x_llama_odd": dict(arch="llama", n_layer=3, n_head=3, d_model=24, ffn=40, vocab=129, max_seq_len=11,
                        post_ln_layers=1),
    "x_llama_hd80": dict(arch="llama", n_layer=2, n_head=1, d_model=80, ffn=72, vocab=64, max_seq_len=9,
                         post_ln_layers=2),
    "x_llama_t70": dict(arch="llama", n_layer=2, n_head=2, d_model=64, ffn=136, vocab=333, max_seq_len=70,
                        post_ln_layers=1),
}
BATCH.update({"x_gpt_odd": (3, 13), "x_gpt_hd12": (2, 12), "x_gpt_t70": (1, 70), "x_llama_odd": (1, 11),
              "x_llama_hd80": (2, 9), "x_llama_t70": (1, 70)})
OPT = dict(lr=0.0, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=0.0,
           warmup=3, total=10, lr_floor=0.1)      # lr: OPT_LR by arch; grad_clip: clip_threshold()
OPT_LR = {"gpt": 1e-2, "llama": 3e-3}
EXTRA_LR, EXTRA_CLIP = 3e-3, 1.0                    # the extra set: one LR, a fixed threshold
N_STEPS = 10

# The stored weights are not a fresh initialisation: at std 0.02 every sublayer barely moves the
# residual stream, and a wrong placement, norm eps or RoPE pairing changes the logits by less than
# the tests' tolerance. So the states use linear weights of std SHARP_INIT_STD (each sublayer
# changes the stream by about its own size; llama, whose SwiGLU multiplies two projections, half
# that, and a third of gpt's peak LR (OPT_LR), or its 10-step trajectory amplifies round-off
# beyond the step tolerances: fp32's of test_gpt.cpp, bf16's of test_gpt.cu), norm weights 1 + N(0, SHARP_NORM_W) and biases
# N(0, SHARP_NORM_B) (a norm is no longer a plain rescaling), and embeddings of std SHARP_EMB_STD
# (the first norms see a small variance, where eps matters). MIN_MARGINS are what margins()
# checks: how far, in multiples of the trainers' fp32 tolerance (test_gpt.cpp), the logits move
# when K is one off, eps is 10x, or RoPE pairs (2i, 2i+1) instead of (i, i + hd/2), and how far
# the step losses move when the clipping threshold is 0.9x.
SHARP_INIT_STD = {"gpt": 0.2, "llama": 0.1}
SHARP_NORM_W, SHARP_NORM_B, SHARP_EMB_STD = 0.3, 0.2, 0.02
TOL_LOGITS, TOL_STEP_LOSS = 1e-5, 1e-5            # test_gpt.cpp's fp32 tolerances
MIN_MARGINS = {"K": 100.0, "eps": 100.0, "rope": 100.0, "clip": 10.0}


def build_model(name, kw, **override):
    """The state's model (float64, weights rounded to float32) and its batch. The stored set is
    sharpened (SHARP_*); the extra set keeps a fresh initialisation (it checks shapes)."""
    sharp = name in CONFIGS
    cfg = Config(**dict(kw, **({"init_std": SHARP_INIT_STD[kw["arch"]]} if sharp else {}), **override))
    seed = sum(map(ord, name))
    model = Model(cfg)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if not sharp:
                break
            if "norm" in pname and pname.endswith("weight"):
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64) * SHARP_NORM_W)
            elif "norm" in pname and pname.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64) * SHARP_NORM_B)
            elif pname in ("wte.weight", "wpe.weight"):
                p.mul_(SHARP_EMB_STD / float(p[: cfg.vocab].std()))     # padded vocab rows stay 0
        for p in model.parameters():       # what the checkpoint stores; computed in float64
            p.copy_(p.float().double())
    model.double()
    B, T = BATCH.get(name, (2, 16))
    seq = torch.randint(0, cfg.vocab, (B, T + 1), generator=torch.Generator().manual_seed(seed + 1))
    return model, cfg, seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def run_steps(model, inputs, targets, grad_clip, peak):
    """N_STEPS of AdamW + global-norm clipping + schedule (peak LR) on one batch: (lrs, losses, norms)."""
    opt = make_optimizer(model, peak, OPT["beta1"], OPT["beta2"], OPT["eps"], OPT["weight_decay"])
    params = [t for _, t, _, _ in model.param_table()]
    lrs, losses, norms = [], [], []
    for step in range(N_STEPS):
        lr = lr_at(step, peak, OPT["warmup"], OPT["total"], OPT["lr_floor"])
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.zero_grad(set_to_none=True)
        _, loss = model(inputs, targets)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        opt.step()
        lrs.append(lr); losses.append(float(loss)); norms.append(norm)
    return lrs, losses, norms


def clip_threshold(name, kw):
    """The median gradient norm of an unclipped run (as float32): some steps clip, others do
    not. (Adam ignores a constant gradient scale, so a threshold that clips every step, or none,
    would leave the step losses unchanged.)"""
    model, _, inputs, targets = build_model(name, kw)
    return float(np.float32(np.median(run_steps(model, inputs, targets, math.inf, OPT_LR[kw["arch"]])[2])))


def make_state(name, kw):
    model, cfg, inputs, targets = build_model(name, kw)
    table = model.param_table()
    ckpt = formats.checkpoint_bytes(cfg, [t.detach() for _, t, _, _ in table])

    logits, loss = model(inputs, targets)
    loss.backward()
    grads = [t.grad.detach().clone() for _, t, _, _ in table]
    layer_norms = model.layer_grad_norms()
    total_norm = math.sqrt(sum(float((g_ ** 2).sum()) for g_ in grads))
    first = dict(logits=logits.detach(), loss=float(loss), grads=grads,
                 layer_norms=layer_norms, total_norm=total_norm)
    if name in CONFIGS:
        opt = dict(OPT, lr=OPT_LR[cfg.arch], grad_clip=clip_threshold(name, kw))
    else:
        opt = dict(OPT, lr=EXTRA_LR, grad_clip=EXTRA_CLIP)
    model.zero_grad(set_to_none=True)
    lrs, losses, norms = run_steps(model, inputs, targets, opt["grad_clip"], opt["lr"])
    return formats.state_bytes(cfg, table, ckpt, inputs, targets, first, opt, lrs, losses, norms)


def interleaved_rope(x, cos, sin):
    """The other RoPE convention (pairs (2i, 2i+1)): a variant the states must tell apart."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)


def margins(name, kw):
    """How far each wrong variant lands from the state, in multiples of the fp32 tolerance:
    {variant: margin}. Logits for K +- 1, eps x10 and interleaved RoPE; step losses for a
    clipping threshold of 0.9x."""
    model, cfg, inputs, targets = build_model(name, kw)
    with torch.no_grad():
        ref = model(inputs)[0]
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())  # noqa: E731
    out = {}
    for k in (cfg.post_ln_layers - 1, cfg.post_ln_layers + 1):
        if 0 <= k <= cfg.n_layer:
            with torch.no_grad():
                out[f"K={k}"] = rel(build_model(name, kw, post_ln_layers=k)[0](inputs)[0], ref) / TOL_LOGITS
    with torch.no_grad():
        out["eps x10"] = rel(build_model(name, kw, norm_eps=cfg.norm_eps * 10)[0](inputs)[0], ref) / TOL_LOGITS
    if cfg.arch == "llama":
        import model as model_module
        saved, model_module.apply_rope = model_module.apply_rope, interleaved_rope
        try:
            with torch.no_grad():
                out["rope interleaved"] = rel(model(inputs)[0], ref) / TOL_LOGITS
        finally:
            model_module.apply_rope = saved
    clip = clip_threshold(name, kw)
    peak = OPT_LR[cfg.arch]
    losses = torch.tensor(run_steps(build_model(name, kw)[0], inputs, targets, clip, peak)[1])
    losses_09 = torch.tensor(run_steps(build_model(name, kw)[0], inputs, targets, clip * 0.9, peak)[1])
    out["clip x0.9"] = rel(losses_09, losses) / TOL_STEP_LOSS
    return out


def check_margins(name, kw):
    """Prints the margins of one state; returns False if any is below its minimum."""
    m = margins(name, kw)
    need = lambda v: MIN_MARGINS["K" if v.startswith("K=") else v.split()[0]]  # noqa: E731
    low = [v for v in m if m[v] < need(v)]
    print(f"margins {name}: " + ", ".join(f"{v} {x:.0f}x" for v, x in m.items()) +
          (f"  BELOW MINIMUM: {', '.join(low)}" if low else ""))
    return not low


# --check judges each float tensor of a regenerated state against the stored one on the
# tensor's own scale: |a - b| <= CHECK_REL * max|stored tensor| + CHECK_ABS. Summation order
# differs between BLAS kernels (OpenBLAS picks one per CPU), so values that are mathematically
# zero (the key-bias gradient: softmax ignores a constant added to a row of scores) come out as
# float64 round-off of either sign and any size below ~1e-18; float32 rounding of the rest can
# land on either side of a tie (6e-8 relative). Both pass; a real change of 1e-6 of a tensor's
# scale does not. Header words, the parameter table and the token ids must match exactly.
CHECK_REL, CHECK_ABS = 1e-6, 1e-12


def compare_states(stored, fresh):
    """(ok, message): every part of two reference states, each named tensor on its own scale."""
    try:
        a_parts, b_parts = formats.read_state(stored), formats.read_state(fresh)
    except ValueError as e:
        return False, f"unreadable: {e}"
    if [(n, v.size) for n, _, v in a_parts] != [(n, v.size) for n, _, v in b_parts]:
        return False, "the files have different layouts (config, table or sizes)"
    worst, worst_name, bad = 0.0, "", []
    for (name, kind, a), (_, _, b) in zip(a_parts, b_parts):
        if kind == "exact":
            if not np.array_equal(a, b):
                bad.append(f"{name} differs")
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if not np.all(np.isfinite(b64)):
            bad.append(f"{name} has non-finite values"); continue
        tol = CHECK_REL * (float(np.abs(a64).max()) if a64.size else 0.0) + CHECK_ABS
        err = float(np.abs(a64 - b64).max()) if a64.size else 0.0
        if err / tol > worst:
            worst, worst_name = err / tol, name
        if err > tol:
            bad.append(f"{name} off by {err:.3e} (tolerance {tol:.3e})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        return False, "; ".join(bad[:3]) + more
    if stored == fresh:
        return True, "bitwise identical to the regenerated state"
    return True, f"every tensor within tolerance; worst {worst_name} at {worst:.2e} of its tolerance"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
    ap.add_argument("--check", metavar="DIR", help="regenerate into a temp dir and compare with DIR")
    ap.add_argument("--only", help="comma-separated config names")
    ap.add_argument("--margins", action="store_true",
                    help="only print and check how far wrong variants land from each state (MIN_MARGINS)")
    ap.add_argument("--set", choices=("stored", "extra"), default="stored",
                    help="stored: the committed states (default); extra: EXTRA_CONFIGS, for a scratch --out")
    args = ap.parse_args()
    torch.manual_seed(0)
    configs = CONFIGS if args.set == "stored" else EXTRA_CONFIGS
    names = args.only.split(",") if args.only else list(configs)
    for n in names:
        if n not in configs:
            sys.exit(f"make_reference: unknown config '{n}' (have: {', '.join(configs)})")
    if args.margins or (args.set == "stored" and not args.check):
        # a stored state must discriminate (see SHARP_*): refuse to write one that does not
        low = [n for n in names if not check_margins(n, configs[n])]
        if low:
            sys.exit(f"make_reference: margins below minimum for {', '.join(low)}")
        if args.margins:
            return
    out = tempfile.mkdtemp(prefix="mixln_ref_") if args.check else args.out
    os.makedirs(out, exist_ok=True)
    for n in names:
        data = make_state(n, configs[n])
        path = os.path.join(out, n + ".bin")
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        print(f"wrote {path} ({len(data)} bytes)")
    if args.check:
        bad = 0
        for n in names:
            stored = os.path.join(args.check, n + ".bin")
            if not os.path.exists(stored):
                print(f"MISSING {n}: no stored file in {args.check}"); bad += 1
                continue
            ok, msg = compare_states(open(stored, "rb").read(), open(os.path.join(out, n + ".bin"), "rb").read())
            print(f"{'match  ' if ok else 'DIFFER '} {n}: {msg}")
            bad += not ok
        shutil.rmtree(out)
        print(f"reference check: {len(names) - bad} match, {bad} differ")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
