// test_util.h - shared by the kernel tests in dev/test/ (emulated and nvcc builds alike).
//   - skip_without_device(): an nvcc build on a machine without a GPU prints why and exits 77
//   - gpu_time_us(f): microseconds per call of f on the device (the --bench modes)
//   - DeviceBuffer<T>: exact-size cudaMalloc (AddressSanitizer sees overruns in emulation),
//     poison() fills 0xFF bytes (NaN in fp32/bf16) so unwritten outputs cannot pass
//   - Checker: compares a tensor with a reference, prints max abs / rel error vs tolerance,
//     counts mismatches; finish() returns the process exit status (non-zero on any mismatch)
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "../../kernels/common.cuh"

inline void skip_without_device(const char* test) {
#if defined(CUDA_EMU)
    printf("%s: emulated CUDA device (dev/cuda_emu): blocks run one at a time on CPU threads\n", test);
#else
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("SKIP %s: no CUDA device (cudaGetDeviceCount: %s, count %d); this nvcc build needs a GPU\n", test,
               e == cudaSuccess ? "no error" : cudaGetErrorString(e), n);
        exit(77);
    }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("%s: device %s (sm_%d%d)\n", test, prop.name, prop.major, prop.minor);
#endif
}

// Microseconds per call of f (which launches work on the default stream): `warmup` calls,
// then cudaEvents around `reps` calls. For the --bench modes (GPU builds only).
template <typename F>
inline double gpu_time_us(F&& f, int reps = 50, int warmup = 2) {
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    for (int r = 0; r < warmup; r++) f();
    cudaCheck(cudaEventRecord(e0));
    for (int r = 0; r < reps; r++) f();
    cudaCheck(cudaEventRecord(e1));
    cudaCheck(cudaEventSynchronize(e1));
    float ms = 0;
    cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
    cudaCheck(cudaEventDestroy(e0));
    cudaCheck(cudaEventDestroy(e1));
    return 1e3 * ms / reps;
}

// ---------------------------------------------------------------------------------------
// storage conversions on the host
template <typename T> inline T host_from_float(float x);
template <> inline float host_from_float<float>(float x) { return x; }
template <> inline __nv_bfloat16 host_from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
inline float host_to_float(float x) { return x; }
inline float host_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> inline const char* type_name();
template <> inline const char* type_name<float>() { return "fp32"; }
template <> inline const char* type_name<__nv_bfloat16>() { return "bf16"; }

// round a float vector through storage type T (what the device will see)
template <typename T>
std::vector<float> round_to(const std::vector<float>& v) {
    std::vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = host_to_float(host_from_float<T>(v[i]));
    return r;
}

struct Rng {
    std::mt19937_64 gen;
    explicit Rng(uint64_t seed) : gen(seed) {}
    std::vector<float> normal(size_t n, float mean = 0.0f, float std = 1.0f) {
        std::normal_distribution<float> d(mean, std);
        std::vector<float> v(n);
        for (auto& x : v) x = d(gen);
        return v;
    }
};

