// nccl_wrap.cuh - the project's thin wrapper over MPI (process launch) and NCCL (gradient
// all-reduce) for data-parallel training: one process per GPU, every process holds the
// whole model, each trains on its own slice of the global batch, and the gradients are
// averaged over the processes before the update, so every process applies the same update
// to the same weights.
//
//   mpirun -np 8 build/cuda/train_gpt_nvcc ...     (one process per GPU of the node)
//
//   Comm comm;
//   comm_init(&comm, &argc, &argv);                // MPI ranks (or a single process)
//   cudaSetDevice(comm.local_rank);                // rank r uses GPU local_rank of its node
//   comm_connect(&comm);                           // NCCL communicator (more than one rank)
//   allreduce_mean(grads, n, comm, stream);        // in place, average over ranks (device buffer)
//   double s = comm_sum(x, comm);                  // host scalars: sum / max over ranks,
//   int m = comm_max(i, comm);                     //   a string from rank 0 (blocking)
//   comm_bcast(&path, comm);
//   comm_destroy(&comm);                           // NCCL, then MPI_Finalize
//
// ZeRO-1 (the trainer's --zero 1) cuts a buffer into one range per rank, rank r's being
// [bounds[r], bounds[r + 1]) (any sizes, empty ones too):
//   reduce_mean_to_owners(grads, begin, end, bounds, comm, stream);   // device: the mean over the
//        ranks of grads[begin, end), each element delivered to the rank whose range holds it
//   allgather_ranges(params, bounds, comm, stream);                   // device: rank r's range to all
//   comm_gather_ranges(all, mine, elem_bytes, bounds, comm);           // host: every rank's range to rank 0
//
// Builds:
//   - USE_MPI (the Makefile defines it where MPI's headers are installed: Debian's
//     libopenmpi-dev): ranks come from MPI, rank 0 makes the ncclUniqueId and MPI_Bcast
//     hands it to the others, host scalars go through MPI_Allreduce / MPI_Bcast.
//   - without it, one process only; a launch under mpirun with more than one process
//     (OMPI_COMM_WORLD_SIZE / PMI_SIZE set) is an error rather than N independent runs.
//   - the CPU emulation (dev/cuda_emu, -DCUDA_EMU) has no NCCL: "device" buffers are host
//     memory there, and with USE_MPI the all-reduce of a device buffer goes through MPI
//     instead (reduce to rank 0 in fp32 / double, divide, broadcast: every rank gets the same
//     bits, as with NCCL), so the data-parallel trainer runs on a CPU in the tests.
// NCCL's mean (ncclAvg) and the emulation's may round differently; both give every rank the
// same result, which is what keeps the replicas' weights identical.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common.cuh"

#if defined(USE_MPI)
#define OMPI_SKIP_MPICXX 1   // MPI's C API only (no C++ bindings)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif
#if !defined(CUDA_EMU)
#include <nccl.h>
inline void nccl_check(ncclResult_t r, const char* file, int line) {
    if (r != ncclSuccess) {
        fprintf(stderr, "[NCCL ERROR] at file %s:%d: %s\n", file, line, ncclGetErrorString(r));
        exit(EXIT_FAILURE);
    }
}
#define ncclCheck(r) (nccl_check((r), __FILE__, __LINE__))
#endif

struct Comm {
    int rank = 0, nranks = 1;           // this process among all of them
    int local_rank = 0, local_size = 1; // among the processes of its node (which GPU it takes)
    bool mpi = false;                   // this process called MPI_Init (comm_destroy finalizes)
#if !defined(CUDA_EMU)
    ncclComm_t nccl = nullptr;
#endif
};

[[noreturn]] inline void comm_fail(const char* msg, const char* detail = "") {
    fflush(stdout);
    fprintf(stderr, "error: %s%s\n", msg, detail);
    exit(EXIT_FAILURE);
}

inline void comm_init_single(Comm* c) { *c = Comm{}; }

// The launcher's process count when started by mpirun / mpiexec (Open MPI, MPICH), else 1.
inline int launcher_world_size() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
        const char* s = getenv(v);
        if (s && atoi(s) > 0) return atoi(s);
    }
    return 1;
}

