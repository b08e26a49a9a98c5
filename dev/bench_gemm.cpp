// The machine's fp32 GEMM rate through OpenBLAS (the CPU trainer's ceiling):
// best of a few runs of C = A B for square sizes. Prints one line per size and
// a last line "gemm_gflops <best>".
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <vector>

int main() {
    double best_all = 0;
    for (int n : {1024, 2048}) {
        std::vector<float> a((size_t)n * n, 0.5f), b((size_t)n * n, 0.25f), c((size_t)n * n);
        double best = 0;
        for (int rep = 0; rep < 5; rep++) {
            auto t0 = std::chrono::steady_clock::now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
            double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best = std::max(best, 2.0 * n * n * n / s / 1e9);
        }
        printf("sgemm %dx%dx%d: %.1f GFLOP/s\n", n, n, n, best);
        best_all = std::max(best_all, best);
    }
    printf("openblas: %s\n", openblas_get_config());
    printf("gemm_gflops %.1f\n", best_all);
    return 0;
}
