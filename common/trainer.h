// trainer.h - the training driver both trainers share: the starting point (fresh, --init_from
// or --resume), the banner, the log, validation, sampling, checkpoints, stop signals and the
// step loop; and the analysis modes' driver (--mode angular | layer_drop).
//
// It is templated on a Run, the trainer's own adapter around its model (train_gpt.cpp's
// CpuRun, train_gpt.cu's CudaRun), which provides:
//   model                        the model: .cfg, .table (logical), .step (AdamW steps taken)
//   precision                    PREC_FP32 / PREC_BF16 / PREC_PURE_BF16 (common/run.h)
//   rank(), nranks()             data parallel (the CPU trainer: 0 of 1)
//   bcast(std::string*), all_max(int), all_sum(double)   collectives (identities in one process)
//   init_model(cfg)              build the model for a finalised config
//   prepare(tc, analysis)        set the model up for the run (the CUDA trainer plans and allocates
//                                its memory here: a run that cannot fit stops before any work)
//   upload(p, m, v)              the starting state (fp32, logical table; m, v null: zeros)
//   loss(in, tgt, B, T, skip)    the mean loss of one batch (forward only; skip: a block removed)
//   angular_distances(val, n)    the residual streams of n validation batches (common/analysis.h)
//   sync()                       wait for queued work (before a step's timer starts)
//   step(train, accum, lr, tc, poison, want_sq)   one optimizer step (StepResult); before each
//                                micro-step it asks stop_before_micro_step(nranks()) and, when told
//                                to, returns StepResult::stopped(micro) without applying anything
//   sample_max_len(), sample_logits(seq, t)      common/sample.h's callback
//   save(path, step, ts, err, slow_ms)   write a checkpoint (rank 0; every rank takes part)
//   banner_head(), banner_parallel(), banner_tail(), memory_mib()   its lines of the banner
//   config_json(j)               its fields of the log's config line
//   mfu(flops_tok, tok_s)        model FLOPs utilisation in percent (-1: unknown); rate(...) the
//                                step line's throughput column
//   report_end(ms, steps, flops_tok, tc), shutdown()   the end of a run
#pragma once
#include <signal.h>

#include <cerrno>
#include <cstdlib>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "analysis.h"
#include "checkpoint.h"
#include "config.h"
#include "dataloader.h"
#include "flags.h"
#include "init.h"
#include "layout.h"
#include "logger.h"
#include "rng.h"
#include "run.h"
#include "sample.h"
#include "schedule.h"
#include "util.h"

// One optimizer step's numbers, as a Run's step() returns them.
struct StepResult {
    double loss;             // the mean loss over the step's micro-batches
    float norm;              // the global gradient norm before clipping
    bool finite;             // false: the update is skipped (the step counter is not advanced)
    std::vector<double> sq;  // per tensor (table order) sum of g^2, when asked for
    int stopped_after;       // -1: the step ran; >= 0: a stop request ended it after this many micro-steps
                             // (its partial gradients dropped, nothing applied)
    static StepResult stopped(int micro) { return StepResult{0.0, 0.f, true, {}, micro}; }
};

// Asked by a Run's step() before each micro-step (common/run.h stop_requested): a one-process
// run stops at the next micro-step boundary after SIGINT/SIGTERM or a failed log write; data
// parallel ranks finish the step and stop together after it (the signal shared by all_max).
inline bool stop_before_micro_step(int nranks) { return nranks == 1 && stop_requested(); }

// Mean loss over `steps` batches of a loader (validation), optionally with block skip_layer
// removed (--mode layer_drop). Data parallel: the loader's rank r of `world` reads batches r,
// r + world, ... of the same sequence of batches, and the sum over the ranks covers each of
// the `steps` batches once.
template <typename Run>
double evaluate(Run& run, DataLoader& loader, int steps, int skip_layer = -1) {
    loader.reset();
    double s = 0.0;
    for (int i = loader.rank; i < steps; i += loader.world) {
        loader.next_batch();
        s += run.loss(loader.inputs.data(), loader.targets.data(), loader.B, loader.T, skip_layer);
    }
    return run.all_sum(s) / steps;
}

