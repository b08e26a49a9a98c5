// Pieces of a training run that both trainers share: the checkpoint folder
// (naming, listing, pruning, resume lookup), the resume config check, gradient
// clipping, the stop-signal flag.
//
// Checkpoints in --out_dir are ckpt_<step>.bin (8 digits). Every one is written
// atomically (common/util.h AtomicFile), so any ckpt_<step>.bin present is
// complete; ckpt_*.bin.tmp.<pid> files are unfinished writes of a killed run.
// One run owns a folder: it holds an advisory lock on <out_dir>/train.lock while it
// runs (the kernel drops it when the process dies, however it dies), every checkpoint
// carries the run's id, and pruning deletes only the run's own checkpoints. A fresh
// run (no --resume) into a folder holding checkpoints is refused unless --overwrite 1.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "dataloader.h"
#include "flags.h"
#include "logger.h"
#include "rng.h"
#include "util.h"

// SIGINT/SIGTERM: the first sets g_stop_signal (common/util.h), and the loop stops at
// the next micro-step boundary; a second one exits at once (what a user who presses
// Ctrl-C twice wants), leaving the checkpoints already in --out_dir as they are (an
// unfinished write is a .tmp file that --resume 1 removes).
inline void on_stop_signal(int sig) {
    static volatile sig_atomic_t signals = 0;
    if (signals++ > 0) {
        static const char msg[] = "\nreceived a second stop signal: exiting at once, nothing more is saved\n";
        ssize_t r = write(2, msg, sizeof msg - 1);
        (void)r;
        _exit(128 + sig);
    }
    if (!g_stop_signal) g_stop_signal = sig;   // a failed log write (already asking to stop) stays the reason
}

// Checked before each micro-step: true when the run should stop (a signal, or a
// failed log write). Test hook: MIXLN_TEST_SLOW_MICRO_MS=N sleeps N ms before each
// micro-step, which makes a long step out of a tiny model.
inline bool stop_requested() {
    static const int slow_ms = getenv("MIXLN_TEST_SLOW_MICRO_MS") ? atoi(getenv("MIXLN_TEST_SLOW_MICRO_MS")) : 0;
    if (slow_ms > 0) usleep((useconds_t)slow_ms * 1000);
    return g_stop_signal != 0;
}

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
// The run id in a checkpoint's header (0: unreadable, or version 1, which has none).
inline uint64_t checkpoint_run_id(const std::string& path) {
    int32_t w[CKPT_HEADER_WORDS];
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) return 0;
    bool ok = fread(w, 1, sizeof w, f) == sizeof w;
    fclose(f);
    return ok && w[0] == CKPT_MAGIC && w[1] >= 2 ? u64_from_words(w + 46) : 0;
}
// A fresh run's id: 64 random bits (never 0).
inline uint64_t new_run_id() {
    uint64_t id = 0;
    FILE* f = fopen("/dev/urandom", "rb");
    if (f) { if (fread(&id, 1, sizeof id, f) != sizeof id) id = 0; fclose(f); }
    id ^= (uint64_t)time(nullptr) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
    return id ? id : 1;
}
// Delete all but the newest `keep` checkpoints of run `run_id`, sparing multiples of
// milestone_every; other runs' checkpoints are never touched (run_id 0: every file).
inline void prune_checkpoints(const std::string& dir, int keep, int milestone_every, uint64_t run_id = 0) {
    std::vector<std::string> cks;
    for (const std::string& p : list_checkpoints(dir))
        if (run_id == 0 || checkpoint_run_id(p) == run_id) cks.push_back(p);
    keep = std::max(1, keep);
    for (size_t i = 0; i + keep < cks.size(); i++) {
        long st = ckpt_step_of(cks[i]);
        if (milestone_every > 0 && st % milestone_every == 0) continue;
        unlink(cks[i].c_str());
    }
}
// --resume: remove unfinished writes, return the newest checkpoint that verifies
// ("" if there is none). A damaged one (bad checksum, wrong size) is renamed to
// <name>.damaged, so that neither a later resume nor pruning counts it, and the
// next older one is tried; if every checkpoint is damaged the run stops.
inline std::string find_resume_checkpoint(const std::string& dir) {
    for (const std::string& t : glob_files(dir + "/ckpt_*.bin.tmp.*")) {
        printf("resume: removing the unfinished checkpoint %s\n", t.c_str());
        unlink(t.c_str());
    }
    std::vector<std::string> cks = list_checkpoints(dir);
    for (size_t i = cks.size(); i-- > 0;) {
        std::string why;
        if (verify_checkpoint(cks[i], &why)) return cks[i];
        std::string bad = cks[i] + ".damaged";
        if (rename(cks[i].c_str(), bad.c_str()) != 0) fatal("%s: %s, and it cannot be renamed: %s", cks[i].c_str(), why.c_str(), strerror(errno));
        printf("resume: %s: %s; renamed to %s, trying the next older checkpoint\n", cks[i].c_str(), why.c_str(), bad.c_str());
        if (i == 0) fatal("%s: no checkpoint verifies (the damaged ones are renamed *.damaged); nothing to resume from", dir.c_str());
    }
    return "";
}

