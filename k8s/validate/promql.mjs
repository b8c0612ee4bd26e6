// Checks the PromQL in rendered manifests: the AnalysisTemplates' Prometheus queries and
// the PrometheusRule's expressions.
//
//   node promql.mjs --root REPO --work DIR RENDER.yaml...
//
// 1. Every expression parses: promtool check rules on a rules file holding them (analysis
//    queries with their {{args.*}} filled in) and on each PrometheusRule's groups.
// 2. Every metric name an expression selects exists: switchyard_* names in
//    observability/metrics.txt (histograms with _bucket/_sum/_count), level:metric:op names
//    recorded in observability/prometheus/rules/*.yml, and, in rules only, the exporters'
//    names (up, rabbitmq_*, node_*, pg_*, mongodb_*; observability/checks.py checks those
//    against live exporters). Names come from the Prometheus project's own PromQL grammar
//    (@prometheus-io/lezer-promql).
// 3. The canary label is there to filter on: a PodMonitor copies the pod label
//    rollouts-pod-template-hash to rollouts_pod_template_hash.
// 4. The analysis queries give the numbers Argo Rollouts will judge: promtool test rules
//    with the recording rules and the cases in analysis-cases.yaml.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { parser } from "@prometheus-io/lezer-promql";
import { parse, parseAllDocuments, stringify } from "yaml";

const HERE = dirname(fileURLToPath(import.meta.url));
const HISTOGRAM_SUFFIXES = ["_bucket", "_sum", "_count"];
const EXPORTER_NAMES = /^(up|rabbitmq_.+|node_.+|pg_.+|mongodb_.+)$/;

function args() {
  const argv = process.argv.slice(2);
  const out = { files: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--root") out.root = argv[++i];
    else if (argv[i] === "--work") out.work = argv[++i];
    else out.files.push(argv[i]);
  }
  if (!out.root || !out.work || !out.files.length) {
    console.error("usage: promql.mjs --root REPO --work DIR RENDER.yaml...");
    process.exit(2);
  }
  return out;
}

function known(root) {
  const metrics = new Set();
  for (const raw of readFileSync(join(root, "observability/metrics.txt"), "utf8").split("\n")) {
    const name = raw.split("#")[0].trim();
    if (!name) continue;
    metrics.add(name);
    if (!name.endsWith("_total")) HISTOGRAM_SUFFIXES.forEach((s) => metrics.add(name + s));
  }
  const recorded = new Set();
  const dir = join(root, "observability/prometheus/rules");
  for (const f of readdirSync(dir).filter((f) => f.endsWith(".yml"))) {
    for (const g of parse(readFileSync(join(dir, f), "utf8")).groups) {
      for (const r of g.rules) if (r.record) recorded.add(r.record);
    }
  }
  return { metrics, recorded };
}

// The metric names an expression selects, and whether the grammar found an error.
function selected(expr) {
  const names = new Set();
  let error = false;
  parser.parse(expr).iterate({
    enter(node) {
      if (node.type.isError) error = true;
      if (node.name === "VectorSelector") {
        const id = node.node.getChild("Identifier");
        if (id) names.add(expr.slice(id.from, id.to));
      }
      if (node.name === "UnquotedLabelMatcher" || node.name === "QuotedLabelMatcher") {
        const label = node.node.firstChild;
        const value = node.node.getChild("StringLiteral");
        if (label && value && expr.slice(label.from, label.to).replace(/"/g, "") === "__name__") {
          names.add(expr.slice(value.from + 1, value.to - 1));
        }
      }
    },
  });
  return { names, error };
}

// {{args.x}} with the value the Rollout would pass: a template default, or a sample.
function fill(query, template, values = {}) {
  const defaults = Object.fromEntries((template.spec.args ?? []).map((a) => [a.name, a.value]));
  return query.replace(/\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}/g, (_, name) => {
    const v = values[name] ?? defaults[name] ?? `sample-${name}`;
    return v;
  });
}