// --mode angular | layer_drop (docs/ANALYSIS.md): the first --val_steps validation batches,
// split over the ranks; rank 0 writes the file.
template <typename Run>
int run_analysis(const TrainConfig& tc, Run& run) {
    const ModelConfig& c = run.model.cfg;
    DataLoader val;
    val.init(tc.val_data, tc.B, tc.T, c.vocab, run.rank(), run.nranks());
    printf("analysis: %s of %s, the first %d validation batches of %d x %d%s (precision %s)\n", tc.mode.c_str(),
           placement_name(c).c_str(), tc.val_steps, tc.B, tc.T,
           run.nranks() > 1 ? (", split over " + std::to_string(run.nranks()) + " ranks").c_str() : "", precision_name(run.precision));
    std::string out;
    if (tc.mode == "angular") {
        out = run.angular_distances(val, tc.val_steps).json_and_print();
    } else {
        out = layer_drop(c, [&](int skip) { return evaluate(run, val, tc.val_steps, skip); });
    }
    if (run.rank() == 0) write_text_atomically(tc.analysis_out, out);
    return run.all_max(0);   // no rank leaves before rank 0 has written
}

template <typename Run>
struct Trainer {
    TrainConfig& tc;
    Run& run;
    // the starting point: the newest checkpoint with --resume, else --init_from's weights,
    // else a fresh initialisation (params empty until the model is built)
    std::string resume_from;
    CheckpointHeader resume_h;
    std::vector<float> params, m, v;
    bool have_opt = false;
    // the run
    int accum = 1;                 // micro-steps per optimizer step (per rank)
    DataLoader train, val;
    bool have_val = false;
    Rng sample_rng{0};
    Sampler sampler;               // common/sample.h: text with --tokenizer, else token ids
    Logger log;
    long start_step = 0;
    int skipped = 0;               // updates skipped for non-finite values
    double flops_tok = 0.0, total_ms = 0.0;
    long timed_steps = 0;

    Trainer(TrainConfig& tc_, Run& run_) : tc(tc_), run(run_) {}
    bool rank0() const { return run.rank() == 0; }

    // Build the model from --init_from, --resume or the flags, and read the starting state.
    // Data parallel, every rank reads the same starting point.
    // --init_from X --resume 1: the checkpoint in --out_dir wins once there is one (its config too).
    void find_start() {
        if (rank0()) resume_from = open_out_dir(tc);   // lock --out_dir; the newest checkpoint that verifies, if resuming
        if (tc.resume) run.bcast(&resume_from);
        if (!resume_from.empty()) use_resume_config(tc, resume_from);   // (every rank: rank 0 already did in open_out_dir)
        if (!tc.init_from.empty() && resume_from.empty()) {
            CheckpointHeader h;
            read_checkpoint(tc.init_from, &h, params);
            run.init_model(h.cfg);
            printf("init from %s (step %d)\n", tc.init_from.c_str(), h.step);
        } else {
            if (tc.model.n_layer == 0) fatal("no model given: use --preset NAME or --n_layer/--n_head/--d_model/--vocab (see --help)");
            tc.model.post_ln_layers = parse_placement(tc.placement, tc.model.n_layer);
            finalize_config(tc.model);
            run.init_model(tc.model);
            if (!resume_from.empty()) {
                read_checkpoint(resume_from, &resume_h, params, &m, &v);
                check_resume_config(resume_h, tc, run.precision, resume_from.c_str());
                run.model.step = resume_h.step;
                have_opt = true;
            }
        }
        tc.model = run.model.cfg;
    }

