// Runs every EMU_CASE registered by the compare_*.cc files, or those named as arguments. A case fails on a
// failed CHECK, an exception (an op's error, e.g. a launch the shim rejected), a shim violation (cuda_runtime.h)
// or a cudaMallocAsync block still allocated when it returns.
#include <exception>

#include "emu.h"

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);  // a crash (a wild index under the emulation) keeps the lines before it
  int ran = 0;
  for (auto& [name, fn] : emu_registry()) {
    bool want = argc == 1;
    for (int i = 1; i < argc; ++i) want = want || std::strcmp(argv[i], name) == 0;
    if (!want) continue;
    printf("== %s\n", name);
    try {
      fn();
    } catch (const std::exception& e) {
      ++fails;
      printf("FAIL %s threw: %s\n", name, e.what());
    }
    g_emu_mode = kEmuRun;
    if (!emu_blocks().empty()) {
      ++fails;
      printf("FAIL %s left %zu cudaMallocAsync block(s) allocated\n", name, emu_blocks().size());
      emu_blocks().clear();
    }
    ++ran;
  }
  if (ran == 0) { printf("no case matched\n"); return 2; }
  if (g_violations) printf("FAIL %ld shim violation(s) (EMU VIOLATION lines above)\n", g_violations);
  const bool bad = fails != 0 || g_violations != 0;
  printf("%d cases, %ld emulated launches; %s\n", ran, g_launches, bad ? "FAILURES" : "ALL OK");
  return bad;
}
