// Token shards and the data loader shared by both trainers.
//
// Shard format (docs/FORMATS.md, "Token shard"; llm.c-compatible):
//   int32 header[256]: [0] magic 20240520, [1] version (1: uint16 tokens,
//   2: uint32 tokens, for vocabularies over 65535), [2] number of tokens n;
//   then n tokens, little-endian.
//
// The loader cuts each shard into windows of B*T+1 tokens starting at
// multiples of B*T (inputs are the first B*T, targets the last B*T). Window k
// of the global sequence goes to rank k % world, so ranks never share a batch.
// With a shuffle seed, the shard order and the window order inside each shard
// are permuted anew each epoch (a pure function of seed, epoch, shard). The
// position (epoch, shard, window) is all the state there is: resume restores it.
#pragma once
#include <glob.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdint>
#include <string>
#include <vector>

#include "rng.h"
#include "util.h"

static const int32_t SHARD_MAGIC = 20240520;
static const int SHARD_HEADER_WORDS = 256;

struct ShardInfo {
    std::string path;
    int version = 0;          // 1 uint16, 2 uint32
    long long ntok = 0;
};

// Validate a shard's header against its size; one-line error naming the file.
inline ShardInfo open_shard_info(const std::string& path) {
    InFile f(path.c_str(), "rb");
    long long size = file_size(f, path.c_str());
    int32_t h[SHARD_HEADER_WORDS];
    if (size < (long long)sizeof(h)) fatal("%s: shard is truncated (%lld bytes, the header alone is 1024)", path.c_str(), size);
    read_exact(f, h, sizeof(h), path.c_str(), "shard header");
    if (h[0] != SHARD_MAGIC) fatal("%s: not a token shard (bad magic %d, expected %d)", path.c_str(), h[0], SHARD_MAGIC);
    if (h[1] != 1 && h[1] != 2) fatal("%s: shard version %d is not supported (1: uint16, 2: uint32)", path.c_str(), h[1]);
    if (h[2] < 0) fatal("%s: corrupt shard header (negative token count)", path.c_str());
    ShardInfo s{path, h[1], h[2]};
    long long want = (long long)sizeof(h) + s.ntok * (s.version == 1 ? 2 : 4);
    if (size < want) fatal("%s: shard is truncated (%lld bytes, the header promises %lld)", path.c_str(), size, want);
    if (size > want) fatal("%s: shard has %lld bytes, the header describes %lld (trailing data)", path.c_str(), size, want);
    return s;
}

// Write tokens as a shard, atomically. Version 1 (uint16) when every id fits.
inline void write_shard(const std::string& path, const std::vector<int32_t>& toks, int version = 0) {
    int32_t maxid = 0;
    for (int32_t t : toks) {
        if (t < 0) fatal("write_shard: negative token id %d", t);
        maxid = std::max(maxid, t);
    }
    if (version == 0) version = maxid <= 65535 ? 1 : 2;
    if (version == 1 && maxid > 65535) fatal("write_shard: token id %d does not fit a uint16 shard", maxid);
    int32_t h[SHARD_HEADER_WORDS] = {SHARD_MAGIC, version, (int32_t)toks.size()};
    AtomicFile f(path);
    f.write(h, sizeof(h));
    if (version == 1) {
        std::vector<uint16_t> t16(toks.begin(), toks.end());
        f.write(t16.data(), t16.size() * 2);
    } else {
        f.write(toks.data(), toks.size() * 4);
    }
    f.commit_or_die();
}

inline std::vector<std::string> glob_files(const std::string& pattern) {
    glob_t g;
    std::vector<std::string> out;
    if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    return out;   // glob sorts the names
}

struct LoaderPosition {
    long long epoch = 0, shard = 0, window = 0;
};

struct DataLoader {
    int B = 0, T = 0, rank = 0, world = 1, vocab = 0;
    uint64_t shuffle_seed = 0;   // 0: no shuffling
    std::vector<ShardInfo> shards;
    LoaderPosition pos;
    std::vector<int32_t> inputs, targets;   // B*T each, filled by next_batch()

    // the state derived from pos
    std::vector<long long> shard_order, window_order;
    FILE* f = nullptr;
    long long cur_shard = -1;
    std::vector<uint8_t> raw;

    long long windows_in(const ShardInfo& s) const { return s.ntok > (long long)B * T ? (s.ntok - 1) / ((long long)B * T) : 0; }

