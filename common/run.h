// Pieces of a training run that both trainers share: the checkpoint folder
// (naming, listing, pruning, resume lookup), the resume config check, gradient
// clipping, the stop-signal flag.
//
// Checkpoints in --out_dir are ckpt_<step>.bin (8 digits). Every one is written
// atomically (common/util.h AtomicFile), so any ckpt_<step>.bin present is
// complete; ckpt_*.bin.tmp.<pid> files are unfinished writes of a killed run.
#pragma once
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "dataloader.h"
#include "flags.h"
#include "logger.h"
#include "util.h"

// Set from the SIGINT/SIGTERM handler: the one global a trainer has (a signal
// handler can reach nothing else). The loop checks it after each step.
inline volatile sig_atomic_t g_stop_signal = 0;
inline void on_stop_signal(int sig) { g_stop_signal = sig; }

// Precision of a run: the CPU trainer is always fp32; the CUDA trainer's --precision.
enum Precision { PREC_FP32 = 0, PREC_BF16 = 1, PREC_PURE_BF16 = 2 };
inline const char* precision_name(int p) { return p == PREC_FP32 ? "fp32" : p == PREC_BF16 ? "bf16" : "pure_bf16"; }

inline std::string ckpt_path(const std::string& dir, long step) {
    char name[64];
    snprintf(name, sizeof name, "/ckpt_%08ld.bin", step);
    return dir + name;
}
inline long ckpt_step_of(const std::string& path) {
    size_t p = path.rfind("ckpt_");
    return p == std::string::npos ? -1 : atol(path.c_str() + p + 5);
}
inline std::vector<std::string> list_checkpoints(const std::string& dir) {   // oldest first
    std::vector<std::string> v = glob_files(dir + "/ckpt_[0-9]*.bin");
    std::sort(v.begin(), v.end(), [](const std::string& a, const std::string& b) { return ckpt_step_of(a) < ckpt_step_of(b); });
    return v;
}
// Delete all but the newest `keep` checkpoints, sparing multiples of milestone_every.
inline void prune_checkpoints(const std::string& dir, int keep, int milestone_every) {
    std::vector<std::string> cks = list_checkpoints(dir);
    keep = std::max(1, keep);
    for (size_t i = 0; i + keep < cks.size(); i++) {
        long st = ckpt_step_of(cks[i]);
        if (milestone_every > 0 && st % milestone_every == 0) continue;
        unlink(cks[i].c_str());
    }
}
// --resume: remove unfinished writes, return the newest checkpoint ("" if none).
inline std::string find_resume_checkpoint(const std::string& dir) {
    for (const std::string& t : glob_files(dir + "/ckpt_*.bin.tmp.*")) {
        printf("resume: removing the unfinished checkpoint %s\n", t.c_str());
        unlink(t.c_str());
    }
    std::vector<std::string> cks = list_checkpoints(dir);
    if (cks.empty()) {
        printf("resume: no checkpoint in %s, starting fresh\n", dir.c_str());
        return "";
    }
    return cks.back();
}

// mkdir -p
inline void make_dirs(const std::string& dir) {
    for (size_t i = 1; i <= dir.size(); i++)
        if (i == dir.size() || dir[i] == '/') {
            std::string d = dir.substr(0, i);
            if (mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) fatal("cannot create folder %s: %s", d.c_str(), strerror(errno));
        }
}

// A mismatch between a checkpoint and the flags is refused, naming the field.
inline void check_resume_config(const CheckpointHeader& h, const TrainConfig& tc, int precision, const char* path) {
    const ModelConfig &a = h.cfg, &b = tc.model;
    auto cmp = [&](const char* what, long long x, long long y) {
        if (x != y) fatal("%s: checkpoint has %s=%lld but the flags say %lld (resume needs the same configuration)", path, what, x, y);
    };
    if (a.arch != b.arch) fatal("%s: checkpoint has arch=%s but the flags say %s", path, arch_name(a.arch), arch_name(b.arch));
    cmp("n_layer", a.n_layer, b.n_layer); cmp("n_head", a.n_head, b.n_head); cmp("d_model", a.d_model, b.d_model);
    cmp("ffn", a.ffn, b.ffn); cmp("vocab", a.vocab, b.vocab); cmp("max_seq_len", a.max_seq_len, b.max_seq_len);
    cmp("post_ln_layers", a.post_ln_layers, b.post_ln_layers);
    cmp("precision (dtype; 0 = fp32)", h.dtype, 0);
    if (!h.has_optimizer || !h.has_train_state) fatal("%s: not a training checkpoint (no optimizer or training state)", path);
    if (h.train.precision != precision)
        fatal("%s: checkpoint was trained with precision %s but this run is %s (resume needs the same precision; "
              "--init_from takes the weights under any precision)", path, precision_name(h.train.precision), precision_name(precision));
    cmp("batch_size", h.train.B, tc.B); cmp("seq_len", h.train.T, tc.T); cmp("total_batch", h.train.total_batch, tc.total_batch);
    cmp("shuffle_seed", h.train.shuffle_seed, tc.shuffle_seed);
}

