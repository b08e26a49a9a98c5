// test_emu.cu - checks the CUDA features the emulation (dev/cuda_emu) provides, with the
// same source on a real GPU (nvcc build), so the two can be compared: thread/block indices
// in 3D, static and dynamic shared memory (dynamic poisoned per block in emulation),
// __syncthreads and its count/and/or forms, warp shuffles (all four, with widths), votes,
// __syncwarp on half-warp masks, match_any, atomics, cooperative groups, cp.async (16 and
// 4 bytes, zero-fill) and ldmatrix x4 (plain and transposed, against the PTX ISA's layout),
// and a launch with an invalid configuration reported by cudaGetLastError. Exit status
// non-zero on failure. (mma.sync is checked by test_flash_attention, which needs it.)
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>

#include "../../kernels/common.cuh"
#include "test_util.h"

namespace cg = cooperative_groups;

// every thread writes its linear global id and its coordinates
__global__ void index_kernel(int* out) {
    const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int nthreads = blockDim.x * blockDim.y * blockDim.z;
    const int g = bid * nthreads + tid;
    out[4 * g + 0] = g;
    out[4 * g + 1] = threadIdx.x + 100 * threadIdx.y + 10000 * threadIdx.z;
    out[4 * g + 2] = blockIdx.x + 100 * blockIdx.y + 10000 * blockIdx.z;
    out[4 * g + 3] = __syncthreads_count(threadIdx.x % 2) * 1000 + __syncthreads_and(1) * 10 + __syncthreads_or(tid == 3);
}

// block-wide sum through static shared memory (tree), plus a dynamic shared memory round trip
__global__ void smem_kernel(float* out, int* poisoned, const float* in) {
    __shared__ float s[128];
    float* dyn = dynamic_shared_memory<float>();
    const int t = threadIdx.x;
    // dynamic shared memory is undefined at block start; the emulation fills it with NaN
    if (t == 0) poisoned[blockIdx.x] = dyn[5] != dyn[5];
    __syncthreads();
    s[t] = in[blockIdx.x * 128 + t];
    dyn[t] = 2.0f * s[t];
    __syncthreads();
    for (int stride = 64; stride > 0; stride /= 2) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
    out[gridDim.x + blockIdx.x * 128 + t] = dyn[127 - t];
}

