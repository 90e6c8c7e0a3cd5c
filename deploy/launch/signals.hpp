#pragma once
/// SIGINT / SIGTERM / SIGHUP as a stop request that a process's main loop polls (the launcher and
/// worker processes stop their actors in order instead of dying mid-step).

namespace afd::launch {

/// Installs the handlers (SIGPIPE is ignored: a closed terminal must not kill a serving cluster).
void install_stop_signals();
/// The signal that asked to stop, or 0.
int stop_signal() noexcept;

}  // namespace afd::launch
