// nccl_wrap.cuh - the project's thin wrapper over NCCL for data-parallel gradient
// all-reduce. On a GPU build it calls NCCL when there is more than one rank; with one rank,
// and always in the emulated build (dev/cuda_emu, -DCUDA_EMU, single rank only), the
// all-reduce of a buffer with itself is the identity and nothing is launched.
//
//   Comm comm; comm_init_single(&comm);            // one process, one GPU
//   allreduce_sum(grads, n, comm, stream);         // in place, sum over ranks
//   allreduce_mean(grads, n, comm, stream);        // in place, average over ranks
//   comm_destroy(&comm);
// Multi-rank setup (GPU build only): comm_init(&comm, rank, nranks, id) with an
// ncclUniqueId made by rank 0 (ncclGetUniqueId) and shared by the launcher (MPI, a file).
#pragma once

#include "common.cuh"

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
    int rank = 0, nranks = 1;
#if !defined(CUDA_EMU)
    ncclComm_t nccl = nullptr;
#endif
};

inline void comm_init_single(Comm* c) {
    c->rank = 0;
    c->nranks = 1;
}
#if !defined(CUDA_EMU)
inline void comm_init(Comm* c, int rank, int nranks, const ncclUniqueId& id) {
    c->rank = rank;
    c->nranks = nranks;
    if (nranks > 1) ncclCheck(ncclCommInitRank(&c->nccl, nranks, id, rank));
}
#endif
inline void comm_destroy(Comm* c) {
#if !defined(CUDA_EMU)
    if (c->nccl) ncclCheck(ncclCommDestroy(c->nccl));
    c->nccl = nullptr;
#endif
    c->nranks = 1;
}

namespace nccl_detail {
#if !defined(CUDA_EMU)
template <typename T> ncclDataType_t dtype();
template <> inline ncclDataType_t dtype<float>() { return ncclFloat32; }
template <> inline ncclDataType_t dtype<__nv_bfloat16>() { return ncclBfloat16; }
#endif
template <typename T>
void allreduce(T* buf, size_t n, const Comm& c, cudaStream_t stream, bool mean) {
    if (c.nranks == 1 || n == 0) return;  // one rank: the sum (and mean) of one buffer is itself
#if defined(CUDA_EMU)
    (void)buf;
    (void)stream;
    (void)mean;
    fprintf(stderr, "allreduce: the emulated build has a single rank\n");
    exit(EXIT_FAILURE);
#else
    ncclCheck(ncclAllReduce(buf, buf, n, dtype<T>(), mean ? ncclAvg : ncclSum, c.nccl, stream));
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
