// cuda_emu.cpp - the runtime half of the CPU emulation of CUDA (see README.md).
//
// Threads: every CUDA thread of a block is one OS thread from a pool; blocks run one after
// another. Synchronisation uses std::mutex/std::condition_variable only, so ThreadSanitizer
// sees exactly the happens-before edges a GPU guarantees:
//   __syncthreads()       one mutex per block (orders everything before it, block-wide);
//   warp collectives      one mutex per warp (orders the lanes of that warp only);
//   block start / end     the pool's per-worker mutex and the block's completion mutex.
// The diagnostic state the watchdog reads (what each thread is waiting on, how far it got)
// is written with atomics that only the watchdog thread loads, so it adds no edges between
// emulated threads and cannot hide a data race.
#include "cuda_emu.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace cuda_emu {

thread_local uint3 tl_threadIdx;
thread_local uint3 tl_blockIdx;
thread_local dim3 tl_blockDim;
thread_local dim3 tl_gridDim;

void fatal(const char* fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cuda_emu: %s\n", buf);
    fflush(stderr);
    fflush(stdout);
    // exit status 134 like an abort, without a core file; CUDA_EMU_ABORT=1 raises SIGABRT
    // instead (for a debugger)
    const char* a = getenv("CUDA_EMU_ABORT");
    if (a && *a == '1') std::abort();
    std::_Exit(134);
}

namespace {

enum ThreadState : int { S_RUN = 0, S_BAR = 1, S_WARP = 2, S_EXIT = 3 };

const char* kind_name(int k) {
    static const char* names[] = {"__shfl_sync",   "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync", "__ballot_sync",
                                  "__any_sync",    "__all_sync",     "__syncwarp",       "__match_any_sync"};
    return (k >= 0 && k <= W_MATCH_ANY) ? names[k] : "?";
}

bool same_site(const char* f1, int l1, const char* f2, int l2) {
    return l1 == l2 && (f1 == f2 || (f1 && f2 && std::strcmp(f1, f2) == 0));
}

struct WarpGroup {
    bool active = false;
    unsigned mask = 0, arrived = 0;
    int kind = 0, width = 32;
    const char* file = nullptr;
    int line = 0;
};

struct Warp {
    std::mutex m;
    unsigned live = 0;  // lanes that exist and have not exited
    uint64_t in[32] = {}, out[32] = {};
    int arg[32] = {};
    bool released[32] = {};
    std::condition_variable cv[32];
    WarpGroup groups[32];
    uint32_t mma_a[32][4] = {}, mma_b[32][2] = {};   // warp_mma_m16n8k16_bf16's staged fragments
    const uint16_t* ldm_row[32] = {};                 // warp_ldmatrix_x4's staged row addresses
};

// what the watchdog may read about one emulated thread
struct Diag {
    std::atomic<int> state{S_EXIT};
    std::atomic<const char*> file{nullptr};
    std::atomic<int> line{0};
    std::atomic<unsigned> mask{0};
    std::atomic<int> kind{0};
    std::atomic<uint64_t> steps{0};  // barrier/warp completions this thread performed, exits
};

struct Block {
    // set per launch
    const void* func = nullptr;
    const std::function<void()>* body = nullptr;
    dim3 grid, block;
    int nthreads = 0;
    unsigned char* dsmem = nullptr;
    size_t dsmem_size = 0;
    std::vector<std::unique_ptr<Warp>> warps;
    std::unique_ptr<Diag[]> diag;
    // set per block
    uint3 bidx{};
    // __syncthreads() state, guarded by m
    std::mutex m;
    std::condition_variable cv;
    int live = 0, arrived = 0, first_tid = -1;
    uint64_t gen = 0;
    const char* bfile = nullptr;
    int bline = 0, bop = 0, acc = 0, result = 0;
    // completion, guarded by dm
    std::mutex dm;
    std::condition_variable dcv;
    int exited = 0;
};

thread_local Block* tl_block = nullptr;
thread_local int tl_tid = 0;

void describe_thread(const Block& b, int tid, char* out, size_t n) {
    unsigned bx = b.block.x, by = b.block.y;
    snprintf(out, n, "thread (%d,%d,%d) [warp %d lane %d] of block (%u,%u,%u)", (int)(tid % bx), (int)((tid / bx) % by),
             (int)(tid / (bx * by)), tid / 32, tid % 32, b.bidx.x, b.bidx.y, b.bidx.z);
}

// ---------------------------------------------------------------------------------------
// thread pool: worker i always plays linear thread id i of the current block
struct Pool {
    struct Slot {
        std::mutex m;
        std::condition_variable cv;
        Block* job = nullptr;
        bool stop = false;
    };
    std::vector<std::unique_ptr<Slot>> slots;
    std::vector<std::thread> threads;

