#!/usr/bin/env bash
# Installs the Debian packages afd needs (when missing), configures and builds into build/.
# Usage: scripts/setup.sh [extra cmake -D options...]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config python3 libcaf-dev libucx-dev ucx-utils rdma-core
          libibverbs-dev libyaml-cpp-dev libboost-dev libgtest-dev libgmock-dev nlohmann-json3-dev
          libcli11-dev iproute2 libssl-dev libonig-dev)
# The multi-node tests (tests/multinode): sshd and a Slurm cluster inside network namespaces, and
# npm for offline checks of rendered manifests; curl for the afd serve tests. Without their
# recommendations, which would bring systemd and dozens of Slurm plugins. The daemons are never
# started as services.
test_packages=(openssh-server openssh-client munge slurmd slurmctld slurm-client nodejs curl)
command -v npm >/dev/null || test_packages+=(npm)

missing_of() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing < <(missing_of "${packages[@]}")
mapfile -t missing_test < <(missing_of "${test_packages[@]}")
if ((${#missing[@]} + ${#missing_test[@]})); then
  echo "setup: installing ${missing[*]} ${missing_test[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ((${#missing_test[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
      "${missing_test[@]}" >/dev/null
  fi
fi

werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAFD_WERROR=$werror "$@" >/dev/null
echo "setup: building with $jobs jobs (CUDA: $(grep -E '^AFD_ENABLE_CUDA' build/CMakeCache.txt | cut -d= -f2))"
cmake --build build -j "$jobs"