// Clip scale as torch.nn.utils.clip_grad_norm_: min(1, clip / (norm + 1e-6)); clip 0 = off.
inline float clip_scale(float norm, float clip) {
    if (clip <= 0.f) return 1.f;
    return std::min(1.f, clip / (norm + 1e-6f));
}


// The log line of one optimizer step (docs/FORMATS.md, "Training log"); the
// per-layer fields are added by add_layer_norms on the steps that log them.
inline JsonLine step_json(long step, double loss, float norm, float lr, double ms, double tok_s, bool finite, int skipped_total) {
    JsonLine j;
    j.str("kind", "step").i("step", step).f("loss", loss).f("grad_norm", norm).f("lr", lr).f("ms", ms).f("tok_per_s", tok_s);
    if (!finite) j.i("skipped", 1).i("skipped_total", skipped_total);
    return j;
}
// has_head = false for a head tied to the embedding (gpt), whose norm is in emb.
inline void add_layer_norms(JsonLine& j, const std::vector<float>& layers, float emb, float final_norm, bool has_head,
                            float head) {
    j.arr("layer_grad_norms", layers).f("emb_grad_norm", emb).f("final_norm_grad_norm", final_norm);
    if (has_head) j.f("head_grad_norm", head);
}

// After a step: on SIGINT/SIGTERM, checkpoint the state after `steps_done` steps
// with save() and say how to resume. Returns the exit code, or -1 to go on.
template <typename SaveFn>
inline int stop_if_signalled(long steps_done, bool have_out_dir, SaveFn save) {
    if (!g_stop_signal) return -1;
    printf("received %s at step %ld: ", g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM", steps_done);
    if (save(steps_done)) {
        printf("resume with the same command plus --resume 1\n");
        return 0;
    }
    printf("%s\n", have_out_dir ? "the checkpoint could not be written" : "no --out_dir, nothing saved");
    return have_out_dir ? 1 : 0;
}

// Per-layer norms sqrt(sum over layer l's tensors of ||g||^2) from per-tensor squares in
// table order (both trainers; the CUDA trainer's padded table has the same tensors in the
// same order).
inline std::vector<float> layer_norms(const ParamTable& table, int n_layer, const std::vector<double>& sq) {
    std::vector<double> acc(n_layer, 0.0);
    for (size_t i = 0; i < table.t.size(); i++)
        if (table.t[i].layer >= 0 && table.t[i].layer < n_layer) acc[table.t[i].layer] += sq[i];
    std::vector<float> out(n_layer);
    for (int l = 0; l < n_layer; l++) out[l] = (float)sqrt(acc[l]);
    return out;
}
// Norm over the tensors whose name starts with `prefix` (e.g. "w" for the embeddings
// wte/wpe, "norm_f" for the final norm, "lm_head" for the head).
inline float group_norm(const ParamTable& table, const std::vector<double>& sq, const char* prefix) {
    double s = 0.0;
    for (size_t i = 0; i < table.t.size(); i++)
        if (table.t[i].name.rfind(prefix, 0) == 0) s += sq[i];
    return (float)sqrt(s);
}

// sqrt of the sum of per-tensor squared gradient norms: the global gradient norm.
inline float global_norm(const std::vector<double>& sq) {
    double tot = 0.0;
    for (double x : sq) tot += x;
    return (float)sqrt(tot);
}

// A step whose loss or gradient norm is not finite (--nonfinite): with "stop",
// checkpoint the last good state (after `step` updates) with save() and exit 1;
// with "skip", count it in *skipped and go on without the update.
template <typename SaveFn>
inline void handle_nonfinite(long step, double loss, float norm, const TrainConfig& tc, int* skipped, SaveFn save) {
    const char* what = std::isfinite(loss) ? "gradient norm" : "loss";
    if (tc.nonfinite == "stop") {
        printf("step %5ld: non-finite %s (loss %g, grad norm %g); the update was not applied\n", step + 1, what, loss, norm);
        bool saved = save(step);
        std::string where = saved ? " (last good state saved to " + ckpt_path(tc.out_dir, step) + ")"
                            : tc.out_dir.empty() ? " (no --out_dir: nothing saved)" : " (the checkpoint could not be written)";
        fatal("non-finite loss or gradient at step %ld; stopped%s", step + 1, where.c_str());
    }
    (*skipped)++;
    printf("step %5ld: non-finite %s (loss %g, grad norm %g): update skipped (%d so far)\n", step + 1, what, loss, norm,
           *skipped);
}