function promtool(argv) {
  try {
    return { ok: true, out: execFileSync("promtool", argv, { encoding: "utf8", stdio: "pipe" }) };
  } catch (e) {
    return { ok: false, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

function main() {
  const { root, work, files } = args();
  mkdirSync(work, { recursive: true });
  const { metrics, recorded } = known(root);
  const problems = [];
  const templates = new Map();
  const queries = new Map(); // expr -> where
  const ruleDocs = new Map(); // name -> groups
  let canaryLabel = false;
  for (const file of files) {
    for (const doc of parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean)) {
      if (doc.kind === "AnalysisTemplate") {
        templates.set(doc.metadata.name, doc);
        for (const m of doc.spec.metrics ?? []) {
          const q = m.provider?.prometheus?.query;
          if (q === undefined) continue;
          queries.set(fill(q, doc).trim(), `AnalysisTemplate/${doc.metadata.name} ${m.name}`);
        }
      } else if (doc.kind === "PrometheusRule") {
        ruleDocs.set(doc.metadata.name, doc.spec.groups);
        for (const g of doc.spec.groups) {
          for (const r of g.rules) queries.set(String(r.expr).trim(), `PrometheusRule/${doc.metadata.name} ${r.alert ?? r.record}`);
        }
      } else if (doc.kind === "PodMonitor" || doc.kind === "ServiceMonitor") {
        const endpoints = doc.spec.podMetricsEndpoints ?? doc.spec.endpoints ?? [];
        if (endpoints.length && endpoints.every((e) => (e.relabelings ?? []).some((r) =>
          r.targetLabel === "rollouts_pod_template_hash" &&
          (r.sourceLabels ?? []).includes("__meta_kubernetes_pod_label_rollouts_pod_template_hash")))) {
          canaryLabel = true;
        }
      }
    }
  }
  const analysis = [...queries].filter(([, where]) => where.startsWith("AnalysisTemplate"));
  if (!analysis.length) problems.push("no AnalysisTemplate query found");
  if (!ruleDocs.size) problems.push("no PrometheusRule found");

  // 1. promtool parses them all.
  const queryRules = join(work, "analysis-queries.rules.yml");
  writeFileSync(queryRules, stringify({ groups: [{ name: "analysis-queries", rules: analysis.map(([expr], i) => ({ record: `k8s_check:analysis_query_${i}`, expr })) }] }));
  const ruleFiles = [queryRules];
  for (const [name, groups] of ruleDocs) {
    const f = join(work, `prometheusrule-${name}.rules.yml`);
    writeFileSync(f, stringify({ groups }));
    ruleFiles.push(f);
  }
  const check = promtool(["check", "rules", ...ruleFiles]);
  if (!check.ok) problems.push(`promtool check rules:\n${check.out}`);

  // 2. Names.
  for (const [expr, where] of queries) {
    const { names, error } = selected(expr);
    if (error) problems.push(`${where}: the PromQL grammar finds a syntax error in: ${expr}`);
    for (const n of names) {
      const ok = n.includes(":") ? recorded.has(n)
        : n.startsWith("switchyard_") ? metrics.has(n)
        : !where.startsWith("AnalysisTemplate") && EXPORTER_NAMES.test(n);
      if (!ok) {
        const why = n.includes(":") ? "not recorded in observability/prometheus/rules/"
          : n.startsWith("switchyard_") ? "not in observability/metrics.txt" : "not a Switchyard metric or recording rule";
        problems.push(`${where}: ${n} is ${why}`);
      }
    }
  }

  // 3. The label the analysis filters on is scraped.
  if (!canaryLabel) problems.push("no PodMonitor/ServiceMonitor copies __meta_kubernetes_pod_label_rollouts_pod_template_hash to rollouts_pod_template_hash on every endpoint");

  // 4. The analysis queries against synthetic series.
  const cases = parse(readFileSync(join(HERE, "analysis-cases.yaml"), "utf8"));
  const tests = [];
  let count = 0;
  for (const c of cases.cases) {
    const t = templates.get(c.template);
    const metric = t?.spec.metrics.find((m) => m.name === c.metric);
    if (!metric) { problems.push(`analysis-cases.yaml: no metric ${c.template}/${c.metric}`); continue; }
    const expr = fill(metric.provider.prometheus.query, t, c.args).trim();
    tests.push({
      name: `${c.template} ${c.metric}: ${c.name}`,
      interval: cases.interval,
      input_series: c.series,
      promql_expr_test: [
        // Argo reads result[0]: exactly one sample, and its value (to 1e-6: promtool
        // compares floats exactly, and rates carry rounding).
        { expr: `count(${expr})`, eval_time: c.eval_time, exp_samples: [{ labels: "{}", value: 1 }] },
        { expr: `round(max(${expr}) * 1e6)`, eval_time: c.eval_time, exp_samples: [{ labels: "{}", value: Math.round(c.expect * 1e6) }] },
      ],
    });
    count++;
  }
  const covered = new Set(cases.cases.map((c) => `${c.template}/${c.metric}`));
  for (const [name, t] of templates) {
    for (const m of t.spec.metrics) if (!covered.has(`${name}/${m.name}`)) problems.push(`analysis-cases.yaml: no case for ${name}/${m.name}`);
  }
  const testFile = join(work, "analysis.test.yml");
  writeFileSync(testFile, stringify({ rule_files: [join(root, "observability/prometheus/rules/recording.yml")], evaluation_interval: cases.interval, tests }));
  const test = promtool(["test", "rules", testFile]);
  if (!test.ok) problems.push(`promtool test rules (analysis cases):\n${test.out}`);

  if (problems.length) {
    problems.forEach((p) => console.log(`  ${p}`));
    process.exit(1);
  }
  console.log(`${queries.size} expressions (${analysis.length} analysis queries) parse and name known series; ${count} analysis cases pass`);
}

main();
