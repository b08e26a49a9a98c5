"""
Tests of the data pipeline (tests/data.sh runs each one as its own test):

    /usr/bin/python3 data/test_data.py NAME [SCRATCH_DIR]     one test; exit 1 on failure
    /usr/bin/python3 data/test_data.py --list                 the test names

Expected GPT-2 ids come from independent implementations (gpt-tokenizer@4.0.0,
cross-checked with gpt-3-encoder@1.1.4, run with node by
data/fixtures/make_fixtures.py), never from this project's tokenizer.
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import corpus  # noqa: E402
import encode  # noqa: E402
import tokenizers  # noqa: E402

FIX = os.path.join(HERE, "fixtures")
TEST_TOKENIZER = os.path.join(ROOT, "build", "test_tokenizer")
TESTS = {}
SCRATCH = None


def test(fn):
    TESTS[fn.__name__[len("test_"):]] = fn
    return fn


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def fixture_docs():
    with open(os.path.join(FIX, "docs.jsonl"), encoding="utf-8") as f:
        return [json.loads(l)["text"] for l in f if l.strip()]


_GPT2 = None


def gpt2():
    global _GPT2
    if _GPT2 is None:
        _GPT2 = tokenizers.load_tokenizer("gpt2")
    return _GPT2


def cxx_decode(tok_path, shard_path):
    """Decode a shard with the C++ reader (common/tokenizer.h via build/test_tokenizer)."""
    check(os.path.exists(TEST_TOKENIZER), "%s is not built (make test-deps)" % TEST_TOKENIZER)
    r = subprocess.run([TEST_TOKENIZER, "--decode", tok_path, shard_path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    check(r.returncode == 0, "test_tokenizer --decode failed: %s" % r.stderr.decode(errors="replace"))
    return r.stdout


def write_jsonl_docs(folder, split_docs):
    os.makedirs(folder, exist_ok=True)
    for split, docs in split_docs.items():
        corpus.write_jsonl(os.path.join(folder, split + ".jsonl"),
                           [("%s/%d" % (split, i), "test", t) for i, t in enumerate(docs)])


# --- corpus: normalisation and the document split ----------------------------------------
@test
def test_normalise():
    n = corpus.normalise_text
    check(n("a\r\nb\rc\n") == "a\nb\nc", "CRLF/CR -> LF, trailing space stripped")
    check(n(b"\xef\xbb\xbfhello") == "hello", "UTF-8 BOM removed")
    check(n("\ufeffhello") == "hello", "BOM removed from str")
    check(n(b"caf\xe9 \xe6sop") == "caf\u00e9 \u00e6sop", "Latin-1/cp1252 bytes decoded")
    check(n(b"\x93quoted\x94") == "\u201cquoted\u201d", "cp1252 quotes")
    check(n(b"\x81\x8d") == "\x81\x8d", "bytes undefined in cp1252 fall back to Latin-1")
    check(n("e\u0301") == "\u00e9", "NFC")
    check(n("caf\u00e9".encode("utf-8")) == "caf\u00e9", "UTF-8 first")
    check(n("  \n x \n ") == "x", "strip")
    for s in ["a\r\n\r\nb", "\ufeffx\u0301\ry", "plain"]:
        check(n(n(s)) == n(s), "idempotent on %r" % s)
    for t in fixture_docs():
        check(n(t) == t, "fixture documents are normalised")
    print("normalise ok")


@test
def test_split_synthetic():
    docs = [("a/%d" % i, "a", "x" * (100 + i)) for i in range(200)] + \
           [("b/%d" % i, "b", "y" * (5000 * (i + 1))) for i in range(5)] + [("c/0", "c", "only one")]
    train, val = corpus.split_documents(docs, 0.05)
    tids, vids = {d[0] for d in train}, {d[0] for d in val}
    check(not (tids & vids), "a document in both splits")
    check(tids | vids == {d[0] for d in docs} and len(train) + len(val) == len(docs), "documents lost or duplicated")
    check(any(d.startswith("a/") for d in vids) and any(d.startswith("b/") for d in vids), "every source in val")
    check("c/0" in tids, "a one-document source stays in train")
    abytes = sum(len(d[2]) for d in docs if d[1] == "a")
    vbytes = sum(len(d[2]) for d in val if d[1] == "a")
    check(0 < vbytes <= 0.05 * abytes, "val share within budget (%d of %d)" % (vbytes, abytes))
    check({d[0] for d in corpus.split_documents(list(reversed(docs)), 0.05)[1]} == vids,
          "deterministic, independent of the input order")
    _, v0 = corpus.split_documents(docs, 0.0)
    check(v0 == [], "val_fraction 0: no validation")
    print("split ok: %d train / %d val" % (len(train), len(val)))


# --- GPT-2 BPE against the independent ids ------------------------------------------------
@test
def test_gpt2_hello():
    tok = gpt2()
    ids = tok.encode_ordinary("Hello world")
    check(ids == [15496, 995], "Hello world -> %s, expected [15496, 995]" % ids)
    check(tok.vocab == 50257 and tok.eot == 50256, "vocab 50257, eot 50256")
    check(tok.decode_bytes([50256]) == b"<|endoftext|>", "50256 decodes to <|endoftext|>")
    print("Hello world ->", ids)


@test
def test_gpt2_strings():
    tok = gpt2()
    fx = json.load(open(os.path.join(FIX, "gpt2_strings.json"), encoding="utf-8"))
    check(fx["eot"] == 50256, "fixture eot")
    bad = []
    for s in fx["strings"]:
        got = tok.encode_ordinary(s["text"])
        if got != s["ids"]:
            bad.append((s["text"][:40], got[:12], s["ids"][:12]))
        check(tok.decode_bytes(got) == s["text"].encode("utf-8"), "round trip of %r" % s["text"][:40])
    check(not bad, "ids differ from gpt-tokenizer on %d strings: %s" % (len(bad), bad[:3]))
    # <|endoftext|>: plain text by default, 50256 when allowed (tiktoken's allowed_special)
    ids = {s["text"]: s["ids"] for s in fx["strings"]}
    bpe = tok.bpe
    check(bpe.encode("Hello<|endoftext|>world") == ids["Hello<|endoftext|>world"], "special as text by default")
    got = bpe.encode("Hello<|endoftext|>world", allowed_special={"<|endoftext|>"})
    check(got == ids["Hello"] + [50256] + ids["world"], "allowed special -> 50256: %s" % got)
    print("%d strings match gpt-tokenizer's ids" % len(fx["strings"]))


@test
def test_gpt2_documents():
    """The fixture documents through the whole shard path (2 workers, small batches, forced
    chunking) must give gpt-tokenizer's ids with 50256 before each document, and decode
    (Python and C++) back to the text byte for byte."""
    tok = gpt2()
    docs = fixture_docs()
    _, expected = encode.read_shard(os.path.join(FIX, "docs.gpt2.bin"))
    out = os.path.join(SCRATCH, "gpt2_docs")
    os.makedirs(out, exist_ok=True)
    orig = tok.chunks
    tok.chunks = lambda text: tok._split(text, 700)   # many cuts: each must leave the ids unchanged
    try:
        w = {"train": encode.ShardWriter(out, "train", tok.vocab)}
        shards = encode.tokenize_documents((("train", d) for d in docs), tok, w, workers=2, batch_chars=5000)
    finally:
        tok.chunks = orig
    check(len(shards["train"]) == 1, "one shard")
    version, got = encode.read_shard(shards["train"][0])
    check(version == 1, "GPT-2 shards are uint16 (version 1)")
    if got != expected:
        i = next((i for i in range(min(len(got), len(expected))) if got[i] != expected[i]), min(len(got), len(expected)))
        raise AssertionError("ids differ from gpt-tokenizer at token %d of %d/%d: got %s, expected %s"
                             % (i, len(got), len(expected), list(got[i:i + 8]), list(expected[i:i + 8])))
    starts = [i for i, t in enumerate(got) if t == 50256]
    check(len(starts) == len(docs) and starts[0] == 0, "one 50256 before each document")
    text = b"".join(d.encode("utf-8") for d in docs)
    check(tok.decode_bytes([t for t in got if t != 50256]) == text, "Python decode round trip")
    tok_path = os.path.join(out, "tokenizer.bin")
    tokenizers.write_tokenizer_file(tok_path, tok)
    want = b"".join(b"<|endoftext|>" + d.encode("utf-8") for d in docs)
    check(cxx_decode(tok_path, shards["train"][0]) == want, "C++ decode (common/tokenizer.h) round trip")
    print("%d documents, %d tokens, %d bytes: ids match gpt-tokenizer; round trip exact" % (len(docs), len(got), len(text)))


@test
def test_gpt2_vocab_sources():
    """gpt-tokenizer's r50k_base.tiktoken and gpt-3-encoder's encoder.json+vocab.bpe agree."""
    a = tokenizers.load_tokenizer("gpt2:gpt-3-encoder@1.1.4")
    b = tokenizers.load_tokenizer("gpt2:gpt-tokenizer@4.0.0")
    check(a.bpe.ranks == b.bpe.ranks, "the two vocabulary files differ")
    print("both vocabulary sources give the same 50256 ranks")


@test
def test_gpt2_tokenizer_file():
    tok = gpt2()
    p = os.path.join(SCRATCH, "gpt2_tokenizer.bin")
    tokenizers.write_tokenizer_file(p, tok)
    n, eot, kind, flags, toks = tokenizers.read_tokenizer_file(p)
    check((n, eot, kind, flags) == (50257, 50256, 1, 0), "header %s" % ((n, eot, kind, flags),))
    check(toks[15496] == b"Hello" and toks[995] == b" world" and toks[50256] == b"<|endoftext|>", "entries")
    check(all(toks[i] == tok.decode_bytes([i]) for i in range(n)), "every entry = decode of its id")
    print("tokenizer.bin: %d bytes" % os.path.getsize(p))


def letters_text(nbytes, seed):
    """Words of the fixture documents (letters only) joined without spaces: one GPT-2
    piece of about nbytes bytes (the shape of a long run without white space)."""
    import random
    rng = random.Random(seed)
    words = [w for d in fixture_docs() for w in d.split() if w.isalpha()]
    out, n = [], 0
    while n < nbytes:
        w = rng.choice(words)
        out.append(w)
        n += len(w.encode("utf-8"))
    return "".join(out)


def js_ids(texts):
    """gpt-tokenizer@4.0.0's r50k_base ids (node), or None when node is missing."""
    import shutil as sh
    if sh.which("node") is None:
        return None
    npm = os.path.join(corpus.DEFAULT_CACHE, "npm")
    js = ("const fs=require('fs');const [npm,i,o]=process.argv.slice(1);"
          "const e=require(npm+'/gpt-tokenizer-4.0.0/package/cjs/encoding/r50k_base.js');"
          "fs.writeFileSync(o,JSON.stringify(JSON.parse(fs.readFileSync(i,'utf8'))"
          ".map(t=>e.encode(t,{disallowedSpecial:new Set()}))));")
    pin, pout = os.path.join(SCRATCH, "js_in.json"), os.path.join(SCRATCH, "js_out.json")
    with open(pin, "w") as f:
        json.dump(texts, f)
    subprocess.run(["node", "-e", js, os.path.abspath(npm), pin, pout], check=True)
    return json.load(open(pout))


