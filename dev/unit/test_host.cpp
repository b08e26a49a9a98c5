// Unit tests of the host code shared by both trainers (common/): token shards and
// the data loader, checkpoints, flags, the LR schedule. Error paths run in a
// forked child so that fatal()'s exit can be checked: exit code and message.
//   ./build/test_host [scratch dir]      (default: a fresh folder under /tmp)
#include <sys/wait.h>

#include <functional>
#include <set>

#include "../../common/checkpoint.h"
#include "../../common/dataloader.h"
#include "../../common/flags.h"
#include "../../common/schedule.h"
#include "unit_test.h"

// Run fn in a child; require a non-zero exit and `want` in its stderr.
static void expect_fatal(const char* what, const std::function<void()>& fn, const std::string& want) {
    ChildResult r = run_in_child(fn);
    // the error is the last line (warnings may come before it), one line, "error: ..."
    std::string err = r.err;
    size_t nl = err.rfind('\n');
    if (nl != std::string::npos) err = err.substr(nl + 1);
    bool ok = r.exited_nonzero && err.rfind("error: ", 0) == 0 && err.find(want) != std::string::npos;
    g_checks++;
    if (!ok) g_fail++;
    printf("  %-4s %-40s -> %s\n", ok ? "ok" : "FAIL", what, err.c_str());
    if (!ok) printf("       wanted a last line 'error: ...' containing '%s' and a non-zero exit (status %d)\n", want.c_str(), r.status);
}

static std::vector<int32_t> iota_tokens(int n, int mod, int base = 0) {
    std::vector<int32_t> t(n);
    for (int i = 0; i < n; i++) t[i] = base + i % mod;
    return t;
}

