#!/usr/bin/env bash
# One command for a machine with a GPU: builds with CUDA, runs `ctest -L gpu` (the backend contract
# and the CUDA kernel tests against the CPU oracle), the CUDA benchmark (--quick), and a 1A1F
# embedded cluster with both workers on cuda:0 against the CPU reference engine on a generated
# model; then prints one summary. Sized to finish within 8 minutes on one H100/H200: every stage
# has a timeout (250 + 90 + 45 + 20 + 20 + 40 s at most), and a stage that fails or times out is
# reported and the others still run (a failed build ends the check).
# Usage: scripts/gpu-check.sh [build dir, default build-gpu]
# Exit status: 0 when every stage passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${1:-build-gpu}
jobs=$(nproc)
work=$(mktemp -d "${TMPDIR:-/tmp}/afd-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

declare -a summary=()
failed=0
# record STAGE STATUS DETAIL
record() {
  summary+=("$(printf '%-13s %-5s %s' "$1" "$2" "$3")")
  [ "$2" = PASS ] || failed=1
}
# stage NAME SECONDS OUT COMMAND...: runs COMMAND under timeout, stdout to OUT, stderr to OUT.err;
# returns its status (124: timed out).
stage() {
  local name=$1 seconds=$2 out=$3
  shift 3
  echo "== $name (at most ${seconds}s)"
  timeout --kill-after=10 "$seconds" "$@" >"$out" 2>"$out.err"
}
elapsed() { echo $(($(date +%s) - start)); }

# 0. A GPU, or nothing to check.
gpu="none"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >"$work/gpus.txt" 2>&1; then
  gpu=$(head -n 1 "$work/gpus.txt")
else
  echo "gpu-check: no GPU visible (nvidia-smi -L failed): run this on a machine with an NVIDIA GPU" >&2
  exit 1
fi

# 1. Configure and build (CUDA on; the targets the later stages need).
targets=(afd backend_ops_test cuda_ops_test cuda_device_test afd-bench-cuda)
launcher=""
command -v ccache >/dev/null && launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache"
if stage build 250 "$work/build.log" bash -c "
    cmake -S '$root' -B '$build' -DCMAKE_BUILD_TYPE=Release -DAFD_ENABLE_CUDA=ON $launcher &&
    cmake --build '$build' -j $jobs --target ${targets[*]}"; then
  record build PASS "${targets[*]} ($(elapsed)s so far)"
else
  record build FAIL "see the last lines below"
  tail -n 30 "$work/build.log" "$work/build.log.err"
  printf '%s\n' "== summary (${gpu})" "${summary[@]}"
  exit 1
fi

# 2. ctest -L gpu: every op of the CUDA backend vs the CPU backend, the CUDA kernels vs the CPU kernels.
if stage ctest 90 "$work/ctest.log" ctest --test-dir "$build" -L gpu -V --timeout 85; then
  # -V keeps every test's output: a GPU test that found no device, or a contract test that ran
  # only the CPU backend, has not checked the GPU.
  if grep -q "no CUDA device\|only the CPU backend is available" "$work/ctest.log"; then
    record "ctest -L gpu" FAIL "the GPU was not used: $(grep -m1 'no CUDA device\|only the CPU backend' "$work/ctest.log")"
  else
    record "ctest -L gpu" PASS "$(grep -m1 'tests passed' "$work/ctest.log")"
  fi
else
  record "ctest -L gpu" FAIL "$(grep -m1 'tests passed\|tests failed' "$work/ctest.log" || echo 'timed out')"
  grep -E "FAILED|Failure|error" "$work/ctest.log" | head -n 30
fi

# 3. The CUDA benchmark, short.
bench=$(find "$build" -name afd-bench-cuda -type f -perm -u+x | head -n 1)
if [ -n "$bench" ] && stage bench 45 "$work/bench.log" "$bench" --quick; then
  record bench PASS "afd-bench-cuda --quick (figures below)"
else
  record bench FAIL "afd-bench-cuda --quick failed or timed out"
  tail -n 5 "$work/bench.log.err" 2>/dev/null
fi

# 4. 1A1F embedded cluster, both workers on cuda:0, vs the CPU reference engine. The `small`
#    preset: head_dim 128 (the CUDA attention covers 64/128/256; `tiny` has 32).
afd="$build/deploy/cli/afd"
prompt=11,400,23,7,901
new_tokens=24
cat >"$work/1a1f-cuda.yaml" <<EOF
cluster: {name: gpu-check}
model: {path: $work/small}
nodes:
  - {name: local, host: 127.0.0.1}
coordinator: {node: local, port: 7699}
transport: {kind: loopback}
limits: {max_new_tokens: 64, max_context: 512}
attention_workers:
  - {name: a0, node: local, device: "cuda:0", kv_blocks: 256, block_size: 16, max_batch: 8}
ffn_workers:
  - {name: f0, node: local, device: "cuda:0"}
EOF
if stage model 20 "$work/model.log" "$afd" make-model --preset small --out "$work/small" &&
   stage reference 20 "$work/reference.json" "$afd" generate --model "$work/small" --prompt-ids "$prompt" \
     --max-new-tokens "$new_tokens" --json &&
   stage cluster 40 "$work/cluster.json" "$afd" generate --topology "$work/1a1f-cuda.yaml" --model "$work/small" \
     --prompt-ids "$prompt" --max-new-tokens "$new_tokens" --json; then
  # The CUDA kernels round differently (bf16 GEMMs), so tokens may part from the CPU reference
  # after a while; the summary says where. A cluster that does not run at all fails the stage.
  verdict=$(python3 - "$work/reference.json" "$work/cluster.json" <<'PY'
import json, sys
def tokens(path):
    text = open(path).read()
    return json.loads(text[text.index("{"):])["tokens"]
ref, got = tokens(sys.argv[1]), tokens(sys.argv[2])
same = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
if ref == got:
    print(f"PASS tokens equal the CPU reference ({len(ref)} tokens)")
elif same > 0:
    print(f"PASS first {same} of {len(ref)} tokens equal the CPU reference, then differ (bf16 GEMMs): {got}")
else:
    print(f"FAIL first token differs from the CPU reference: cluster {got[:8]}, reference {ref[:8]}")
PY
)
  record cluster "${verdict%% *}" "${verdict#* }"
else
  record cluster FAIL "see the last lines below"
  tail -n 5 "$work"/model.log.err "$work"/reference.json.err "$work"/cluster.json.err 2>/dev/null
fi

echo
echo "== afd-bench-cuda --quick"
[ -f "$work/bench.log" ] && tail -n 40 "$work/bench.log"
echo
echo "== summary: $gpu, $(elapsed)s"
printf '%s\n' "${summary[@]}"
exit "$failed"
