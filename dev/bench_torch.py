"""
The PyTorch peer of the CPU benchmark: the reference model (dev/model.py) in its
own training loop (forward, backward, clip, AdamW), fp32, on random tokens.
Prints the BLAS torch uses and "torch_tok_per_s <median>" as its last line.

    /usr/bin/python3 dev/bench_torch.py --arch llama --n_layer 8 --d_model 256 --n_head 8 \
        --ffn 688 --vocab 8192 -B 8 -T 256 --steps 8 --threads 2
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Model, make_optimizer  # noqa: E402


def blas_in_use():
    """The libblas.so.3 that torch (and numpy) load on Debian: the alternatives link."""
    try:
        out = subprocess.run(["update-alternatives", "--query", "libblas.so.3-x86_64-linux-gnu"],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Value:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def openblas_config():
    """openblas_get_config() of the BLAS torch loaded (shows the kernel OpenBLAS picked)."""
    import ctypes
    for name in ("libblas.so.3", "libopenblas.so.0"):
        try:
            f = ctypes.CDLL(name).openblas_get_config
            f.restype = ctypes.c_char_p
            return f().decode()
        except (OSError, AttributeError):
            continue
    return "not OpenBLAS"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="llama")
    ap.add_argument("--n_layer", type=int, default=8)
    ap.add_argument("--n_head", type=int, default=8)
    ap.add_argument("--d_model", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=688)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("-B", type=int, default=8)
    ap.add_argument("-T", type=int, default=256)
    ap.add_argument("-k", "--post_ln_layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = Config(arch=a.arch, n_layer=a.n_layer, n_head=a.n_head, d_model=a.d_model, ffn=a.ffn, vocab=a.vocab,
                 max_seq_len=a.T, post_ln_layers=a.post_ln_layers)
    model = Model(cfg)
    opt = make_optimizer(model, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    params = [t for _, t, _, _ in model.param_table()]
    x = torch.randint(0, a.vocab, (a.B, a.T))
    y = torch.randint(0, a.vocab, (a.B, a.T))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, libblas.so.3 -> {blas_in_use()}")
    print(f"blas: {openblas_config()}")
    times = []
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if step > 0:                     # step 0 warms up allocators and caches
            times.append(dt)
        print(f"torch step {step}: loss {loss.item():.4f} {dt * 1000:.0f} ms {a.B * a.T / dt:.0f} tok/s")
    print(f"torch_tok_per_s {a.B * a.T / statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