static void test_shards(const std::string& dir) {
    printf("shards and loader\n");
    // v1 (uint16) and v2 (uint32) shards round-trip through the loader
    write_shard(dir + "/a_000.bin", iota_tokens(1000, 50000));
    write_shard(dir + "/big_000.bin", iota_tokens(1000, 100000, 65000));
    CHECK(open_shard_info(dir + "/a_000.bin").version == 1);
    CHECK(open_shard_info(dir + "/big_000.bin").version == 2);
    {
        DataLoader dl;
        dl.init(dir + "/big_000.bin", 2, 8, 100000);
        dl.next_batch();
        bool ok = true;
        for (int i = 0; i < 16; i++) ok &= dl.inputs[i] == 65000 + i && dl.targets[i] == 65000 + i + 1;
        CHECK(ok);
        dl.next_batch();   // the second window starts at B*T = 16
        CHECK(dl.inputs[0] == 65016 && dl.targets[15] == 65032);
    }
    // odd sizes: 1000 tokens, B*T = 3*7 = 21 -> (1000-1)/21 = 47 windows; ranks split them
    {
        std::set<int> seen;
        int per_rank[3] = {0, 0, 0};
        for (int r = 0; r < 3; r++) {
            DataLoader dl;
            dl.init(dir + "/a_000.bin", 3, 7, 50000, r, 3);
            CHECK(dl.windows_per_epoch() == 47);
            for (int k = 0; k < 15; k++) {   // 15 steps x 3 ranks = 45 windows, within one epoch
                dl.next_batch();
                int w = dl.inputs[0] / 21;
                CHECK(w % 3 == r);           // window g goes to rank g % world
                CHECK(seen.insert(w).second);  // never shared between ranks
                per_rank[r]++;
            }
        }
        CHECK(seen.size() == 45 && per_rank[0] == 15);
    }
    // shuffling: a permutation of all windows, same for the same seed, differs by epoch
    {
        DataLoader a, b;
        a.init(dir + "/a_000.bin", 3, 7, 50000, 0, 1, 42);
        b.init(dir + "/a_000.bin", 3, 7, 50000, 0, 1, 42);
        std::vector<int> e0, e1;
        std::set<int> s0;
        for (int k = 0; k < 47; k++) { a.next_batch(); b.next_batch(); e0.push_back(a.inputs[0]); s0.insert(a.inputs[0]); CHECK(a.inputs == b.inputs); }
        for (int k = 0; k < 47; k++) { a.next_batch(); e1.push_back(a.inputs[0]); }
        CHECK(s0.size() == 47);
        CHECK(e0 != e1);
        std::vector<int> sorted = e0;
        std::sort(sorted.begin(), sorted.end());
        CHECK(sorted != e0);   // actually shuffled
        // resume: restoring a saved position gives the same next batches
        LoaderPosition p = a.pos;
        a.next_batch();
        std::vector<int32_t> want = a.inputs;
        DataLoader c;
        c.init(dir + "/a_000.bin", 3, 7, 50000, 0, 1, 42);
        c.set_position(p);
        c.next_batch();
        CHECK(c.inputs == want);
        expect_fatal("position beyond the data", [&] { DataLoader d; d.init(dir + "/a_000.bin", 3, 7, 50000, 0, 1, 42); d.set_position({0, 0, 47}); },
                     "does not fit");
        expect_fatal("shard index beyond the data", [&] { DataLoader d; d.init(dir + "/a_000.bin", 3, 7, 50000); d.set_position({0, 1, 0}); },
                     "does not fit this data (1 shards)");
    }
    // a shard shorter than one batch is skipped with a warning; the others are used
    write_shard(dir + "/m_000.bin", iota_tokens(10, 100));
    write_shard(dir + "/m_001.bin", iota_tokens(300, 100));
    {
        DataLoader dl;
        dl.init(dir + "/m_*.bin", 2, 8, 100);
        CHECK(dl.shards.size() == 1 && dl.windows_per_epoch() == (300 - 1) / 16);
    }
    // errors, each a one-line message naming the file
    expect_fatal("only shards shorter than a batch", [&] { DataLoader dl; dl.init(dir + "/m_000.bin", 2, 8, 100); }, "not enough tokens");
    expect_fatal("no file matches", [&] { DataLoader dl; dl.init(dir + "/nothing_*.bin", 2, 8, 100); }, "no files match");
    expect_fatal("token id >= vocab", [&] { DataLoader dl; dl.init(dir + "/a_000.bin", 2, 8, 10); dl.next_batch(); }, "a_000.bin: token id 10");
    {
        FILE* f = fopen((dir + "/bad_magic.bin").c_str(), "wb");
        int32_t h[256] = {12345, 1, 4};
        uint16_t t[4] = {1, 2, 3, 4};
        fwrite(h, 4, 256, f); fwrite(t, 2, 4, f); fclose(f);
        f = fopen((dir + "/bad_version.bin").c_str(), "wb");
        h[0] = SHARD_MAGIC; h[1] = 7;
        fwrite(h, 4, 256, f); fwrite(t, 2, 4, f); fclose(f);
        f = fopen((dir + "/truncated.bin").c_str(), "wb");
        h[1] = 1; h[2] = 100;
        fwrite(h, 4, 256, f); fwrite(t, 2, 4, f); fclose(f);
        f = fopen((dir + "/short_header.bin").c_str(), "wb");
        fwrite(h, 4, 10, f); fclose(f);
    }
    expect_fatal("bad shard magic", [&] { open_shard_info(dir + "/bad_magic.bin"); }, "bad_magic.bin: not a token shard");
    expect_fatal("bad shard version", [&] { open_shard_info(dir + "/bad_version.bin"); }, "bad_version.bin: shard version 7");
    expect_fatal("truncated shard", [&] { open_shard_info(dir + "/truncated.bin"); }, "truncated.bin: shard is truncated");
    expect_fatal("truncated shard header", [&] { open_shard_info(dir + "/short_header.bin"); }, "short_header.bin: shard is truncated");
    expect_fatal("bad rank", [&] { DataLoader dl; dl.init(dir + "/a_000.bin", 2, 8, 50000, 3, 2); }, "rank 3");
}