def cpu_bounded(seconds, fn, *a):
    """fn(*a) under a CPU-time limit (independent of the machine's load): (result, CPU s)."""
    import signal

    def over(*_):
        raise AssertionError("did not finish within %d CPU seconds" % seconds)
    old = signal.signal(signal.SIGPROF, over)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    t0 = time.process_time()
    try:
        out = fn(*a)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
    return out, time.process_time() - t0


@test
def test_gpt2_long_piece():
    """A 2 MB piece without white space (and 'ab' * 1M) encodes in bounded CPU time, at a
    rate comparable to ordinary text; long pieces give gpt-tokenizer's ids (node); the
    heap merge loop equals the plain scan on random pieces. Prints MB/s for both."""
    tok = gpt2()
    bpe = tok.bpe
    bench = []
    for name, text in (("2 MB of words without spaces", letters_text(2_000_000, 1)), ("'ab' * 1_000_000", "ab" * 1_000_000)):
        check(len(bpe.pat.findall(text)) == 1, "one piece")
        ids, dt = cpu_bounded(120, bpe.encode_ordinary, text)
        check(bpe.decode_bytes(ids) == text.encode("utf-8"), "%s: round trip" % name)
        bench.append("%s: %.2f MB/s" % (name, len(text.encode()) / 1e6 / dt))
    # the same merges as independent code: gpt-tokenizer (node) on long pieces
    longs = [letters_text(20_000, 2), "ab" * 10_000, "a" * 4000 + "b" * 4000,
             "".join(chr(0x4e00 + (i * 7919) % 2000) + "\u00e9" for i in range(3000))]
    want = js_ids(longs)
    if want is None:
        print("node not found: long pieces not compared with gpt-tokenizer")
    else:
        for t, w in zip(longs, want):
            bpe.cache.clear()
            check(bpe.encode_ordinary(t) == w, "ids differ from gpt-tokenizer on a %d-character piece" % len(t))
    # the heap path = the scan on random pieces (letters, repeats, raw bytes)
    import random
    rng = random.Random(3)
    alphabets = [b"ab", b"aeht", b"etaoinshrdlu", bytes(range(256)), "\u00e9\u4e2d\u0416a ".encode()]
    for k in range(400):
        al = rng.choice(alphabets)
        p = bytes(rng.choice(al) for _ in range(rng.choice([2, 5, 13, 40, 150, 600])))
        check(bpe._bpe_heap(p) == bpe._bpe_scan(p), "heap and scan differ on %r" % p[:60])
    # ordinary text: short pieces (fixture documents, cache cleared) for comparison
    docs = "\n\n".join(fixture_docs())
    bpe.cache.clear()
    _, dt = cpu_bounded(60, bpe.encode_ordinary, docs)
    bench.insert(0, "ordinary text (short pieces, cache cleared): %.2f MB/s" % (len(docs.encode()) / 1e6 / dt))
    print("GPT-2 BPE, one process, MB/s of CPU time: " + "; ".join(bench))