// seed: $SEED if set, else fresh; printed so a failure can be replayed
inline uint64_t test_seed() {
    const char* s = getenv("SEED");
    uint64_t seed = s ? strtoull(s, nullptr, 0) : (uint64_t)std::random_device{}() ^ (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count();
    printf("seed %llu (set SEED=... to replay)\n", (unsigned long long)seed);
    return seed;
}

// ---------------------------------------------------------------------------------------
template <typename T>
struct DeviceBuffer {
    T* ptr = nullptr;
    size_t n = 0;
    explicit DeviceBuffer(size_t count) : n(count) { cudaCheck(cudaMalloc((void**)&ptr, count * sizeof(T))); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { cudaFree(ptr); }
    void poison() { cudaCheck(cudaMemset(ptr, 0xFF, n * sizeof(T))); }
    void upload(const std::vector<float>& v) {  // converts to T
        std::vector<T> h(n);
        for (size_t i = 0; i < n; i++) h[i] = host_from_float<T>(v[i]);
        cudaCheck(cudaMemcpy(ptr, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    }
    std::vector<float> download() const {
        std::vector<T> h(n);
        cudaCheck(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
        std::vector<float> v(n);
        for (size_t i = 0; i < n; i++) v[i] = host_to_float(h[i]);
        return v;
    }
    std::vector<unsigned char> bytes() const {
        std::vector<unsigned char> h(n * sizeof(T));
        cudaCheck(cudaMemcpy(h.data(), ptr, h.size(), cudaMemcpyDeviceToHost));
        return h;
    }
    operator T*() const { return ptr; }
};

// One operand of n elements in a device buffer of n + 1 with a guard element that the kernel
// must not touch: the operand at element `off` (0: 16-byte aligned, the guard after it;
// 1: misaligned by one element, the guard before it). The buffer starts poisoned (0xFF
// bytes: NaN); the guard holds `guard_byte` in every byte (a finite pattern such as 0x5A
// catches a kernel that rewrites it from NaN inputs with the same NaN bits).
template <typename T>
struct GuardedOperand {
    DeviceBuffer<T> buf;
    size_t n;
    int off;
    unsigned char guard_byte;
    GuardedOperand(size_t count, int offset = 0, unsigned char guard = 0xFF) : buf(count + 1), n(count), off(offset), guard_byte(guard) {
        buf.poison();
        cudaCheck(cudaMemset(buf.ptr + guard_index(), guard_byte, sizeof(T)));
    }
    size_t guard_index() const { return off ? 0 : n; }
    T* ptr() const { return buf.ptr + off; }
    void upload(const std::vector<float>& v) {
        std::vector<T> h(n);
        for (size_t i = 0; i < n; i++) h[i] = host_from_float<T>(v[i]);
        cudaCheck(cudaMemcpy(ptr(), h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    }
    std::vector<unsigned char> bytes() const {   // the n elements
        std::vector<unsigned char> all = buf.bytes();
        return std::vector<unsigned char>(all.begin() + off * sizeof(T), all.begin() + (off + n) * sizeof(T));
    }
    std::vector<float> download() const {
        std::vector<unsigned char> b = bytes();
        std::vector<float> v(n);
        for (size_t i = 0; i < n; i++) {
            T x;
            std::memcpy(&x, &b[i * sizeof(T)], sizeof(T));
            v[i] = host_to_float(x);
        }
        return v;
    }
    bool guard_intact() const {
        std::vector<unsigned char> all = buf.bytes();
        for (size_t k = 0; k < sizeof(T); k++)
            if (all[guard_index() * sizeof(T) + k] != guard_byte) return false;
        return true;
    }
};

// ---------------------------------------------------------------------------------------
struct Checker {
    int checked = 0, failed = 0;
    // |got - ref| <= atol + rtol * |ref| elementwise; NaN/Inf in got always fails
    bool check(const std::string& name, const std::vector<float>& got, const std::vector<double>& ref, double atol, double rtol) {
        double max_abs = 0, max_rel = 0, worst = 0;
        size_t bad = 0, first_bad = (size_t)-1;
        for (size_t i = 0; i < ref.size(); i++) {
            double g = got[i], r = ref[i], err = std::fabs(g - r);
            bool ok = std::isfinite(g) && err <= atol + rtol * std::fabs(r);
            if (!std::isfinite(g)) err = INFINITY;
            if (!ok) {
                if (first_bad == (size_t)-1) first_bad = i;
                bad++;
            }
            max_abs = std::max(max_abs, err);
            max_rel = std::max(max_rel, err / std::max(std::fabs(r), 1e-30));
            worst = std::max(worst, err / (atol + rtol * std::fabs(r)));
        }
        checked++;
        printf("  %-44s max_abs %.3e max_rel %.3e  (tol %.0e + %.0e*|ref|) %s\n", name.c_str(), max_abs, max_rel, atol, rtol,
               bad ? "MISMATCH" : "ok");
        if (bad) {
            failed++;
            printf("    MISMATCH: %zu of %zu elements out of tolerance; first at %zu: got %.8g ref %.8g\n", bad, ref.size(), first_bad,
                   (double)got[first_bad], ref[first_bad]);
        }
        return bad == 0;
    }
    bool check_equal_bytes(const std::string& name, const std::vector<unsigned char>& a, const std::vector<unsigned char>& b) {
        checked++;
        bool same = a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
        printf("  %-44s %s\n", name.c_str(), same ? "bitwise identical" : "MISMATCH: run-to-run difference");
        if (!same) failed++;
        return same;
    }
    int finish(const char* test) const {
        printf("%s: %d checks, %d failed -> %s\n", test, checked, failed, failed ? "FAIL" : "PASS");
        return failed ? 1 : 0;
    }
};
