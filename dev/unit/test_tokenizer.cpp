// Unit tests of common/tokenizer.h (the decode file the trainers read), and a small
// decoder for the data tests.
//   ./build/test_tokenizer [scratch dir]            unit tests (exit 1 on any failure)
//   ./build/test_tokenizer --decode TOK SHARD       decode every token of SHARD to stdout
// Error paths run in a forked child so that fatal()'s exit code and message can be checked.
#include <sys/stat.h>
#include <sys/wait.h>

#include <functional>

#include "../../common/dataloader.h"
#include "../../common/tokenizer.h"
#include "unit_test.h"

// Run fn in a child; require a non-zero exit and a last stderr line "error: ..." containing `want`.
static void expect_fatal(const char* what, const std::function<void()>& fn, const std::string& want,
                         const std::string& file = "") {
    ChildResult r = run_in_child(fn);
    const std::string& err = r.err;
    bool one_line = err.find('\n') == std::string::npos;
    bool names_file = file.empty() || err.rfind("error: " + file + ": ", 0) == 0;
    bool ok = r.exited_nonzero && one_line && names_file && err.rfind("error: ", 0) == 0 && err.find(want) != std::string::npos;
    g_checks++;
    if (!ok) g_fail++;
    printf("  %-4s %-34s -> %s\n", ok ? "ok" : "FAIL", what, err.c_str());
    if (!ok) printf("       wanted one line 'error: %s: ...' containing '%s' and a non-zero exit (status %d)\n", file.c_str(),
                      want.c_str(), r.status);
}

// A tokenizer file from a header and raw token records.
static void write_file(const std::string& path, const std::vector<int32_t>& head, const std::string& body) {
    int32_t h[256] = {0};
    for (size_t i = 0; i < head.size(); i++) h[i] = head[i];
    FILE* f = fopen(path.c_str(), "wb");
    fwrite(h, 4, 256, f);
    fwrite(body.data(), 1, body.size(), f);
    fclose(f);
}
static std::string records(const std::vector<std::string>& toks) {
    std::string b;
    for (const std::string& t : toks) { b += (char)(unsigned char)t.size(); b += t; }
    return b;
}

static void test_good(const std::string& dir) {
    printf("good files\n");
    std::vector<std::string> toks = {"a", "b", " the", "\xc3", "\xa9", "<|endoftext|>", std::string(255, 'z'), std::string("\0x", 2)};
    std::string p = dir + "/good.bin";
    write_file(p, {TOKENIZER_MAGIC, 2, (int)toks.size(), 5, 1}, records(toks));
    Tokenizer t;
    CHECK(t.load(p));
    CHECK(t.loaded() && t.vocab == 8 && t.eot == 5 && t.kind == 1);
    int ids[] = {0, 2, 1, 3, 4, 5};
    CHECK(t.decode(ids, 6) == "a theb\xc3\xa9<|endoftext|>");
    CHECK(t.decode_one(6) == std::string(255, 'z'));
    CHECK(t.decode_one(7) == std::string("\0x", 2));   // embedded NUL bytes survive
    CHECK(t.decode(ids, 0).empty());
    CHECK(t.decode_one(8) == "<|bad id 8|>" && t.decode_one(-1) == "<|bad id -1|>");   // never a crash
    std::vector<int> v = {2, 2};
    CHECK(t.decode(v) == " the the");

    // eot -1 (none), a one-token vocabulary
    write_file(p, {TOKENIZER_MAGIC, 2, 1, -1, 2}, records({"x"}));
    Tokenizer t1;
    t1.load(p);
    CHECK(t1.vocab == 1 && t1.eot == -1 && t1.kind == 2);

    // llm.c version 1 (no eot word): 50257 tokens -> eot 50256; a small vocab -> none
    std::vector<std::string> big(50257, "q");
    big[50256] = "<|endoftext|>";
    write_file(p, {TOKENIZER_MAGIC, 1, 50257, 777}, records(big));
    Tokenizer t2;
    t2.load(p);
    CHECK(t2.vocab == 50257 && t2.eot == 50256 && t2.decode_one(50256) == "<|endoftext|>");
    write_file(p, {TOKENIZER_MAGIC, 1, 3}, records({"a", "b", "c"}));
    Tokenizer t3;
    t3.load(p);
    CHECK(t3.vocab == 3 && t3.eot == -1);
    // SentencePiece dummy prefix (flags bit 0): one leading space dropped after an eot only
    write_file(p, {TOKENIZER_MAGIC, 2, 4, 0, 2, 1}, records({"</s>", " Hello", " world", "\n"}));
    Tokenizer t5;
    t5.load(p);
    CHECK(t5.dummy_prefix && t5.kind == 2);
    std::vector<int> sp = {0, 1, 2, 3, 0, 2, 0, 0, 1};
    CHECK(t5.decode(sp) == "</s>Hello world\n</s>world</s></s>Hello");
    std::vector<int> sp2 = {1, 2};
    CHECK(t5.decode(sp2) == " Hello world");
    CHECK(!t2.dummy_prefix && !t1.dummy_prefix);
    // an unknown kind code is reported as 0
    write_file(p, {TOKENIZER_MAGIC, 2, 3, 0, 9}, records({"a", "b", "c"}));
    Tokenizer t4;
    t4.load(p);
    CHECK(t4.kind == 0);
}

