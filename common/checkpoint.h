// Checkpoint files (docs/FORMATS.md, "Checkpoint"): a 256 x int32 header with
// magic, version and the full model config (and, for a training checkpoint, the
// state a bit-exact resume needs: data-loader position, RNG, log offset, batch
// shape, run id), then every parameter in parameter-table order (fp32), then
// optionally the AdamW state (m, v; fp32), then (version 2) an 8-byte checksum of
// everything before it, written last and verified on every load. Version-1 files
// (no run id, no checksum) still load.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "config.h"
#include "util.h"

static const int32_t CKPT_MAGIC = 0x4E4C584D;   // bytes "MXLN"
static const int32_t CKPT_VERSION = 2;         // written; versions 1 and 2 are read
static const int CKPT_HEADER_WORDS = 256;
static const int CKPT_CHECKSUM_BYTES = 8;      // version 2: the trailer

// The checksum of a checkpoint (version 2): over the file's bytes before the trailer,
// read as little-endian uint32 words w_0, w_1, ... (every part is a multiple of 4
// bytes). Four lanes, word i into lane i % 4: lane = (lane ^ w_i) * P with the
// 64-bit FNV prime P, then the lanes and the word count are mixed into one uint64.
// Each lane update is a bijection of the lane, so any change to one word always
// changes the result; four independent lanes keep it at memory speed.
struct Checksum {
    uint64_t lane[4] = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL, 0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL};
    uint64_t words = 0;
    void add(const void* data, size_t bytes) {   // bytes: a multiple of 4
        const unsigned char* p = (const unsigned char*)data;
        const unsigned char* end = p + bytes / 4 * 4;
        const uint64_t P = 0x100000001b3ULL;
        uint64_t x[4];
        while (p < end && (words & 3)) { uint32_t u; memcpy(&u, p, 4); lane[words & 3] = (lane[words & 3] ^ u) * P; p += 4; words++; }
        for (; end - p >= 16; p += 16, words += 4) {
            uint32_t u[4];
            memcpy(u, p, 16);
            for (int k = 0; k < 4; k++) x[k] = (lane[k] ^ u[k]) * P;
            memcpy(lane, x, sizeof x);
        }
        while (p < end) { uint32_t u; memcpy(&u, p, 4); lane[words & 3] = (lane[words & 3] ^ u) * P; p += 4; words++; }
    }
    uint64_t value() const {
        uint64_t h = words;
        for (uint64_t l : lane) { h ^= l; h *= 0x9e3779b97f4a7c15ULL; h ^= h >> 29; }
        return h;
    }
};

// What a bit-exact resume needs besides weights and optimizer state.
struct TrainState {
    int64_t loader_epoch = 0, loader_shard = 0, loader_window = 0;   // DataLoader position
    uint64_t rng[4] = {0, 0, 0, 0};    // the sampling RNG
    int64_t log_offset = 0;            // bytes of the JSONL log written so far
    int32_t B = 0, T = 0;
    int64_t total_batch = 0, shuffle_seed = 0;
    int32_t skipped_steps = 0;         // updates skipped by the non-finite guard
    int32_t precision = 0;             // the CUDA trainer's --precision: 0 fp32, 1 bf16 (fp32 master), 2 pure bf16
                                       // (the file always stores fp32 values; the CPU trainer writes 0)
    uint64_t run_id = 0;               // version 2: the run that wrote it (0: unknown, version 1); pruning
                                       // deletes only the current run's checkpoints (common/run.h)
};

struct CheckpointHeader {
    int version = CKPT_VERSION;   // as read (1 or 2); a write is always CKPT_VERSION
    ModelConfig cfg;
    int dtype = 0;             // 0 fp32 (the only one written by the CPU trainer)
    int has_optimizer = 0;     // 1: m and v follow the parameters
    int step = 0;              // optimizer steps completed
    int has_train_state = 0;   // 1: `train` is meaningful
    TrainState train;
    uint64_t num_params = 0;
};

