"""
Writes the committed seed corpus of the fuzzers (dev/fuzz/corpus/<reader>/): small
valid files of each format, from the PyTorch reference's own writers.
    /usr/bin/python3 dev/fuzz/make_seeds.py
"""
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import formats  # noqa: E402
from model import Config, Model  # noqa: E402


def put(name, fname, data):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def main():
    torch.manual_seed(0)
    for arch in ("gpt", "llama"):
        cfg = Config(arch=arch, n_layer=1, n_head=2, d_model=4, ffn=6, vocab=10, padded_vocab=10, max_seq_len=4,
                     post_ln_layers=1)
        model = Model(cfg).double()
        table = model.param_table()
        ckpt = formats.checkpoint_bytes(cfg, [t.detach() for _, t, _, _ in table])
        put("checkpoint", f"{arch}.bin", ckpt)
        x = torch.tensor([[1, 2, 3]])
        y = torch.tensor([[2, 3, 4]])
        logits, loss = model(x, y)
        loss.backward()
        first = dict(logits=logits.detach(), loss=float(loss), grads=[t.grad for _, t, _, _ in table],
                     layer_norms=model.layer_grad_norms(), total_norm=1.0)
        opt = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0, warmup=1, total=2, lr_floor=0.1)
        put("refstate", f"{arch}.bin", formats.state_bytes(cfg, table, ckpt, x, y, first, opt, [1e-3, 1e-4], [2.3, 2.2], [1.0, 0.9]))
    # tokenizer decode files: version 2 (eot, SentencePiece flags) and llm.c's version 1
    toks = [b"<|endoftext|>", b" the", b"a", b"\xe2\x96", b"\x81", b" \xc3\xa9t\xc3\xa9"]
    body = b"".join(bytes([len(t)]) + t for t in toks)
    put("tokenizer", "v2.bin", struct.pack("<256i", 20240328, 2, len(toks), 0, 2, 1, *([0] * 250)) + body)
    put("tokenizer", "v1.bin", struct.pack("<256i", 20240328, 1, len(toks), *([0] * 253)) + body)
    for version, fmt, size in ((1, "H", 2), (2, "I", 4)):
        toks = [i % 300 for i in range(40)]
        put("shard", f"v{version}.bin", struct.pack("<256i", 20240520, version, len(toks), *([0] * 253)) +
            struct.pack(f"<{len(toks)}{fmt}", *toks))


if __name__ == "__main__":
    main()
