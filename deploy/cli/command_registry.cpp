#include "deploy/cli/command_registry.hpp"

#include <algorithm>

namespace afd::cli {

namespace {
std::vector<command>& registry() {
  static std::vector<command> commands;  // function-local: safe from static-order problems
  return commands;
}
}  // namespace

bool register_command(command c) {
  registry().push_back(std::move(c));
  return true;
}

std::vector<command> registered_commands() {
  auto out = registry();
  std::sort(out.begin(), out.end(), [](const command& a, const command& b) { return a.name < b.name; });
  return out;
}

}  // namespace afd::cli