inline void checkpoint_header_to_words(const CheckpointHeader& h, int32_t* w) {
    memset(w, 0, CKPT_HEADER_WORDS * 4);
    const ModelConfig& c = h.cfg;
    w[0] = CKPT_MAGIC; w[1] = CKPT_VERSION; w[2] = c.arch;
    w[3] = c.n_layer; w[4] = c.n_head; w[5] = c.d_model; w[6] = c.ffn; w[7] = c.vocab;
    w[8] = c.padded_vocab; w[9] = c.max_seq_len; w[10] = c.post_ln_layers; w[11] = c.scaled_init;
    w[12] = h.dtype; w[13] = h.has_optimizer; w[14] = h.step; w[15] = h.has_train_state;
    w[16] = f32_to_word(c.norm_eps); w[17] = f32_to_word(c.rope_theta);
    w[18] = f32_to_word(c.init_std); w[19] = f32_to_word(c.emb_std);
    u64_to_words(w + 20, h.num_params);
    const TrainState& t = h.train;
    u64_to_words(w + 22, (uint64_t)t.loader_epoch); u64_to_words(w + 24, (uint64_t)t.loader_shard);
    u64_to_words(w + 26, (uint64_t)t.loader_window);
    for (int i = 0; i < 4; i++) u64_to_words(w + 28 + 2 * i, t.rng[i]);
    u64_to_words(w + 36, (uint64_t)t.log_offset);
    w[38] = t.B; w[39] = t.T;
    u64_to_words(w + 40, (uint64_t)t.total_batch); u64_to_words(w + 42, (uint64_t)t.shuffle_seed);
    w[44] = t.skipped_steps;
    w[45] = t.precision;
    u64_to_words(w + 46, t.run_id);
}

// Parse and validate a header; `path` names the file in every error.
inline CheckpointHeader checkpoint_header_from_words(const int32_t* w, const char* path) {
    if (w[0] != CKPT_MAGIC) fatal("%s: not a checkpoint (bad magic 0x%08x, expected 0x%08x)", path, (unsigned)w[0], (unsigned)CKPT_MAGIC);
    if (w[1] != 1 && w[1] != CKPT_VERSION)
        fatal("%s: checkpoint version %d is not supported (this build reads versions 1 and %d)", path, w[1], CKPT_VERSION);
    CheckpointHeader h;
    h.version = w[1];
    ModelConfig& c = h.cfg;
    if (w[2] != ARCH_GPT && w[2] != ARCH_LLAMA) fatal("%s: corrupt checkpoint header (arch %d)", path, w[2]);
    c.arch = w[2]; c.n_layer = w[3]; c.n_head = w[4]; c.d_model = w[5]; c.ffn = w[6]; c.vocab = w[7];
    c.padded_vocab = w[8]; c.max_seq_len = w[9]; c.post_ln_layers = w[10]; c.scaled_init = w[11];
    h.dtype = w[12]; h.has_optimizer = w[13]; h.step = w[14]; h.has_train_state = w[15];
    c.norm_eps = f32_from_word(w[16]); c.rope_theta = f32_from_word(w[17]);
    c.init_std = f32_from_word(w[18]); c.emb_std = f32_from_word(w[19]);
    h.num_params = u64_from_words(w + 20);
    TrainState& t = h.train;
    t.loader_epoch = (int64_t)u64_from_words(w + 22); t.loader_shard = (int64_t)u64_from_words(w + 24);
    t.loader_window = (int64_t)u64_from_words(w + 26);
    for (int i = 0; i < 4; i++) t.rng[i] = u64_from_words(w + 28 + 2 * i);
    t.log_offset = (int64_t)u64_from_words(w + 36);
    t.B = w[38]; t.T = w[39];
    t.total_batch = (int64_t)u64_from_words(w + 40); t.shuffle_seed = (int64_t)u64_from_words(w + 42);
    t.skipped_steps = w[44];
    t.precision = w[45];
    t.run_id = h.version >= 2 ? u64_from_words(w + 46) : 0;
    // sanity bounds before anything is allocated from these numbers
    if (c.n_layer < 1 || c.n_layer > 1024 || c.n_head < 1 || c.d_model < 1 || c.d_model > (1 << 16) ||
        c.ffn < 1 || c.ffn > (1 << 20) || c.vocab < 2 || c.padded_vocab < c.vocab || c.padded_vocab > (1 << 24) ||
        c.max_seq_len < 1 || c.max_seq_len > (1 << 20) || c.post_ln_layers < 0 || c.post_ln_layers > c.n_layer ||
        c.d_model % c.n_head || !(c.norm_eps > 0) || h.dtype != 0 || (h.has_optimizer != 0 && h.has_optimizer != 1) ||
        h.step < 0 || (h.has_train_state != 0 && h.has_train_state != 1))
        fatal("%s: corrupt checkpoint header (inconsistent config values)", path);
    if (h.has_train_state && (t.loader_epoch < 0 || t.loader_shard < 0 || t.loader_window < 0 || t.log_offset < 0 ||
                              t.B < 1 || t.T < 1 || t.T > c.max_seq_len || t.total_batch < 1 || t.skipped_steps < 0 ||
                              t.precision < 0 || t.precision > 2))
        fatal("%s: corrupt checkpoint header (training state out of range)", path);
    if (build_param_table(c).total != h.num_params)
        fatal("%s: corrupt checkpoint header (num_params %llu does not match the config's %zu)", path,
              (unsigned long long)h.num_params, build_param_table(c).total);
    return h;
}

