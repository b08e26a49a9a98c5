"""
Tests of the Mix-LN analysis modes of build/train_gpt (or of the CUDA trainer:
--train_gpt build/cuda/train_gpt_cuda_emu --trainer_flags "--precision fp32") against
the PyTorch reference model (dev/model.py), on the stored reference states.

    /usr/bin/python3 dev/test_analysis.py [CHECK ...] [--states dev/reference/*.bin]
    CHECK: formula | angular | layer_drop | without_layer | grad_norms | batched | opposite | all (default)

What each check does (docs/ANALYSIS.md has the definitions):
  formula        the angular-distance formula itself, in float64: d(x, x) = 0,
                 d(x, -x) = 1, d(x, y) = 1/2 for orthogonal x, y, symmetry.
  angular        `train_gpt --mode angular` on each state's checkpoint and batch vs
                 (1/pi) arccos(cos) of the last-token hidden states of
                 Model.hidden_states() in float64; diagonal 0, symmetric.
  layer_drop     `train_gpt --mode layer_drop` vs Model.forward(skip_layer=l) for
                 every l: loss, ppl, delta_loss, delta_ppl; full loss = stored loss.
  without_layer  skipping layer l equals a model built without layer l: in PyTorch
                 (float64, to 1e-12) and in C++ (layer_drop on a checkpoint with
                 block l removed: its full loss = the skipped loss of layer l).
  grad_norms     a 1-step `train_gpt` run from the state's checkpoint on the stored
                 batch, `--layer_norms_every 1`: the log's layer_grad_norms,
                 grad_norm, emb/final_norm/head norms vs the stored gradients (and
                 vs PyTorch recomputed here).
  batched        angular and layer_drop again with -b 3 over 2 batches cut from one
                 token stream (last token of every sequence of every batch).
  opposite       a hand-made checkpoint whose layer 0 maps x to -x (Post-LN block
                 with zero projections and norm weight -1) and whose layer 1 is the
                 identity: the C++ angular distance must be 1 and 0 there.

The state's batch is fed to train_gpt as B shards of T+1 tokens, one sequence
each, read with -b 1 -t T (the loader cuts windows of B*T+1 tokens at multiples
of B*T, so one shard per sequence gives exactly the stored inputs and targets).

Negative switches (the comparison must be able to fail; tests/analysis.sh):
  --wrong_skip   compare C++ layer l with PyTorch skipping layer (l+1) % L
  --wrong_k      build the PyTorch model with post_ln_layers (K+1) % (L+1)
Any mismatch prints a line with MISMATCH and the exit status is 1.
"""
import argparse
import glob
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from model import Config, Model  # noqa: E402
import formats  # noqa: E402

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)      # tiny tensors: threads only add overhead (and contend with train_gpt)
CHECKS = ("formula", "angular", "layer_drop", "without_layer", "grad_norms", "opposite", "batched")

# tolerances (fp32 C++ vs float64 PyTorch)
REL_LOSS = 1e-5        # losses (relative)
REL_NORM = 1e-4        # gradient norms (relative to the largest norm of the group)
COS_ERR = 2e-6         # allowed error of an fp32 cosine; the distance tolerance follows from it
FAILS = []


def mismatch(msg):
    FAILS.append(msg)
    print("MISMATCH " + msg, flush=True)


def ok(msg):
    print("ok       " + msg, flush=True)


# ----------------------------------------------------------------------------- inputs

def read_state(path):
    """The fields of a reference state (docs/FORMATS.md) this test needs."""
    data = open(path, "rb").read()
    h = np.frombuffer(data[:1024], dtype=np.int32)
    if h[0] != formats.STATE_MAGIC or h[1] != formats.STATE_VERSION:
        sys.exit(f"error: {path}: not a version-1 reference state")
    B, T, n_tensors = int(h[2]), int(h[3]), int(h[5])
    ckpt_bytes = int(np.uint32(h[6])) | (int(np.uint32(h[7])) << 32)
    off = 1024
    table = []
    for _ in range(n_tensors):
        name = data[off:off + formats.NAME_BYTES].rstrip(b"\0").decode()
        rows, cols, layer, decay = np.frombuffer(data, np.int32, 4, off + formats.NAME_BYTES)
        table.append((name, int(rows) * int(cols), int(layer)))
        off += formats.NAME_BYTES + 16
    ckpt = data[off:off + ckpt_bytes]
    off += ckpt_bytes
    cfg, params = formats.read_checkpoint(ckpt)
    inputs = np.frombuffer(data, np.int32, B * T, off).reshape(B, T).copy()
    off += 4 * B * T
    targets = np.frombuffer(data, np.int32, B * T, off).reshape(B, T).copy()
    off += 4 * B * T
    off += 4 * B * T * cfg["vocab"]                       # logits
    loss = float(np.frombuffer(data, np.float32, 1, off)[0])
    off += 4
    grads = np.frombuffer(data, np.float32, len(params), off).astype(np.float64)
    off += 4 * len(params)
    L = cfg["n_layer"]
    norms = np.frombuffer(data, np.float32, L + 1, off).astype(np.float64)
    return dict(name=os.path.basename(path), B=B, T=T, cfg=cfg, params=params, ckpt=ckpt, table=table,
                inputs=inputs, targets=targets, loss=loss, grads=grads, layer_norms=norms[:L], global_norm=norms[L])


