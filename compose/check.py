#!/usr/bin/env python3
"""Offline checks of the deployment files against the code (run by ./dev test).

1. `docker-compose config` accepts compose.yaml for every profile and for their union.
2. Every long-running compose service has a healthcheck, a memory limit, a restart policy
   and bounded json-file logs; every published port binds to 127.0.0.1 by default.
3. Every Switchyard container, in compose and in each rendered Kubernetes overlay
   (target/k8s/*.yaml, when k8s/check.sh has rendered them), is given an environment its
   binary accepts: the binary's own `check-config` loads the configuration from exactly
   that environment (secrets filled with values of the right shape) and must find every
   required variable set, every value valid, and no SWITCHYARD_* variable it does not read.

Usage: compose/check.py BIN_DIR   (BIN_DIR holds the built gateway, accounts, ... binaries)
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose" / "compose.yaml"
PROFILES = ["observability", "logging", "tools"]
SERVICES = {"gateway", "accounts", "social", "catalog"}
failures = []


def fail(message):
    failures.append(message)
    print(f"check: FAIL {message}", file=sys.stderr)


def compose_config(secrets, profiles):
    args = ["docker-compose", "-f", str(COMPOSE), "-p", "switchyard-check"]
    for profile in profiles:
        args += ["--profile", profile]
    env = dict(os.environ, SWITCHYARD_SECRETS=secrets)
    run = subprocess.run(args + ["config"], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        fail(f"docker-compose config {' '.join(profiles) or '(core)'}: {run.stderr.strip()}")
        return None
    return yaml.safe_load(run.stdout)


def secret_value(name):
    """A value of the right shape for a secret known only by its name (Kubernetes)."""
    lowered = name.lower()
    if "amqp" in lowered:
        return "amqp://user:password@rabbitmq:5672/%2f"
    if "postgres" in lowered or "database" in lowered:
        return "postgres://user:password@postgres:5432/db"
    if "mongo" in lowered:
        return "mongodb://mongo:27017/?replicaSet=rs0"
    return "ab" * 32


def check_config(bin_dir, where, binary, env):
    exe = Path(bin_dir) / binary
    run = subprocess.run([str(exe), "check-config"], capture_output=True, text=True, env=env)
    try:
        report = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        fail(f"{where}: {binary} check-config printed no report: {run.stderr.strip()}")
        return
    if run.returncode != 0:
        detail = report.get("error") or f"unknown variables {report.get('unknown')}"
        fail(f"{where}: {binary} refuses its environment: {detail}")
    else:
        print(f"check: ok {where}: {binary} accepts its {len(env)} variables")


def compose_checks(bin_dir, secrets):
    union = None
    for profiles in [[]] + [[p] for p in PROFILES] + [PROFILES]:
        config = compose_config(secrets, profiles)
        if config is not None:
            print(f"check: ok docker-compose config {' '.join(profiles) or '(core)'}")
            union = config if profiles == PROFILES else union
    if union is None:
        return
    for name, service in union["services"].items():
        if service.get("restart", "no") == "no":
            continue  # one-shot or run on demand
        for key in ["healthcheck", "mem_limit"]:
            if key not in service:
                fail(f"compose service {name} has no {key}")
        logging = service.get("logging", {})
        options = logging.get("options", {})
        if logging.get("driver") != "json-file" or "max-size" not in options:
            fail(f"compose service {name} has unbounded logs")
        for port in service.get("ports", []):
            # docker-compose 1.29 prints "HOST_IP:HOST:CONTAINER/proto"; newer, a mapping.
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            if host_ip != "127.0.0.1":
                fail(f"compose service {name} publishes {port} beyond loopback")
    for name, service in union["services"].items():
        image = service.get("image", "")
        match = re.match(r"switchyard/([a-z]+):", image)
        if not match or match.group(1) not in SERVICES:
            continue
        env = {"PATH": "/usr/bin:/bin"}
        for key, value in (service.get("environment") or {}).items():
            value = "" if value is None else str(value)
            if key.endswith("_FILE") and value.startswith("/run/secrets/"):
                value = str(Path(secrets) / value.removeprefix("/run/secrets/"))
            env[key] = value
        check_config(bin_dir, f"compose {name}", match.group(1), env)


def k8s_checks(bin_dir):
    # k8s/check.sh also writes <overlay>.checkov.yaml (Rollouts shown as Deployments).
    renders = sorted(r for r in (ROOT / "target" / "k8s").glob("*.yaml") if "." not in r.stem)
    if not renders:
        print("check: no rendered Kubernetes overlays in target/k8s (run k8s/check.sh)")
        return
    for render in renders:
        docs = [d for d in yaml.safe_load_all(render.read_text()) if d]
        config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        for doc in docs:
            spec = doc.get("spec", {})
            if doc["kind"] in ("Deployment", "Rollout", "StatefulSet", "Job"):
                pod = spec.get("template", {}).get("spec", {})
            elif doc["kind"] == "CronJob":
                pod = spec["jobTemplate"]["spec"]["template"]["spec"]
            else:
                continue
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                match = re.match(r"(?:.*/)?switchyard/([a-z]+)[:@]", container.get("image", ""))
                if not match or match.group(1) not in SERVICES:
                    continue
                where = f"{render.stem} {doc['kind']}/{doc['metadata']['name']}/{container['name']}"
                env = container_env(where, container, pod, config_maps)
                if env is not None:
                    check_config(bin_dir, where, match.group(1), env)


def container_env(where, container, pod, config_maps):
    env = {"PATH": "/usr/bin:/bin"}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            if name not in config_maps:
                fail(f"{where}: envFrom names ConfigMap {name}, not in the render")
                return None
            env.update({k: str(v) for k, v in config_maps[name].items()})
        elif "secretRef" in source:
            fail(f"{where}: envFrom secretRef hides which variables it sets; use secretKeyRef")
            return None
    files = {}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "secret" in volume or "projected" in volume:
            files[mount["mountPath"].rstrip("/")] = volume
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            value = str(item["value"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            value = config_maps.get(ref["name"], {}).get(ref["key"])
            if value is None:
                fail(f"{where}: {name} refers to ConfigMap {ref['name']} key {ref['key']}, not in the render")
                return None
        elif "secretKeyRef" in item.get("valueFrom", {}):
            value = secret_value(name)
        else:
            fail(f"{where}: {name} has a value source this check does not know")
            return None
        env[name] = str(value)
    # Secrets mounted as files and named by a _FILE variable: write a value of the right
    # shape where the variable points.
    scratch = Path(tempfile.mkdtemp(prefix="switchyard-k8s-env-"))
    for name, value in list(env.items()):
        if name.endswith("_FILE"):
            if not any(value.startswith(path + "/") for path in files):
                fail(f"{where}: {name}={value} is not in a mounted secret volume")
                return None
            target = scratch / name
            target.write_text(secret_value(name.removesuffix("_FILE")) + "\n")
            env[name] = str(target)
    return env


def main():
    if len(sys.argv) != 2:
        print("usage: compose/check.py BIN_DIR", file=sys.stderr)
        return 2
    bin_dir = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="switchyard-secrets-") as secrets:
        made = subprocess.run(
            ["bash", str(ROOT / "compose" / "secrets.sh"), secrets], capture_output=True, text=True
        )
        if made.returncode != 0:
            fail(f"compose/secrets.sh: {made.stderr.strip()}")
            return 1
        compose_checks(bin_dir, secrets)
    k8s_checks(bin_dir)
    if failures:
        print(f"check: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    print("check: compose and manifests agree with the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