    void ensure(int n) {
        while ((int)threads.size() < n) {
            int i = (int)threads.size();
            slots.emplace_back(new Slot);
            Slot* slot = slots.back().get();  // the worker never touches the (growing) vector
            threads.emplace_back([this, slot, i] { worker(*slot, i); });
        }
    }
    void start(int i, Block* b) {
        Slot& s = *slots[i];
        std::lock_guard<std::mutex> lk(s.m);
        s.job = b;
        s.cv.notify_one();
    }
    void worker(Slot& s, int i);
    ~Pool() {
        for (auto& s : slots) {
            std::lock_guard<std::mutex> lk(s->m);
            s->stop = true;
            s->cv.notify_one();
        }
        for (auto& t : threads) t.join();
    }
};

Pool& pool() {
    static Pool p;
    return p;
}

void thread_exit(Block& b, int tid);

// a thread's cp.async copies: the open (uncommitted) group and the committed groups, oldest
// first. The copy itself happens at cp.async.wait_group, the latest moment the hardware may
// complete it, so a kernel that reads the destination before waiting sees stale data (the
// poisoned 0xFF bytes of dynamic shared memory) and fails its test.
struct CpAsyncCopy {
    void* dst;
    const void* src;
    int bytes, src_bytes;
    const char* file;
    int line;
};
struct CpAsyncState {
    std::vector<CpAsyncCopy> open;
    std::deque<std::vector<CpAsyncCopy>> groups;
    const CpAsyncCopy* pending() const {   // the oldest copy not yet performed, if any
        for (const auto& g : groups)
            if (!g.empty()) return &g.front();
        return open.empty() ? nullptr : &open.front();
    }
};
thread_local CpAsyncState tl_cp_async;

void run_thread(Block& b, int tid) {
    tl_block = &b;
    tl_tid = tid;
    unsigned bx = b.block.x, by = b.block.y;
    tl_threadIdx = make_uint3(tid % bx, (tid / bx) % by, tid / (bx * by));
    tl_blockIdx = b.bidx;
    tl_blockDim = b.block;
    tl_gridDim = b.grid;
    tl_cp_async = CpAsyncState{};
    (*b.body)();
    if (const CpAsyncCopy* c = tl_cp_async.pending()) {   // (empty groups in flight are harmless)
        char who[128];
        describe_thread(b, tid, who, sizeof who);
        fatal("%s exited with a cp.async copy issued at %s:%d never waited for (cp.async.wait_group)", who, c->file, c->line);
    }
    thread_exit(b, tid);
    tl_block = nullptr;
}

void Pool::worker(Slot& s, int i) {
    for (;;) {
        Block* b;
        {
            std::unique_lock<std::mutex> lk(s.m);
            s.cv.wait(lk, [&] { return s.job != nullptr || s.stop; });
            if (s.stop) return;
            b = s.job;
            s.job = nullptr;
        }
        run_thread(*b, i);
    }
}

void step(Block& b, int tid) {
    auto& s = b.diag[tid].steps;
    s.store(s.load() + 1);  // only this thread writes its own counter
}

// __syncthreads() completion: caller holds b.m
void complete_barrier(Block& b, int tid) {
    b.result = b.acc;
    b.arrived = 0;
    b.first_tid = -1;
    b.gen++;
    for (int t = 0; t < b.nthreads; t++)
        if (b.diag[t].state.load() == S_BAR) b.diag[t].state.store(S_RUN);
    step(b, tid);
    b.cv.notify_all();
}

void thread_exit(Block& b, int tid) {
    Warp& w = *b.warps[tid / 32];
    int lane = tid % 32;
    {
        std::lock_guard<std::mutex> lk(w.m);
        w.live &= ~(1u << lane);
        for (auto& g : w.groups)
            if (g.active && (g.mask >> lane & 1u)) {
                char who[160];
                describe_thread(b, tid, who, sizeof who);
                fatal("%s exited while lanes 0x%08x wait for it in %s(mask=0x%08x) at %s:%d", who, g.arrived,
                      kind_name(g.kind), g.mask, g.file, g.line);
            }
    }
    {
        std::lock_guard<std::mutex> lk(b.m);
        b.live--;
        b.diag[tid].state.store(S_EXIT);
        step(b, tid);
        // exited threads leave the barrier: the others may now be complete
        if (b.arrived > 0 && b.arrived == b.live) complete_barrier(b, tid);
    }
    {
        std::lock_guard<std::mutex> lk(b.dm);
        if (++b.exited == b.nthreads) b.dcv.notify_one();
    }
}

// ---------------------------------------------------------------------------------------
thread_local cudaError_t tl_last_error = cudaSuccess;
std::mutex g_attr_mutex;
std::map<const void*, int> g_max_dyn_smem;  // cudaFuncAttributeMaxDynamicSharedMemorySize

double watchdog_seconds() {
    const char* e = getenv("CUDA_EMU_WATCHDOG");
    double s = e ? atof(e) : 0.0;
    return s > 0 ? s : 60.0;
}

void dump_threads(Block& b) {
    // group consecutive threads in the same state at the same place
    int t = 0;
    while (t < b.nthreads) {
        int st = b.diag[t].state.load();
        const char* f = b.diag[t].file.load();
        int l = b.diag[t].line.load();
        unsigned mk = b.diag[t].mask.load();
        int k = b.diag[t].kind.load();
        int e = t + 1;
        while (e < b.nthreads && b.diag[e].state.load() == st &&
               (st == S_RUN || st == S_EXIT ||
                (same_site(b.diag[e].file.load(), b.diag[e].line.load(), f, l) && b.diag[e].mask.load() == mk)))
            e++;
        const char* what = st == S_RUN ? "running" : st == S_EXIT ? "exited" : st == S_BAR ? "waiting in __syncthreads()" : kind_name(k);
        if (st == S_BAR)
            fprintf(stderr, "cuda_emu:   threads %d-%d: %s at %s:%d\n", t, e - 1, what, f, l);
        else if (st == S_WARP)
            fprintf(stderr, "cuda_emu:   threads %d-%d: waiting in %s(mask=0x%08x) at %s:%d\n", t, e - 1, what, mk, f, l);
        else
            fprintf(stderr, "cuda_emu:   threads %d-%d: %s\n", t, e - 1, what);
        t = e;
    }
}

void wait_block(Block& b) {
    using clk = std::chrono::steady_clock;
    const double limit = watchdog_seconds();
    uint64_t last_steps = ~0ull;
    auto last_change = clk::now();
    std::unique_lock<std::mutex> lk(b.dm);
    while (b.exited < b.nthreads) {
        if (b.dcv.wait_for(lk, std::chrono::milliseconds(200), [&] { return b.exited == b.nthreads; })) break;
        // deadlock: no thread running, some waiting, and nothing was released while we
        // looked. (Threads that have all exited but not yet been counted in b.exited, which
        // needs b.dm, held here, are a block finishing, not a deadlock.)
        auto sum_steps = [&] {
            uint64_t s = 0;
            for (int t = 0; t < b.nthreads; t++) s += b.diag[t].steps.load();
            return s;
        };
        uint64_t s0 = sum_steps();
        bool any_running = false, any_waiting = false;
        for (int t = 0; t < b.nthreads; t++) {
            const int st = b.diag[t].state.load();
            if (st == S_RUN) any_running = true;
            if (st == S_BAR || st == S_WARP) any_waiting = true;
        }
        uint64_t s1 = sum_steps();
        if (!any_running && any_waiting && s0 == s1) {
            fprintf(stderr, "cuda_emu: deadlock in a kernel launched with grid (%u,%u,%u) block (%u,%u,%u), block (%u,%u,%u): "
                            "every live thread waits and none can proceed\n",
                    b.grid.x, b.grid.y, b.grid.z, b.block.x, b.block.y, b.block.z, b.bidx.x, b.bidx.y, b.bidx.z);
            dump_threads(b);
            fatal("deadlock (threads of one block wait at different barriers or warp collectives)");
        }
        if (s1 != last_steps) {
            last_steps = s1;
            last_change = clk::now();
        } else if (std::chrono::duration<double>(clk::now() - last_change).count() > limit) {
            fprintf(stderr, "cuda_emu: watchdog: block (%u,%u,%u) made no progress for %.0f s (CUDA_EMU_WATCHDOG)\n", b.bidx.x,
                    b.bidx.y, b.bidx.z, limit);
            dump_threads(b);
            fatal("watchdog timeout (a thread spins forever, e.g. waiting for another block: blocks run one at a time here)");
        }
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------
int syncthreads_impl(int op, int pred, const char* file, int line) {
    Block* bp = tl_block;
    if (!bp) fatal("__syncthreads() called outside a kernel at %s:%d", file, line);
    Block& b = *bp;
    int tid = tl_tid;
    std::unique_lock<std::mutex> lk(b.m);
    if (b.arrived == 0) {
        b.bfile = file;
        b.bline = line;
        b.bop = op;
        b.first_tid = tid;
        b.acc = op == 2 ? 1 : 0;
    } else if (!same_site(b.bfile, b.bline, file, line) || b.bop != op) {
        char who[160], first[160];
        describe_thread(b, tid, who, sizeof who);
        describe_thread(b, b.first_tid, first, sizeof first);
        fprintf(stderr, "cuda_emu: divergent __syncthreads(): %s reached the barrier at %s:%d, while %d thread(s) of the same "
                        "phase wait at %s:%d (first: %s)\n",
                who, file, line, b.arrived, b.bfile, b.bline, first);
        dump_threads(b);
        fatal("divergent __syncthreads() at %s:%d vs %s:%d", file, line, b.bfile, b.bline);
    }
    if (op == 1) b.acc += pred != 0;
    if (op == 2) b.acc = b.acc && pred;
    if (op == 3) b.acc = b.acc || pred;
    b.arrived++;
    if (b.arrived == b.live) {
        complete_barrier(b, tid);
        return b.result;
    }
    Diag& d = b.diag[tid];
    d.file.store(file);
    d.line.store(line);
    d.state.store(S_BAR);
    uint64_t g = b.gen;
    b.cv.wait(lk, [&] { return b.gen != g; });
    return b.result;
}

uint64_t warp_op(int kind, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
    Block* bp = tl_block;
    if (!bp) fatal("%s called outside a kernel at %s:%d", kind_name(kind), file, line);
    Block& b = *bp;
    int tid = tl_tid, lane = tid % 32;
    unsigned bit = 1u << lane;
    char who[160];
    if (width < 1 || width > 32 || (width & (width - 1)))
        fatal("%s at %s:%d: width %d is not a power of two in [1, 32]", kind_name(kind), file, line, width);
    if (!(mask & bit)) {
        describe_thread(b, tid, who, sizeof who);
        fatal("%s at %s:%d: %s calls it with mask 0x%08x, which does not name the calling lane", kind_name(kind), file, line, who,
              mask);
    }
    Warp& w = *b.warps[tid / 32];
    std::unique_lock<std::mutex> lk(w.m);
    if (mask & ~w.live) {
        describe_thread(b, tid, who, sizeof who);
        fatal("%s(mask=0x%08x) at %s:%d by %s: the mask names lanes 0x%08x that have exited or do not exist", kind_name(kind), mask,
              file, line, who, mask & ~w.live);
    }
    WarpGroup* g = nullptr;
    // lanes of one mask meet in one group. Groups with other (overlapping) masks may be
    // pending at the same time: their lanes arrive here once those complete (independent
    // thread scheduling); if they never can, the watchdog reports the deadlock.
    for (auto& x : w.groups) {
        if (!x.active || x.mask != mask) continue;
        if (x.kind != kind || x.width != width) {
            describe_thread(b, tid, who, sizeof who);
            fatal("%s reached %s(mask=0x%08x, width=%d) at %s:%d while lanes 0x%08x of its warp wait in %s(mask=0x%08x, width=%d) "
                  "at %s:%d: the lanes of one mask must execute the same collective",
                  who, kind_name(kind), mask, width, file, line, x.arrived, kind_name(x.kind), x.mask, x.width, x.file, x.line);
        }
        g = &x;
        break;
    }
    if (!g) {
        for (auto& x : w.groups)
            if (!x.active) {
                g = &x;
                break;
            }
        g->active = true;
        g->mask = mask;
        g->kind = kind;
        g->width = width;
        g->arrived = 0;
        g->file = file;
        g->line = line;
    }
    w.in[lane] = value;
    w.arg[lane] = arg;
    g->arrived |= bit;
    if (g->arrived != mask) {
        Diag& d = b.diag[tid];
        d.file.store(file);
        d.line.store(line);
        d.mask.store(mask);
        d.kind.store(kind);
        d.state.store(S_WARP);
        w.released[lane] = false;
        w.cv[lane].wait(lk, [&] { return w.released[lane]; });
        return w.out[lane];
    }
    // last lane to arrive: compute every lane's result
    unsigned ballot = 0;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1u) && w.in[l]) ballot |= 1u << l;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1u)) continue;
        int seg = l & ~(width - 1), src = l;
        bool own = false;
        switch (kind) {
            case W_SHFL: src = seg + (w.arg[l] & (width - 1)); break;
            case W_SHFL_UP: src = l - w.arg[l]; own = src < seg; break;
            case W_SHFL_DOWN: src = l + w.arg[l]; own = src >= seg + width; break;
            case W_SHFL_XOR: src = l ^ w.arg[l]; own = src >= seg + width || src > 31; break;
            default: break;
        }
        switch (kind) {
            case W_SHFL:
            case W_SHFL_UP:
            case W_SHFL_DOWN:
            case W_SHFL_XOR:
                if (own) {
                    w.out[l] = w.in[l];
                } else {
                    if (!(mask >> src & 1u))
                        fatal("%s(mask=0x%08x) at %s:%d: lane %d reads lane %d, which is not in the mask (undefined value)",
                              kind_name(kind), mask, file, line, l, src);
                    w.out[l] = w.in[src];
                }
                break;
            case W_BALLOT: w.out[l] = ballot; break;
            case W_ANY: w.out[l] = ballot != 0; break;
            case W_ALL: w.out[l] = ballot == mask; break;
            case W_MATCH_ANY: {
                unsigned m = 0;
                for (int k = 0; k < 32; k++)
                    if ((mask >> k & 1u) && w.in[k] == w.in[l]) m |= 1u << k;
                w.out[l] = m;
                break;
            }
            default: w.out[l] = 0; break;
        }
    }
    g->active = false;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1u) && l != lane) {
            b.diag[(tid / 32) * 32 + l].state.store(S_RUN);
            w.released[l] = true;
            w.cv[l].notify_one();
        }
    step(b, tid);
    return w.out[lane];
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for the whole warp, with the PTX ISA's
// fragment layouts (g = lane / 4, t = lane % 4; a register's lower 16 bits hold the element
// with the lower column/row index):
//   A (16 x 16, row-major): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1], a[2] = A[g][2t+8..2t+9],
//                           a[3] = A[g+8][2t+8..2t+9]
//   B (16 x 8, "col"):      b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C, D (16 x 8 fp32):     c[0], c[1] = C[g][2t], C[g][2t+1]; c[2], c[3] = C[g+8][2t], C[g+8][2t+1]
// Every lane stages its fragments, meets the others at a warp barrier, computes its own four
// outputs (fp32 sums in k order) from all lanes' fragments, and meets them again before the
// staging area may be reused.
void warp_mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file, int line) {
    Block* bp = tl_block;
    if (!bp) fatal("mma called outside a kernel at %s:%d", file, line);
    const int tid = tl_tid, lane = tid % 32;
    Warp& w = *bp->warps[tid / 32];
    {
        std::lock_guard<std::mutex> lk(w.m);
        for (int i = 0; i < 4; i++) w.mma_a[lane][i] = a[i];
        for (int i = 0; i < 2; i++) w.mma_b[lane][i] = b[i];
    }
    warp_op(W_SYNC, 0xffffffffu, 0, 0, 32, file, line);
    auto bf = [](uint32_t bits16) {
        uint32_t u = bits16 << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    };
    float A[16][16], B[16][8];
    {
        std::lock_guard<std::mutex> lk(w.m);
        for (int l = 0; l < 32; l++) {
            const int g = l / 4, t = l % 4;
            const uint32_t* ra = w.mma_a[l];
            const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
            for (int i = 0; i < 4; i++) {
                A[rows[i]][cols[i]] = bf(ra[i] & 0xffffu);
                A[rows[i]][cols[i] + 1] = bf(ra[i] >> 16);
            }
            for (int i = 0; i < 2; i++) {
                B[2 * t + 8 * i][g] = bf(w.mma_b[l][i] & 0xffffu);
                B[2 * t + 8 * i + 1][g] = bf(w.mma_b[l][i] >> 16);
            }
        }
    }
    const int g = lane / 4, t = lane % 4;
    float out[4];
    for (int i = 0; i < 4; i++) {
        const int r = i < 2 ? g : g + 8, col = 2 * t + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; k++) acc += A[r][k] * B[k][col];
        out[i] = acc;
    }
    warp_op(W_SYNC, 0xffffffffu, 0, 0, 32, file, line);   // every lane has read the staging area
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 for the whole warp: four 8 x 8 matrices
// of 16-bit elements; lane l passes the address of row l % 8 of matrix l / 8 (16 bytes,
// 16-byte aligned). Lane l receives in r[i], from matrix i, row l / 4, columns 2(l % 4) and
// 2(l % 4) + 1 (the lower column in the lower 16 bits), or with .trans the same elements of
// the transposed matrix: rows 2(l % 4) and 2(l % 4) + 1 of column l / 4. (So r[i] of a
// non-transposed load is the mma A/B fragment register of that 8 x 8 block.)
void warp_ldmatrix_x4(uint32_t* r, const void* row, bool trans, const char* file, int line) {
    Block* bp = tl_block;
    if (!bp) fatal("ldmatrix called outside a kernel at %s:%d", file, line);
    const int tid = tl_tid, lane = tid % 32;
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0) fatal("ldmatrix at %s:%d: lane %d's row address %p is not 16-byte aligned", file, line, lane, row);
    Warp& w = *bp->warps[tid / 32];
    {
        std::lock_guard<std::mutex> lk(w.m);
        w.ldm_row[lane] = static_cast<const uint16_t*>(row);
    }
    warp_op(W_SYNC, 0xffffffffu, 0, 0, 32, file, line);
    uint32_t out[4];
    {
        std::lock_guard<std::mutex> lk(w.m);
        const int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; i++) {
            const uint16_t* const* m = w.ldm_row + 8 * i;   // the 8 row addresses of matrix i
            uint16_t lo, hi;
            if (trans) {
                lo = m[2 * t][g];
                hi = m[2 * t + 1][g];
            } else {
                lo = m[g][2 * t];
                hi = m[g][2 * t + 1];
            }
            out[i] = (uint32_t)lo | ((uint32_t)hi << 16);
        }
    }
    warp_op(W_SYNC, 0xffffffffu, 0, 0, 32, file, line);   // every lane has read the staging area
    for (int i = 0; i < 4; i++) r[i] = out[i];
}

