// The machine-readable training log: one JSON object per line (JSONL), so a
// plot script or `jq` reads it without a parser of its own. Kinds of line:
//   {"kind":"config", ...}                      once, at the start
//   {"kind":"step","step":s,"loss":..,"grad_norm":..,"lr":..,"ms":..,"tok_per_s":..,
//    "layer_grad_norms":[..]}                   every optimizer step
//   {"kind":"val","step":s,"val_loss":..,"val_ppl":..}
// Lines are flushed as they are written, so a crashed run keeps its log.
#pragma once
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "util.h"

struct JsonLine {
    std::string s = "{";
    JsonLine& key(const char* k) {
        if (s.size() > 1) s += ",";
        s += "\""; s += k; s += "\":";
        return *this;
    }
    static std::string num(double x) {
        if (!std::isfinite(x)) return "null";   // JSON has no NaN/Inf
        char b[32];
        snprintf(b, sizeof b, "%.9g", x);
        return b;
    }
    JsonLine& f(const char* k, double x) { key(k); s += num(x); return *this; }
    JsonLine& i(const char* k, long long x) { key(k); s += std::to_string(x); return *this; }
    JsonLine& str(const char* k, const std::string& x) {
        key(k); s += "\"";
        for (char c : x) {
            if (c == '"' || c == '\\') s += '\\';
            if ((unsigned char)c < 0x20) { s += ' '; continue; }
            s += c;
        }
        s += "\"";
        return *this;
    }
    JsonLine& arr(const char* k, const std::vector<float>& v) {
        key(k); s += "[";
        for (size_t j = 0; j < v.size(); j++) { if (j) s += ","; s += num(v[j]); }
        s += "]";
        return *this;
    }
    std::string done() const { return s + "}"; }
};

// A failed write (a full disk) never leaves a partial line: the file is cut back to its
// last complete line, the failure is reported once (with the line that is lost, on
// stdout), no more lines are written, and the run is asked to stop (g_stop_signal =
// STOP_LOG_FAILED): the trainer checkpoints the last completed step, recording the
// complete log's length, and exits 1. --resume 1 then continues the log after its
// last complete line once there is space again (the lost line is not in it).
struct Logger {
    FILE* f = nullptr;
    std::string path;
    long long good = 0;    // bytes of complete lines in the file
    bool failed = false;
    // Open for writing. resume_offset >= 0 continues an existing log: it is cut
    // back to that many bytes (what a checkpoint recorded), dropping lines that a
    // crashed run wrote after its last checkpoint, and appended to.
    void open(const std::string& p, long long resume_offset = -1) {
        if (p.empty()) return;
        path = p;
        if (resume_offset >= 0) {
            f = fopen(p.c_str(), "r+b");
            if (!f) f = open_or_die(p.c_str(), "w+b");   // log lost: start a new one
            setvbuf(f, nullptr, _IONBF, 0);   // every line goes to the file at once, nothing waits in a buffer
            long long size = file_size(f, p.c_str());
            if (size < resume_offset) fatal("%s: log is shorter (%lld bytes) than the checkpoint recorded (%lld)", p.c_str(), size, resume_offset);
            if (ftruncate(fileno(f), (off_t)resume_offset) != 0) fatal("cannot truncate log %s: %s", p.c_str(), strerror(errno));
            if (fseeko(f, 0, SEEK_END) != 0) fatal("cannot seek log %s", p.c_str());
        } else {
            f = open_or_die(p.c_str(), "w");
            setvbuf(f, nullptr, _IONBF, 0);
        }
        good = (long long)ftello(f);
    }
    long long offset() const { return good; }
    void write(const JsonLine& j) {
        if (!f || failed) return;
        std::string line = j.done() + "\n";
        if (fwrite(line.data(), 1, line.size(), f) == line.size() && fflush(f) == 0) {
            good += (long long)line.size();
            return;
        }
        const int e = errno;
        failed = true;
        clearerr(f);
        const bool cut = ftruncate(fileno(f), (off_t)good) == 0 || (long long)ftello(f) == good;
        fprintf(stderr, "error: writing log %s failed: %s; %s; the run stops\n", path.c_str(), strerror(e),
                cut ? "the log ends with its last complete line" : "the log may end with a partial line");
        printf("log line not written: %s", line.c_str());
        if (!g_stop_signal) g_stop_signal = STOP_LOG_FAILED;
    }
    ~Logger() { if (f) fclose(f); }
};