    // Model, memory, starting state; then the analysis modes, or training.
    int main() {
        if (tc.total_batch == 0) tc.total_batch = (long)tc.B * tc.T * run.nranks();
        find_start();
        check_train_config(tc, run.nranks());
        const bool analysis = tc.mode != "train";   // --mode angular | layer_drop: analyse the model, no training
        if (analysis) check_analysis_flags(tc);
        else if (tc.train_data.empty()) fatal("--train_data is required (a glob of token shards; see data/ and README)");
        run.prepare(tc, analysis);
        if (params.empty()) {   // fresh: the paper's initialisation (common/init.h), the same in both trainers
            params.assign(run.model.table.total, 0.f);
            init_params(run.model.table, run.model.cfg, (uint64_t)tc.seed, params.data());
        }
        run.upload(params, have_opt ? &m : nullptr, have_opt ? &v : nullptr);
        for (std::vector<float>* x : {&params, &m, &v}) std::vector<float>().swap(*x);   // the host copies are done with
        const int rc = analysis ? run_analysis(tc, run) : train_loop();
        run.shutdown();
        return rc;
    }

    // Loaders and the state a checkpoint restores (the data position, the sampling RNG, the
    // skipped-step count). Rank r of n reads global batches r, r + n, ... (common/dataloader.h):
    // one optimizer step covers the same tokens as a single process with n times the micro-steps.
    void open_data() {
        const ModelConfig& c = run.model.cfg;
        accum = (int)(tc.total_batch / ((long)tc.B * tc.T * run.nranks()));
        train.init(tc.train_data, tc.B, tc.T, c.vocab, run.rank(), run.nranks(), (uint64_t)tc.shuffle_seed);
        have_val = !tc.val_data.empty();
        if (have_val) val.init(tc.val_data, tc.B, tc.T, c.vocab, run.rank(), run.nranks());
        sample_rng = Rng((uint64_t)tc.seed + 17);
        sampler.init(tc, c.vocab);
        if (!resume_from.empty()) {
            const TrainState& t = resume_h.train;
            train.set_position(LoaderPosition{t.loader_epoch, t.loader_shard, t.loader_window});
            memcpy(sample_rng.s, t.rng, sizeof t.rng);
            start_step = resume_h.step;
            skipped = t.skipped_steps;
        }
    }

    void banner() {
        const ModelConfig& c = run.model.cfg;
        run.banner_head();
        printf("model: %s, %s, L=%d H=%d C=%d ffn=%d vocab=%d (padded %d), %.2fM parameters\n", arch_name(c.arch),
               placement_name(c).c_str(), c.n_layer, c.n_head, c.d_model, c.ffn, c.vocab, c.padded_vocab, run.model.table.total / 1e6);
        printf("init: linear std %g, embedding std %g%s, scaled residual init %s\n", c.init_std, c.emb_std,
               fabsf(c.emb_std - 0.632456f) < 1e-4f ? " (the paper's code's sqrt(2/5))" : "", c.scaled_init ? "on" : "off");
        printf("train: B=%d T=%d, %ld tokens/step (%d micro-steps%s), %ld steps, lr %g warmup %ld floor %g, wd %g, clip %g\n",
               tc.B, tc.T, tc.total_batch, accum, run.nranks() > 1 ? " per rank" : "", tc.steps, tc.lr, tc.warmup, tc.lr_floor,
               tc.weight_decay, tc.grad_clip);
        run.banner_parallel();
        printf("data: %s: %lld tokens in %zu shards%s; %s\n", tc.train_data.c_str(), train.total_tokens(), train.shards.size(),
               have_val ? "" : " (no validation data)", run.memory_mib().c_str());
        run.banner_tail();
        if (!resume_from.empty())
            printf("resume: %s (step %ld, data epoch %lld shard %lld window %lld)\n", resume_from.c_str(), start_step,
                   (long long)train.pos.epoch, (long long)train.pos.shard, (long long)train.pos.window);
    }

    // The log (rank 0): a resumed run cuts it back to what its checkpoint recorded; a fresh
    // one starts with the config line.
    void open_log() {
        const ModelConfig& c = run.model.cfg;
        if (rank0()) log.open(tc.log_path, resume_from.empty() ? -1 : resume_h.train.log_offset);
        if (!resume_from.empty()) return;
        JsonLine j;
        j.str("kind", "config").str("arch", arch_name(c.arch)).i("n_layer", c.n_layer).i("n_head", c.n_head)
            .i("d_model", c.d_model).i("ffn", c.ffn).i("vocab", c.vocab).i("post_ln_layers", c.post_ln_layers)
            .str("placement", placement_name(c)).f("emb_std", c.emb_std).f("init_std", c.init_std)
            .i("scaled_init", c.scaled_init).i("B", tc.B).i("T", tc.T).i("total_batch", tc.total_batch)
            .i("steps", tc.steps).f("lr", tc.lr).i("warmup", tc.warmup).f("lr_floor", tc.lr_floor)
            .f("weight_decay", tc.weight_decay).f("grad_clip", tc.grad_clip).i("seed", tc.seed)
            .i("params", (long long)run.model.table.total);
        run.config_json(j);
        log.write(j);
    }