def build_model(cfg, params, **override):
    """A float64 PyTorch model holding the checkpoint's (fp32) weights."""
    model = Model(Config(**{**cfg, **override})).double()
    off = 0
    with torch.no_grad():
        for _, t, _, _ in model.param_table():
            n = t.numel()
            t.copy_(torch.from_numpy(np.asarray(params[off:off + n], dtype=np.float64)).view_as(t))
            off += n
    if off != len(params):
        sys.exit(f"error: checkpoint has {len(params)} parameters, the model {off}")
    return model


def write_shard(path, tokens):
    tokens = np.asarray(tokens)
    version = 1 if tokens.max() < 65536 else 2
    header = struct.pack("<256i", 20240520, version, len(tokens), *([0] * 253))
    with open(path, "wb") as f:
        f.write(header)
        f.write(tokens.astype(np.uint16 if version == 1 else np.uint32).tobytes())


def write_batch_shards(folder, prefix, inputs, targets):
    """One shard of T+1 tokens per sequence; returns the glob."""
    os.makedirs(folder, exist_ok=True)
    assert (inputs[:, 1:] == targets[:, :-1]).all(), "targets must be the inputs shifted by one"
    for b in range(inputs.shape[0]):
        write_shard(os.path.join(folder, f"{prefix}_{b:03d}.bin"), np.concatenate([inputs[b], targets[b, -1:]]))
    return os.path.join(folder, f"{prefix}_*.bin")


def run_cpp(args, what):
    cmd = [ARGS.train_gpt] + [str(a) for a in args] + ARGS.trainer_flags.split()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        print(p.stdout[-3000:])
        mismatch(f"{what}: train_gpt exited {p.returncode}: {' '.join(cmd)}")
        return False
    return True


def run_analysis(mode, ckpt_path, val_glob, b, T, m, out):
    if not run_cpp(["--mode", mode, "-e", ckpt_path, "-j", val_glob, "-b", b, "-t", T, "-m", m,
                    "--analysis_out", out], f"{mode} {ckpt_path}"):
        return None
    with open(out) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- references