// mkdir -p
inline void make_dirs(const std::string& dir) {
    for (size_t i = 1; i <= dir.size(); i++)
        if (i == dir.size() || dir[i] == '/') {
            std::string d = dir.substr(0, i);
            if (mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) fatal("cannot create folder %s: %s", d.c_str(), strerror(errno));
        }
}

// Take the advisory lock of a run on <dir>/train.lock for the life of the process
// (flock: released by the kernel when the process exits or is killed). A folder
// locked by a running trainer is a one-line error.
inline void lock_out_dir(const std::string& dir) {
    std::string path = dir + "/train.lock";
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fatal("cannot open the lock file %s: %s", path.c_str(), strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = {0};
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        for (char* c = pid; *c; c++) if (*c == '\n') *c = 0;
        fatal("--out_dir %s is in use by another run (process %s holds %s); wait for it, stop it, or use another --out_dir",
              dir.c_str(), pid[0] ? pid : "?", path.c_str());
    }
    std::string me = std::to_string((long)getpid()) + "\n";
    if (ftruncate(fd, 0) != 0 || pwrite(fd, me.data(), me.size(), 0) != (ssize_t)me.size())
        fatal("cannot write the lock file %s: %s", path.c_str(), strerror(errno));
    // fd stays open (and locked) until the process ends
}

// A fresh run into a folder that holds checkpoints would mix two runs (a later
// --resume 1 could continue the other one): refused, or with --overwrite 1 those
// checkpoints are deleted first.
inline void claim_out_dir(const TrainConfig& tc) {
    std::vector<std::string> cks = list_checkpoints(tc.out_dir);
    if (cks.empty()) return;
    if (!tc.overwrite)
        fatal("--out_dir %s already holds %zu checkpoint(s) (newest %s): continue that run with --resume 1, use an "
              "empty folder, or add --overwrite 1 to delete them", tc.out_dir.c_str(), cks.size(), cks.back().c_str());
    for (const std::string& p : cks) {
        if (unlink(p.c_str()) != 0) fatal("cannot delete %s: %s", p.c_str(), strerror(errno));
    }
    printf("--overwrite 1: deleted %zu checkpoint(s) of an earlier run in %s\n", cks.size(), tc.out_dir.c_str());
}

// Resuming a run that started from --init_from: the model config is the checkpoint's
// (X's, carried into it), not the model flags'. Without --init_from, nothing changes (the
// flags must match the checkpoint, check_resume_config).
inline void use_resume_config(TrainConfig& tc, const std::string& from) {
    if (tc.init_from.empty()) return;
    int32_t w[CKPT_HEADER_WORDS];
    InFile f(from.c_str(), "rb");
    read_exact(f, w, sizeof w, from.c_str(), "checkpoint header");
    tc.model = checkpoint_header_from_words(w, from.c_str()).cfg;
    tc.placement = std::to_string(tc.model.post_ln_layers);
    tc.init_from.clear();
}

