// test_nccl.cu - kernels/nccl_wrap.cuh, the collectives of data-parallel training, on as many
// ranks as it is started with:
//   one process               the identity (emulation), or a real one-rank NCCL communicator
//                             on a GPU (ncclAllReduce / ncclReduce / ncclBroadcast run)
//   mpirun -np N (emulation)  the MPI stand-ins (built with -DUSE_MPI: dev/test/cuda.mk's
//                             test_nccl_emu_mpi; CUDA_EMU_DEVICES=N gives each rank a device)
//   mpirun -np N (N GPUs)     NCCL across GPUs
// Rank r's inputs are a function of (r, i) that every rank can evaluate, so each rank forms
// the expected result on the host, in double, with no communication:
//   - allreduce_sum / allreduce_mean of fp32, bf16 and double buffers (the gradients, the
//     step's loss), and every rank holds the same bits afterwards (a hash, compared by MPI);
//   - reduce_mean_to_owners (ZeRO-1's gradient reduction) over [begin, end) with uneven
//     ranges, an empty one among them where N >= 3: the owner of each element in [begin, end)
//     holds the mean, every other element keeps the rank's own value bit for bit;
//   - allgather_ranges (ZeRO-1's weight exchange), fp32 and bf16: every element becomes its
//     owner's value, bit for bit;
//   - the host collectives comm_sum, comm_max, comm_bcast, comm_gather_ranges.
// The inputs are multiples of 1/8 below 2^5 in magnitude times (r + 1): exact in bf16, so
// the sums are exact in fp32 and only the mean's division (and NCCL's bf16 partial sums)
// round. Rank 0 prints; a failure on any rank fails every rank (exit status 1).
#include "../../kernels/nccl_wrap.cuh"
#include "test_util.h"

static double input(int r, size_t i) { return (double)((long long)((i * 7 + (size_t)r * 13) % 29) - 14) / 8.0 * (r + 1); }

// a 31-bit FNV-1a hash of the bytes of a buffer
static int hash31(const std::vector<unsigned char>& b) {
    uint32_t h = 2166136261u;
    for (unsigned char c : b) h = (h ^ c) * 16777619u;
    return (int)(h & 0x7fffffff);
}

// the same bits on every rank: the hash's max and min over the ranks agree
static void check_same_everywhere(Checker& ck, const Comm& c, const std::string& name, const std::vector<unsigned char>& bytes) {
    const int h = hash31(bytes);
    const bool same = comm_max(h, c) == h && -comm_max(-h, c) == h;
    ck.checked++;
    if (!same) ck.failed++;
    printf("  %-44s %s\n", name.c_str(), same ? "ok" : "MISMATCH: the ranks hold different bits");
}

template <typename T>
static std::vector<float> inputs_of(int r, size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = (float)input(r, i);
    return v;
}

// all-reduce (sum, then mean) of n elements of T: tolerance rtol relative to sum |inputs|
template <typename T>
static void check_allreduce(Checker& ck, const Comm& c, const char* tname, size_t n, double rtol) {
    DeviceBuffer<T> d(n);
    for (int mean = 0; mean < 2; mean++) {
        d.upload(inputs_of<T>(c.rank, n));
        if (mean) allreduce_mean(d.ptr, n, c, 0);
        else allreduce_sum(d.ptr, n, c, 0);
        cudaCheck(cudaDeviceSynchronize());
        std::vector<double> ref(n);
        double mag = 0;
        for (size_t i = 0; i < n; i++) {
            double s = 0;
            for (int r = 0; r < c.nranks; r++) s += input(r, i), mag = std::max(mag, std::fabs(input(r, i)));
            ref[i] = mean ? s / c.nranks : s;
        }
        const std::string name = std::string("allreduce_") + (mean ? "mean " : "sum ") + tname;
        ck.check(name, d.download(), ref, rtol * mag * c.nranks, 0);
        check_same_everywhere(ck, c, name + ": same bits on every rank", d.bytes());
    }
}

