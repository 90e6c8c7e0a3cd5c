#pragma once
/// The `afd` subcommands. Each lives in its own `<name>_command.cpp` and registers itself at
/// start-up with a static `register_command` call; main() dispatches on the first argument.

#include <string>
#include <vector>

namespace afd::cli {

/// One subcommand: `afd NAME ...`. `run` gets argv with argv[0] = "afd NAME" and returns the
/// process exit code (0 success, 1 runtime failure, 2 bad usage).
struct command {
  std::string name;
  std::string summary;
  int (*run)(int argc, char** argv);
};

/// Adds a subcommand; returns true so it can initialise a static.
bool register_command(command c);
/// All registered subcommands, sorted by name.
std::vector<command> registered_commands();

}  // namespace afd::cli