inline size_t checkpoint_bytes(const CheckpointHeader& h) {
    return CKPT_HEADER_WORDS * 4 + h.num_params * 4 * (h.has_optimizer ? 3 : 1) + (h.version >= 2 ? CKPT_CHECKSUM_BYTES : 0);
}

// Write params (and m, v when non-null; and the training state when non-null)
// to `path` atomically. Returns false, with the one-line reason in *err, when the
// write fails (the previous file at `path`, if any, is unchanged).
// `slow_ms` > 0 sleeps between the parameters and the optimizer state: a test
// hook that makes "killed while writing a checkpoint" easy to hit.
inline bool write_checkpoint(const std::string& path, const ModelConfig& cfg, int step, const float* params,
                             const float* m, const float* v, const TrainState* train = nullptr,
                             std::string* err = nullptr, int slow_ms = 0) {
    CheckpointHeader h;
    h.cfg = cfg; h.step = step; h.has_optimizer = (m && v) ? 1 : 0;
    if (train) { h.has_train_state = 1; h.train = *train; }
    h.num_params = build_param_table(cfg).total;
    int32_t w[CKPT_HEADER_WORDS];
    checkpoint_header_to_words(h, w);
    AtomicFile f(path);
    Checksum sum;
    auto put = [&](const void* src, size_t n) { sum.add(src, n); f.write(src, n); };
    put(w, sizeof(w));
    put(params, h.num_params * 4);
    if (slow_ms > 0) usleep((useconds_t)slow_ms * 1000);
    if (h.has_optimizer) { put(m, h.num_params * 4); put(v, h.num_params * 4); }
    const uint64_t check = sum.value();   // the trailer, written last
    f.write(&check, sizeof check);
    bool ok = f.commit();
    if (!ok && err) *err = f.error;
    return ok;
}