// Ranks of this process (MPI where built with it, else a single one).
inline void comm_init(Comm* c, int* argc, char*** argv) {
    comm_init_single(c);
#if defined(USE_MPI)
    if (launcher_world_size() == 1) return;   // a plain run: no MPI start-up at all
    MPI_Init(argc, argv);
    c->mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->nranks);
    MPI_Comm node;   // the processes sharing this node (and its GPUs)
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_size(node, &c->local_size);
    MPI_Comm_free(&node);
#else
    (void)argc;
    (void)argv;
    if (launcher_world_size() > 1)
        comm_fail("started as one of several processes (mpirun), but this build has no MPI: install libopenmpi-dev "
                  "and rebuild (make finds it), or run a single process");
#endif
}

// The NCCL communicator over all ranks (after the device is chosen); nothing with one rank
// (unless single_too: a real one-rank NCCL communicator, so that a test on one GPU runs
// ncclAllReduce itself) or in the emulation (whose all-reduce goes through MPI).
inline void comm_connect(Comm* c, bool single_too = false) {
#if !defined(CUDA_EMU)
    if (c->nranks == 1 && !single_too) return;
    ncclUniqueId id;
    if (c->rank == 0) ncclCheck(ncclGetUniqueId(&id));
#if defined(USE_MPI)
    if (c->nranks > 1) MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
#endif
    ncclCheck(ncclCommInitRank(&c->nccl, c->nranks, id, c->rank));
#else
    (void)c;
    (void)single_too;
#endif
}

inline void comm_destroy(Comm* c) {
#if !defined(CUDA_EMU)
    if (c->nccl) ncclCheck(ncclCommDestroy(c->nccl));
    c->nccl = nullptr;
#endif
#if defined(USE_MPI)
    if (c->mpi) MPI_Finalize();
#endif
    c->mpi = false;
    c->nranks = 1;
}

// ----------------------------------------------------------------------------
// host scalars (blocking; every rank must call them in the same order)

