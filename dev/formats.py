"""
Python side of the binary formats of docs/FORMATS.md (checkpoint, reference
state). The C++ side is common/checkpoint.h and common/refstate.h; keep them in
step (both check the magic and version words).
"""
import struct

import numpy as np

CKPT_MAGIC = 0x4E4C584D      # bytes "MXLN"
CKPT_VERSION = 1
STATE_MAGIC = 0x4652584D     # bytes "MXRF"
STATE_VERSION = 1
HEADER_WORDS = 256
ARCH_ID = {"gpt": 0, "llama": 1}
NAME_BYTES = 48


def _header():
    return np.zeros(HEADER_WORDS, dtype=np.int32)


def _put_f32(h, i, x):
    h[i] = np.frombuffer(struct.pack("<f", x), dtype=np.int32)[0]


def _put_u64(h, i, x):
    h[i] = np.int32(np.uint32(x & 0xFFFFFFFF).view(np.int32))
    h[i + 1] = np.int32(np.uint32(x >> 32).view(np.int32))


def checkpoint_bytes(cfg, tensors, step=0):
    """A weights-only fp32 checkpoint: header + every parameter in table order."""
    h = _header()
    n = sum(t.numel() for t in tensors)
    h[0], h[1] = CKPT_MAGIC, CKPT_VERSION
    h[2] = ARCH_ID[cfg.arch]
    h[3:12] = [cfg.n_layer, cfg.n_head, cfg.d_model, cfg.ffn, cfg.vocab, cfg.padded_vocab,
               cfg.max_seq_len, cfg.post_ln_layers, cfg.scaled_init]
    h[12] = 0            # param dtype: fp32
    h[13] = 0            # no optimizer state
    h[14] = step
    _put_f32(h, 16, cfg.norm_eps)
    _put_f32(h, 17, cfg.rope_theta)
    _put_f32(h, 18, cfg.init_std)
    _put_f32(h, 19, cfg.emb_std)
    _put_u64(h, 20, n)
    body = np.concatenate([t.detach().double().numpy().astype(np.float32).ravel() for t in tensors])
    return h.tobytes() + body.tobytes()


def state_bytes(cfg, table, ckpt, inputs, targets, first, opt, lrs, losses, norms):
    B, T = inputs.shape
    h = _header()
    h[0], h[1] = STATE_MAGIC, STATE_VERSION
    h[2], h[3], h[4] = B, T, len(losses)
    h[5] = len(table)
    _put_u64(h, 6, len(ckpt))
    for i, key in enumerate(("lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip", "lr_floor")):
        _put_f32(h, 8 + i, opt[key])
    h[15], h[16] = opt["warmup"], opt["total"]
    parts = [h.tobytes()]
    # parameter table: name[48], rows, cols, layer, decay (int32 each)
    for name, t, layer, decay in table:
        rows = t.shape[0]
        cols = t.shape[1] if t.dim() == 2 else 1
        parts.append(name.encode().ljust(NAME_BYTES, b"\0"))
        parts.append(np.array([rows, cols, layer, decay], dtype=np.int32).tobytes())
    parts.append(ckpt)
    parts.append(inputs.numpy().astype(np.int32).tobytes())
    parts.append(targets.numpy().astype(np.int32).tobytes())
    f32 = lambda x: np.asarray(x, dtype=np.float64).astype(np.float32).tobytes()  # noqa: E731
    parts.append(f32(first["logits"].numpy().ravel()))
    parts.append(f32([first["loss"]]))
    parts.append(f32(np.concatenate([g.numpy().ravel() for g in first["grads"]])))
    parts.append(f32(first["layer_norms"] + [first["total_norm"]]))
    parts.append(f32(lrs))
    parts.append(f32(losses))
    parts.append(f32(norms))
    return b"".join(parts)


def read_checkpoint(path_or_bytes):
    """Returns (config dict, float32 params array) of a checkpoint file."""
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else open(path_or_bytes, "rb").read()
    h = np.frombuffer(data[: HEADER_WORDS * 4], dtype=np.int32)
    if h[0] != CKPT_MAGIC or h[1] not in (1, 2):   # version 2 adds a run id and a checksum trailer (not checked here)
        raise ValueError("not a version-1 or version-2 checkpoint")
    f = lambda i: struct.unpack("<f", h[i].tobytes())[0]  # noqa: E731
    cfg = dict(arch=("gpt", "llama")[h[2]], n_layer=int(h[3]), n_head=int(h[4]), d_model=int(h[5]),
               ffn=int(h[6]), vocab=int(h[7]), padded_vocab=int(h[8]), max_seq_len=int(h[9]),
               post_ln_layers=int(h[10]), scaled_init=int(h[11]), norm_eps=f(16), rope_theta=f(17),
               init_std=f(18), emb_std=f(19))
    n = int(np.uint32(h[20])) | (int(np.uint32(h[21])) << 32)
    if h[12] != 0:
        raise ValueError("only fp32 checkpoints are read here")
    params = np.frombuffer(data, dtype=np.float32, count=n, offset=HEADER_WORDS * 4)
    return cfg, params
