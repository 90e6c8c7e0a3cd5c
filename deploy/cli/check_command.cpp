// `afd check FILE`: validates a topology file before anything starts and prints what would run
// where, or every error as FILE:LINE:COLUMN: message.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "deploy/cli/command_registry.hpp"
#include "deploy/topology/topology.hpp"

namespace {

void print_errors(const afd::topology::diagnostics& errors) {
  for (const auto& d : errors) std::fprintf(stderr, "%s\n", d.to_string().c_str());
}

int run_check(int argc, char** argv) {
  CLI::App app{"Validates a topology file: keys, types, names, nodes, devices, ports, and the placement of\n"
               "every expert, shared expert and dense MLP against the model's config.json.\n"
               "Exit codes: 0 valid, 1 invalid, 2 bad usage."};
  std::string file, model_dir;
  bool no_ports = false;
  app.add_option("FILE", file, "topology file (YAML)")->required();
  app.add_option("--model", model_dir, "checkpoint directory to use instead of model.path");
  app.add_flag("--no-port-check", no_ports, "do not try to bind the ports of nodes on this machine");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto parsed = afd::topology::parse_file(file);
  if (!parsed.ok()) {
    print_errors(parsed.errors);
    std::fprintf(stderr, "%s: %zu error(s)\n", file.c_str(), parsed.errors.size());
    return 1;
  }
  afd::topology::topology& t = *parsed.value;
  if (!model_dir.empty()) t.model.path = model_dir;

  afd::topology::diagnostics errors;
  if (!no_ports) errors = afd::topology::check_environment(t);

  std::optional<afd::model_config> config;
  std::optional<afd::topology::placement> resolved;
  std::string model_note;
  if (auto c = afd::topology::read_model_config(t)) {
    config = *c;
    auto p = afd::topology::resolve_placement(t, *config);
    if (p.ok()) resolved = std::move(*p.value);
    errors.insert(errors.end(), p.errors.begin(), p.errors.end());
  } else if (c.err().code() == afd::errc::io_error || c.err().code() == afd::errc::unsupported) {
    model_note = c.err().message() + ": placement checked for structure only, not against the model";
  } else {
    errors.push_back({t.location_of("model.path"), "cannot read the model config: " + c.err().message()});
  }

  if (!errors.empty()) {
    print_errors(errors);
    std::fprintf(stderr, "%s: %zu error(s)\n", file.c_str(), errors.size());
    return 1;
  }
  std::printf("%s", afd::topology::summarize(t, resolved ? &*resolved : nullptr, config ? &*config : nullptr).c_str());
  if (!model_note.empty()) std::printf("note: %s\n", model_note.c_str());
  std::printf("%s: valid\n", file.c_str());
  return 0;
}

const bool registered = afd::cli::register_command(
    {"check", "validate a topology file and show what runs where", &run_check});

}  // namespace
