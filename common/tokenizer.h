// Decoding token ids to text, for the samples both trainers print (--tokenizer FILE).
//
// The file (written by data/encode.py next to the shards as tokenizer.bin; llm.c's
// tokenizer format, whose version-2 files it also reads):
//   int32 header[256]: [0] magic 20240328, [1] version (1 or 2), [2] vocab n,
//                      [3] eot id (version 2; -1: none; version 1: 50256 if n > 50256
//                      else none), [4] kind (0 unknown, 1 GPT-2 byte-level BPE,
//                      2 SentencePiece; informational), [5] flags: bit 0 = the model
//                      adds a dummy space before each text (SentencePiece's
//                      add_dummy_prefix), so decode() drops one leading space of
//                      the token that follows an eot; [6..255] unused
//   then for each id 0..n-1: uint8 length L (1..255), then L bytes: what the token
//   decodes to (special and control tokens: their text, e.g. "<|endoftext|>", "</s>";
//   SentencePiece: U+2581 already turned into a space, <0xAB> byte pieces into the byte).
//   The file size must be exactly 1024 + n + sum(L).
// Every check fails with a one-line "error: <file>: ..." (util.h fatal).
//
//   Tokenizer tok; tok.load("data/cache/shards/gpt2/tokenizer.bin");
//   std::string text = tok.decode(ids, n);   // raw bytes (UTF-8 may be cut mid-character)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "util.h"

static const int32_t TOKENIZER_MAGIC = 20240328;

struct Tokenizer {
    int vocab = 0;
    int eot = -1;        // the end-of-text / document separator id, -1 if none
    int kind = 0;        // 0 unknown, 1 GPT-2 BPE, 2 SentencePiece
    bool dummy_prefix = false;   // drop one leading space of the token after an eot
    std::string path;
    std::vector<std::string> tokens;   // id -> bytes

    bool loaded() const { return vocab > 0; }

    // Load a tokenizer file; fatal (one line naming the file) on any problem. Returns true.
    bool load(const std::string& p) {
        path = p;
        const char* fn = path.c_str();
        InFile f(fn, "rb");
        long long size = file_size(f, fn);
        int32_t h[256];
        if (size < (long long)sizeof(h))
            fatal("%s: tokenizer file is truncated (%lld bytes, the header alone is 1024)", fn, size);
        read_exact(f, h, sizeof(h), fn, "tokenizer header");
        if (h[0] != TOKENIZER_MAGIC) fatal("%s: not a tokenizer file (bad magic %d, expected %d)", fn, h[0], TOKENIZER_MAGIC);
        if (h[1] != 1 && h[1] != 2) fatal("%s: tokenizer version %d is not supported (1 or 2)", fn, h[1]);
        int n = h[2];
        if (n < 1 || n > (1 << 24)) fatal("%s: tokenizer vocab size %d is out of range [1, 16777216]", fn, n);
        int e = h[1] == 2 ? h[3] : (n > 50256 ? 50256 : -1);
        if (e < -1 || e >= n) fatal("%s: end-of-text id %d is out of range for vocab %d", fn, e, n);
        // the rest of the file: n records of (uint8 length, bytes), nothing after them
        long long body = size - (long long)sizeof(h);
        if (body < n) fatal("%s: tokenizer file is truncated (%lld bytes of tokens for %d ids)", fn, body, n);
        std::vector<unsigned char> buf((size_t)body);
        read_exact(f, buf.data(), buf.size(), fn, "token table");
        std::vector<std::string> toks((size_t)n);
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            if (off >= buf.size()) fatal("%s: tokenizer file is truncated at token %d of %d", fn, i, n);
            unsigned L = buf[off++];
            if (L == 0) fatal("%s: token %d has length 0", fn, i);
            if (off + L > buf.size()) fatal("%s: tokenizer file is truncated in token %d of %d", fn, i, n);
            toks[i].assign((const char*)buf.data() + off, L);
            off += L;
        }
        if (off != buf.size())
            fatal("%s: tokenizer file has %zu bytes after the last token (trailing data)", fn, buf.size() - off);
        tokens.swap(toks);
        vocab = n;
        eot = e;
        kind = h[4] >= 0 && h[4] <= 2 ? h[4] : 0;
        dummy_prefix = h[1] == 2 && (h[5] & 1);
        return true;
    }

    // The bytes of one id; an id outside [0, vocab) decodes to a visible marker, never a crash.
    std::string decode_one(int id) const {
        if (id < 0 || id >= vocab) return "<|bad id " + std::to_string(id) + "|>";
        return tokens[(size_t)id];
    }
    std::string decode(const int* ids, int n) const {
        std::string out;
        for (int i = 0; i < n; i++) {
            if (dummy_prefix && i > 0 && ids[i - 1] == eot && eot >= 0 && ids[i] != eot) {
                std::string t = decode_one(ids[i]);
                out.append(t, t[0] == ' ' ? 1 : 0, std::string::npos);
            } else {
                out += decode_one(ids[i]);
            }
        }
        return out;
    }
    std::string decode(const std::vector<int>& ids) const { return decode(ids.data(), (int)ids.size()); }
};
