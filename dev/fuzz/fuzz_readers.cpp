// libFuzzer targets for every binary reader: the bytes are written to a file and
// handed to the real reader. A clean rejection (FatalError, thrown instead of
// exit() in -DFUZZING builds) is fine; a crash, hang, leak or sanitizer report is
// a bug. One binary per reader, chosen at compile time with -DFUZZ_<NAME>:
//   FUZZ_CHECKPOINT  common/checkpoint.h read_checkpoint
//   FUZZ_SHARD       common/dataloader.h open_shard_info + DataLoader batches
//   FUZZ_REFSTATE    common/refstate.h read_refstate
//   FUZZ_TOKENIZER   common/tokenizer.h Tokenizer::load + decode
// Built and run by tests/reliability.sh (about 30 s each), seeded from dev/fuzz/corpus/<name>/.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "../../common/checkpoint.h"
#include "../../common/dataloader.h"
#include "../../common/refstate.h"
#if __has_include("../../common/tokenizer.h")
#include "../../common/tokenizer.h"
#define HAVE_TOKENIZER 1
#endif

static std::string scratch_path() {
    static std::string p = "/tmp/mixln_fuzz_" + std::to_string((long)getpid()) + ".bin";
    return p;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string path = scratch_path();
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    try {
#if defined(FUZZ_CHECKPOINT)
        CheckpointHeader h;
        std::vector<float> p, m, v;
        read_checkpoint(path, &h, p, &m, &v);
#elif defined(FUZZ_SHARD)
        ShardInfo s = open_shard_info(path);
        (void)s;
        DataLoader dl;
        dl.init(path, 2, 4, 300, 0, 1, size % 3);
        for (int i = 0; i < 3; i++) dl.next_batch();
#elif defined(FUZZ_REFSTATE)
        RefState s = read_refstate(path);
        (void)s;
#elif defined(FUZZ_TOKENIZER) && defined(HAVE_TOKENIZER)
        Tokenizer t;
        t.load(path);
        std::vector<int> ids;
        for (int i = 0; i < 64; i++) ids.push_back((int)((i * 2654435761u + size) % (unsigned)(t.vocab + 5)) - 2);
        std::string out = t.decode(ids.data(), (int)ids.size());
        (void)out;
#endif
    } catch (const FatalError&) {
    }
    return 0;
}
