// Augmentation helpers shared by the emulation checks (compare_augment.cc, compare_audit.cc): a stage from
// its kind, Philox stream word, parameters and output plane, and ImageNet's PCA lighting eigen pairs.
#pragma once
#include <vector>

#include "ops/augment.h"

inline ck::AugStage aug_stage(int kind, uint32_t stream, std::vector<double> a, int64_t P, int64_t Q) {
  ck::AugStage s{};
  s.kind = kind;
  s.stream = stream;
  for (size_t i = 0; i < a.size(); ++i) s.a[i] = a[i];
  s.P = P;
  s.Q = Q;
  return s;
}

inline const double kEigval[3] = {0.2175, 0.0188, 0.0045};
inline const double kEigvec[9] = {-0.5675, 0.7192, 0.4009, -0.5808, -0.0045, -0.8140, -0.5836, -0.6948, 0.4203};
