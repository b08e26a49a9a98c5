"""
Writes the reference states that test_gpt.cpp (and later test_gpt.cu) check
against: one file per tiny config, format in docs/FORMATS.md ("Reference state").

    /usr/bin/python3 dev/make_reference.py [--out dev/reference]
    /usr/bin/python3 dev/make_reference.py --check dev/reference   # regenerate to a temp dir, compare
    /usr/bin/python3 dev/make_reference.py --set extra --out DIR   # the unstored shapes (tests)

The model runs in float64 from float32-rounded weights, so the stored values
(rounded to float32) are the exact answer to within float32 rounding; the C++
fp32 code is then judged by its own error alone.
"""
import argparse
import math
import os
import struct
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
OPT = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0,
           warmup=3, total=10, lr_floor=0.1)
N_STEPS = 10


def make_state(name, kw):
    cfg = Config(**kw)
    seed = sum(map(ord, name))
    model = Model(cfg)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    # round the initial weights to float32 (what the checkpoint stores), compute in float64
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.float().double())
    model.double()
    B, T = BATCH.get(name, (2, 16))
    g = torch.Generator().manual_seed(seed + 1)
    seq = torch.randint(0, cfg.vocab, (B, T + 1), generator=g)
    inputs, targets = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()

    table = model.param_table()
    ckpt = formats.checkpoint_bytes(cfg, [t.detach() for _, t, _, _ in table])

    logits, loss = model(inputs, targets)
    loss.backward()
    grads = [t.grad.detach().clone() for _, t, _, _ in table]
    layer_norms = model.layer_grad_norms()
    total_norm = math.sqrt(sum(float((g_ ** 2).sum()) for g_ in grads))
    first = dict(logits=logits.detach(), loss=float(loss), grads=grads,
                 layer_norms=layer_norms, total_norm=total_norm)

    # N optimizer steps on the same batch: AdamW + global-norm clipping + schedule
    opt = make_optimizer(model, OPT["lr"], OPT["beta1"], OPT["beta2"], OPT["eps"], OPT["weight_decay"])
    params = [t for _, t, _, _ in table]
    lrs, losses, norms = [], [], []
    for step in range(N_STEPS):
        lr = lr_at(step, OPT["lr"], OPT["warmup"], OPT["total"], OPT["lr_floor"])
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.zero_grad(set_to_none=True)
        _, loss = model(inputs, targets)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, OPT["grad_clip"]))
        opt.step()
        lrs.append(lr); losses.append(float(loss)); norms.append(norm)
    return formats.state_bytes(cfg, table, ckpt, inputs, targets, first, OPT, lrs, losses, norms)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
    ap.add_argument("--check", metavar="DIR", help="regenerate into a temp dir and compare with DIR")
    ap.add_argument("--only", help="comma-separated config names")
    ap.add_argument("--set", choices=("stored", "extra"), default="stored",
                    help="stored: the committed states (default); extra: EXTRA_CONFIGS, for a scratch --out")
    args = ap.parse_args()
    torch.manual_seed(0)
    configs = CONFIGS if args.set == "stored" else EXTRA_CONFIGS
    names = args.only.split(",") if args.only else list(configs)
    for n in names:
        if n not in configs:
            sys.exit(f"make_reference: unknown config '{n}' (have: {', '.join(configs)})")
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
            a = open(os.path.join(args.check, n + ".bin"), "rb").read() if os.path.exists(
                os.path.join(args.check, n + ".bin")) else None
            b = open(os.path.join(out, n + ".bin"), "rb").read()
            if a is None:
                print(f"MISSING {n}: no stored file in {args.check}"); bad += 1
            elif a == b:
                print(f"match   {n}: stored file is bitwise identical to the regenerated one")
            elif len(a) != len(b):
                print(f"DIFFER  {n}: sizes {len(a)} vs {len(b)}"); bad += 1
            else:
                # float32 rounding of a float64 value can land on the other side of a
                # tie on another BLAS; accept only last-bit differences, report them.
                x = np.frombuffer(a, dtype=np.uint8); y = np.frombuffer(b, dtype=np.uint8)
                nd = int((x != y).sum())
                fa = np.frombuffer(a[: len(a) // 4 * 4], dtype=np.int32).astype(np.int64)
                fb = np.frombuffer(b[: len(b) // 4 * 4], dtype=np.int32).astype(np.int64)
                ulps = int(np.abs(fa - fb).max())
                if ulps <= 2:
                    print(f"match   {n}: {nd} bytes differ, at most {ulps} ulp (float32 rounding)")
                else:
                    print(f"DIFFER  {n}: {nd} bytes differ, up to {ulps} ulp"); bad += 1
        print(f"reference check: {len(names) - bad} match, {bad} differ")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
