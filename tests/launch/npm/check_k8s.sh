#!/usr/bin/env bash
# Renders Kubernetes manifests with afd and checks them offline with check_k8s.js (npm
# kubernetes-models); then checks that the checker refuses broken manifests. Nothing is applied
# to any cluster. Usage: check_k8s.sh AFD_EXECUTABLE WORK_DIR (exit 77: npm missing, skipped).
set -euo pipefail
afd=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
data=$here/../data
npm_install_budget_s=240  # first install: 33 MB from the npm registry; later runs reuse it

command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "SKIP: node and npm are needed for the Kubernetes schema check (scripts/setup.sh installs them)"; exit 77; }

# The pinned packages, installed once per lock file into the build tree.
mkdir -p "$work"
if ! cmp -s "$here/package-lock.json" "$work/package-lock.json" || [ ! -d "$work/node_modules" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$work/"
  rm -rf "$work/node_modules"
  if ! (cd "$work" && timeout "$npm_install_budget_s" npm ci --no-audit --no-fund --loglevel=error >npm-ci.log 2>&1); then
    cat "$work/npm-ci.log"
    echo "npm ci failed in $work (is the npm registry reachable?)"
    exit 1
  fi
fi
cp "$here/check_k8s.js" "$work/"

check() {  # check NAME TOPOLOGY FLAVOR [checker options] -- [afd options]
  local name=$1 topology=$2 flavor=$3; shift 3
  local -a checker=() render=()
  while (($#)) && [ "$1" != -- ]; do checker+=("$1"); shift; done
  shift
  render=("$@")
  [ "$flavor" = plain ] && render+=(--plain)
  "$afd" render k8s "$topology" "${render[@]}" >"$work/$name.yaml"
  node "$work/check_k8s.js" "$work/$name.yaml" "$topology" "$flavor" "${checker[@]}"
}

check lws "$data/two_nodes.yaml" lws --model-claim step3-weights -- --image registry.example/afd:0.1.0 --model-claim step3-weights
check plain "$data/two_nodes.yaml" plain -- --image registry.example/afd:0.1.0
check cpu-lws "$data/cpu_three_nodes.yaml" lws --model-path /models/tiny -- --name cpu-trio --model-path /models/tiny
check cpu-plain "$data/cpu_three_nodes.yaml" plain --model-path /models/tiny --model-claim tiny -- \
  --name cpu-trio --model-path /models/tiny --model-claim tiny

# The checker itself must refuse what Kubernetes would: a schema violation, a missing GPU,
# a pod that does not run its rank, a ConfigMap that differs from the file.
refuses() {  # refuses WHAT SED_EXPRESSION FLAVOR SOURCE_NAME
  local what=$1 edit=$2 flavor=$3 source=$4
  sed -e "$edit" "$work/$source.yaml" >"$work/broken.yaml"
  if cmp -s "$work/broken.yaml" "$work/$source.yaml"; then echo "the edit for '$what' changed nothing"; exit 1; fi
  if node "$work/check_k8s.js" "$work/broken.yaml" "$data/two_nodes.yaml" "$flavor" >"$work/broken.out" 2>&1; then
    echo "check_k8s.js accepted a manifest with $what"; exit 1
  fi
  echo "refused ($what): $(head -n1 "$work/broken.out")"
}
refuses "replicas as a string" 's/^  replicas: 2$/  replicas: "two"/' plain plain
refuses "an unknown pod management policy" 's/podManagementPolicy: Parallel/podManagementPolicy: AllAtOnce/' plain plain
refuses "a GPU fewer than cuda:3 needs" 's/nvidia.com\/gpu: 4/nvidia.com\/gpu: 3/' plain plain
refuses "a rank from nowhere" 's/\$(AFD_NODE_INDEX)/$(NODE_RANK)/' plain plain
refuses "a container port as a string" 's/containerPort: 7700/containerPort: "7700"/' lws lws
refuses "an LWS group of the wrong size" 's/^    size: 2$/    size: 3/' lws lws
refuses "a changed topology" 's/cuda:3/cuda:2/' lws lws
echo "k8s manifests: 4 renders valid, 7 broken ones refused"
