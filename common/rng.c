// rng.c: see rng.h.
#include "rng.h"

#include "err.h"

uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t rng_below(uint64_t *state, uint64_t n) {
    QL_ASSERT(n > 0);
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // accept r < limit: a whole number of copies of [0,n)
    uint64_t r;
    do r = rng_next(state);
    while (r >= limit);
    return r % n;
}