    void validate(long step) {
        if (!have_val || tc.val_steps == 0) return;
        const float vl = (float)evaluate(run, val, tc.val_steps);
        printf("step %5ld | val loss %.4f | val ppl %.2f\n", step, vl, expf(vl));
        log.write(JsonLine().str("kind", "val").i("step", step).f("val_loss", vl).f("val_ppl", expf(vl)));
    }

    void sample() {
        if (tc.sample_tokens == 0 || !rank0()) return;
        sampler.print(sampler.sample(sampler.prompt(train.inputs[0]), tc.sample_tokens, run.sample_max_len(), sample_rng,
                                     [&](const std::vector<int>& seq, int t) { return run.sample_logits(seq, t); }));
    }

    // Write a checkpoint of the state after `step` optimizer steps and prune old ones; rank 0
    // writes, every rank learns whether it worked (run.save is a collective where the state is
    // sharded, and no rank exits while rank 0 is still writing).
    bool save(long step) {
        if (tc.out_dir.empty()) return false;
        TrainState ts;
        ts.loader_epoch = train.pos.epoch; ts.loader_shard = train.pos.shard; ts.loader_window = train.pos.window;
        memcpy(ts.rng, sample_rng.s, sizeof ts.rng);
        ts.log_offset = log.offset();
        ts.B = tc.B; ts.T = tc.T; ts.total_batch = tc.total_batch; ts.shuffle_seed = tc.shuffle_seed; ts.skipped_steps = skipped;
        ts.precision = run.precision; ts.run_id = tc.run_id;
        const std::string path = ckpt_path(tc.out_dir, step);
        std::string err;
        bool ok = run.save(path, step, ts, &err, tc.debug_slow_ckpt_ms);
        if (rank0()) {
            if (!ok) {
                fprintf(stderr, "error: checkpoint at step %ld not saved: %s\n", step, err.c_str());
            } else {
                printf("wrote checkpoint %s\n", path.c_str());
                prune_checkpoints(tc.out_dir, tc.keep_ckpts, tc.milestone_every, tc.run_id);   // this run's own
            }
        }
        return run.all_max(ok ? 0 : 1) == 0;
    }

    // One optimizer step with its step line and log line. Returns -1, or the exit code when a
    // stop request ended the step early (`at`: the state the step started from, checkpointed).
    int step_once(long step, StepStart& at) {
        const bool layer_norms = tc.layer_norms_every > 0 && step % tc.layer_norms_every == 0;
        run.sync();
        auto t0 = std::chrono::steady_clock::now();
        const float lr = (float)lr_at(step, tc.lr, tc.warmup, tc.steps, tc.lr_floor);
        const StepResult r = run.step(train, accum, lr, tc, step == tc.inject_nan_at, layer_norms);   // (MIXLN_TEST_NAN_AT)
        if (r.stopped_after >= 0) return at.stop(step, r.stopped_after, accum, !tc.out_dir.empty(), [&](long s) { return save(s); });
        if (!r.finite) handle_nonfinite(step, r.loss, r.norm, tc, &skipped, [&](long s) { return save(s); });
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (step > start_step || tc.steps - start_step == 1) { total_ms += ms; timed_steps++; }
        double tok_s = tc.total_batch / (ms / 1000.0);
        double eta_s = (timed_steps ? total_ms / timed_steps : ms) * (tc.steps - step - 1) / 1000.0;
        const double mfu = run.mfu(flops_tok, tok_s);
        if (step % tc.print_every == 0 || step == tc.steps - 1)
            printf("step %5ld/%ld | loss %.4f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s | %s | eta %.0fs\n", step + 1, tc.steps,
                   r.loss, r.norm, lr, ms, tok_s, run.rate(flops_tok, tok_s, mfu).c_str(), eta_s);
        JsonLine j = step_json(step, r.loss, r.norm, lr, ms, tok_s, r.finite, skipped);
        if (mfu >= 0) j.f("mfu", mfu / 100.0);
        if (layer_norms) {
            const ParamTable& pt = run.model.table;
            add_layer_norms(j, layer_norms_of(pt, r.sq), group_norm(pt, r.sq, "w"), group_norm(pt, r.sq, "norm_f"),
                            !run.model.cfg.gpt(), group_norm(pt, r.sq, "lm_head"));
        }
        log.write(j);
        return -1;
    }
    std::vector<float> layer_norms_of(const ParamTable& pt, const std::vector<double>& sq) const {
        return layer_norms(pt, run.model.cfg.n_layer, sq);   // common/run.h
    }