static void test_bad(const std::string& dir) {
    printf("bad files (one-line error naming the file)\n");
    std::string ok3 = records({"a", "bc", "d"});
    auto bad = [&](const char* name, const std::vector<int32_t>& head, const std::string& body, const std::string& want) {
        std::string p = dir + "/" + name + ".bin";
        write_file(p, head, body);
        expect_fatal(name, [p] { Tokenizer t; t.load(p); }, want, p);
    };
    bad("bad_magic", {20240520, 2, 3, 0}, ok3, "not a tokenizer file (bad magic 20240520");
    bad("bad_version", {TOKENIZER_MAGIC, 3, 3, 0}, ok3, "tokenizer version 3 is not supported");
    bad("bad_vocab_zero", {TOKENIZER_MAGIC, 2, 0, -1}, "", "vocab size 0 is out of range");
    bad("bad_vocab_neg", {TOKENIZER_MAGIC, 2, -5, -1}, ok3, "vocab size -5 is out of range");
    bad("bad_vocab_huge", {TOKENIZER_MAGIC, 2, 1 << 30, -1}, ok3, "vocab size 1073741824 is out of range");
    bad("bad_eot_high", {TOKENIZER_MAGIC, 2, 3, 3}, ok3, "end-of-text id 3 is out of range for vocab 3");
    bad("bad_eot_neg", {TOKENIZER_MAGIC, 2, 3, -2}, ok3, "end-of-text id -2 is out of range");
    bad("trunc_in_token", {TOKENIZER_MAGIC, 2, 3, 0}, ok3.substr(0, ok3.size() - 1), "truncated in token 2 of 3");
    bad("trunc_at_token", {TOKENIZER_MAGIC, 2, 4, 0}, ok3 + "", "truncated");
    bad("trunc_no_body", {TOKENIZER_MAGIC, 2, 3, 0}, "", "truncated (0 bytes of tokens for 3 ids)");
    bad("zero_length", {TOKENIZER_MAGIC, 2, 3, 0}, std::string("\x01" "a" "\x00", 3) + "\x01" "d", "token 1 has length 0");
    bad("trailing", {TOKENIZER_MAGIC, 2, 3, 0}, ok3 + "xyz", "3 bytes after the last token (trailing data)");
    // a header shorter than 1024 bytes
    std::string p = dir + "/short_header.bin";
    FILE* f = fopen(p.c_str(), "wb");
    int32_t h[4] = {TOKENIZER_MAGIC, 2, 3, 0};
    fwrite(h, 4, 4, f);
    fclose(f);
    expect_fatal("short_header", [p] { Tokenizer t; t.load(p); }, "tokenizer file is truncated (16 bytes", p);
    std::string missing = dir + "/missing.bin";
    expect_fatal("missing", [missing] { Tokenizer t; t.load(missing); }, "cannot open " + missing);
    expect_fatal("a folder", [dir] { Tokenizer t; t.load(dir); }, dir);
}

// --decode TOK SHARD: the shard's tokens, decoded, to stdout (raw bytes)
static int decode_shard(const char* tokpath, const char* shardpath) {
    Tokenizer t;
    t.load(tokpath);
    ShardInfo s = open_shard_info(shardpath);
    FILE* f = open_or_die(shardpath, "rb");
    int width = s.version == 1 ? 2 : 4;
    std::vector<unsigned char> raw((size_t)s.ntok * width);
    if (fseeko(f, 1024, SEEK_SET) != 0) fatal("%s: cannot seek", shardpath);
    read_exact(f, raw.data(), raw.size(), shardpath, "tokens");
    fclose(f);
    std::vector<int> ids((size_t)s.ntok);
    for (long long i = 0; i < s.ntok; i++) {
        long long id = width == 2 ? ((uint16_t*)raw.data())[i] : ((uint32_t*)raw.data())[i];
        if (id >= t.vocab) fatal("%s: token id %lld at position %lld is >= the tokenizer's vocab (%d)", shardpath, id, i, t.vocab);
        ids[(size_t)i] = (int)id;
    }
    std::string out = t.decode(ids);
    fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 4 && std::string(argv[1]) == "--decode") return decode_shard(argv[2], argv[3]);
    std::string dir;
    if (argc > 1) {
        dir = argv[1];
        mkdir(dir.c_str(), 0755);
    } else {
        char tmpl[] = "/tmp/test_tokenizer_XXXXXX";
        if (!mkdtemp(tmpl)) { perror("mkdtemp"); return 2; }
        dir = tmpl;
    }
    test_good(dir);
    test_bad(dir);
    printf("%d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