void cp_async(void* dst, const void* src, int bytes, int src_bytes, const char* file, int line) {
    if (!tl_block) fatal("cp.async called outside a kernel at %s:%d", file, line);
    if (bytes != 4 && bytes != 8 && bytes != 16) fatal("cp.async at %s:%d: %d bytes (4, 8 or 16)", file, line, bytes);
    if (src_bytes < 0 || src_bytes > bytes) fatal("cp.async at %s:%d: src-size %d outside [0, %d]", file, line, src_bytes, bytes);
    if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
        fatal("cp.async at %s:%d: %d-byte copy %p -> %p not aligned to its size", file, line, bytes, src, dst);
    tl_cp_async.open.push_back({dst, src, bytes, src_bytes, file, line});
}
void cp_async_commit() {
    CpAsyncState& st = tl_cp_async;
    st.groups.push_back(std::move(st.open));   // an empty group is legal
    st.open.clear();
}
void cp_async_wait(int n) {
    CpAsyncState& st = tl_cp_async;
    while ((int)st.groups.size() > n) {
        for (const CpAsyncCopy& c : st.groups.front()) {
            memcpy(c.dst, c.src, (size_t)c.src_bytes);
            memset(static_cast<char*>(c.dst) + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));
        }
        st.groups.pop_front();
    }
}