static void test_checkpoint(const std::string& dir) {
    printf("checkpoints\n");
    ModelConfig c;
    c.arch = ARCH_LLAMA; c.n_layer = 3; c.n_head = 2; c.d_model = 8; c.ffn = 12; c.vocab = 50; c.max_seq_len = 16;
    c.post_ln_layers = 1;
    finalize_config(c);
    ParamTable pt = build_param_table(c);
    std::vector<float> p(pt.total), m(pt.total), v(pt.total);
    for (size_t i = 0; i < pt.total; i++) { p[i] = i * 0.5f; m[i] = -1.f * i; v[i] = i * 2.f; }
    std::string path = dir + "/ck.bin";
    write_checkpoint(path, c, 7, p.data(), m.data(), v.data());
    CheckpointHeader h;
    std::vector<float> p2, m2, v2;
    read_checkpoint(path, &h, p2, &m2, &v2);
    CHECK(h.step == 7 && h.has_optimizer == 1 && h.cfg.post_ln_layers == 1 && h.cfg.ffn == 12);
    CHECK(h.cfg.padded_vocab == 128 && h.cfg.norm_eps == 1e-6f);
    CHECK(p2 == p && m2 == m && v2 == v);
    // layer slices are contiguous and cover every block tensor
    size_t covered = 0;
    for (int l = 0; l < c.n_layer; l++) covered += pt.layer_end[l] - pt.layer_begin[l];
    size_t block_total = 0;
    for (const ParamTensor& t : pt.t) if (t.layer >= 0 && t.layer < c.n_layer) block_total += t.numel();
    CHECK(covered == block_total);
    // no temporary file is left behind
    CHECK(glob_files(dir + "/ck.bin.tmp*").empty());

    std::vector<char> bytes;
    {
        FILE* f = fopen(path.c_str(), "rb");
        bytes.resize(file_size(f, path.c_str()));
        CHECK(fread(bytes.data(), 1, bytes.size(), f) == bytes.size());
        fclose(f);
    }
    auto write_variant = [&](const std::string& name, size_t len, int word, int32_t value) {
        std::vector<char> b(bytes.begin(), bytes.begin() + len);
        if (word >= 0) memcpy(&b[word * 4], &value, 4);
        FILE* f = fopen((dir + "/" + name).c_str(), "wb");
        fwrite(b.data(), 1, b.size(), f);
        fclose(f);
        return dir + "/" + name;
    };
    std::string trunc = write_variant("ck_trunc.bin", bytes.size() - 5, -1, 0);
    std::string trunc_h = write_variant("ck_trunc_header.bin", 100, -1, 0);
    std::string magic = write_variant("ck_magic.bin", bytes.size(), 0, 1234);
    std::string ver = write_variant("ck_version.bin", bytes.size(), 1, 99);
    std::string kbad = write_variant("ck_k.bin", bytes.size(), 10, 9);
    std::string nparams = write_variant("ck_nparams.bin", bytes.size(), 20, 12345);
    CheckpointHeader hh;
    std::vector<float> q;
    expect_fatal("missing checkpoint", [&] { read_checkpoint(dir + "/nope.bin", &hh, q); }, "cannot open");
    expect_fatal("truncated checkpoint", [&] { read_checkpoint(trunc, &hh, q); }, "ck_trunc.bin: file is truncated");
    expect_fatal("truncated checkpoint header", [&] { read_checkpoint(trunc_h, &hh, q); }, "ck_trunc_header.bin: file is truncated");
    expect_fatal("checkpoint bad magic", [&] { read_checkpoint(magic, &hh, q); }, "ck_magic.bin: not a checkpoint");
    expect_fatal("checkpoint bad version", [&] { read_checkpoint(ver, &hh, q); }, "ck_version.bin: checkpoint version 99");
    expect_fatal("checkpoint K > n_layer", [&] { read_checkpoint(kbad, &hh, q); }, "ck_k.bin: corrupt checkpoint header");
    expect_fatal("checkpoint num_params mismatch", [&] { read_checkpoint(nparams, &hh, q); }, "does not match");
    {   // a failed write reports why and leaves no file behind
        std::string err;
        CHECK(!write_checkpoint(dir + "/no/such/dir/x.bin", c, 0, p.data(), nullptr, nullptr, nullptr, &err));
        CHECK(err.find("cannot write") != std::string::npos && err.find("no/such/dir/x.bin") != std::string::npos);
    }
    {   // the training state round-trips
        TrainState t;
        t.loader_epoch = 3; t.loader_shard = 1; t.loader_window = 12345678901LL; t.rng[2] = 0xdeadbeefcafef00dULL;
        t.log_offset = 1LL << 40; t.B = 4; t.T = 16; t.total_batch = 128; t.shuffle_seed = -5; t.skipped_steps = 2;
        CHECK(write_checkpoint(dir + "/ck_state.bin", c, 9, p.data(), m.data(), v.data(), &t));
        CheckpointHeader h3;
        std::vector<float> p3;
        read_checkpoint(dir + "/ck_state.bin", &h3, p3);
        CHECK(h3.has_train_state == 1 && h3.train.loader_epoch == 3 && h3.train.loader_window == 12345678901LL &&
              h3.train.rng[2] == 0xdeadbeefcafef00dULL && h3.train.log_offset == (1LL << 40) && h3.train.B == 4 &&
              h3.train.T == 16 && h3.train.total_batch == 128 && h3.train.shuffle_seed == -5 && h3.train.skipped_steps == 2);
        CHECK(p3 == p);
    }
}