def angular_distance(a, b):
    """(1/pi) * arccos(cos(a, b)) along the last dimension, float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.arccos(np.clip(cos, -1.0, 1.0)) / math.pi, cos


def ref_angular(model, inputs):
    """(L+1)x(L+1) mean distance over the sequences' last tokens, and a tolerance
    matrix from an fp32-cosine error of COS_ERR (the distance is ill-conditioned
    near 0 and 1: there an error e in cos moves it by up to sqrt(2e)/pi)."""
    with torch.no_grad():
        hs = model.hidden_states(torch.from_numpy(inputs).long())
    X = np.stack([h[:, -1, :].numpy() for h in hs])          # (L+1, S, C)
    d, cos = angular_distance(X[:, None], X[None, :])        # (L+1, L+1, S)
    sens = np.minimum(COS_ERR / (math.pi * np.sqrt(np.maximum(1 - cos * cos, 1e-300))),
                      math.sqrt(2 * COS_ERR) / math.pi)
    return d.mean(-1), sens.mean(-1) + 1e-6


def ref_loss(model, inputs, targets, skip_layer=-1):
    with torch.no_grad():
        _, loss = model(torch.from_numpy(inputs).long(), torch.from_numpy(targets).long(), skip_layer=skip_layer)
    return float(loss)


def without_layer(cfg, params, table, l):
    """(config, params) of the model with block l removed."""
    keep = np.concatenate([params[sum(n for _, n, _ in table[:i]):sum(n for _, n, _ in table[:i + 1])]
                           for i, (_, _, layer) in enumerate(table) if layer != l])
    K = cfg["post_ln_layers"]
    return dict(cfg, n_layer=cfg["n_layer"] - 1, post_ln_layers=K - 1 if l < K else K), keep


def rel(a, b, scale=None):
    return abs(a - b) / max(abs(b) if scale is None else scale, 1e-30)


# ----------------------------------------------------------------------------- checks

def check_formula():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 64))
    d_same, _ = angular_distance(x, x)
    d_opp, _ = angular_distance(x, -3.0 * x)
    e1, e2 = np.eye(64)[0], np.eye(64)[1]
    d_orth, _ = angular_distance(e1, 2 * e2)
    y = rng.standard_normal((5, 64))
    d_xy, _ = angular_distance(x, y)
    d_yx, _ = angular_distance(y, x)
    good = (np.abs(d_same).max() < 1e-7 and np.abs(d_opp - 1).max() < 1e-7 and abs(d_orth - 0.5) < 1e-15
            and np.array_equal(d_xy, d_yx) and (d_xy > 0).all() and (d_xy < 1).all())
    msg = (f"formula: d(x,x) max {np.abs(d_same).max():.1e}, d(x,-3x)-1 max {np.abs(d_opp - 1).max():.1e}, "
           f"d(e1,2e2) = {float(d_orth)}, symmetric")
    ok(msg) if good else mismatch(msg)


def state_model(st):
    cfg = dict(st["cfg"])
    if ARGS.wrong_k:
        cfg["post_ln_layers"] = (cfg["post_ln_layers"] + 1) % (cfg["n_layer"] + 1)
    return build_model(cfg, st["params"])


def check_angular(st, tmp):
    L = st["cfg"]["n_layer"]
    out = run_analysis("angular", st["ckpt_path"], st["val_glob"], st["val_b"], st["T"], st["val_m"],
                       os.path.join(tmp, "angular.json"))
    S = st["inputs"].shape[0]
    if out is None:
        return
    D = np.asarray(out.get("distance"), dtype=np.float64)
    if out.get("kind") != "angular_distance" or out.get("n_layer") != L or D.shape != (L + 1, L + 1) \
            or out.get("samples") != S:
        return mismatch(f"{st['name']} angular: bad output header/shape: kind {out.get('kind')}, n_layer "
                        f"{out.get('n_layer')}, samples {out.get('samples')} (want {S}), shape {D.shape}")
    ref, tol = ref_angular(state_model(st), st["inputs"])
    err = np.abs(D - ref)
    worst = np.unravel_index(np.argmax(err / tol), err.shape)
    diag = np.abs(np.diag(D)).max()
    asym = np.abs(D - D.T).max()
    msg = (f"{st['name']} angular ({L + 1}x{L + 1}, {S} samples): max |err| {err.max():.2e}, "
           f"worst err/tol {err[worst] / tol[worst]:.3f} at [{worst[0]}][{worst[1]}] "
           f"(cpp {D[worst]:.6f} ref {ref[worst]:.6f}); diag max {diag:.1e}; asymmetry {asym:.1e}")
    diag_tol = math.sqrt(2 * COS_ERR) / math.pi
    if (err <= tol).all() and diag <= diag_tol and asym <= 1e-6 and (D >= 0).all() and (D <= 1).all():
        ok(msg)
    else:
        mismatch(msg)


def check_layer_drop(st, tmp):
    L = st["cfg"]["n_layer"]
    out = run_analysis("layer_drop", st["ckpt_path"], st["val_glob"], st["val_b"], st["T"], st["val_m"],
                       os.path.join(tmp, "drop.json"))
    if out is None:
        return None
    layers = out.get("layers") or []
    if out.get("kind") != "layer_drop" or out.get("n_layer") != L or [r.get("layer") for r in layers] != list(range(L)):
        mismatch(f"{st['name']} layer_drop: bad output: kind {out.get('kind')}, n_layer {out.get('n_layer')}, "
                 f"layers {[r.get('layer') for r in layers]}")
        return None
    model = state_model(st)
    full = ref_loss(model, st["inputs"], st["targets"])
    bad = []
    if rel(out["full_loss"], full) > REL_LOSS or rel(out["full_ppl"], math.exp(full)) > REL_LOSS:
        bad.append(f"full loss cpp {out['full_loss']:.7f} ref {full:.7f}")
    if not ARGS.wrong_k and not st.get("batched") and rel(full, st["loss"]) > 1e-6:
        bad.append(f"PyTorch full loss {full:.7f} != stored loss {st['loss']:.7f}")
    worst = 0.0
    for l, r in enumerate(layers):
        lr = (l + 1) % L if ARGS.wrong_skip else l
        ref = ref_loss(model, st["inputs"], st["targets"], skip_layer=lr)
        ppl, fppl = math.exp(ref), math.exp(full)
        e = max(rel(r["loss"], ref), rel(r["ppl"], ppl), rel(r["delta_loss"], ref - full, scale=ref),
                rel(r["delta_ppl"], ppl - fppl, scale=ppl))
        worst = max(worst, e)
        if e > REL_LOSS:
            bad.append(f"layer {l}: loss cpp {r['loss']:.7f} ref {ref:.7f}, delta_loss cpp {r['delta_loss']:.3e} "
                       f"ref {ref - full:.3e}, delta_ppl cpp {r['delta_ppl']:.4e} ref {ppl - fppl:.4e}")
    msg = f"{st['name']} layer_drop (L={L}): full loss {out['full_loss']:.6f}, worst rel err {worst:.2e}"
    if bad:
        mismatch(msg + "; " + "; ".join(bad))
    else:
        ok(msg + ", deltas " + " ".join(f"{r['delta_loss']:+.4f}" for r in layers))
    return out


def check_without_layer(st, tmp, drop_out):
    L, K = st["cfg"]["n_layer"], st["cfg"]["post_ln_layers"]
    model = state_model(st)
    layers = sorted({0, K - 1, K, L - 1} & set(range(L)))   # first, last, both sides of the Post/Pre border
    for l in layers:
        cfg_l, params_l = without_layer(st["cfg"], st["params"], st["table"], l)
        small = build_model(cfg_l, params_l)
        skip = ref_loss(model, st["inputs"], st["targets"], skip_layer=l)
        built = ref_loss(small, st["inputs"], st["targets"])
        what = f"{st['name']} without layer {l} (K={K} -> {cfg_l['post_ln_layers']})"
        if abs(skip - built) > 1e-12 * abs(built) and not ARGS.wrong_k:
            mismatch(f"{what}: PyTorch skip_layer loss {skip!r} != model built without it {built!r}")
            continue
        ck = os.path.join(tmp, f"without_{l}.bin")
        with open(ck, "wb") as f:
            f.write(formats.checkpoint_bytes(Config(**cfg_l), [t.detach() for _, t, _, _ in small.param_table()]))
        out = run_analysis("layer_drop", ck, st["val_glob"], st["val_b"], st["T"], st["val_m"],
                           os.path.join(tmp, f"drop_{l}.json"))
        if out is None or drop_out is None:
            continue
        lr = (l + 1) % L if ARGS.wrong_skip else l
        cpp_skip = drop_out["layers"][lr]["loss"]
        e = rel(out["full_loss"], cpp_skip)
        msg = (f"{what}: C++ loss of the model without it {out['full_loss']:.7f}, C++ skip {cpp_skip:.7f} "
               f"(rel {e:.1e}), PyTorch {built:.7f}")
        ok(msg) if e <= REL_LOSS and rel(out["full_loss"], built) <= REL_LOSS else mismatch(msg)


def batched_data(st, folder, B=3, n_batches=2):
    """The analyses on several batches of B > 1 sequences cut from one token stream
    the way the loader cuts it (window g = tokens [g*B*T, (g+1)*B*T + 1)): sequence i
    of the stream is tokens [i*T, (i+1)*T), its targets one token later."""
    T, V = st["T"], st["cfg"]["vocab"]
    toks = np.random.default_rng(7).integers(0, V, n_batches * B * T + 1)
    os.makedirs(folder, exist_ok=True)
    write_shard(os.path.join(folder, "val_000.bin"), toks)
    n = n_batches * B
    inputs = np.stack([toks[i * T:(i + 1) * T] for i in range(n)])
    targets = np.stack([toks[i * T + 1:(i + 1) * T + 1] for i in range(n)])
    return dict(st, name=f"{st['name']} [batched B={B} x {n_batches}]", inputs=inputs, targets=targets,
                val_glob=os.path.join(folder, "val_*.bin"), val_b=B, val_m=n_batches, batched=True)


def check_grad_norms(st, tmp):
    name, L, B, T = st["name"], st["cfg"]["n_layer"], st["B"], st["T"]
    train_glob = write_batch_shards(os.path.join(tmp, "train"), "train", st["inputs"], st["targets"])
    log = os.path.join(tmp, "log.jsonl")
    if not run_cpp(["-e", st["ckpt_path"], "-i", train_glob, "-b", 1, "-t", T, "-d", B * T, "-x", 1, "-u", 1,
                    "-v", 0, "-m", 0, "-n", 0, "--layer_norms_every", 1, "-o", log], f"{name} grad_norms"):
        return
    rows = [json.loads(line) for line in open(log)]
    step = next((r for r in rows if r.get("kind") == "step" and r.get("step") == 0), None)
    if step is None or "layer_grad_norms" not in step:
        return mismatch(f"{name} grad_norms: no step-0 line with layer_grad_norms in {log}")
    # reference 1: the stored gradients, grouped by the parameter table
    g = st["grads"]
    sq = {}
    off = 0
    for tname, n, layer in st["table"]:
        key = layer if 0 <= layer < L else ("emb" if layer < 0 else ("head" if tname.startswith("lm_head") else "final_norm"))
        sq[key] = sq.get(key, 0.0) + float((g[off:off + n] ** 2).sum())
        off += n
    stored = np.sqrt([sq[l] for l in range(L)])
    # reference 2: PyTorch recomputed here (the stored state must agree with the model; --wrong_k breaks it)
    model = state_model(st)
    _, loss = model(torch.from_numpy(st["inputs"]).long(), torch.from_numpy(st["targets"]).long())
    loss.backward()
    ref = np.asarray(model.layer_grad_norms())
    bad = []
    if not ARGS.wrong_k and np.abs(stored - st["layer_norms"]).max() > 1e-6 * stored.max():
        bad.append("the stored layer norms do not match the stored gradients")
    cpp = np.asarray(step["layer_grad_norms"], dtype=np.float64)
    if cpp.shape != (L,):
        return mismatch(f"{name} grad_norms: layer_grad_norms has {cpp.shape} values, want {L}")
    e_layers = np.abs(cpp - ref).max() / ref.max()
    if e_layers > REL_NORM:
        bad.append("layers cpp " + " ".join(f"{x:.6g}" for x in cpp) + " ref " + " ".join(f"{x:.6g}" for x in ref))
    e_stored = np.abs(cpp - stored).max() / stored.max()
    if e_stored > REL_NORM and not ARGS.wrong_k:
        bad.append(f"layers vs stored rel {e_stored:.1e}")
    tot = math.sqrt(sum(sq.values()))
    extra = [("grad_norm", tot), ("emb_grad_norm", math.sqrt(sq["emb"])),
             ("final_norm_grad_norm", math.sqrt(sq["final_norm"])),
             ("head_grad_norm", math.sqrt(sq["head"]) if "head" in sq else None)]
    for key, want in extra:
        have = step.get(key)
        if want is None:      # gpt: the head is the (tied) embedding; absent or null
            if have is not None:
                bad.append(f"{key} should be absent or null for a tied head, got {have}")
            continue
        if have is None:
            bad.append(f"{key} missing")
        elif rel(have, want) > REL_NORM:
            bad.append(f"{key} cpp {have:.6g} ref {want:.6g}")
    msg = (f"{name} grad_norms (1 step, B={B} x T={T}): layers max rel err {e_layers:.1e} vs PyTorch, "
           f"{e_stored:.1e} vs stored; grad_norm {step.get('grad_norm')} (stored {st['global_norm']:.6g})")
    mismatch(msg + "; " + "; ".join(bad)) if bad else ok(msg)


def check_opposite(tmp):
    """Layer 0 (Post-LN, zero projections, norm1 weight -1) maps x to -x/rms(x);
    layer 1 (Pre-LN, zero projections) is the identity; layer 2 is random."""
    cfg = Config(arch="llama", n_layer=3, n_head=2, d_model=32, ffn=40, vocab=64, max_seq_len=16, post_ln_layers=1)
    model = Model(cfg).double()
    with torch.no_grad():
        for b in model.blocks[:2]:
            b.attn.proj.weight.zero_()
            b.mlp.proj.weight.zero_()
        model.blocks[0].norm1.weight.fill_(-1.0)
        model.blocks[0].norm2.weight.fill_(1.5)
    ck = os.path.join(tmp, "opposite.bin")
    with open(ck, "wb") as f:
        f.write(formats.checkpoint_bytes(cfg, [t.detach() for _, t, _, _ in model.param_table()]))
    rng = np.random.default_rng(5)
    seq = rng.integers(0, cfg.vocab, size=(4, 17))
    val_glob = write_batch_shards(os.path.join(tmp, "opp_val"), "val", seq[:, :-1], seq[:, 1:])
    out = run_analysis("angular", ck, val_glob, 1, 16, 4, os.path.join(tmp, "opposite.json"))
    if out is None:
        return
    D = np.asarray(out["distance"])
    ref, _ = ref_angular(build_model(formats.read_checkpoint(ck)[0], formats.read_checkpoint(ck)[1]), seq[:, :-1])
    tol = 1e-3   # an fp32 cosine of -1 or 1 is only good to ~1e-7, i.e. ~1.4e-4 in the distance
    msg = (f"opposite: C++ d(x0, x1) = {D[0][1]:.6f} (want 1), d(x1, x2) = {D[1][2]:.6f} (want 0), "
           f"d(x0, x2) = {D[0][2]:.6f} (want 1), diag max {np.abs(np.diag(D)).max():.1e}; "
           f"PyTorch {ref[0][1]:.9f} {ref[1][2]:.9f} {ref[0][2]:.9f}")
    good = (abs(D[0][1] - 1) < tol and abs(D[1][2]) < tol and abs(D[0][2] - 1) < tol
            and abs(ref[0][1] - 1) < 1e-7 and abs(ref[1][2]) < 1e-7 and np.abs(np.diag(D)).max() < tol)
    ok(msg) if good else mismatch(msg)


# ----------------------------------------------------------------------------- main

def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checks", nargs="*", default=["all"], help="which checks (default all)")
    ap.add_argument("--states", nargs="+", default=sorted(glob.glob(os.path.join(HERE, "reference", "*.bin"))))
    ap.add_argument("--train_gpt", default=os.path.join(ROOT, "build", "train_gpt"),
                    help="the trainer to test (also build/cuda/train_gpt_cuda_emu, with --trainer_flags '--precision fp32')")
    ap.add_argument("--trainer_flags", default="", help="more flags for every trainer run")
    ap.add_argument("--wrong_skip", action="store_true", help="negative test: compare layer l with skip (l+1) %% L")
    ap.add_argument("--wrong_k", action="store_true", help="negative test: PyTorch model with K+1")
    ap.add_argument("--keep", help="keep the temporary files in this folder")
    ARGS = ap.parse_args()
    checks = CHECKS if "all" in ARGS.checks else ARGS.checks
    for c in checks:
        if c not in CHECKS:
            sys.exit(f"error: unknown check {c!r} (one of {', '.join(CHECKS)}, all)")
    if any(c != "formula" for c in checks) and not os.access(ARGS.train_gpt, os.X_OK):
        sys.exit(f"error: {ARGS.train_gpt} not found (make build/train_gpt)")

    tmp_root = ARGS.keep or tempfile.mkdtemp(prefix="mixln_analysis_")
    if "formula" in checks:
        check_formula()
    if "opposite" in checks:
        check_opposite(tmp_root)
    per_state = [c for c in checks if c in ("angular", "layer_drop", "without_layer", "grad_norms", "batched")]
    for path in ARGS.states if per_state else []:
        st = read_state(path)
        tmp = os.path.join(tmp_root, st["name"][:-4])
        os.makedirs(tmp, exist_ok=True)
        st["ckpt_path"] = os.path.join(tmp, "ckpt.bin")
        with open(st["ckpt_path"], "wb") as f:
            f.write(st["ckpt"])
        st["val_glob"] = write_batch_shards(os.path.join(tmp, "val"), "val", st["inputs"], st["targets"])
        st["val_b"], st["val_m"] = 1, st["B"]
        drop = None
        if "angular" in checks:
            check_angular(st, tmp)
        if "layer_drop" in checks or "without_layer" in checks:
            drop = check_layer_drop(st, tmp)
        if "without_layer" in checks:
            check_without_layer(st, tmp, drop)
        if "grad_norms" in checks:
            check_grad_norms(st, tmp)
        if "batched" in checks:
            bt = batched_data(st, os.path.join(tmp, "batched"))
            check_angular(bt, os.path.join(tmp, "batched"))
            check_layer_drop(bt, os.path.join(tmp, "batched"))
    if not ARGS.keep:
        import shutil
        shutil.rmtree(tmp_root, ignore_errors=True)
    if FAILS:
        print(f"{len(FAILS)} MISMATCH(es)")
        sys.exit(1)
    print("all analysis checks passed")


if __name__ == "__main__":
    main()