unsigned activemask() {
    Block* bp = tl_block;
    if (!bp) fatal("__activemask() called outside a kernel");
    Warp& w = *bp->warps[tl_tid / 32];
    std::lock_guard<std::mutex> lk(w.m);
    return w.live;
}

void* dynamic_smem() {
    Block* bp = tl_block;
    if (!bp) fatal("dynamic shared memory used outside a kernel");
    return bp->dsmem;
}

bool launch_ok(const void* func, dim3 grid, dim3 block, size_t smem) {
    if (tl_block) fatal("kernel launched from inside a kernel (dynamic parallelism is not emulated)");
    unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 ||
        grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "cuda_emu: invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u)\n", grid.x, grid.y, grid.z, block.x,
                block.y, block.z);
        // as CUDA 13.0 on an H200 answers (scripts/gpu_check.sh, test_emu): a block over the
        // thread limits is cudaErrorInvalidValue; other bad shapes cudaErrorInvalidConfiguration
        const bool bad_block = nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64;
        tl_last_error = bad_block ? cudaErrorInvalidValue : cudaErrorInvalidConfiguration;
        return false;
    }
    size_t smem_limit = 48 * 1024;
    {
        std::lock_guard<std::mutex> lk(g_attr_mutex);
        auto it = g_max_dyn_smem.find(func);
        if (it != g_max_dyn_smem.end()) smem_limit = (size_t)it->second;
    }
    if (smem > smem_limit) {
        fprintf(stderr, "cuda_emu: launch asks for %zu bytes of dynamic shared memory, limit %zu "
                        "(raise it with cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize))\n",
                smem, smem_limit);
        tl_last_error = cudaErrorInvalidValue;
        return false;
    }
    return true;
}

