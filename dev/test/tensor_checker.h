// tensor_checker.h - the comparison both trainer tests (test_gpt.cpp, test_gpt.cu) make
// against the stored PyTorch states: a tensor's error is max|a - r| / max(max|r|, 1e-12),
// relative to the tensor's scale (the reference is float64 PyTorch rounded to fp32), and
// must be finite and within the tolerance. One line per check; the counts and the worst
// check relative to its tolerance are kept for the summary. (The kernel tests use
// dev/test/test_util.h's element-wise Checker instead.)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

struct TensorChecker {
    int failures = 0, checks = 0;
    double worst_rel = 0.0;   // over all checks, relative to tolerance
    std::string worst_what;
    // Compare n values; print one line. Returns true when within tolerance.
    bool check(const std::string& what, const float* a, const float* r, size_t n, double tol) {
        double max_err = 0.0, max_ref = 0.0;
        size_t worst = 0;
        bool finite = true;
        for (size_t i = 0; i < n; i++) {
            if (!std::isfinite(a[i])) finite = false;
            double e = std::fabs((double)a[i] - (double)r[i]);
            if (e > max_err) { max_err = e; worst = i; }
            max_ref = std::max(max_ref, std::fabs((double)r[i]));
        }
        double rel = max_err / std::max(max_ref, 1e-12);
        bool ok = finite && rel <= tol;
        checks++;
        if (!ok) failures++;
        if (rel / tol > worst_rel) { worst_rel = rel / tol; worst_what = what; }
        printf("  %-4s %-28s n=%-7zu max_abs_err %.3e  max|ref| %.3e  rel %.3e  (tol %.0e)%s\n", ok ? "ok" : "FAIL", what.c_str(), n,
               max_err, max_ref, rel, tol, ok ? "" : (" worst at " + std::to_string(worst) + (finite ? "" : ", non-finite values")).c_str());
        return ok;
    }
    bool check1(const std::string& what, float a, float r, double tol) { return check(what, &a, &r, 1, tol); }
    // a yes/no check with its own message
    void expect(bool ok, const std::string& msg) {
        checks++;
        if (!ok) failures++;
        printf("  %-4s %s\n", ok ? "ok" : "FAIL", msg.c_str());
    }
    void fail(const std::string& msg) { expect(false, msg); }
};

// The model's parameter table (common/config.h ParamTable) must be PyTorch's (a RefState's
// table, common/refstate.h), tensor for tensor: name, shape, layer, weight decay. `who` names
// the model in the message ("C++", "CUDA").
template <typename Table, typename RefTable>
inline bool check_param_table(TensorChecker& ck, const Table& pt, const RefTable& ref, const char* who) {
    if (pt.t.size() != ref.size()) {
        ck.fail("parameter table has " + std::to_string(pt.t.size()) + " tensors, PyTorch's has " + std::to_string(ref.size()));
        return false;
    }
    for (size_t i = 0; i < pt.t.size(); i++) {
        const auto& p = pt.t[i];
        const auto& r = ref[i];
        if (p.name != r.name || (int)p.rows != r.rows || (int)p.cols != r.cols || p.layer != r.layer || (int)p.decay != r.decay) {
            ck.fail("parameter table entry " + std::to_string(i) + ": " + who + " " + p.name + " vs PyTorch " + r.name);
            return false;
        }
    }
    return true;
}
