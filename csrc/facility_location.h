// The integer codes facility_location takes for its similarity and optimizer (shared by
// its CPU body and ops.cpp, which reports the names to Python; no CUDA, no ATen).
//
// A code is the name's position in coreaug_fast.vocabulary.SIMILARITIES / OPTIMIZERS: the
// Python side passes vocabulary.code(...), and tests/test_vocabulary.py holds the names
// below, in code order, against those tuples.
#pragma once

#include <cstdint>

namespace coreaug {

enum Similarity : int64_t { kDistance = 0, kSqDistance = 1, kExp = 2, kNumSimilarities = 3 };
enum Optimizer : int64_t { kNaive = 0, kLazy = 1, kStochastic = 2, kNumOptimizers = 3 };

// What each code means, by the names the Python API gives them. No kernel reads these:
// they are reported (coreaug_fast._C.codes()) so that a test can check the two tables agree.
inline constexpr const char* kSimilarityNames[kNumSimilarities] = {"distance", "sqdistance", "exp"};
inline constexpr const char* kOptimizerNames[kNumOptimizers] = {"naive", "lazy", "stochastic"};

}  // namespace coreaug
