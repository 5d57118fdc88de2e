// Argument checks for every kernel. A failed check throws std::invalid_argument("op: message"),
// which pybind11 turns into ValueError. Nothing in cnnkit calls abort() or exit().
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ck {

template <typename... Args>
[[noreturn]] inline void fail(const char* op, Args&&... parts) {
  std::ostringstream os;
  os << op << ": ";
  (os << ... << parts);
  throw std::invalid_argument(os.str());
}

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

// a * b with overflow detection; sizes are int64 wherever a product can pass 2^31.
inline int64_t mul_checked(const char* op, int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(op, "size overflows int64 (", a, " * ", b, ")");
  return r;
}

inline int64_t add_checked(const char* op, int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(op, "size overflows int64 (", a, " + ", b, ")");
  return r;
}

// Collects the first error raised inside an OpenMP region so it can be rethrown after the region:
// an exception must never escape a parallel region (that would terminate the process).
struct ErrorSlot {
  bool set = false;
  std::string msg;
  void capture(const std::string& m) {
#if defined(_OPENMP)  // the CUDA files include this header without OpenMP (and use no parallel region)
#pragma omp critical(ck_error_slot)
#endif
    if (!set) {
      set = true;
      msg = m;
    }
  }
  void rethrow() const {
    if (set) throw std::invalid_argument(msg);
  }
};

}  // namespace ck

#define CK_CHECK(cond, op, ...)               \
  do {                                        \
    if (!(cond)) ::ck::fail(op, __VA_ARGS__); \
  } while (0)