    void init(const std::string& pattern, int B_, int T_, int vocab_, int rank_ = 0, int world_ = 1, uint64_t seed = 0) {
        B = B_; T = T_; vocab = vocab_; rank = rank_; world = world_; shuffle_seed = seed;
        if (B < 1 || T < 1) fatal("data loader: batch size and sequence length must be positive");
        if (world < 1 || rank < 0 || rank >= world) fatal("data loader: rank %d not in [0, world=%d)", rank, world);
        std::vector<std::string> files = glob_files(pattern);
        if (files.empty()) fatal("no files match %s", pattern.c_str());
        long long total_windows = 0;
        for (const std::string& p : files) {
            ShardInfo s = open_shard_info(p);
            if (windows_in(s) == 0) {
                fprintf(stderr, "warning: %s has %lld tokens, fewer than one batch (B*T+1 = %lld): skipped\n", p.c_str(),
                        s.ntok, (long long)B * T + 1);
                continue;
            }
            total_windows += windows_in(s);
            shards.push_back(s);
        }
        if (shards.empty() || total_windows < world)
            fatal("%s: not enough tokens for one batch of B=%d x T=%d per rank (%d ranks)", pattern.c_str(), B, T, world);
        check_token_ids();
        inputs.resize((size_t)B * T);
        targets.resize((size_t)B * T);
        set_position(LoaderPosition{});
    }
    // Every token id of every shard < vocab, checked once before the first step (a bad id
    // found in the middle of a run would lose the steps since its last checkpoint); read
    // in 16 MiB pieces at disk speed. Says how long it took when that is noticeable.
    void check_token_ids() const {
        auto t0 = std::chrono::steady_clock::now();
        std::vector<uint8_t> buf(1 << 24);
        for (const ShardInfo& s : shards) {
            InFile in(s.path.c_str(), "rb");
            const int bytes = s.version == 1 ? 2 : 4;
            if (fseeko(in, SHARD_HEADER_WORDS * 4, SEEK_SET) != 0) fatal("%s: cannot seek", s.path.c_str());
            for (long long done = 0; done < s.ntok;) {
                const long long n = std::min<long long>(s.ntok - done, (long long)buf.size() / bytes);
                read_exact(in, buf.data(), (size_t)n * bytes, s.path.c_str(), "tokens");
                for (long long i = 0; i < n; i++) {
                    uint32_t t = 0;
                    memcpy(&t, buf.data() + i * bytes, bytes);
                    if (t >= (uint32_t)vocab)
                        fatal("%s: token id %u at position %lld is >= the model's vocab (%d)", s.path.c_str(), t, done + i, vocab);
                }
                done += n;
            }
        }
        double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (sec > 1.0) printf("data: token ids of %lld tokens checked against the vocab in %.1f s\n", total_tokens(), sec);
    }
    ~DataLoader() { if (f) fclose(f); }

    static std::vector<long long> permutation(long long n, uint64_t seed) {
        std::vector<long long> p(n);
        for (long long i = 0; i < n; i++) p[i] = i;
        if (seed) {   // Fisher-Yates with a private generator
            Rng r(seed);
            for (long long i = n - 1; i > 0; i--) std::swap(p[i], p[r.next_u64() % (uint64_t)(i + 1)]);
        }
        return p;
    }
    void set_position(LoaderPosition p) {
        if (p.epoch < 0 || p.shard < 0 || p.shard >= (long long)shards.size() || p.window < 0)
            fatal("data loader: position (epoch %lld, shard %lld, window %lld) does not fit this data (%zu shards)", p.epoch,
                  p.shard, p.window, shards.size());
        pos = p;
        uint64_t s = shuffle_seed;
        shard_order = permutation((long long)shards.size(), s ? s * 1000003ull + (uint64_t)pos.epoch : 0);
        load_window_order();
    }
    void load_window_order() {
        const ShardInfo& sh = shards[shard_order[pos.shard]];
        uint64_t s = shuffle_seed;
        window_order = permutation(windows_in(sh), s ? (s * 1000003ull + (uint64_t)pos.epoch) * 7919ull + (uint64_t)pos.shard + 1 : 0);
        if (pos.window >= (long long)window_order.size())
            fatal("data loader: position (shard %lld, window %lld) does not fit %s (%zu windows of B*T = %lld tokens)", pos.shard,
                  pos.window, sh.path.c_str(), window_order.size(), (long long)B * T);
    }
    // Advance pos by one global window; wraps to the next shard / epoch.
    void advance() {
        if (++pos.window >= (long long)window_order.size()) {
            pos.window = 0;
            if (++pos.shard >= (long long)shards.size()) {
                pos.shard = 0;
                pos.epoch++;
                set_position(pos);
                return;
            }
            load_window_order();
        }
    }
    // Fill inputs/targets with this rank's next batch.
    void next_batch() {
        // skip the windows that belong to the other ranks: global window g goes to rank g % world
        for (int r = 0; r < rank; r++) advance();
        read_window(shards[shard_order[pos.shard]], window_order[pos.window]);
        for (int r = rank; r < world; r++) advance();
    }
    void read_window(const ShardInfo& s, long long w) {
        long long idx = shard_order[pos.shard];
        if (idx != cur_shard) {
            if (f) fclose(f);
            f = open_or_die(s.path.c_str(), "rb");
            cur_shard = idx;
        }
        int bytes = s.version == 1 ? 2 : 4;
        size_t n = (size_t)B * T + 1;
        raw.resize(n * bytes);
        long long off = SHARD_HEADER_WORDS * 4 + w * (long long)B * T * bytes;
        if (fseeko(f, off, SEEK_SET) != 0) fatal("%s: cannot seek to token %lld", s.path.c_str(), w * (long long)B * T);
        read_exact(f, raw.data(), raw.size(), s.path.c_str(), "tokens");
        for (size_t i = 0; i < n; i++) {
            int64_t t = bytes == 2 ? (int64_t)((uint16_t*)raw.data())[i] : (int64_t)((uint32_t*)raw.data())[i];
            if (t >= vocab)
                fatal("%s: token id %lld at position %lld is >= the model's vocab (%d)", s.path.c_str(), (long long)t,
                      w * (long long)B * T + (long long)i, vocab);
            if (i < n - 1) inputs[i] = (int32_t)t;
            if (i > 0) targets[i - 1] = (int32_t)t;
        }
    }
    void reset() { set_position(LoaderPosition{}); }
    long long total_tokens() const {
        long long n = 0;
        for (const ShardInfo& s : shards) n += s.ntok;
        return n;
    }
    long long windows_per_epoch() const {
        long long n = 0;
        for (const ShardInfo& s : shards) n += windows_in(s);
        return n;
    }
};