// Read a checkpoint from `f` at its current position; `avail` is the number of
// bytes the checkpoint may occupy (the rest of the file, or a section of a
// reference state file). Reads the header into *h and the parameters into
// params (resized); m/v are filled when present and the pointers are non-null.
inline void read_checkpoint_from(FILE* f, long long avail, const char* path, CheckpointHeader* h,
                                 std::vector<float>& params, std::vector<float>* m = nullptr,
                                 std::vector<float>* v = nullptr) {
    int32_t w[CKPT_HEADER_WORDS];
    if (avail < (long long)sizeof(w)) fatal("%s: file is truncated (%lld bytes, a checkpoint header is %zu)", path, avail, sizeof(w));
    read_exact(f, w, sizeof(w), path, "checkpoint header");
    *h = checkpoint_header_from_words(w, path);
    if ((long long)checkpoint_bytes(*h) > avail)
        fatal("%s: file is truncated (%lld bytes, the header promises %zu)", path, avail, checkpoint_bytes(*h));
    Checksum sum;
    sum.add(w, sizeof(w));
    params.resize(h->num_params);
    read_exact(f, params.data(), h->num_params * 4, path, "parameters");
    sum.add(params.data(), h->num_params * 4);
    if (h->has_optimizer) {
        std::vector<float> tmp;
        std::vector<float>& mm = m ? *m : tmp;
        mm.resize(h->num_params);
        read_exact(f, mm.data(), h->num_params * 4, path, "optimizer m");
        sum.add(mm.data(), h->num_params * 4);
        std::vector<float>& vv = v ? *v : tmp;
        vv.resize(h->num_params);
        read_exact(f, vv.data(), h->num_params * 4, path, "optimizer v");
        sum.add(vv.data(), h->num_params * 4);
    }
    if (h->version >= 2) {
        uint64_t stored = 0;
        read_exact(f, &stored, sizeof stored, path, "checksum");
        if (stored != sum.value())
            fatal("%s: checksum mismatch (stored %016llx, computed %016llx): the file is damaged", path,
                  (unsigned long long)stored, (unsigned long long)sum.value());
    }
}

// Whether `path` is a complete checkpoint whose checksum matches (version 1, which
// has none: its size matches its header). Never exits; *why says what is wrong.
// Reads the file once, in 16 MiB pieces.
inline bool verify_checkpoint(const std::string& path, std::string* why) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) { *why = strerror(errno); return false; }
    std::vector<char> buf(1 << 24);
    int32_t w[CKPT_HEADER_WORDS];
    long long size = -1;
    bool ok = fread(w, 1, sizeof w, f) == sizeof w && fseeko(f, 0, SEEK_END) == 0 && (size = ftello(f)) > 0 &&
              fseeko(f, sizeof w, SEEK_SET) == 0 && w[0] == CKPT_MAGIC && (w[1] == 1 || w[1] == CKPT_VERSION);
    if (!ok) { fclose(f); *why = "not a complete checkpoint (bad header)"; return false; }
    CheckpointHeader h;
    h.version = w[1]; h.has_optimizer = w[13] ? 1 : 0; h.num_params = u64_from_words(w + 20);
    if ((long long)checkpoint_bytes(h) != size) { fclose(f); *why = "size does not match its header"; return false; }
    if (h.version < 2) { fclose(f); return true; }
    Checksum sum;
    sum.add(w, sizeof w);
    long long left = size - (long long)sizeof w - CKPT_CHECKSUM_BYTES;
    while (left > 0) {
        size_t n = (size_t)std::min<long long>(left, (long long)buf.size());
        if (fread(buf.data(), 1, n, f) != n) { fclose(f); *why = "read error"; return false; }
        sum.add(buf.data(), n);
        left -= (long long)n;
    }
    uint64_t stored = 0;
    ok = fread(&stored, 1, sizeof stored, f) == sizeof stored && stored == sum.value();
    fclose(f);
    if (!ok) *why = "checksum mismatch (the file is damaged)";
    return ok;
}

inline void read_checkpoint(const std::string& path, CheckpointHeader* h, std::vector<float>& params,
                            std::vector<float>* m = nullptr, std::vector<float>* v = nullptr) {
    InFile f(path.c_str(), "rb");
    long long size = file_size(f, path.c_str());
    read_checkpoint_from(f, size, path.c_str(), h, params, m, v);
    if ((long long)checkpoint_bytes(*h) != size)
        fatal("%s: file has %lld bytes, the header describes %zu (trailing garbage or wrong file)", path.c_str(), size,
              checkpoint_bytes(*h));
}