#if defined(USE_MPI)
inline double comm_sum(double x, const Comm& c) {
    if (c.nranks > 1) MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return x;
}
inline int comm_max(int x, const Comm& c) {
    if (c.nranks > 1) MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return x;
}
inline void comm_bcast(std::string* s, const Comm& c) {   // rank 0's string to every rank
    if (c.nranks == 1) return;
    unsigned long long n = s->size();
    MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    s->resize(n);
    if (n) MPI_Bcast(&(*s)[0], (int)n, MPI_CHAR, 0, MPI_COMM_WORLD);
}
// Rank 0's host buffer `all` (bounds.back() elements of elem_bytes) receives each rank's
// range [bounds[r], bounds[r + 1]), which rank r passes alone, contiguous, as `mine` (so no
// rank but 0 needs room for the whole); `all` is not touched elsewhere (may be null there).
// MPI counts are ints: pieces of at most 1 GiB.
inline void comm_gather_ranges(void* all, const void* mine, size_t elem_bytes, const std::vector<size_t>& bounds, const Comm& c) {
    const size_t piece = (size_t)1 << 30;
    if (c.rank == 0 && bounds[1] > bounds[0]) memcpy((char*)all + bounds[0] * elem_bytes, mine, (bounds[1] - bounds[0]) * elem_bytes);
    for (int r = 1; r < c.nranks; r++) {
        if (c.rank != 0 && c.rank != r) continue;
        const size_t bytes = (bounds[r + 1] - bounds[r]) * elem_bytes;
        for (size_t o = 0; o < bytes; o += piece) {
            const int n = (int)std::min(piece, bytes - o);
            if (c.rank == r) MPI_Send((const char*)mine + o, n, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
            else MPI_Recv((char*)all + bounds[r] * elem_bytes + o, n, MPI_BYTE, r, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        }
    }
}
#else   // one process: each is the identity
inline double comm_sum(double x, const Comm&) { return x; }
inline int comm_max(int x, const Comm&) { return x; }
inline void comm_bcast(std::string*, const Comm&) {}
inline void comm_gather_ranges(void* all, const void* mine, size_t elem_bytes, const std::vector<size_t>& bounds, const Comm&) {
    if (bounds[1] > bounds[0]) memcpy((char*)all + bounds[0] * elem_bytes, mine, (bounds[1] - bounds[0]) * elem_bytes);   // rank 0's own
}
#endif

// ----------------------------------------------------------------------------
// device buffers: all-reduce in place on `stream`

namespace nccl_detail {
#if !defined(CUDA_EMU)
template <typename T> ncclDataType_t dtype();
template <> inline ncclDataType_t dtype<float>() { return ncclFloat32; }
template <> inline ncclDataType_t dtype<double>() { return ncclFloat64; }
template <> inline ncclDataType_t dtype<__nv_bfloat16>() { return ncclBfloat16; }
#endif
#if defined(CUDA_EMU) && defined(USE_MPI)
// The emulation's stand-in for ncclAllReduce: kernels have run by the time a launch returns
// (streams are no-ops), so buf holds the values. Sum in A (float for float and bf16, double
// for double) on rank 0, in rank order; divide for the mean; round to T; broadcast.
template <typename T> struct EmuAcc { using type = float; };
template <> struct EmuAcc<double> { using type = double; };
template <typename A> MPI_Datatype mpi_type();
template <> inline MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <> inline MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
inline float emu_to(float x) { return x; }
inline double emu_to(double x) { return x; }
inline float emu_to(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T, typename A> T emu_from(A x) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) return __float2bfloat16_rn((float)x);
    else return (T)x;
}
// root >= 0: the result goes to rank root only (ncclReduce), the others' buf is unchanged;
// root < 0: to every rank (ncclAllReduce: formed on rank 0, then broadcast). The same
// arithmetic either way, so a reduce and an all-reduce of the same values give the same bits.
template <typename T>
void emu_reduce(T* buf, size_t n, const Comm& c, bool mean, int root) {
    using A = typename EmuAcc<T>::type;
    const int at = root < 0 ? 0 : root;
    std::vector<A> mine(n);
    for (size_t i = 0; i < n; i++) mine[i] = emu_to(buf[i]);
    for (size_t i0 = 0; i0 < n; i0 += (1u << 26)) {   // MPI counts are ints: pieces of 64M
        const int m = (int)std::min<size_t>(n - i0, 1u << 26);
        std::vector<A> got(c.rank == at ? (size_t)m * c.nranks : 0);
        MPI_Gather(mine.data() + i0, m, mpi_type<A>(), got.data(), m, mpi_type<A>(), at, MPI_COMM_WORLD);
        if (c.rank == at)
            for (int i = 0; i < m; i++) {
                A s = got[i];
                for (int r = 1; r < c.nranks; r++) s += got[(size_t)r * m + i];
                mine[i0 + i] = mean ? s / (A)c.nranks : s;
            }
        if (root < 0) MPI_Bcast(mine.data() + i0, m, mpi_type<A>(), 0, MPI_COMM_WORLD);
    }
    if (root < 0 || c.rank == root)
        for (size_t i = 0; i < n; i++) buf[i] = emu_from<T, A>(mine[i]);
}
// ncclBroadcast's stand-in: rank root's buf[0, n) to every rank
template <typename T>
void emu_bcast(T* buf, size_t n, int root) {
    char* b = (char*)buf;
    const size_t bytes = n * sizeof(T), piece = (size_t)1 << 30;
    for (size_t o = 0; o < bytes; o += piece) MPI_Bcast(b + o, (int)std::min(piece, bytes - o), MPI_BYTE, root, MPI_COMM_WORLD);
}
#endif
template <typename T>
void allreduce(T* buf, size_t n, const Comm& c, cudaStream_t stream, bool mean) {
    // one rank: the sum (and mean) of one buffer is itself (NCCL runs anyway on a one-rank
    // communicator made with comm_connect(c, true))
#if defined(CUDA_EMU)
    if (c.nranks == 1 || n == 0) return;
#else
    if ((c.nranks == 1 && !c.nccl) || n == 0) return;
#endif
#if defined(CUDA_EMU) && defined(USE_MPI)
    const Comm cc = c;   // queued on `stream` like the kernels (cuda_emu::enqueue)
    cuda_emu::enqueue(stream, [=]() { emu_reduce(buf, n, cc, mean, -1); });
#elif defined(CUDA_EMU)
    (void)buf;
    (void)stream;
    (void)mean;
    comm_fail("allreduce: this emulated build has no MPI (a single rank only)");
#else
    ncclCheck(ncclAllReduce(buf, buf, n, dtype<T>(), mean ? ncclAvg : ncclSum, c.nccl, stream));
#endif
}

// ZeRO-1's collectives over ranges: f(r, lo, hi) for each rank r whose range [bounds[r],
// bounds[r + 1]) meets [begin, end) ([lo, hi) the common part), the calls in one NCCL group
// (so NCCL runs them together); nothing with one rank and no communicator.
template <typename F>
void grouped_pieces(size_t begin, size_t end, const std::vector<size_t>& bounds, const Comm& c, F f) {
#if defined(CUDA_EMU)
    if (c.nranks == 1) return;
#else
    if (c.nranks == 1 && !c.nccl) return;
#endif
    if ((int)bounds.size() != c.nranks + 1) comm_fail("internal: ranges for another number of ranks");
#if !defined(CUDA_EMU)
    ncclCheck(ncclGroupStart());
#endif
    for (int r = 0; r < c.nranks; r++) {
        const size_t lo = std::max(begin, bounds[r]), hi = std::min(end, bounds[r + 1]);
        if (lo < hi) f(r, lo, hi);
    }
#if !defined(CUDA_EMU)
    ncclCheck(ncclGroupEnd());
#endif
}
}  // namespace nccl_detail

template <typename T>
void allreduce_sum(T* buf, size_t n, const Comm& c, cudaStream_t stream) {
    nccl_detail::allreduce(buf, n, c, stream, false);
}
template <typename T>
void allreduce_mean(T* buf, size_t n, const Comm& c, cudaStream_t stream) {
    nccl_detail::allreduce(buf, n, c, stream, true);
}

// ZeRO-1's gradient reduction: the mean over the ranks of buf[begin, end) (in place), each
// element written only on the rank whose range [bounds[r], bounds[r + 1]) holds it (what
// the other ranks hold there afterwards is unspecified: their own values). A reduce-scatter
// whose pieces may have any size (ncclReduceScatter wants equal ones): one ncclReduce per
// rank whose range meets [begin, end), grouped, so each element crosses the links once, as
// in a reduce-scatter, half the traffic of an all-reduce.
template <typename T>
void reduce_mean_to_owners(T* buf, size_t begin, size_t end, const std::vector<size_t>& bounds, const Comm& c, cudaStream_t stream) {
    nccl_detail::grouped_pieces(begin, end, bounds, c, [&](int r, size_t lo, size_t hi) {
#if defined(CUDA_EMU) && defined(USE_MPI)
        const Comm cc = c;
        T* p = buf + lo;
        const size_t n = hi - lo;
        cuda_emu::enqueue(stream, [=]() { nccl_detail::emu_reduce(p, n, cc, true, r); });
#elif defined(CUDA_EMU)
        (void)r; (void)lo; (void)hi; (void)buf; (void)stream;
        comm_fail("reduce: this emulated build has no MPI (a single rank only)");
#else
        ncclCheck(ncclReduce(buf + lo, buf + lo, hi - lo, nccl_detail::dtype<T>(), ncclAvg, r, c.nccl, stream));
#endif
    });
}

// ZeRO-1's weight exchange: every rank's range [bounds[r], bounds[r + 1]) of buf copied into
// the same range of every other rank's buf (an all-gather with ranges of any size: one
// ncclBroadcast per non-empty range, grouped).
template <typename T>
void allgather_ranges(T* buf, const std::vector<size_t>& bounds, const Comm& c, cudaStream_t stream) {
    nccl_detail::grouped_pieces(0, bounds.back(), bounds, c, [&](int r, size_t lo, size_t hi) {
#if defined(CUDA_EMU) && defined(USE_MPI)
        T* p = buf + lo;
        const size_t n = hi - lo;
        cuda_emu::enqueue(stream, [=]() { nccl_detail::emu_bcast(p, n, r); });
#elif defined(CUDA_EMU)
        (void)r; (void)lo; (void)hi; (void)buf; (void)stream;
        comm_fail("broadcast: this emulated build has no MPI (a single rank only)");
#else
        ncclCheck(ncclBroadcast(buf + lo, buf + lo, hi - lo, nccl_detail::dtype<T>(), r, c.nccl, stream));
#endif
    });
}
