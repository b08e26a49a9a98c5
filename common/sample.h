// common/sample.h - the samples both trainers print (--sample_every N, --sample_tokens K,
// --tokenizer FILE): K tokens drawn autoregressively at temperature 1 after a prompt token,
// printed as text when a tokenizer file is given, else as token ids.
//
//   prompt     the tokenizer's end-of-text token (a document start) when it names one that
//              the model's vocab holds, else the first token of the current training batch
//   next token softmax of the last position's logits (the vocab entries, not the padding),
//              inverse CDF at one uniform draw of the run's sample RNG (seed + 17, saved in
//              checkpoints, so a resumed run samples as the uninterrupted one)
//   length     prompt + K tokens, at most max_len in all; the forward re-runs on the whole
//              prefix for each token (O(T^2) work, fine for a progress sample)
// Each trainer hands over its forward as a callback, so both sample the same tokens from the
// same logits (tests/cuda.sh compares them).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "flags.h"
#include "rng.h"
#include "tokenizer.h"
#include "util.h"

struct Sampler {
    Tokenizer tok;   // loaded when --tokenizer is given
    int vocab = 0;

    void init(const TrainConfig& tc, int model_vocab) {
        vocab = model_vocab;
        if (tc.tokenizer.empty()) return;
        tok.load(tc.tokenizer);
        if (tok.vocab < vocab) fatal("%s: tokenizer has %d tokens, the model's vocab is %d", tc.tokenizer.c_str(), tok.vocab, vocab);
    }
    int prompt(int first_train_token) const {
        return tok.loaded() && tok.eot >= 0 && tok.eot < vocab ? tok.eot : first_train_token;
    }
    // logits(seq, t): the model's forward on seq[0..t), returning the logits of position t - 1
    template <typename LogitsFn>
    std::vector<int> sample(int first, int n, int max_len, Rng& rng, LogitsFn logits) const {
        std::vector<int> seq = {first};
        std::vector<float> probs(vocab);
        while ((int)seq.size() < std::min(n + 1, max_len)) {
            const float* z = logits(seq, (int)seq.size());
            float mx = -INFINITY;
            for (int v = 0; v < vocab; v++) mx = fmaxf(mx, z[v]);
            double s = 0.0;
            for (int v = 0; v < vocab; v++) s += (probs[v] = expf(z[v] - mx));
            double r = rng.uniform() * s, acc = 0.0;
            int pick = vocab - 1;
            for (int v = 0; v < vocab; v++) {
                acc += probs[v];
                if (acc > r) { pick = v; break; }
            }
            seq.push_back(pick);
        }
        return seq;
    }
    void print(const std::vector<int>& s) const {
        if (tok.loaded()) {   // decode with the prompt (SentencePiece's dummy space follows it), print without
            std::string text = tok.decode(s.data(), (int)s.size()), prompt = tok.decode_one(s[0]);
            if (text.compare(0, prompt.size(), prompt) == 0) text = text.substr(prompt.size());
            printf("sample: %s\n", text.c_str());
        } else {
            printf("sample (token ids):");
            for (int t : s) printf(" %d", t);
            printf("\n");
        }
    }
};