# --- shards -------------------------------------------------------------------------------
@test
def test_shards():
    d = os.path.join(SCRATCH, "shards")
    os.makedirs(d, exist_ok=True)
    # version by vocab: uint16 up to 65535, uint32 above
    for vocab, want in ((50257, 1), (65535, 1), (65536, 2), (100000, 2)):
        p = os.path.join(d, "v%d.bin" % vocab)
        toks = [0, 1, vocab - 1, 7] * 3 + [vocab - 1]   # odd length
        encode.write_shard(p, toks, vocab)
        v, got = encode.read_shard(p)
        check(v == want and list(got) == toks, "vocab %d: version %d (want %d)" % (vocab, v, want))
        check(os.path.getsize(p) == 1024 + len(toks) * (2 if want == 1 else 4), "size")
        h = struct.unpack("<256i", open(p, "rb").read(1024))
        check(h[0] == 20240520 and h[2] == len(toks) and not any(h[3:]), "header words")
    check(not [f for f in os.listdir(d) if ".tmp" in f], "no temporary files left")
    try:
        encode.write_shard(os.path.join(d, "bad.bin"), [1, 2, 300], 300)
        raise AssertionError("an id >= vocab was written")
    except ValueError as e:
        check("token id 300 >= vocab 300" in str(e), str(e))
    check(not os.path.exists(os.path.join(d, "bad.bin")), "nothing written on error")
    # the writer: exact shard sizes, documents straddle shard boundaries, empty split
    w = encode.ShardWriter(d, "roll", 1000, shard_tokens=7)
    for k in range(5):
        w.add([999] + list(range(k + 1)))   # 2, 3, 4, 5, 6 tokens = 20
    paths = w.close()
    sizes = [len(encode.read_shard(p)[1]) for p in paths]
    check(sizes == [7, 7, 6], "shard sizes %s" % sizes)
    check([os.path.basename(p) for p in paths] == ["roll_000000.bin", "roll_000001.bin", "roll_000002.bin"], "names")
    allt = sum((list(encode.read_shard(p)[1]) for p in paths), [])
    check(allt == sum(([999] + list(range(k + 1)) for k in range(5)), []), "content in order")
    w = encode.ShardWriter(d, "empty", 1000)
    e = w.close()
    check(len(e) == 1 and len(encode.read_shard(e[0])[1]) == 0, "an empty split still writes one (empty) shard")
    print("shards ok")


