// Small host helpers shared by every program: one-line fatal errors, checked
// file I/O (every read names the file on failure), atomic file writes.
#pragma once
#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

// Print "error: <message>" on one line to stderr and exit(1). Every bad-input
// path in the project ends here: a one-line message, a non-zero exit, no crash.
// Fuzz builds (-DFUZZING) throw FatalError instead, so a fuzz target can tell a
// clean rejection from a crash.
struct FatalError {
    std::string msg;
};
[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fatal(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
#ifdef FUZZING
    throw FatalError{buf};
#else
    fflush(stdout);
    fprintf(stderr, "error: %s\n", buf);
    exit(1);
#endif
}

// A request to stop a training run at the next micro-step boundary: the signal number
// of a SIGINT/SIGTERM (common/run.h), or STOP_LOG_FAILED when the log could not be
// written (common/logger.h). The one global a trainer has (a signal handler can reach
// nothing else). STOP_LOG_FAILED is above every signal number, so that the maximum over
// the ranks of a data-parallel run (train_gpt.cu) keeps it.
inline volatile sig_atomic_t g_stop_signal = 0;
static const int STOP_LOG_FAILED = 1000;

// A FILE that closes itself when it goes out of scope, also when a reader bails
// out through fatal() in a fuzz build (where fatal throws).
struct InFile {
    FILE* f;
    InFile(const char* path, const char* mode);
    ~InFile() { if (f) fclose(f); }
    InFile(const InFile&) = delete;
    InFile& operator=(const InFile&) = delete;
    operator FILE*() const { return f; }
};

inline FILE* open_or_die(const char* path, const char* mode) {
    FILE* f = fopen(path, mode);
    if (!f) fatal("cannot open %s: %s", path, strerror(errno));
    return f;
}

// Read exactly n bytes or die naming the file ("truncated" at EOF).
inline InFile::InFile(const char* path, const char* mode) : f(open_or_die(path, mode)) {}

inline void read_exact(FILE* f, void* dst, size_t n, const char* path, const char* what) {
    size_t got = n ? fread(dst, 1, n, f) : 0;
    if (got != n) {
        if (ferror(f)) fatal("%s: read error in %s: %s", path, what, strerror(errno));
        fatal("%s: file is truncated (wanted %zu bytes of %s, got %zu)", path, n, what, got);
    }
}

inline long long file_size(FILE* f, const char* path) {
    long long pos = ftello(f);
    if (fseeko(f, 0, SEEK_END) != 0) fatal("%s: cannot seek", path);
    long long sz = ftello(f);
    if (fseeko(f, pos, SEEK_SET) != 0) fatal("%s: cannot seek", path);
    return sz;
}

// Atomic writes: write to "<path>.tmp.<pid>", fsync, rename over <path>. A
// reader sees either the old complete file or the new complete file, never a
// half-written one. On any error (a full disk, a missing folder) the temporary
// file is removed, the old file is left untouched, and `error` says what
// happened: commit() returns false. The caller decides whether that is fatal.
struct AtomicFile {
    std::string path, tmp, error;
    FILE* f = nullptr;
    explicit AtomicFile(const std::string& p) : path(p) {
        tmp = p + ".tmp." + std::to_string((long)getpid());
        f = fopen(tmp.c_str(), "wb");
        if (!f) error = "cannot write " + tmp + ": " + strerror(errno);
    }
    bool ok() const { return error.empty(); }
    void write(const void* src, size_t n) {
        if (!ok() || n == 0) return;
        if (fwrite(src, 1, n, f) != n) fail();
    }
    bool commit() {
        if (!ok()) return false;
        if (fflush(f) != 0 || fsync(fileno(f)) != 0) { fail(); return false; }
        int rc = fclose(f);
        f = nullptr;
        if (rc != 0) { fail(); return false; }
        if (rename(tmp.c_str(), path.c_str()) != 0) { fail(); return false; }
        // make the rename itself durable: fsync the folder
        std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
        FILE* d = fopen(dir.empty() ? "/" : dir.c_str(), "r");
        if (d) { fsync(fileno(d)); fclose(d); }
        return true;
    }
    void fail() {
        if (error.empty()) error = "writing " + path + " failed: " + strerror(errno) + " (the previous file, if any, is unchanged)";
        if (f) fclose(f);
        f = nullptr;
        unlink(tmp.c_str());
    }
    // commit, or exit with the one-line error
    void commit_or_die() {
        if (!commit()) fatal("%s", error.c_str());
    }
    ~AtomicFile() {
        if (f) { fclose(f); unlink(tmp.c_str()); }
    }
};

// Physical memory of this machine in bytes (0: unknown).
inline double host_memory_bytes() {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? (double)pages * page : 0.0;
}
// Stop with a one-line error before allocating `bytes` (computed in 64 bits or as a
// double by the caller) when they exceed the machine's memory; `what` names the flags.
inline void require_host_memory(double bytes, const char* what) {
    double have = host_memory_bytes();
    if (have > 0 && bytes > have)
        fatal("%s needs %.1f GiB but this machine has %.1f GiB of memory", what, bytes / (1 << 30), have / (1 << 30));
}

inline uint64_t u64_from_words(const int32_t* w) { return (uint64_t)(uint32_t)w[0] | ((uint64_t)(uint32_t)w[1] << 32); }
inline void u64_to_words(int32_t* w, uint64_t x) { w[0] = (int32_t)(uint32_t)x; w[1] = (int32_t)(uint32_t)(x >> 32); }
inline float f32_from_word(int32_t w) { float f; memcpy(&f, &w, 4); return f; }
inline int32_t f32_to_word(float f) { int32_t w; memcpy(&w, &f, 4); return w; }
