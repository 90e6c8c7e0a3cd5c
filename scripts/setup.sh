#!/usr/bin/env bash
# Installs the Debian packages afd needs (when missing), configures and builds into build/.
# Usage: scripts/setup.sh [extra cmake -D options...]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config python3 libcaf-dev libucx-dev ucx-utils rdma-core
          libibverbs-dev libyaml-cpp-dev libboost-dev libgtest-dev libgmock-dev nlohmann-json3-dev
          libcli11-dev iproute2 libonig-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAFD_WERROR=$werror "$@" >/dev/null
echo "setup: building with $jobs jobs (CUDA: $(grep -E '^AFD_ENABLE_CUDA' build/CMakeCache.txt | cut -d= -f2))"
cmake --build build -j "$jobs"
