// Reference state files written by dev/make_reference.py (docs/FORMATS.md,
// "Reference state"): everything the PyTorch reference computed for one tiny
// config, for the C++ and CUDA tests to compare against.
#pragma once
#include <string>
#include <vector>

#include "checkpoint.h"
#include "util.h"

static const int32_t STATE_MAGIC = 0x4652584D;   // bytes "MXRF"
static const int32_t STATE_VERSION = 1;
static const int STATE_NAME_BYTES = 48;

struct RefParam { std::string name; int rows, cols, layer, decay; };

struct RefState {
    std::string path;
    int B = 0, T = 0, n_steps = 0;
    float lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, grad_clip = 0, lr_floor = 0;
    int warmup = 0, sched_total = 0;
    std::vector<RefParam> table;          // PyTorch's parameter table
    CheckpointHeader ckpt;                // the initial weights, as a checkpoint
    std::vector<float> params;
    std::vector<int> inputs, targets;     // B*T
    std::vector<float> logits;            // B*T*vocab (real vocab, not padded)
    float loss = 0;
    std::vector<float> grads;             // num_params, table order
    std::vector<float> layer_norms;       // n_layer
    float total_norm = 0;
    std::vector<float> lrs, losses, grad_norms;   // n_steps each
};

inline RefState read_refstate(const std::string& path) {
    RefState s;
    s.path = path;
    const char* p = path.c_str();
    InFile f(p, "rb");
    long long size = file_size(f, p);
    int32_t h[256];
    if (size < (long long)sizeof(h)) fatal("%s: file is truncated (%lld bytes, a state header is 1024)", p, size);
    read_exact(f, h, sizeof(h), p, "state header");
    if (h[0] != STATE_MAGIC) fatal("%s: not a reference state (bad magic 0x%08x)", p, (unsigned)h[0]);
    if (h[1] != STATE_VERSION) fatal("%s: reference state version %d is not supported (this build reads %d)", p, h[1], STATE_VERSION);
    s.B = h[2]; s.T = h[3]; s.n_steps = h[4];
    int ntab = h[5];
    uint64_t ckpt_bytes = u64_from_words(h + 6);
    s.lr = f32_from_word(h[8]); s.beta1 = f32_from_word(h[9]); s.beta2 = f32_from_word(h[10]);
    s.eps = f32_from_word(h[11]); s.weight_decay = f32_from_word(h[12]); s.grad_clip = f32_from_word(h[13]);
    s.lr_floor = f32_from_word(h[14]);
    s.warmup = h[15]; s.sched_total = h[16];
    if (s.B < 1 || s.B > 4096 || s.T < 1 || s.T > 65536 || s.n_steps < 0 || s.n_steps > 100000 || ntab < 1 ||
        ntab > 100000)
        fatal("%s: corrupt reference state header", p);
    if ((long long)(1024 + ntab * (STATE_NAME_BYTES + 16) + ckpt_bytes) > size)
        fatal("%s: file is truncated (%lld bytes, the header promises more than %llu)", p, size,
              (unsigned long long)(1024 + ntab * (STATE_NAME_BYTES + 16) + ckpt_bytes));
    for (int i = 0; i < ntab; i++) {
        char name[STATE_NAME_BYTES + 1] = {0};
        int32_t w[4];
        read_exact(f, name, STATE_NAME_BYTES, p, "parameter table");
        read_exact(f, w, sizeof(w), p, "parameter table");
        s.table.push_back({name, w[0], w[1], w[2], w[3]});
    }
    long long ckpt_start = ftello(f);
    read_checkpoint_from(f, (long long)ckpt_bytes, p, &s.ckpt, s.params);
    if (ftello(f) != ckpt_start + (long long)ckpt_bytes) fatal("%s: embedded checkpoint size mismatch", p);
    const ModelConfig& c = s.ckpt.cfg;
    size_t BT = (size_t)s.B * s.T, n = s.ckpt.num_params;
    long long want = ftello(f) + (long long)(BT * 2 * 4 + BT * c.vocab * 4 + 4 + n * 4 + (c.n_layer + 1) * 4 + 3 * s.n_steps * 4);
    if (size != want) fatal("%s: file has %lld bytes, expected %lld (truncated or corrupt)", p, size, want);
    s.inputs.resize(BT); s.targets.resize(BT);
    read_exact(f, s.inputs.data(), BT * 4, p, "inputs");
    read_exact(f, s.targets.data(), BT * 4, p, "targets");
    s.logits.resize(BT * c.vocab);
    read_exact(f, s.logits.data(), s.logits.size() * 4, p, "logits");
    read_exact(f, &s.loss, 4, p, "loss");
    s.grads.resize(n);
    read_exact(f, s.grads.data(), n * 4, p, "gradients");
    s.layer_norms.resize(c.n_layer);
    read_exact(f, s.layer_norms.data(), c.n_layer * 4, p, "layer gradient norms");
    read_exact(f, &s.total_norm, 4, p, "total gradient norm");
    for (auto* v : {&s.lrs, &s.losses, &s.grad_norms}) {
        v->resize(s.n_steps);
        read_exact(f, v->data(), s.n_steps * 4, p, "step records");
    }
    for (size_t i = 0; i < BT; i++)
        if (s.inputs[i] < 0 || s.inputs[i] >= c.vocab || s.targets[i] < 0 || s.targets[i] >= c.vocab)
            fatal("%s: token id out of range in the stored batch", p);
    return s;
}