void run_grid(const void* func, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    static Block b;  // launches are serialised (one host thread drives the emulated device)
    static std::mutex launch_mutex;
    std::lock_guard<std::mutex> launch_lock(launch_mutex);
    b.func = func;
    b.body = &body;
    b.grid = grid;
    b.block = block;
    b.nthreads = (int)nthreads;
    int nwarps = (b.nthreads + 31) / 32;
    b.warps.clear();
    for (int i = 0; i < nwarps; i++) b.warps.emplace_back(new Warp);
    b.diag.reset(new Diag[b.nthreads]);
    // exact size, so AddressSanitizer reports the first byte past the end
    b.dsmem = smem ? static_cast<unsigned char*>(::operator new[](smem, std::align_val_t(16))) : nullptr;
    b.dsmem_size = smem;
    pool().ensure(b.nthreads);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                b.bidx = make_uint3(bx, by, bz);
                if (b.dsmem) std::memset(b.dsmem, 0xFF, smem);  // poison: NaN in fp32, bf16 and fp16
                b.live = b.nthreads;
                b.arrived = 0;
                b.first_tid = -1;
                b.exited = 0;
                for (int w = 0; w < nwarps; w++) {
                    int lanes = std::min(32, b.nthreads - 32 * w);
                    b.warps[w]->live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
                    for (auto& g : b.warps[w]->groups) g.active = false;
                }
                for (int t = 0; t < b.nthreads; t++) b.diag[t].state.store(S_RUN);
                for (int t = 0; t < b.nthreads; t++) pool().start(t, &b);
                wait_block(b);
            }
    if (b.dsmem) ::operator delete[](b.dsmem, std::align_val_t(16));
    b.dsmem = nullptr;
    b.body = nullptr;
}

