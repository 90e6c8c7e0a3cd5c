// Checks the manifests `afd render k8s` printed, offline: each object against Kubernetes' own
// schemas (npm kubernetes-models), and what must hold between them, derived here from the
// topology file independently of afd (parsed with npm yaml). Nothing is sent to any cluster.
//
//   node check_k8s.js MANIFESTS.yaml TOPOLOGY.yaml lws|plain [--model-path P] [--model-claim C]
//
// Exit 0: valid; 1: the first problems found, one per line.
"use strict";
const fs = require("fs");
const YAML = require("yaml");
const { ConfigMap } = require("kubernetes-models/v1/ConfigMap");
const { Service } = require("kubernetes-models/v1/Service");
const { PodTemplateSpec } = require("kubernetes-models/v1/PodTemplateSpec");
const { ObjectMeta } = require("@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta");
const { StatefulSet } = require("kubernetes-models/apps/v1/StatefulSet");

const [manifestPath, topologyPath, flavor, ...rest] = process.argv.slice(2);
const option = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const problems = [];
const check = (ok, message) => {
  if (!ok) problems.push(message);
};
const validate = (Model, object, what) => {
  try {
    new Model(object).validate();
  } catch (e) {
    problems.push(`${what}: ${e.message}`);
  }
};

// What the topology asks for, from the file itself.
const topologyText = fs.readFileSync(topologyPath, "utf8");
const topology = YAML.parse(topologyText);
const nodeNames = topology.nodes.map((n) => n.name);
const coordinatorNode = topology.coordinator.node;
const port = topology.coordinator.port ?? 7600;
const rankOrder = [coordinatorNode, ...nodeNames.filter((n) => n !== coordinatorNode)];
const gpusOf = (node) => {
  let highest = -1;
  for (const w of [...(topology.attention_workers ?? []), ...(topology.ffn_workers ?? [])]) {
    const m = /^cuda:(\d+)$/.exec(w.device ?? "cpu");
    if (w.node === node && m) highest = Math.max(highest, Number(m[1]));
  }
  return highest + 1;
};
const modelPath = option("--model-path");
const modelClaim = option("--model-claim");

// The manifests.
const docs = YAML.parseAllDocuments(fs.readFileSync(manifestPath, "utf8"));
for (const d of docs) {
  for (const e of d.errors) problems.push(`YAML error: ${e.message}`);
  for (const w of d.warnings) problems.push(`YAML warning: ${w.message}`);
}
const objects = docs.map((d) => d.toJS());
const kinds = objects.map((o) => o && o.kind);
const expectedKinds = flavor === "lws" ? ["ConfigMap", "LeaderWorkerSet"] : ["ConfigMap", "Service", "StatefulSet"];
check(JSON.stringify(kinds) === JSON.stringify(expectedKinds), `kinds ${JSON.stringify(kinds)}, expected ${JSON.stringify(expectedKinds)}`);
const byKind = Object.fromEntries(objects.filter(Boolean).map((o) => [o.kind, o]));

// ConfigMap: the topology file, byte for byte.
const configMap = byKind.ConfigMap;
if (configMap) {
  validate(ConfigMap, configMap, "ConfigMap");
  check(configMap.data && configMap.data["topology.yaml"] === topologyText, "the ConfigMap does not hold the topology file exactly");
}

// One pod template: the node agent of rank `rankRef`, `gpus` GPUs; `provided` names variables
// Kubernetes or LWS defines without the template's env.
function checkTemplate(template, what, rankRef, coordinator, gpus, provided) {
  validate(PodTemplateSpec, template, what);
  const containers = template.spec?.containers ?? [];
  check(containers.length === 1, `${what}: ${containers.length} containers, expected 1`);
  const c = containers[0] ?? {};
  const args = c.args ?? [];
  const expectedArgs = ["node", "/etc/afd/topology.yaml", "--node-index", rankRef, "--coordinator", coordinator];
  if (modelPath) expectedArgs.push("--model", modelPath);
  check(JSON.stringify(args) === JSON.stringify(expectedArgs), `${what}: args ${JSON.stringify(args)}, expected ${JSON.stringify(expectedArgs)}`);
  check(Array.isArray(c.command) && c.command.length === 1, `${what}: command should be the afd executable alone`);
  // Every $(VAR) must be defined, or Kubernetes passes it on literally.
  const defined = new Set([...(c.env ?? []).map((e) => e.name), ...provided]);
  for (const a of [...(c.command ?? []), ...args])
    for (const m of String(a).matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g))
      check(defined.has(m[1]), `${what}: $(${m[1]}) is not defined in the container`);
  const limits = c.resources?.limits ?? {};
  const asked = Number(limits["nvidia.com/gpu"] ?? 0);
  check(asked === gpus, `${what}: ${asked} GPU(s) asked, the topology needs ${gpus}`);
  check((c.ports ?? []).some((p) => p.containerPort === port), `${what}: no container port ${port}`);
  // Mounts name volumes of the pod; the topology volume is the ConfigMap above.
  const volumes = Object.fromEntries((template.spec?.volumes ?? []).map((v) => [v.name, v]));
  for (const m of c.volumeMounts ?? []) check(volumes[m.name], `${what}: mount of unknown volume ${m.name}`);
  const topologyMount = (c.volumeMounts ?? []).find((m) => m.mountPath === "/etc/afd");
  check(topologyMount && volumes[topologyMount.name]?.configMap?.name === configMap?.metadata?.name,
        `${what}: /etc/afd is not the topology ConfigMap`);
  if (modelClaim) {
    const model = Object.values(volumes).find((v) => v.persistentVolumeClaim?.claimName === modelClaim);
    check(model, `${what}: no volume of claim ${modelClaim}`);
    const mount = (c.volumeMounts ?? []).find((m) => model && m.name === model.name);
    check(mount && mount.mountPath === (modelPath ?? topology.model.path) && mount.readOnly === true,
          `${what}: the model claim is not mounted read-only at the model path`);
  }
  return template.metadata?.labels ?? {};
}