static void test_flags() {
    printf("flags and schedule\n");
    auto parse = [](std::vector<std::string> args) {
        std::vector<char*> argv = {(char*)"prog"};
        for (std::string& a : args) argv.push_back((char*)a.c_str());
        TrainConfig c;
        parse_train_flags((int)argv.size(), argv.data(), c);
        c.model.post_ln_layers = parse_placement(c.placement, c.model.n_layer);
        finalize_config(c.model);
        return c;
    };
    TrainConfig c = parse({"-p", "llama-130m", "--lr=5e-4"});
    CHECK(c.model.d_model == 768 && c.model.n_layer == 12 && c.model.ffn == 2048 && c.lr == 5e-4f && c.model.post_ln_layers == 3);
    c = parse({"--lr", "2e-3", "--preset", "llama-250m", "-k", "pre"});   // the preset applies first whatever its position
    CHECK(c.lr == 2e-3f && c.model.n_layer == 24 && c.model.post_ln_layers == 0 && c.warmup == 4000);
    c = parse({"-p", "llama-1b", "-k", "post"});
    CHECK(c.model.post_ln_layers == 24 && c.model.d_model == 2048 && c.model.ffn == 5461);
    c = parse({"-p", "gpt2-124m", "--post_ln_layers", "5"});
    CHECK(c.model.arch == ARCH_GPT && c.model.post_ln_layers == 5 && c.model.ffn == 3072 && c.model.padded_vocab == 50304);
    expect_fatal("unknown flag", [&] { parse({"--bogus", "1"}); }, "unknown flag --bogus");
    expect_fatal("unknown preset", [&] { parse({"-p", "llama-3b"}); }, "unknown preset 'llama-3b'");
    expect_fatal("post_ln_layers > L", [&] { parse({"-p", "llama-71m", "-k", "13"}); }, "--post_ln_layers must be in [0, n_layer=12], got 13");
    expect_fatal("post_ln_layers < 0", [&] { parse({"-p", "llama-71m", "-k", "-1"}); }, "--post_ln_layers must be in [0, n_layer=12], got -1");
    expect_fatal("non-numeric value", [&] { parse({"--lr", "fast"}); }, "--lr expects a number");
    expect_fatal("missing value", [&] { parse({"--lr"}); }, "flag --lr needs a value");
    expect_fatal("seq_len > max_seq_len", [&] {
        TrainConfig t = parse({"-p", "llama-71m", "-t", "512"});
        check_train_config(t);
    }, "--seq_len 512 does not fit the model's max_seq_len 256");
    expect_fatal("total_batch not a multiple", [&] {
        TrainConfig t = parse({"-p", "llama-71m", "-b", "3", "-d", "1000"});
        check_train_config(t);
    }, "--total_batch 1000 is not a multiple");
    // schedule: warmup ramps from max/warmup, cosine ends at the floor
    CHECK(fabs(lr_at(0, 1.0, 10, 100, 0.1) - 0.1) < 1e-12);
    CHECK(fabs(lr_at(9, 1.0, 10, 100, 0.1) - 1.0) < 1e-12);
    CHECK(fabs(lr_at(10, 1.0, 10, 100, 0.1) - 1.0) < 1e-12);
    CHECK(fabs(lr_at(99, 1.0, 10, 100, 0.1) - 0.1) < 1e-12);
    CHECK(fabs(lr_at(55, 1.0, 10, 101, 0.1) - 0.55) < 1e-12);
}

int main(int argc, char** argv) {
    std::string dir = argc > 1 ? argv[1] : "";
    if (dir.empty()) {
        char tmpl[] = "/tmp/mixln_test_host_XXXXXX";
        if (!mkdtemp(tmpl)) fatal("cannot make a scratch folder in /tmp");
        dir = tmpl;
    }
    test_shards(dir);
    test_checkpoint(dir);
    test_flags();
    printf("test_host: %d checks, %d failed\n", g_checks, g_fail);
    std::string cmd = "rm -rf '" + dir + "'";
    if (argc <= 1 && system(cmd.c_str()) != 0) fprintf(stderr, "warning: could not remove %s\n", dir.c_str());
    return g_fail ? 1 : 0;
}