// warp collectives; results per lane, 12 ints each
__global__ void warp_kernel(int* out) {
    const int lane = threadIdx.x % 32;
    int* o = out + 12 * threadIdx.x;
    o[0] = __shfl_sync(0xffffffffu, lane * 3, 7);
    o[1] = __shfl_up_sync(0xffffffffu, lane, 3);
    o[2] = __shfl_down_sync(0xffffffffu, lane, 5, 16);
    o[3] = __shfl_xor_sync(0xffffffffu, lane, 9);
    o[4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[5] = __any_sync(0xffffffffu, lane == 31) + 10 * __all_sync(0xffffffffu, lane < 31);
    // two half-warps work independently with their own masks
    const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    __syncwarp(half);
    o[6] = __shfl_xor_sync(half, lane, 1, 16);
    o[7] = (int)__match_any_sync(0xffffffffu, lane / 4);
    double d = lane * 0.5;
    o[8] = (int)(2.0 * __shfl_sync(0xffffffffu, d, 31 - lane));
    o[9] = __popc(__activemask());
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    cg::thread_block_tile<8> tile = cg::tiled_partition<8>(block);
    o[10] = cg::reduce(warp, lane, cg::plus<int>()) + 10000 * (int)warp.meta_group_rank();
    o[11] = cg::reduce(tile, lane, cg::greater<int>()) + 100 * tile.shfl_down(lane, 1) + 10000 * (int)tile.thread_rank();
    block.sync();
}

__global__ void atomic_kernel(int* counter, float* fsum, unsigned* maxv, int* cas) {
    atomicAdd(counter, 1);
    atomicAdd(fsum, 0.5f);
    atomicMax(maxv, (unsigned)(threadIdx.x * 7 % 101 + blockIdx.x));
    if (atomicCAS(cas, 0, (int)threadIdx.x + 1) == 0) atomicAdd(counter, 1000);
}

// one warp: a 16 x 16 bf16 matrix (row stride 16) copied into shared memory (row stride 24,
// as flash_attention.cuh skews its tiles) with 16-byte cp.async, rows 12-15 zero-filled
// (src-size 0); 32 floats with 4-byte cp.async, the last 12 zero-filled; then ldmatrix x4 of
// the 16 x 16 block, plain and transposed, each lane pointing at row l%8 + 8((l/8)%2), column
// 8(l/16). out: 8 registers per lane; fout: the floats.
__global__ void ldmatrix_kernel(uint32_t* out, float* fout, const __nv_bfloat16* in, const float* fin) {
    __shared__ __align__(16) __nv_bfloat16 s[16 * 24];
    __shared__ __align__(16) float sf[32];
    const int l = threadIdx.x;
    const int r = l / 2, c = (l % 2) * 8;   // 32 chunks of 8 elements: one per lane
    cp_async<16>(s + r * 24 + c, in + r * 16 + c, r < 12 ? 16 : 0);
    cp_async<4>(sf + l, fin + l, l < 20 ? 4 : 0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    const __nv_bfloat16* p = s + (l % 8 + 8 * ((l / 8) % 2)) * 24 + 8 * (l / 16);
    uint32_t a[4], b[4];
    ldmatrix_x4(a, p);
    ldmatrix_x4_trans(b, p);
    for (int i = 0; i < 4; i++) {
        out[8 * l + i] = a[i];
        out[8 * l + 4 + i] = b[i];
    }
    fout[l] = sf[l];
}

static int fails = 0;
static void expect(bool ok, const char* what, long long got, long long want) {
    if (!ok) {
        fails++;
        printf("  MISMATCH %s: got %lld, expected %lld\n", what, got, want);
    }
}

int main() {
    skip_without_device("test_emu");
    // --- indices in 3D grids and blocks
    {
        const dim3 grid(3, 2, 2), block(4, 3, 2);
        const int nthr = 4 * 3 * 2, nblk = 12, n = nthr * nblk;
        DeviceBuffer<int> d(4 * n);
        d.poison();
        launch_kernel(index_kernel, grid, block, 0, 0, d.ptr);
        cudaCheck(cudaDeviceSynchronize());
        std::vector<int> h(4 * n);
        cudaCheck(cudaMemcpy(h.data(), d.ptr, h.size() * sizeof(int), cudaMemcpyDeviceToHost));
        for (int g = 0; g < n; g++) {
            int tid = g % nthr, bid = g / nthr;
            int tx = tid % 4, ty = (tid / 4) % 3, tz = tid / 12, bx = bid % 3, by = (bid / 3) % 2, bz = bid / 6;
            expect(h[4 * g] == g, "global id", h[4 * g], g);
            expect(h[4 * g + 1] == tx + 100 * ty + 10000 * tz, "threadIdx", h[4 * g + 1], tx + 100 * ty + 10000 * tz);
            expect(h[4 * g + 2] == bx + 100 * by + 10000 * bz, "blockIdx", h[4 * g + 2], bx + 100 * by + 10000 * bz);
            expect(h[4 * g + 3] == 12 * 1000 + 10 + 1, "__syncthreads_count/and/or", h[4 * g + 3], 12011);
        }
        printf("  indices, __syncthreads_count/and/or: %s\n", fails ? "MISMATCH" : "ok");
    }
    // --- shared memory
    {
        const int nb = 3, f0 = fails;
        Rng rng(1);
        std::vector<float> in = rng.normal(nb * 128);
        DeviceBuffer<float> d_in(nb * 128), d_out(nb + nb * 128);
        DeviceBuffer<int> d_p(nb);
        d_in.upload(in);
        d_out.poison();
        launch_kernel(smem_kernel, dim3(nb), dim3(128), 128 * sizeof(float), 0, d_out.ptr, d_p.ptr, d_in.ptr);
        cudaCheck(cudaDeviceSynchronize());
        std::vector<float> out = d_out.download();
        std::vector<int> p(nb);
        cudaCheck(cudaMemcpy(p.data(), d_p.ptr, nb * sizeof(int), cudaMemcpyDeviceToHost));
        for (int b = 0; b < nb; b++) {
            double ref = 0;
            for (int t = 0; t < 128; t++) ref += in[b * 128 + t];
            expect(std::fabs(out[b] - ref) < 1e-4, "shared-memory tree sum (x1e6)", (long long)(out[b] * 1e6), (long long)(ref * 1e6));
            for (int t = 0; t < 128; t++)
                expect(out[nb + b * 128 + t] == 2.0f * in[b * 128 + 127 - t], "dynamic shared memory", (long long)t, 127 - t);
#if defined(CUDA_EMU)
            expect(p[b] == 1, "dynamic shared memory poisoned at block start", p[b], 1);
#endif
        }
        printf("  static/dynamic shared memory: %s\n", fails > f0 ? "MISMATCH" : "ok");
    }
    // --- warp collectives and cooperative groups (two warps)
    {
        const int f0 = fails;
        DeviceBuffer<int> d(12 * 64);
        d.poison();
        launch_kernel(warp_kernel, dim3(1), dim3(64), 0, 0, d.ptr);
        cudaCheck(cudaDeviceSynchronize());
        std::vector<int> h(12 * 64);
        cudaCheck(cudaMemcpy(h.data(), d.ptr, h.size() * sizeof(int), cudaMemcpyDeviceToHost));
        unsigned ballot = 0;
        for (int l = 0; l < 32; l++)
            if (l % 3 == 0) ballot |= 1u << l;
        for (int t = 0; t < 64; t++) {
            const int l = t % 32, *o = &h[12 * t];
            expect(o[0] == 21, "__shfl_sync", o[0], 21);
            expect(o[1] == (l >= 3 ? l - 3 : l), "__shfl_up_sync", o[1], l >= 3 ? l - 3 : l);
            const int seg = l & ~15, dn = l + 5 < seg + 16 ? l + 5 : l;
            expect(o[2] == dn, "__shfl_down_sync width 16", o[2], dn);
            expect(o[3] == (l ^ 9), "__shfl_xor_sync", o[3], l ^ 9);
            expect((unsigned)o[4] == ballot, "__ballot_sync", o[4], ballot);
            expect(o[5] == 1, "__any_sync/__all_sync", o[5], 1);
            expect(o[6] == (l ^ 1), "half-warp __shfl_xor_sync", o[6], l ^ 1);
            expect((unsigned)o[7] == (0xfu << (l / 4 * 4)), "__match_any_sync", o[7], 0xfu << (l / 4 * 4));
            expect(o[8] == 31 - l, "__shfl_sync of double", o[8], 31 - l);
            expect(o[9] == 32, "__activemask", o[9], 32);
            expect(o[10] == 496 + 10000 * (t / 32), "cg::reduce plus", o[10], 496 + 10000 * (t / 32));
            const int tr = l % 8, mx = l / 8 * 8 + 7, down = tr < 7 ? l + 1 : l;
            expect(o[11] == mx + 100 * down + 10000 * tr, "cg tile<8> reduce/shfl_down/rank", o[11], mx + 100 * down + 10000 * tr);
        }
        printf("  warp shuffles, votes, __syncwarp, cooperative groups: %s\n", fails > f0 ? "MISMATCH" : "ok");
    }
    // --- atomics
    {
        const int f0 = fails;
        DeviceBuffer<int> d_c(1), d_cas(1);
        DeviceBuffer<float> d_f(1);
        DeviceBuffer<unsigned> d_m(1);
        cudaCheck(cudaMemset(d_c, 0, 4));
        cudaCheck(cudaMemset(d_cas, 0, 4));
        cudaCheck(cudaMemset(d_f, 0, 4));
        cudaCheck(cudaMemset(d_m, 0, 4));
        launch_kernel(atomic_kernel, dim3(4), dim3(96), 0, 0, d_c.ptr, d_f.ptr, d_m.ptr, d_cas.ptr);
        cudaCheck(cudaDeviceSynchronize());
        int c = 0, cas = 0;
        float f = 0;
        unsigned m = 0;
        cudaCheck(cudaMemcpy(&c, d_c.ptr, 4, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(&cas, d_cas.ptr, 4, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(&f, d_f.ptr, 4, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(&m, d_m.ptr, 4, cudaMemcpyDeviceToHost));
        unsigned mref = 0;
        for (unsigned b = 0; b < 4; b++)
            for (unsigned t = 0; t < 96; t++) mref = std::max(mref, t * 7 % 101 + b);
        expect(c == 384 + 1000, "atomicAdd int + atomicCAS once", c, 1384);
        expect(f == 192.0f, "atomicAdd float", (long long)f, 192);
        expect(m == mref, "atomicMax", m, mref);
        expect(cas >= 1 && cas <= 96, "atomicCAS winner", cas, 1);
        printf("  atomics: %s\n", fails > f0 ? "MISMATCH" : "ok");
    }
    // --- cp.async and ldmatrix
    {
        const int f0 = fails;
        std::vector<float> m(256), fin(32);
        for (int i = 0; i < 256; i++) m[i] = (float)(i + 1);   // exact in bf16
        for (int i = 0; i < 32; i++) fin[i] = 0.25f * (i + 1);
        DeviceBuffer<__nv_bfloat16> d_in(256);
        DeviceBuffer<float> d_fin(32), d_fout(32);
        DeviceBuffer<uint32_t> d_out(8 * 32);
        d_in.upload(m);
        d_fin.upload(fin);
        d_out.poison();
        d_fout.poison();
        launch_kernel(ldmatrix_kernel, dim3(1), dim3(32), 0, 0, d_out.ptr, d_fout.ptr, d_in.ptr, d_fin.ptr);
        cudaCheck(cudaDeviceSynchronize());
        std::vector<uint32_t> h(8 * 32);
        cudaCheck(cudaMemcpy(h.data(), d_out.ptr, h.size() * sizeof(uint32_t), cudaMemcpyDeviceToHost));
        std::vector<float> fo = d_fout.download();
        auto M = [](int r, int c) { return r < 12 ? (uint32_t)(r * 16 + c + 1) : 0u; };   // what shared memory holds
        for (int l = 0; l < 32; l++) {
            const int g = l / 4, t = l % 4;
            for (int i = 0; i < 4; i++) {
                const int r0 = 8 * (i % 2), c0 = 8 * (i / 2);   // matrix i of the x4 is the block at (r0, c0)
                for (int tr = 0; tr < 2; tr++) {
                    const uint32_t bits = h[8 * l + 4 * tr + i];
                    uint32_t got[2];
                    for (int e = 0; e < 2; e++) {
                        const uint32_t u = (bits >> (16 * e) & 0xffffu) << 16;
                        float f;
                        memcpy(&f, &u, 4);
                        got[e] = (uint32_t)f;
                    }
                    // plain: row g, columns 2t, 2t+1; transposed: rows 2t, 2t+1 of column g
                    const uint32_t want0 = tr ? M(r0 + 2 * t, c0 + g) : M(r0 + g, c0 + 2 * t);
                    const uint32_t want1 = tr ? M(r0 + 2 * t + 1, c0 + g) : M(r0 + g, c0 + 2 * t + 1);
                    expect(got[0] == want0 && got[1] == want1, tr ? "ldmatrix x4 trans (lane*100+reg)" : "ldmatrix x4 (lane*100+reg)",
                           100 * l + i, (long long)(want0 * 1000 + want1));
                }
            }
            const float fwant = l < 20 ? fin[l] : 0.0f;
            expect(fo[l] == fwant, "cp.async 4-byte copy / zero-fill (x4)", (long long)(4 * fo[l]), (long long)(4 * fwant));
        }
        printf("  cp.async (16/4 bytes, zero-fill), ldmatrix x4 plain/trans: %s\n", fails > f0 ? "MISMATCH" : "ok");
    }
    // --- an invalid launch configuration is an error, reported by cudaGetLastError
    {
        const int f0 = fails;
        DeviceBuffer<int> d(4 * 2048);
#if defined(CUDA_EMU)
        cuda_emu::launch(index_kernel, dim3(1), dim3(2048), 0, 0, d.ptr);
#else
        index_kernel<<<1, 2048>>>(d.ptr);
#endif
        cudaError_t e = cudaGetLastError();
        // the answer of CUDA 13.0 on an H200 (seen in scripts/gpu_check.sh): cudaErrorInvalidValue
        expect(e == cudaErrorInvalidValue, "2048 threads per block -> cudaErrorInvalidValue", e, cudaErrorInvalidValue);
        expect(cudaGetLastError() == cudaSuccess, "cudaGetLastError clears the error", 1, 0);
        printf("  invalid launch configuration reported: %s\n", fails > f0 ? "MISMATCH" : "ok");
    }
    printf("test_emu: %s\n", fails ? "FAIL" : "PASS");
    return fails ? 1 : 0;
}
