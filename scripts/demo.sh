#!/usr/bin/env bash
# Sets up, builds and runs the main job: `afd demo` on a freshly generated model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/deploy/cli/afd demo "$@"
