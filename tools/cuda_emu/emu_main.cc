// Runs every EMU_CASE registered by the compare_*.cc files, or those named as arguments.
#include "emu.h"

int main(int argc, char** argv) {
  int ran = 0;
  for (auto& [name, fn] : emu_registry()) {
    bool want = argc == 1;
    for (int i = 1; i < argc; ++i) want = want || std::strcmp(argv[i], name) == 0;
    if (!want) continue;
    printf("== %s\n", name);
    fn();
    ++ran;
  }
  if (ran == 0) { printf("no case matched\n"); return 2; }
  printf("%d cases, %ld emulated launches; %s\n", ran, g_launches, fails ? "FAILURES" : "ALL OK");
  return fails != 0;
}
