// `afd COMMAND [ARGS...]`: dispatches to the registered subcommands.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "deploy/cli/command_registry.hpp"

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: afd COMMAND [ARGS...]\n\ncommands:\n");
  for (const auto& c : afd::cli::registered_commands())
    std::fprintf(out, "  %-12s %s\n", c.name.c_str(), c.summary.c_str());
  std::fprintf(out, "\n`afd COMMAND --help` describes a command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : afd::cli::registered_commands()) {
    if (c.name != argv[1]) continue;
    std::string program = std::string("afd ") + argv[1];
    std::vector<char*> args{program.data()};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    args.push_back(nullptr);
    try {
      return c.run(argc - 1, args.data());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "afd %s: internal error: %s\n", argv[1], e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "afd: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return 2;
}