    int train_loop() {
        open_data();
        banner();
        open_log();
        signal(SIGINT, on_stop_signal);
        signal(SIGTERM, on_stop_signal);
        flops_tok = flops_per_token(run.model.table, run.model.cfg, tc.T);   // common/layout.h
        auto save_fn = [&](long s) { return save(s); };
        for (long step = start_step; step < tc.steps; step++) {
            StepStart at(train, sample_rng, log);   // what a stop in the middle of this step returns to
            if (tc.val_every > 0 && step % tc.val_every == 0) validate(step);   // (a resumed run repeats the val its checkpoint preceded)
            if (tc.sample_every > 0 && step > 0 && step % tc.sample_every == 0) sample();
            int rc = step_once(step, at);
            if (rc >= 0) return rc;
            if (run.nranks() > 1) g_stop_signal = run.all_max((int)g_stop_signal);   // a signal to any rank stops all at this step
            rc = stop_if_signalled(step + 1, !tc.out_dir.empty(), save_fn);
            if (rc >= 0) return rc;
            if (tc.ckpt_every > 0 && (step + 1) % tc.ckpt_every == 0 && step + 1 < tc.steps) save(step + 1);
        }
        validate(tc.steps);
        sample();
        if (!tc.out_dir.empty() && !save(tc.steps)) return 1;
        if (skipped) printf("%d update(s) skipped for non-finite values\n", skipped);
        run.report_end(total_ms, timed_steps, flops_tok, tc);
        return log.failed ? 1 : 0;   // a log write failed in the final validation (reported where it failed)
    }
};

// Test hooks, environment variables rather than flags (no part of a user's run, so not in
// --help): MIXLN_TEST_NAN_AT=S makes one gradient element NaN at step S (the non-finite
// guard's tests); MIXLN_TEST_SLOW_CKPT_MS=MS sleeps that long in the middle of each checkpoint
// write (the kill-during-write tests); MIXLN_TEST_SLOW_MICRO_MS=MS sleeps before each
// micro-step (common/run.h stop_requested: a long step out of a tiny model, the stop tests).
inline void read_test_hooks(TrainConfig& tc) {
    auto get = [](const char* name, long lo, long* out) {
        const char* v = getenv(name);
        if (!v) return;
        char* end = nullptr;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < lo || x > 2147483647L) fatal("environment variable %s must be an integer >= %ld, got '%s'", name, lo, v);
        *out = x;
    };
    long slow = tc.debug_slow_ckpt_ms;
    get("MIXLN_TEST_NAN_AT", 0, &tc.inject_nan_at);
    get("MIXLN_TEST_SLOW_CKPT_MS", 0, &slow);
    tc.debug_slow_ckpt_ms = (int)slow;
}

// The whole run of a trainer, after its flags are parsed.
template <typename Run>
int train_or_analyse(TrainConfig& tc, Run& run) {
    read_test_hooks(tc);
#ifdef _OPENMP
    if (tc.threads > 0) omp_set_num_threads(tc.threads);   // host threads (the initialisation's normals, common/init.h)
#endif
    Trainer<Run> t(tc, run);
    return t.main();
}
