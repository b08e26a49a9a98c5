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


def read_state(data):
    """Splits a reference state (bytes) into its named parts, in file order:
    a list of (name, kind, value) where kind is 'exact' (header words, the
    parameter table, token ids: must match bit for bit) or 'float' (a float32
    tensor computed by the reference). The checkpoint's weights and the
    gradients are split per tensor of the parameter table, so a comparison
    can judge each against its own scale."""
    h = np.frombuffer(data[: HEADER_WORDS * 4], dtype=np.int32)
    if h[0] != STATE_MAGIC or h[1] != STATE_VERSION:
        raise ValueError(f"not a version-{STATE_VERSION} reference state")
    B, T, n_steps, ntab = (int(x) for x in h[2:6])
    ckpt_len = int(np.uint32(h[6])) | (int(np.uint32(h[7])) << 32)
    parts = [("state header", "exact", h)]
    off = HEADER_WORDS * 4
    table = []
    for _ in range(ntab):
        name = data[off: off + NAME_BYTES].rstrip(b"\0").decode()
        rows, cols, layer, decay = np.frombuffer(data, dtype=np.int32, count=4, offset=off + NAME_BYTES)
        table.append((name, int(rows) * int(cols)))
        off += NAME_BYTES + 16
    parts.append(("parameter table", "exact", np.frombuffer(data[HEADER_WORDS * 4: off], dtype=np.uint8)))
    ck = data[off: off + ckpt_len]
    cfg, params = read_checkpoint(ck)
    parts.append(("checkpoint header", "exact", np.frombuffer(ck[: HEADER_WORDS * 4], dtype=np.int32)))

    def per_tensor(prefix, flat):
        at = 0
        for name, n in table:
            parts.append((prefix + name, "float", flat[at: at + n]))
            at += n
        if at != flat.size:
            raise ValueError("parameter table does not cover the tensor")

    per_tensor("init ", params)
    off += ckpt_len
    BT, V, P = B * T, cfg["vocab"], params.size

    def take(count, dtype=np.float32):
        nonlocal off
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=off)
        off += count * 4
        return arr

    parts.append(("inputs", "exact", take(BT, np.int32)))
    parts.append(("targets", "exact", take(BT, np.int32)))
    parts.append(("logits", "float", take(BT * V)))
    parts.append(("loss", "float", take(1)))
    per_tensor("grad ", take(P))
    parts.append(("layer grad norms", "float", take(cfg["n_layer"])))
    parts.append(("global grad norm", "float", take(1)))
    parts.append(("schedule lr", "float", take(n_steps)))
    parts.append(("step losses", "float", take(n_steps)))
    parts.append(("step grad norms", "float", take(n_steps)))
    if off != len(data):
        raise ValueError(f"state has {len(data)} bytes, its header describes {off}")
    return parts