// --- streams (CUDA_EMU_STREAMS: see cuda_emu.h) -----------------------------------------
// Every queued operation has a global sequence number. A stream runs its queue in order; an
// event remembers the stream and the sequence number of its record; a wait on an event runs
// the recording stream up to there. The legacy default stream (handle 0) and the blocking
// streams are ordered with each other: before an operation of one of them runs, the others'
// operations queued before it run.
enum class StreamMode { Sync, Late, Early, Random };
static unsigned long long g_random_state = 0;   // Random: the splitmix64 state, from the seed
static StreamMode stream_mode() {
    static const StreamMode m = [] {
        const char* s = std::getenv("CUDA_EMU_STREAMS");
        if (!s || !*s || !std::strcmp(s, "sync")) return StreamMode::Sync;
        if (!std::strcmp(s, "late")) return StreamMode::Late;
        if (!std::strcmp(s, "early")) return StreamMode::Early;
        if (!std::strncmp(s, "random", 6) && (!s[6] || s[6] == ':')) {   // random or random:SEED
            char* end = nullptr;
            g_random_state = s[6] ? std::strtoull(s + 7, &end, 10) : 1;
            if (s[6] && (end == s + 7 || *end)) fatal("CUDA_EMU_STREAMS=random:SEED needs an integer seed, got '%s'", s);
            return StreamMode::Random;
        }
        fatal("CUDA_EMU_STREAMS must be sync, late, early, random or random:SEED, got '%s'", s);
    }();
    return m;
}
static unsigned long long random_next() {   // splitmix64
    unsigned long long z = (g_random_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
struct Op {
    unsigned long long seq;
    std::function<void()> fn;
};
struct Stream {
    bool blocking = true;      // false: cudaStreamNonBlocking (not ordered with the legacy stream)
    std::deque<Op> q;
    unsigned long long ran = 0;   // sequence number of the last operation run
};
struct Event {
    Stream* s = nullptr;          // where it was last recorded (null: never, or run at once)
    unsigned long long seq = 0;   // the record's sequence number
    std::chrono::steady_clock::time_point t{};
};
static unsigned long long g_seq = 0;
static Stream g_legacy;
static std::vector<Stream*> g_streams = {&g_legacy};   // every live stream
// every stream ever created, kept until exit: an event may still name a destroyed stream
// (its queue is empty then, so waiting on it does nothing)
static std::vector<std::unique_ptr<Stream>> g_stream_store;
static Stream* stream_of(cudaStream_t s) { return s ? reinterpret_cast<Stream*>(s) : &g_legacy; }

static void run_until(Stream* s, unsigned long long upto);
static void random_progress();
// the implicit order between the legacy stream and the blocking streams
static void run_implicit_deps(Stream* s, unsigned long long seq) {
    if (!s->blocking) return;
    for (Stream* o : g_streams)
        if (o != s && o->blocking && (s == &g_legacy || o == &g_legacy)) run_until(o, seq - 1);
}
static void run_until(Stream* s, unsigned long long upto) {
    while (!s->q.empty() && s->q.front().seq <= upto) {
        Op op = std::move(s->q.front());
        s->q.pop_front();
        run_implicit_deps(s, op.seq);
        op.fn();
        s->ran = op.seq;
    }
}
static void run_all() {
    for (bool again = true; again;) {
        again = false;
        for (Stream* s : g_streams)
            if (!s->q.empty()) {
                run_until(s, ~0ull);
                again = true;
            }
    }
}
void enqueue(cudaStream_t stream, std::function<void()> op) {
    if (stream_mode() == StreamMode::Sync) {
        op();
        return;
    }
    Stream* s = stream_of(stream);
    s->q.push_back(Op{++g_seq, std::move(op)});
    if (stream_mode() == StreamMode::Early && s != &g_legacy) run_until(s, g_seq);
    if (stream_mode() == StreamMode::Random) random_progress();
}
// Random: the device got somewhere by now. Each stream with queued work, the legacy one too,
// is left alone half the time; otherwise it runs the first n of its queued operations, n
// drawn uniformly from none to all, with whatever those wait for.
static void random_progress() {
    for (size_t i = 0; i < g_streams.size(); i++) {
        Stream* s = g_streams[i];
        if (s->q.empty() || random_next() % 2) continue;
        const size_t n = random_next() % (s->q.size() + 1);
        if (n) run_until(s, s->q[n - 1].seq);
    }
}
// a synchronous call on the legacy stream (cudaMemcpy, cudaMemset): queued, then run with
// everything it is ordered after
static void run_sync(std::function<void()> op) {
    enqueue(nullptr, std::move(op));
    run_until(&g_legacy, g_seq);
}

}  // namespace cuda_emu

// =======================================================================================
// runtime API (emulated devices, host memory; streams as above)
using cuda_emu::tl_last_error;

namespace {
cudaError_t fail(cudaError_t e) {
    tl_last_error = e;
    return e;
}
}  // namespace

extern "C" {

cudaError_t cudaMalloc(void** devPtr, size_t size) {
    if (!devPtr) return fail(cudaErrorInvalidValue);
    // exact size (no rounding) so AddressSanitizer catches the first byte out of bounds;
    // fresh memory is poisoned like real device memory is undefined (0xFF bytes = NaN)
    void* p = std::malloc(size ? size : 1);
    if (!p) return fail(cudaErrorMemoryAllocation);
    std::memset(p, 0xFF, size);
    *devPtr = p;
    return cudaSuccess;
}
cudaError_t cudaMallocManaged(void** devPtr, size_t size, unsigned int) { return cudaMalloc(devPtr, size); }
cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t) { return cudaMalloc(devPtr, size); }
cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaMalloc(ptr, size); }
cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int) { return cudaMalloc(ptr, size); }
cudaError_t cudaFree(void* p) {
    cuda_emu::run_all();   // as on a GPU, a free waits for the device
    std::free(p);
    return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind) {
    cuda_emu::run_sync([=] { if (count) std::memmove(dst, src, count); });
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind, cudaStream_t s) {
    cuda_emu::enqueue(s, [=] { if (count) std::memmove(dst, src, count); });
    return cudaSuccess;
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         enum cudaMemcpyKind) {
    cuda_emu::run_sync([=] {
        for (size_t r = 0; r < height; r++) std::memmove((char*)dst + r * dpitch, (const char*)src + r * spitch, width);
    });
    return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t count) {
    cuda_emu::run_sync([=] { if (count) std::memset(p, value, count); });
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t s) {
    cuda_emu::enqueue(s, [=] { if (count) std::memset(p, value, count); });
    return cudaSuccess;
}
// The device memory reported: 8 GiB, or CUDA_EMU_MEM_MIB (a test of what fits where). Only
// reported: allocations are host memory and are not counted against it.
cudaError_t cudaMemGetInfo(size_t* free_, size_t* total) {
    static const size_t mib = [] {
        const char* e = std::getenv("CUDA_EMU_MEM_MIB");
        if (!e || !*e) return (size_t)8192;
        char* end = nullptr;
        const unsigned long long v = std::strtoull(e, &end, 10);
        if (*end || v == 0) cuda_emu::fatal("CUDA_EMU_MEM_MIB must be a positive number of MiB, got '%s'", e);
        return (size_t)v;
    }();
    if (free_) *free_ = mib << 20;
    if (total) *total = mib << 20;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    cuda_emu::run_all();
    return cudaSuccess;
}
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaDeviceSetLimit(enum cudaLimit, size_t) { return cudaSuccess; }
// One emulated device, or CUDA_EMU_DEVICES of them (1..64) for a data-parallel launch of
// several processes (each process has its own memory anyway; the devices differ only in number).
static int emu_device_count() {
    const char* s = std::getenv("CUDA_EMU_DEVICES");
    const int n = s ? std::atoi(s) : 1;
    return n >= 1 && n <= 64 ? n : 1;
}
static int emu_current_device = 0;
cudaError_t cudaGetDeviceCount(int* count) {
    *count = emu_device_count();
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= emu_device_count()) return fail(cudaErrorInvalidDevice);
    emu_current_device = device;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
    *device = emu_current_device;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
    if (device < 0 || device >= emu_device_count()) return fail(cudaErrorInvalidDevice);
    std::memset(prop, 0, sizeof *prop);
    std::snprintf(prop->name, sizeof prop->name, "cuda_emu (CPU emulation)");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 4;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsPerMultiProcessor = 2048;
    prop->maxThreadsDim[0] = 1024;
    prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 2147483647;
    prop->maxGridSize[1] = 65535;
    prop->maxGridSize[2] = 65535;
    prop->sharedMemPerBlock = 48 * 1024;
    prop->sharedMemPerBlockOptin = 227 * 1024;
    prop->sharedMemPerMultiprocessor = 228 * 1024;
    prop->regsPerBlock = 65536;
    cudaMemGetInfo(nullptr, &prop->totalGlobalMem);   // 8 GiB or CUDA_EMU_MEM_MIB
    prop->l2CacheSize = 50 * 1024 * 1024;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
    if (device < 0 || device >= emu_device_count()) return fail(cudaErrorInvalidDevice);
    switch (attr) {
        case cudaDevAttrMultiProcessorCount: *value = 4; break;
        case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
        case cudaDevAttrWarpSize: *value = 32; break;
        case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; break;
        case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
        case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
        case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
        default: *value = 0; break;
    }
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > 227 * 1024) return fail(cudaErrorInvalidValue);
        std::lock_guard<std::mutex> lk(cuda_emu::g_attr_mutex);
        cuda_emu::g_max_dyn_smem[func] = value;
    }
    return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* attr, const void*) {
    std::memset(attr, 0, sizeof *attr);
    attr->maxThreadsPerBlock = 1024;
    attr->maxDynamicSharedSizeBytes = 48 * 1024;
    return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* numBlocks, const void*, int blockSize, size_t) {
    *numBlocks = blockSize > 0 ? std::max(1, 2048 / blockSize) : 0;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
    cuda_emu::g_stream_store.emplace_back(new cuda_emu::Stream);
    cuda_emu::Stream* st = cuda_emu::g_stream_store.back().get();
    st->blocking = !(flags & cudaStreamNonBlocking);
    cuda_emu::g_streams.push_back(st);
    *s = reinterpret_cast<cudaStream_t>(st);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s) return fail(cudaErrorInvalidValue);
    cuda_emu::Stream* st = cuda_emu::stream_of(s);
    cuda_emu::run_until(st, ~0ull);   // its queued work still runs (as on a GPU)
    auto& v = cuda_emu::g_streams;
    v.erase(std::remove(v.begin(), v.end(), st), v.end());   // its storage stays (g_stream_store)
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    cuda_emu::run_until(cuda_emu::stream_of(s), ~0ull);
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }
cudaError_t cudaEventCreate(cudaEvent_t* e) {
    *e = reinterpret_cast<cudaEvent_t>(new cuda_emu::Event);
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete reinterpret_cast<cuda_emu::Event*>(e);
    return cudaSuccess;
}
// the record is an operation of the stream: the event's time is when the stream reaches it
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    auto* ev = reinterpret_cast<cuda_emu::Event*>(e);
    if (cuda_emu::stream_mode() == cuda_emu::StreamMode::Sync) {
        ev->t = std::chrono::steady_clock::now();
        return cudaSuccess;
    }
    ev->s = cuda_emu::stream_of(s);
    cuda_emu::enqueue(s, [ev] { ev->t = std::chrono::steady_clock::now(); });
    ev->seq = cuda_emu::g_seq;
    return cudaSuccess;
}
// the stream's later work runs after the recording stream has reached the record
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
    auto* ev = reinterpret_cast<cuda_emu::Event*>(e);
    if (!ev->s) return cudaSuccess;
    cuda_emu::Stream* from = ev->s;
    const unsigned long long seq = ev->seq;
    cuda_emu::enqueue(s, [from, seq] { cuda_emu::run_until(from, seq); });
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    auto* ev = reinterpret_cast<cuda_emu::Event*>(e);
    if (ev->s) cuda_emu::run_until(ev->s, ev->seq);
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    cudaEventSynchronize(a);
    cudaEventSynchronize(b);
    *ms = std::chrono::duration<float, std::milli>(reinterpret_cast<cuda_emu::Event*>(b)->t - reinterpret_cast<cuda_emu::Event*>(a)->t)
              .count();
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = tl_last_error;
    tl_last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return tl_last_error; }
const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorNoDevice: return "cudaErrorNoDevice";
        default: return "cudaError(unknown)";
    }
}
const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        default: return "unknown error (cuda_emu)";
    }
}

}  // extern "C"
