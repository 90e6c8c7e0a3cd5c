#!/usr/bin/env bash
# Builds afd with sanitizers and runs the default test suite and a short fault matrix under them.
#   scripts/sanitize.sh address   # ASan + UBSan, into build-asan/
#   scripts/sanitize.sh thread    # TSan, into build-tsan/
# Extra arguments go to ctest (e.g. -L faults). CUDA is off: the sanitizers check host code.
# Reports go to the test output; the run fails on the first sanitizer report (halt_on_error).
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-address}
shift || true
case "$kind" in
  address) dir=build-asan; flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
           export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1}
           export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} ;;
  thread)  dir=build-tsan; flags="-fsanitize=thread"
           export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1} ;;
  *) echo "usage: scripts/sanitize.sh address|thread [ctest args...]" >&2; exit 2 ;;
esac
scripts/setup.sh >/dev/null  # packages (and the normal build, which the tests' oracles reuse)
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAFD_ENABLE_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="$flags -fno-omit-frame-pointer" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
  -DCMAKE_SHARED_LINKER_FLAGS="$flags" >/dev/null
echo "sanitize ($kind): building $dir with $(nproc) jobs"
cmake --build "$dir" -j "$(nproc)"
cd "$dir"
echo "sanitize ($kind): default suite"
ctest --output-on-failure -j "$(nproc)" -LE "slow|soak|timing|gpu" "$@"
echo "sanitize ($kind): short fault matrix"
# The example's model (build/models/tiny) comes from the normal build.
./deploy/cli/afd faults matrix ../deploy/examples/2a2f.yaml \
  --kinds kill_process,pause_process,data_drop,control_duplicate --phases decode 2>&1 | tail -12