const subset = (small, big) => Object.entries(small ?? {}).every(([k, v]) => big?.[k] === v);

if (flavor === "lws" && byKind.LeaderWorkerSet) {
  // No npm package ships the LeaderWorkerSet schema: its outer fields are checked against the v1
  // API (leaderworkerset.x-k8s.io/v1, LeaderWorkerSetSpec) as transcribed here, its pod
  // templates by kubernetes-models.
  const lws = byKind.LeaderWorkerSet;
  check(lws.apiVersion === "leaderworkerset.x-k8s.io/v1", `LeaderWorkerSet apiVersion ${lws.apiVersion}`);
  validate(ObjectMeta, lws.metadata, "LeaderWorkerSet metadata");
  const specKeys = ["replicas", "leaderWorkerTemplate", "rolloutStrategy", "startupPolicy", "networkConfig"];
  for (const k of Object.keys(lws.spec ?? {})) check(specKeys.includes(k), `LeaderWorkerSet spec: unknown field ${k}`);
  const lwt = lws.spec?.leaderWorkerTemplate ?? {};
  const templateKeys = ["leaderTemplate", "workerTemplate", "size", "restartPolicy", "subGroupPolicy",
                        "volumeClaimTemplates", "persistentVolumeClaimRetentionPolicy"];
  for (const k of Object.keys(lwt)) check(templateKeys.includes(k), `leaderWorkerTemplate: unknown field ${k}`);
  check(lws.spec.replicas === 1, "one AFD instance: replicas should be 1");
  check(["LeaderCreated", "LeaderReady", undefined].includes(lws.spec.startupPolicy), `startupPolicy ${lws.spec.startupPolicy}`);
  check(Number.isInteger(lwt.size) && lwt.size === nodeNames.length, `size ${lwt.size}, the topology has ${nodeNames.length} nodes`);
  check(["RecreateGroupOnPodRestart", "RecreateGroupAfterStart", "None", "Default", undefined].includes(lwt.restartPolicy),
        `restartPolicy ${lwt.restartPolicy}`);
  check(lwt.workerTemplate, "workerTemplate is required");
  const coordinator = `$(LWS_LEADER_ADDRESS):${port}`;
  const provided = ["LWS_LEADER_ADDRESS", "LWS_WORKER_INDEX", "LWS_GROUP_SIZE"];
  const leaderGpus = gpusOf(rankOrder[0]);
  const workerGpus = Math.max(0, ...rankOrder.slice(1).map(gpusOf));
  if (lwt.leaderTemplate) checkTemplate(lwt.leaderTemplate, "leaderTemplate", "$(LWS_WORKER_INDEX)", coordinator, leaderGpus, provided);
  else check(leaderGpus === workerGpus, "without a leaderTemplate the leader gets the workers' GPUs");
  if (lwt.workerTemplate) checkTemplate(lwt.workerTemplate, "workerTemplate", "$(LWS_WORKER_INDEX)", coordinator, workerGpus, provided);
}

if (flavor === "plain" && byKind.StatefulSet && byKind.Service) {
  const service = byKind.Service;
  const set = byKind.StatefulSet;
  validate(Service, service, "Service");
  validate(StatefulSet, set, "StatefulSet");
  check(service.spec.clusterIP === "None", "the Service must be headless (clusterIP: None)");
  check(service.spec.publishNotReadyAddresses === true, "pods must resolve each other before they are ready");
  check(set.spec.serviceName === service.metadata.name, "serviceName is not the headless Service");
  check(set.spec.replicas === nodeNames.length, `replicas ${set.spec.replicas}, the topology has ${nodeNames.length} nodes`);
  check(set.spec.podManagementPolicy === "Parallel", "pods should start together (podManagementPolicy: Parallel)");
  const name = set.metadata.name;
  const coordinator = `${name}-0.${service.metadata.name}.$(POD_NAMESPACE).svc:${port}`;
  const labels = checkTemplate(set.spec.template, "StatefulSet template", "$(AFD_NODE_INDEX)", coordinator,
                               Math.max(0, ...rankOrder.map(gpusOf)), []);
  check(subset(set.spec.selector?.matchLabels, labels), "the StatefulSet's selector does not match its pods");
  check(subset(service.spec.selector, labels), "the Service's selector does not match the pods");
  const env = Object.fromEntries((set.spec.template.spec.containers[0].env ?? []).map((e) => [e.name, e]));
  check(env.AFD_NODE_INDEX?.valueFrom?.fieldRef?.fieldPath === "metadata.labels['apps.kubernetes.io/pod-index']",
        "AFD_NODE_INDEX must come from the pod-index label");
  check(env.POD_NAMESPACE?.valueFrom?.fieldRef?.fieldPath === "metadata.namespace", "POD_NAMESPACE must come from metadata.namespace");
}

if (problems.length) {
  for (const p of problems) console.log(p);
  process.exit(1);
}
console.log(`${manifestPath}: ${objects.length} object(s) valid (${flavor})`);