// uneven ranges of n elements: rank r's [b[r], b[r+1]) with b[r] = n r^2 / N^2, rank 0's
// empty where N >= 3
static std::vector<size_t> uneven_bounds(size_t n, int nranks) {
    std::vector<size_t> b(nranks + 1);
    for (int r = 0; r <= nranks; r++) b[r] = n * r * r / ((size_t)nranks * nranks);
    if (nranks >= 3) b[1] = 0;
    return b;
}
static int owner_of(const std::vector<size_t>& b, size_t i) {
    int r = 0;
    while (i >= b[r + 1]) r++;
    return r;
}

template <typename T>
static void check_reduce_to_owners(Checker& ck, const Comm& c, const char* tname, size_t n, size_t begin, size_t end, double rtol) {
    const std::vector<size_t> b = uneven_bounds(n, c.nranks);
    DeviceBuffer<T> d(n);
    d.upload(inputs_of<T>(c.rank, n));
    const std::vector<float> mine = d.download();   // as stored in T
    reduce_mean_to_owners(d.ptr, begin, end, b, c, 0);
    cudaCheck(cudaDeviceSynchronize());
    const std::vector<float> got = d.download();
    std::vector<float> owned;
    std::vector<double> ref;
    bool others_kept = true;
    double mag = 0;
    for (size_t i = 0; i < n; i++) {
        if (i >= begin && i < end && owner_of(b, i) == c.rank) {
            double s = 0;
            for (int r = 0; r < c.nranks; r++) s += input(r, i), mag = std::max(mag, std::fabs(input(r, i)));
            owned.push_back(got[i]);
            ref.push_back(s / c.nranks);
        } else if (memcmp(&got[i], &mine[i], sizeof(float)) != 0) {
            others_kept = false;
        }
    }
    char name[128];
    snprintf(name, sizeof name, "reduce_mean_to_owners %s [%zu, %zu) of %zu: owned", tname, begin, end, n);
    ck.check(name, owned, ref, rtol * mag * c.nranks + 1e-30, 0);
    ck.checked++;
    if (!others_kept) ck.failed++;
    printf("  %-44s %s\n", "  the rest keeps the rank's own values", others_kept ? "ok" : "MISMATCH: a non-owned element changed");
}

template <typename T>
static void check_allgather(Checker& ck, const Comm& c, const char* tname, size_t n) {
    const std::vector<size_t> b = uneven_bounds(n, c.nranks);
    DeviceBuffer<T> d(n);
    d.upload(inputs_of<T>(c.rank, n));
    allgather_ranges(d.ptr, b, c, 0);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<double> ref(n);
    for (size_t i = 0; i < n; i++) ref[i] = input(owner_of(b, i), i);   // exact in T
    ck.check(std::string("allgather_ranges ") + tname + " (bitwise)", d.download(), ref, 0, 0);
}

