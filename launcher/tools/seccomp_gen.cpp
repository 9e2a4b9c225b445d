// ik-seccomp-gen OUT: compiles the default seccomp filters with libseccomp
// (launcher/apply/seccomp_rules.cpp) and writes them as C++ arrays of BPF
// instructions, included by launcher/apply/seccomp.cpp. Run at build time,
// on the machine (architecture) the programs are built for.
#include <cstdio>
#include <fstream>
#include <string>

#include "apply/seccomp.hpp"

namespace {

bool emit(std::ofstream& out, const char* name, const ik::SeccompPolicy& policy) {
  auto prog = ik::compile_seccomp_filter(policy);
  if (!prog) {
    std::fprintf(stderr, "ik-seccomp-gen: %s\n", prog.error().describe().c_str());
    return false;
  }
  out << "constexpr sock_filter " << name << "[] = {\n";
  for (const auto& i : *prog) {
    char line[96];
    std::snprintf(line, sizeof line, "    {0x%04x, %u, %u, 0x%08x},\n", i.code, i.jt, i.jf, i.k);
    out << line;
  }
  out << "};\n";
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: ik-seccomp-gen OUT\n");
    return 2;
  }
  // Written aside and renamed: a failed run leaves no half file for make to trust.
  const std::string tmp = std::string(argv[1]) + ".tmp";
  std::ofstream out(tmp);
  out << "// Generated at build time by ik-seccomp-gen from launcher/apply/seccomp_rules.cpp: do not edit.\n";
  if (!emit(out, "kSeccompDefault", ik::SeccompPolicy{false}) ||
      !emit(out, "kSeccompAllowUserns", ik::SeccompPolicy{true}))
    return 1;
  out.close();
  return out && std::rename(tmp.c_str(), argv[1]) == 0 ? 0 : 1;
}
