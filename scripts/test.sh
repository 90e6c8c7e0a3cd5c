#!/usr/bin/env bash
# Sets up, builds and runs the default test suite (everything not labelled slow or soak).
# GPU tests skip themselves, with a reason, where no GPU is present.
# Usage: scripts/test.sh [ctest args...], e.g. scripts/test.sh -L transport
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
ctest --output-on-failure -j "$(nproc)" -LE "slow|soak" "$@"