int main(int argc, char** argv) {
    Comm comm;
    comm_init(&comm, &argc, &argv);
    if (comm.rank > 0 && !freopen("/dev/null", "w", stdout)) return 1;   // rank 0 reports
    skip_without_device("test_nccl");
    int ndev = 0;
    cudaCheck(cudaGetDeviceCount(&ndev));
    if (comm.local_size > ndev) {
        fprintf(stderr, "error: %d processes on this node but %d CUDA device(s)\n", comm.local_size, ndev);
        return 1;
    }
    cudaCheck(cudaSetDevice(comm.local_rank));
    comm_connect(&comm, true);   // on a GPU: a NCCL communicator even for one rank
    printf("test_nccl: %d rank(s)\n", comm.nranks);
    Checker ck;

    // fp32: exact sums; the mean one rounding (NCCL's ncclAvg may pre-scale: a few more)
    check_allreduce<float>(ck, comm, "fp32", 1000, 1e-6);
    // bf16: the mean rounded to bf16 (2^-9), NCCL's partial sums too at each hop (ranks x 2^-8)
    check_allreduce<__nv_bfloat16>(ck, comm, "bf16", 1000, 1.0 / 256);
    {   // the step's loss sum is a double (one element)
        double *d = nullptr, got[2];
        cudaCheck(cudaMalloc((void**)&d, sizeof(double)));
        for (int mean = 0; mean < 2; mean++) {
            const double x = input(comm.rank, 5) + 1.0 / 3;   // not exact in fp32: a float path would show
            cudaCheck(cudaMemcpy(d, &x, sizeof x, cudaMemcpyHostToDevice));
            if (mean) allreduce_mean(d, 1, comm, 0);
            else allreduce_sum(d, 1, comm, 0);
            cudaCheck(cudaMemcpy(&got[mean], d, sizeof(double), cudaMemcpyDeviceToHost));
        }
        cudaCheck(cudaFree(d));
        double s = 0;
        for (int r = 0; r < comm.nranks; r++) s += input(r, 5) + 1.0 / 3;
        for (int mean = 0; mean < 2; mean++) {
            const double ref = mean ? s / comm.nranks : s;
            const bool ok = std::fabs(got[mean] - ref) <= 1e-14 * std::fabs(ref) * comm.nranks;
            ck.checked++;
            if (!ok) ck.failed++;
            printf("  %-44s got %.17g ref %.17g %s\n", mean ? "allreduce_mean double" : "allreduce_sum double", got[mean], ref,
                   ok ? "ok" : "MISMATCH");
        }
    }
    for (auto be : {std::pair<size_t, size_t>{0, 1000}, {137, 911}, {500, 500}}) {
        check_reduce_to_owners<float>(ck, comm, "fp32", 1000, be.first, be.second, 1e-6);
        check_reduce_to_owners<__nv_bfloat16>(ck, comm, "bf16", 1000, be.first, be.second, 1.0 / 256);
    }
    check_allgather<float>(ck, comm, "fp32", 1000);
    check_allgather<__nv_bfloat16>(ck, comm, "bf16", 1001);

    // host collectives
    {
        const int n = comm.nranks;
        const double s = comm_sum(comm.rank + 1.5, comm);
        const int m = comm_max(comm.rank * 10 + 3, comm);
        std::string str = comm.rank == 0 ? "rank 0's string" : "other";
        comm_bcast(&str, comm);
        const std::vector<size_t> b = uneven_bounds(777, n);
        std::vector<double> mine, h(comm.rank == 0 ? 777 : 0, -1.0), ref(777);   // only rank 0 has room for all
        for (size_t i = b[comm.rank]; i < b[comm.rank + 1]; i++) mine.push_back(input(comm.rank, i));
        comm_gather_ranges(h.data(), mine.data(), sizeof(double), b, comm);
        for (size_t i = 0; i < 777; i++) ref[i] = input(owner_of(b, i), i);
        const bool ok_sum = s == n * (n + 1) / 2.0 + 0.5 * n, ok_max = m == (n - 1) * 10 + 3, ok_str = str == "rank 0's string";
        const bool ok_gather = comm.rank != 0 || h == ref;
        for (auto [name, ok] : {std::pair<const char*, bool>{"comm_sum", ok_sum}, {"comm_max", ok_max}, {"comm_bcast", ok_str},
                                {"comm_gather_ranges (rank 0 holds every range)", ok_gather}}) {
            ck.checked++;
            if (!ok) ck.failed++;
            printf("  %-44s %s\n", name, ok ? "ok" : "MISMATCH");
        }
    }
    // a failure on any rank fails all of them (rank 0's summary counts every rank's)
    const int failed_anywhere = comm_max(ck.failed, comm);
    if (failed_anywhere && !ck.failed) {
        printf("  another rank failed (%d mismatches there)\n", failed_anywhere);
        ck.failed = failed_anywhere;
    }
    const int rc = ck.finish("test_nccl");
    comm_destroy(&comm);
    return rc;
}