@test
def test_shards_cxx():
    """Python-written shards (uint16 and uint32) read by the C++ side: the decoder reads
    them through common/dataloader.h's header checks; a bad id is a one-line error."""
    d = os.path.join(SCRATCH, "shards_cxx")
    os.makedirs(d, exist_ok=True)

    class Tiny:   # a 70000-token vocabulary forces uint32 shards
        kind, vocab, eot = "test", 70000, 0
        def token_bytes(self):
            return [b"<eot>"] + [("t%d " % i).encode() for i in range(1, 70000)]
    tp = os.path.join(d, "tok.bin")
    tokenizers.write_tokenizer_file(tp, Tiny())
    toks = [0, 1, 69999, 65536, 2]
    encode.write_shard(os.path.join(d, "u32.bin"), toks, 70000)
    check(encode.read_shard(os.path.join(d, "u32.bin"))[0] == 2, "uint32 shard")
    check(cxx_decode(tp, os.path.join(d, "u32.bin")) == b"<eot>t1 t69999 t65536 t2 ", "uint32 decode")
    encode.write_shard(os.path.join(d, "u16.bin"), [0, 5, 4], 65535)
    check(cxx_decode(tp, os.path.join(d, "u16.bin")) == b"<eot>t5 t4 ", "uint16 decode")
    small = os.path.join(d, "small_tok.bin")

    class Small(Tiny):
        vocab = 10
        def token_bytes(self):
            return [b"x"] * 10
    tokenizers.write_tokenizer_file(small, Small())
    r = subprocess.run([TEST_TOKENIZER, "--decode", small, os.path.join(d, "u32.bin")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    check(r.returncode != 0 and "u32.bin: token id 69999 at position 2" in r.stderr, "bad id: %r" % r.stderr)
    print("C++ reads Python shards: ok")


# --- the Hugging Face path = the offline path ---------------------------------------------
@test
def test_hf_path():
    import hf_corpus
    tok = gpt2()
    docs = fixture_docs()
    rows = {"train": [{"text": t, "id": "doc%d" % i} for i, t in enumerate(docs * 3)],
            "validation": [{"text": docs[1]}, {"text": ""}, {"text": docs[2].replace("\n", "\r\n")}]}
    rows_fn = lambda name, split: iter(rows[split])
    # tinystories/c4 shape: own validation split; CRLF and empty rows normalised/skipped
    out = os.path.join(SCRATCH, "hf_ts")
    hf_corpus.build("tinystories", tok, out, rows_fn, train_docs=10, val_docs=5, workers=2, quiet=True)
    # the same documents through the offline command (data/encode.py on JSONL files)
    off_in, off_out = os.path.join(SCRATCH, "hf_off_in"), os.path.join(SCRATCH, "hf_off_out")
    write_jsonl_docs(off_in, {"train": (docs * 3)[:10], "val": [docs[1], docs[2]]})
    r = subprocess.run([sys.executable, os.path.join(HERE, "encode.py"), "--tokenizer", "gpt2", "--input", off_in,
                        "--out", off_out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check(r.returncode == 0, r.stdout)
    for s in ("train_000000.bin", "val_000000.bin", "tokenizer.bin"):
        a, b = open(os.path.join(out, s), "rb").read(), open(os.path.join(off_out, s), "rb").read()
        check(a == b, "%s differs between the Hugging Face path and the offline path" % s)
    # fineweb-edu shape: one stream, whole-document hash split by id, disjoint
    got = list(hf_corpus.documents("fineweb-edu", rows_fn, 1000, 1000, val_fraction=0.3))
    vt = [t for s, t in got if s == "val"]
    tt = [t for s, t in got if s == "train"]
    vid = {r["id"] for r in rows["train"] if hf_corpus.in_val(r["id"], 0.3)}
    check(len(vt) == len(vid) and len(vt) + len(tt) == len(rows["train"]), "hash split covers every document once")
    check(0 < len(vt) < len(rows["train"]), "both splits non-empty")
    print("Hugging Face document path == offline path (byte-identical shards); hash split ok")


# --- SentencePiece --------------------------------------------------------------------------
@test
def test_sentencepiece():
    """Train a small model here (Debian spm_train) on the fixture documents, tokenize
    through the same command, and round-trip byte for byte (Python and C++ decode)."""
    d = os.path.join(SCRATCH, "spm")
    docs = fixture_docs()
    write_jsonl_docs(os.path.join(d, "corpus"), {"train": docs[:-3], "val": docs[-3:]})
    model = os.path.join(d, "tiny.model")
    r = subprocess.run([sys.executable, os.path.join(HERE, "train_spm.py"), "--input", os.path.join(d, "corpus"),
                        "--vocab", "600", "--out", model], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check(r.returncode == 0, r.stdout)
    out = os.path.join(d, "shards")
    r = subprocess.run([sys.executable, os.path.join(HERE, "encode.py"), "--tokenizer", model, "--input",
                        os.path.join(d, "corpus"), "--out", out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    check(r.returncode == 0 and "MB/s" in r.stdout, r.stdout)
    tok = tokenizers.load_tokenizer(model)
    check(tok.vocab == 600 and tok.eot == 2 and tok.dummy_prefix, "vocab/eot/dummy prefix")
    for split, ds in (("train", docs[:-3]), ("val", docs[-3:])):
        v, ids = encode.read_shard(os.path.join(out, split + "_000000.bin"))
        check(v == 1, "uint16")
        want = []
        for t in ds:
            want += [2] + tok.sp.encode(t)   # the whole document in one call
        check(list(ids) == want, "%s: chunked encoding differs from whole-document encoding" % split)
        check(cxx_decode(os.path.join(out, "tokenizer.bin"), os.path.join(out, split + "_000000.bin")) ==
              b"".join(b"</s>" + t.encode("utf-8") for t in ds), "C++ decode round trip (%s)" % split)
    # forced small chunks leave the ids unchanged
    for t in docs:
        ch = tok.chunks(t, chunk_chars=300)
        got = sum((tok.encode_chunk(c, k == 0) for k, c in enumerate(ch)), [])
        check(got == tok.sp.encode(t), "chunking changed the ids")
        check(tok.sp.decode(got) == t, "sp decode round trip")
    n, eot, kind, flags, _ = tokenizers.read_tokenizer_file(os.path.join(out, "tokenizer.bin"))
    check((n, eot, kind, flags) == (600, 2, 2, 1), "tokenizer file header")
    print("SentencePiece: trained, tokenized, exact round trip; %s" % r.stdout.strip().splitlines()[-1])


@test
def test_cli_errors():
    """Bad input to the tokenize command: one line, non-zero exit."""
    d = os.path.join(SCRATCH, "cli")
    os.makedirs(d, exist_ok=True)
    bad_model = os.path.join(d, "bad.model")
    with open(bad_model, "wb") as f:
        f.write(b"not a model")
    write_jsonl_docs(os.path.join(d, "c"), {"train": ["a"], "val": ["b"]})
    cases = [
        (["--input", os.path.join(d, "nope")], "no train.jsonl"),
        (["--tokenizer", bad_model, "--input", os.path.join(d, "c")], "bad.model: not a SentencePiece model"),
        (["--tokenizer", os.path.join(d, "missing.model"), "--input", os.path.join(d, "c")], "cannot open"),
        (["--tokenizer", "gpt3", "--input", os.path.join(d, "c")], "expected gpt2"),
        (["--shard_tokens", "0"], "--shard_tokens must be"),
    ]
    for args, want in cases:
        r = subprocess.run([sys.executable, os.path.join(HERE, "encode.py")] + args + ["--out", os.path.join(d, "o")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        check(r.returncode != 0 and last.startswith("error: ") and want in last and
              len(r.stderr.strip().splitlines()) == 1, "%s: %r" % (args, r.stderr))
    print("encode.py rejects bad input with one line")


def run_encode(args):
    return subprocess.run([sys.executable, os.path.join(HERE, "encode.py"), "--workers", "2"] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def folder_bytes(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


@test
def test_encode_keeps_old_set():
    """A failing re-run leaves the previous shards, tokenizer.bin and meta.json exactly as
    they were (the new set is staged and swapped in only when complete); a successful
    re-run replaces the whole set (no old shard left over)."""
    d = os.path.join(SCRATCH, "keep")
    docs = fixture_docs()
    write_jsonl_docs(os.path.join(d, "good"), {"train": docs[:6], "val": docs[6:8]})
    out = os.path.join(d, "out")
    r = run_encode(["--input", os.path.join(d, "good"), "--out", out, "--shard_tokens", "3000"])
    check(r.returncode == 0, r.stderr)
    before = folder_bytes(out)
    meta = json.loads(before["meta.json"])
    check(len(meta["splits"]["train"]["shards"]) > 2, "several train shards")
    # a bad line late in val.jsonl: found after all of train is encoded
    bad = os.path.join(d, "bad")
    write_jsonl_docs(bad, {"train": docs[8:], "val": docs[:2]})
    with open(os.path.join(bad, "val.jsonl"), "ab") as f:
        f.write(b'{"text": "caf\xe9"}\n')
    r = run_encode(["--input", bad, "--out", out])
    check(r.returncode != 0, "bad input accepted")
    after = folder_bytes(out)
    check(after == before, "the previous set changed after a failed run: files %s lost, %s new, %s changed"
          % (sorted(set(before) - set(after)), sorted(set(after) - set(before)),
             sorted(f for f in set(before) & set(after) if before[f] != after[f])))
    check("val.jsonl:3: not UTF-8" in r.stderr and len(r.stderr.strip().splitlines()) == 1, "bad input: %r" % r.stderr)
    # a good re-run with fewer shards: exactly the new set, meta.json lists it
    r = run_encode(["--input", bad.replace("bad", "good"), "--out", out, "--shard_tokens", "40000"])
    check(r.returncode == 0, r.stderr)
    meta = json.load(open(os.path.join(out, "meta.json")))
    listed = sorted(meta["splits"]["train"]["shards"] + meta["splits"]["val"]["shards"])
    have = sorted(f for f in os.listdir(out) if f.endswith(".bin") and f != "tokenizer.bin")
    check(listed == have and len(have) < len(before) - 2, "shards %s, meta.json lists %s" % (have, listed))
    check(not [f for f in os.listdir(out) if f.startswith(".") or f.endswith(".tmp")], "no staging files left")
    print("failed re-run: previous %d files unchanged; good re-run: %d shards, as meta.json lists"
          % (len(before), len(have)))


@test
def test_encode_text_files():
    """Plain text files through --train/--val give the same shards as the same documents in
    JSON lines: one document per file (--text_docs file, the default), or per block between
    blank lines (--text_docs blank_line); .jsonl files can be mixed in."""
    d = os.path.join(SCRATCH, "text")
    docs = fixture_docs()[:5]
    write_jsonl_docs(os.path.join(d, "jsonl"), {"train": docs[:4], "val": docs[4:]})
    ref = os.path.join(d, "ref")
    r = run_encode(["--input", os.path.join(d, "jsonl"), "--out", ref])
    check(r.returncode == 0, r.stderr)
    txt = []
    for i, t in enumerate(docs[:4]):
        txt.append(os.path.join(d, "doc%d.txt" % i))
        with open(txt[-1], "w", encoding="utf-8") as f:
            f.write(t.replace("\n", "\r\n") + "\n")   # CRLF and a final newline: normalised away
    out = os.path.join(d, "out_file")
    r = run_encode(["--train"] + txt + ["--val", os.path.join(d, "jsonl", "val.jsonl"), "--out", out])
    check(r.returncode == 0, r.stderr)
    for s in ("train_000000.bin", "val_000000.bin"):
        check(open(os.path.join(out, s), "rb").read() == open(os.path.join(ref, s), "rb").read(),
              "--text_docs file: %s differs from the JSON-lines run" % s)
    # blank-line blocks: documents without blank lines inside, joined by blank lines
    paras = [p.strip() for t in docs for p in t.split("\n\n") if p.strip()]
    write_jsonl_docs(os.path.join(d, "pjsonl"), {"train": paras[:-3], "val": paras[-3:]})
    pref = os.path.join(d, "pref")
    r = run_encode(["--input", os.path.join(d, "pjsonl"), "--out", pref])
    check(r.returncode == 0, r.stderr)
    for name, ps in (("train.txt", paras[:-3]), ("val.txt", paras[-3:])):
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            f.write("\n\n \n".join(ps) + "\n\n\n")
    out = os.path.join(d, "out_blocks")
    r = run_encode(["--train", os.path.join(d, "train.txt"), "--val", os.path.join(d, "val.txt"),
                    "--text_docs", "blank_line", "--out", out])
    check(r.returncode == 0, r.stderr)
    meta = json.load(open(os.path.join(out, "meta.json")))
    check(meta["splits"]["train"]["documents"] == len(paras) - 3, "one document per block")
    for s in ("train_000000.bin", "val_000000.bin"):
        check(open(os.path.join(out, s), "rb").read() == open(os.path.join(pref, s), "rb").read(),
              "--text_docs blank_line: %s differs from the JSON-lines run" % s)
    print("text files: %d files = JSON lines; %d blank-line blocks = JSON lines" % (len(txt), len(paras)))


# --- the real default corpus (fetched with npm) ---------------------------------------------
def check_corpus_split(cdir):
    """Validation and train never share a document (by id or by text); the manifest agrees."""
    m = json.load(open(os.path.join(cdir, "manifest.json")))
    ids = {s: [d["id"] for d in corpus.read_jsonl(os.path.join(cdir, s + ".jsonl"))] for s in ("train", "val")}
    check(not set(ids["train"]) & set(ids["val"]), "a document id is in train and val")
    texts = {s: [d["text"] for d in corpus.read_jsonl(os.path.join(cdir, s + ".jsonl"))] for s in ("train", "val")}
    th = {s: {hashlib.sha256(t.encode()).hexdigest() for t in texts[s]} for s in texts}
    check(not th["train"] & th["val"], "a document text is in train and val")
    check(len(ids["train"]) == m["n_train"] and len(ids["val"]) == m["n_val"], "manifest counts")
    mids = {s: {d["id"] for d in m["documents"] if d["split"] == s} for s in ("train", "val")}
    check(mids["train"] == set(ids["train"]) and mids["val"] == set(ids["val"]), "manifest splits")
    check(len(set(ids["train"])) + len(set(ids["val"])) == 233 + 18, "233 speeches + 18 books, each once")
    check({d.split("/")[0] for d in ids["val"]} == {"sotu", "gutenberg"}, "both sources in val")
    total = m["train_bytes"] + m["val_bytes"]
    check(21e6 < total < 24e6, "about 22 MB (%d)" % total)
    check(all("\r" not in t and not t.startswith("\ufeff") for s in texts for t in texts[s]), "LF only, no BOM")
    return texts, total


@test
def test_neg_split():
    """Negative test: the split check must catch a validation document copied into train."""
    cdir = corpus.build_corpus(quiet=True)
    bad = os.path.join(SCRATCH, "leaky")
    os.makedirs(bad, exist_ok=True)
    shutil.copy(os.path.join(cdir, "manifest.json"), bad)
    shutil.copy(os.path.join(cdir, "val.jsonl"), bad)
    with open(os.path.join(bad, "train.jsonl"), "w") as f:
        f.write(open(os.path.join(cdir, "train.jsonl")).read())
        f.write(open(os.path.join(cdir, "val.jsonl")).readline())
    check_corpus_split(bad)


@test
def test_neg_bpe():
    """Negative test: a tokenizer missing one merge (" world") must fail the id comparison."""
    tok = gpt2()
    del tok.bpe.ranks[b" world"]
    tok.bpe.cache.clear()
    test_gpt2_strings()


@test
def test_corpus_full():
    """Fetch (npm, pinned sha512), normalise and split the default corpus; validation and
    train never share a document; tokenize all of it with GPT-2 in under 60 s; the C++
    decoder gives back every byte."""
    cdir = corpus.build_corpus(quiet=False)
    texts, total = check_corpus_split(cdir)
    out = os.path.join(SCRATCH, "full_gpt2")
    t0 = time.time()
    r = subprocess.run([sys.executable, os.path.join(HERE, "encode.py"), "--tokenizer", "gpt2", "--input", cdir,
                        "--out", out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.time() - t0
    print(r.stdout.strip())
    check(r.returncode == 0, "encode.py failed")
    check(dt < 60, "tokenizing the default corpus took %.1f s (limit 60 s)" % dt)
    for s in ("train", "val"):
        got = cxx_decode(os.path.join(out, "tokenizer.bin"), os.path.join(out, s + "_000000.bin"))
        want = b"".join(b"<|endoftext|>" + t.encode("utf-8") for t in texts[s])
        check(got == want, "%s: decoded shard differs from the documents" % s)
    print("full corpus: %.1f MB in %.1f s wall (incl. start-up); split disjoint; exact round trip" % (total / 1e6, dt))


def main():
    global SCRATCH
    if len(sys.argv) > 1 and sys.argv[1] == "--list":
        print("\n".join(TESTS))
        return 0
    if len(sys.argv) < 2 or sys.argv[1] not in TESTS:
        print("usage: test_data.py NAME [SCRATCH] | --list  (names: %s)" % ", ".join(TESTS), file=sys.stderr)
        return 2
    own = len(sys.argv) < 3
    SCRATCH = tempfile.mkdtemp(prefix="mixln_data_") if own else sys.argv[2]
    os.makedirs(SCRATCH, exist_ok=True)
    try:
        TESTS[sys.argv[1]]()
    except AssertionError as e:
        print("FAIL %s: %s" % (sys.argv[1], e))
        return 1
    finally:
        if own:
            shutil.rmtree(SCRATCH, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
