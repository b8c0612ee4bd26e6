"""Writes the checkov view of a render: each Argo Rollout as the apps/v1 Deployment it
replaces (same metadata and pod template, no canary strategy), because checkov's
Kubernetes checks look at the built-in workload kinds only and would pass over every
container of ours otherwise. Everything else is copied as it is.

    python checkov_view.py RENDER.yaml OUT.yaml
"""
import sys

import yaml


def view(doc):
    if doc.get("apiVersion") == "argoproj.io/v1alpha1" and doc.get("kind") == "Rollout":
        spec = {k: v for k, v in doc["spec"].items() if k not in ("strategy", "workloadRef")}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": doc["metadata"], "spec": spec}
    return doc


def main(src, dst):
    with open(src) as f:
        docs = [view(d) for d in yaml.safe_load_all(f) if d]
    with open(dst, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    rollouts = sum(1 for d in docs if d["kind"] == "Deployment")
    print(f"{len(docs)} objects, {rollouts} Rollouts as Deployments")


if __name__ == "__main__":
    main(*sys.argv[1:])
