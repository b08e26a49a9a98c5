// A small, explicit random number generator (no hidden global state): every
// user owns its Rng. splitmix64 seeding + xoshiro256** stream; uniform floats
// and Box-Muller normals for initialisation and sampling.
#pragma once
#include <cmath>
#include <cstdint>

struct Rng {
    uint64_t s[4];
    explicit Rng(uint64_t seed = 1) { this->seed(seed); }
    void seed(uint64_t x) {
        for (int i = 0; i < 4; i++) {   // splitmix64
            uint64_t z = (x += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            s[i] = z ^ (z >> 31);
        }
    }
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t next_u64() {   // xoshiro256**
        uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
        s[2] ^= t; s[3] = rotl(s[3], 45);
        return r;
    }
    static double to_uniform(uint64_t x) { return (x >> 11) * (1.0 / 9007199254740992.0); }
    double uniform() { return to_uniform(next_u64()); }   // [0, 1)
    // Box-Muller from two raw draws (normal() below; common/init.h calls it on draws made
    // ahead, so the values are the same however the work is split)
    static double normal_from(uint64_t a, uint64_t b) {
        double u1 = to_uniform(a), u2 = to_uniform(b);
        if (u1 < 1e-300) u1 = 1e-300;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
    double normal() {
        uint64_t a = next_u64();
        return normal_from(a, next_u64());
    }
};
