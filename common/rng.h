// rng.h: the project's one seeded generator: splitmix64 (Steele, Lea, Flood 2014):
// state += 0x9E3779B97F4A7C15, then two xor-shift-multiply rounds. rng_below(n)
// draws uniformly in [0,n) by rejection (no modulo bias). Fixed forever: adapter
// initialisation and dataset shuffles are reproducible across builds.
#ifndef QL_RNG_H
#define QL_RNG_H

#include <stdint.h>

uint64_t rng_next(uint64_t *state);
uint64_t rng_below(uint64_t *state, uint64_t n);

#endif
