// Learning-rate schedule (the paper's): linear warmup, then cosine decay to a
// floor fraction of the peak. Same formula as lr_at() in dev/model.py.
//   step < warmup:  lr = max_lr * (step + 1) / warmup        (step 0 is not wasted at lr 0)
//   otherwise:      p  = min(1, (step - warmup) / (total - warmup - 1))
//                   lr = max_lr * (floor + (1 - floor) * (1 + cos(pi p)) / 2)
// so the last step (total - 1) runs at exactly floor * max_lr.
#pragma once
#include <algorithm>
#include <cmath>

inline double lr_at(long step, double max_lr, long warmup, long total, double floor_frac) {
    if (step < warmup) return max_lr * (double)(step + 1) / (double)warmup;
    if (total <= warmup + 1) return max_lr * floor_frac;
    double p = std::min(1.0, (double)(step - warmup) / (double)(total - warmup - 1));
    return max_lr * (floor_frac + (1.0 - floor_frac) * 0.5 * (1.0 + std::cos(M_PI * p)));
}
