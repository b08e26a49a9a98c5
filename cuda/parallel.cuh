// cuda/parallel.cuh - the data-parallel machinery of train_gpt.cu's model (several GPUs under
// mpirun, one process each): the gradient buckets averaged over the ranks during the backward
// on a stream of their own, and ZeRO-1's shards of the optimizer state. The collectives
// themselves (NCCL, MPI for the set-up) are kernels/nccl_wrap.cuh.
#pragma once
#include <vector>

#include "../common/config.h"
#include "../kernels/gradnorm.cuh"
#include "../kernels/nccl_wrap.cuh"

struct DataParallel {
    // Data parallel (set_comm, more than one rank): the step's last backward averages each
    // bucket of gradients over the ranks as soon as the bucket is final (reduce_bucket), on a
    // stream of its own, so the all-reduce of layer l overlaps the backward of layers < l.
    const Comm* comm = nullptr;
    cudaStream_t comm_stream = nullptr;       // non-blocking: runs beside the legacy default stream
    cudaEvent_t bucket_ready = nullptr, comm_done = nullptr;
    bool reduce_in_backward = false;          // the current backward is the step's last micro-step
    bool comm_pending = false;                // reductions queued on comm_stream not yet waited for
    bool grads_reduced = false;               // this step's gradients were reduced (begin_step clears it)
    // bucket k is grads[bucket_bounds[k], bucket_bounds[k + 1]): k = 0 the embeddings (the start
    // of the table), k = l + 1 layer l, k = n_layer + 1 the final norm and the head (the end)
    std::vector<size_t> bucket_bounds;
    // ZeRO-1 (set_comm with zero, more than one rank): the optimizer state is sharded. Rank r
    // owns chunks [shard_chunk[r], shard_chunk[r + 1]) of the chunk table (gradnorm.cuh), which
    // are arena elements [shard_off[r], shard_off[r + 1]) (about 1/n of the parameters each,
    // cut at chunk boundaries). Only rank r keeps their master weights and AdamW moments,
    // receives their averaged gradients (reduce_bucket: a reduce to the owner instead of an
    // all-reduce), forms their gradient-norm partials and updates them; then each rank's
    // updated weights go to all (end_step). Not sharded: one shard, the whole arena.
    bool zero = false;
    std::vector<int> shard_chunk;
    std::vector<size_t> shard_off;
    size_t state_base = 0, state_len = 0;    // this rank's master / m / v: arena elements [state_base, state_base + state_len)

    bool data_parallel() const { return comm && comm->nranks > 1; }
    bool sharded() const { return zero && data_parallel(); }
    int my_shard() const { return sharded() ? comm->rank : 0; }

    // The ranks and whether to shard; the buckets are cut at the layers of the device table.
    void connect(const Comm* c, bool zero_, const ParamTable& dtable, int n_layer) {
        comm = c;
        zero = zero_;
        if (!data_parallel() || comm_stream) return;
        bucket_bounds.assign(1, 0);
        for (int l = 0; l <= n_layer; l++)   // the first tensor of layer l (l = n_layer: the final norm)
            for (const ParamTensor& t : dtable.t)
                if (t.layer == l) {
                    bucket_bounds.push_back(t.offset);
                    break;
                }
        bucket_bounds.push_back(dtable.total);
        if ((int)bucket_bounds.size() != n_layer + 3) fatal("internal: a layer without tensors in the parameter table");
        cudaCheck(cudaStreamCreateWithFlags(&comm_stream, cudaStreamNonBlocking));
        cudaCheck(cudaEventCreateWithFlags(&bucket_ready, cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&comm_done, cudaEventDisableTiming));
    }
    void disconnect() {
        if (!comm_stream) return;
        cudaStreamDestroy(comm_stream); cudaEventDestroy(bucket_ready); cudaEventDestroy(comm_done);
        comm_stream = nullptr;
    }

    // The shards of the optimizer state (see zero above) over a parameter arena of P elements
    // cut into `chunks`: rank r's starts at the first chunk at or past r/n of the arena.
    // state_base is rounded down to a multiple of 4, so that AdamW's groups of 4 stay aligned
    // in the state arrays too (the few elements before the shard's start that this adds are
    // never read or written).
    void plan_shards(const GradNormChunks& chunks, size_t P) {
        const int n = sharded() ? comm->nranks : 1, nch = (int)chunks.off.size();
        shard_chunk.assign(n + 1, nch);
        shard_off.assign(n + 1, P);
        shard_chunk[0] = 0;
        shard_off[0] = 0;
        for (int r = 1; r < n; r++) {
            int k = shard_chunk[r - 1];
            while (k < nch && (size_t)chunks.off[k] < P / n * r) k++;
            shard_chunk[r] = k;
            shard_off[r] = k < nch ? (size_t)chunks.off[k] : P;
        }
        state_base = shard_off[my_shard()] / 4 * 4;
        state_len = shard_off[my_shard() + 1] - state_base;
    }

    // average bucket k of grads over the ranks on comm_stream once `stream` has written it
    // (an event orders the two streams); only in the step's last backward
    template <typename T>
    void reduce_bucket(T* grads, int k, cudaStream_t stream) {
        if (!reduce_in_backward) return;
        const size_t begin = bucket_bounds[k], end = bucket_bounds[k + 1];
        if (end <= begin) return;
        cudaCheck(cudaEventRecord(bucket_ready, stream));
        cudaCheck(cudaStreamWaitEvent(comm_stream, bucket_ready, 0));
        if (sharded()) reduce_mean_to_owners(grads, begin, end, shard_off, *comm, comm_stream);   // ZeRO-1: each part to its owner
        else allreduce_mean(grads + begin, end - begin, *comm, comm_stream);
        comm_pending = grads_reduced = true;
    }
    // `stream` waits for every queued reduction (before anything reads the gradients)
    void wait_reductions(cudaStream_t stream) {
        if (!comm_pending) return;
        cudaCheck(cudaEventRecord(comm_done, comm_stream));
        cudaCheck(cudaStreamWaitEvent(stream, comm_done, 0));
        comm_pending = false;
    }

    // An optimizer-state array (this rank's shard of `total` elements, on the device from
    // arena element state_base), whole, on rank 0: each rank's shard of it is sent there (a
    // collective when sharded; the other ranks get an empty vector and hold no more than their
    // shard on the host meanwhile). to_logical converts the padded device layout for the host.
    template <typename X, typename ToLogical>
    std::vector<float> gather_state(const X* src, size_t total, ToLogical to_logical) const {
        const size_t lo = shard_off[my_shard()], hi = shard_off[my_shard() + 1];
        std::vector<X> mine(hi - lo);
        cudaCheck(cudaMemcpy(mine.data(), src + (lo - state_base), (hi - lo) * sizeof(X), cudaMemcpyDeviceToHost));
        if (!sharded()) return to_logical(mine);   // one shard: the whole arena
        std::vector<X> all(comm->rank == 0 ? total : 0);
        comm_gather_ranges(all.data(), mine.data(), sizeof(X), shard_off, *comm);
        return comm->rank == 0 ? to_logical(all) : std::vector<float>();
    }
};
