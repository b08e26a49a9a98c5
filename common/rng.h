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
    double uniform() { return (next_u64() >> 11) * (1.0 / 9007199254740992.0); }   // [0, 1)
    double normal() {   // Box-Muller
        double u1 = uniform(), u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
};