// The --out_dir of a training run: create it, lock it, and find where the run starts.
// Returns the checkpoint to resume from ("" for a fresh start, from --init_from or a
// random init) and sets tc.run_id (the resumed run's id, or a new one). With --resume 1
// and --init_from X, a folder that holds a checkpoint wins and X is not read, so one
// command line serves a preemptible job that starts warm from X.
inline std::string open_out_dir(TrainConfig& tc) {
    tc.run_id = new_run_id();
    if (tc.out_dir.empty() || tc.mode != "train") return "";
    make_dirs(tc.out_dir);
    lock_out_dir(tc.out_dir);
    if (!tc.resume) { claim_out_dir(tc); return ""; }
    std::string from = find_resume_checkpoint(tc.out_dir);
    if (from.empty()) {
        printf("resume: no checkpoint in %s, starting %s\n", tc.out_dir.c_str(),
               tc.init_from.empty() ? "fresh" : ("from --init_from " + tc.init_from).c_str());
        return "";
    }
    if (uint64_t id = checkpoint_run_id(from)) tc.run_id = id;
    if (!tc.init_from.empty()) printf("resume: %s holds a checkpoint; --init_from %s is not used\n", tc.out_dir.c_str(), tc.init_from.c_str());
    use_resume_config(tc, from);
    return from;
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
    cmp("post_ln_layers", a.post_ln_layers, b.post_ln_layers); cmp("padded_vocab", a.padded_vocab, b.padded_vocab);
    cmp("scaled_init", a.scaled_init, b.scaled_init);
    auto cmpf = [&](const char* what, float x, float y) {   // bitwise: the run continues bit for bit or not at all
        if (memcmp(&x, &y, sizeof x) != 0)
            fatal("%s: checkpoint has %s=%.9g but the flags say %.9g (resume needs the same configuration)", path, what, x, y);
    };
    cmpf("norm_eps", a.norm_eps, b.norm_eps); cmpf("rope_theta", a.rope_theta, b.rope_theta);
    cmpf("init_std", a.init_std, b.init_std); cmpf("emb_std", a.emb_std, b.emb_std);
    cmp("precision (dtype; 0 = fp32)", h.dtype, 0);
    if (!h.has_optimizer || !h.has_train_state) fatal("%s: not a training checkpoint (no optimizer or training state)", path);
    if (h.train.precision != precision)
        fatal("%s: checkpoint holds precision %s but this run is %s (resume needs the same precision; "
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

// After a step (or an abandoned one, StepStart::stop): on a stop request, checkpoint the
// state after `steps_done` steps with save() and say how to resume. Returns the exit
// code (0 after a signal with the state saved; 1 when nothing could be saved, the run
// not being finished, or after a failed log write), or -1 to go on.
template <typename SaveFn>
inline int stop_if_signalled(long steps_done, bool have_out_dir, SaveFn save) {
    if (!g_stop_signal) return -1;
    const bool log_failed = g_stop_signal == STOP_LOG_FAILED;
    if (log_failed) printf("stopping at step %ld because the log could not be written: ", steps_done);
    else printf("received %s at step %ld: ", g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM", steps_done);
    if (save(steps_done)) {
        printf("resume with the same command plus --resume 1%s\n", log_failed ? " once the log can be written" : "");
        return log_failed ? 1 : 0;
    }
    printf("%s\n", have_out_dir ? "the checkpoint could not be written" : "no --out_dir, so nothing is saved and the run did not finish");
    return 1;
}

// The state at the start of an optimizer step that a stop in the middle of the step
// returns to: the data position, the sampling RNG and the log length. The step's
// partial gradients are dropped (weights and AdamW state change only at its end), so
// the checkpoint is the last completed step's, and a resumed run repeats this step
// (and the validation or sample at its start) exactly.
struct StepStart {
    DataLoader& loader;
    Rng& rng;
    Logger& log;
    LoaderPosition pos;
    Rng rng0;
    long long log_offset;
    StepStart(DataLoader& l, Rng& r, Logger& g) : loader(l), rng(r), log(g), pos(l.pos), rng0(r), log_offset(g.offset()) {}
    template <typename SaveFn>
    int stop(long step, int micro, int accum, bool have_out_dir, SaveFn save) {
        printf("step %ld stopped after %d of %d micro-steps; its partial gradients are dropped\n", step + 1, micro, accum);
        loader.set_position(pos);
        rng = rng0;
        if (log.f && !log.failed && ftruncate(fileno(log.f), (off_t)log_offset) == 0 && fseeko(log.f, log_offset, SEEK_SET) == 0)
            log.good = log_offset;
        return stop_if_signalled(step, have_out_dir, save);
    }
};

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
        printf("step %5ld: non-finite %s (loss %g, grad norm %g); the update is skipped\n", step + 1, what, loss, norm);
        bool saved = save(step);
        std::string where = saved ? " (last good state saved to " + ckpt_path(tc.out_dir, step) + ")"
                            : tc.out_dir.empty() ? " (no --out_dir: nothing saved)" : " (the checkpoint could not be written)";
        fatal("non-finite loss or gradient at step %ld; stopped%s", step + 1, where.c_str());
    }
    (*skipped)++;
    static long first = -1, last = -2;   // the current run of consecutive skipped steps (0-based)
    if (step != last + 1) first = step;
    last = step;
    printf("step %5ld: non-finite %s (loss %g, grad norm %g): update skipped (%d so far)\n", step + 1, what, loss, norm,
           *skipped);
    if (tc.skip_limit > 0 && step - first + 1 >= tc.skip_limit)
        fatal("steps %ld to %ld were all skipped for a non-finite loss or gradient (--skip_limit %d): the model or the data "
              "is broken; stopped without a checkpoint", first + 1, step + 1, tc.skip_limit);
}
