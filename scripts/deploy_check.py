#!/usr/bin/env python3
"""Offline checks of deploy/k8s, run by scripts/deploy_check.sh.

1. `kubectl kustomize` renders every overlay (cpu, cuda, ha).
2. Every rendered object validates against the Kubernetes OpenAPI schemas
   (kubernetes-validate --strict); the CRD objects (KEDA ScaledObject,
   cert-manager Certificate/Issuer) against deploy/k8s/schemas/*.json.
3. Cross-checks against the code: the ScaledObject has one trigger per stream
   the batchers read (batcher/queue/src/store.rs), on their consumer group;
   grace periods cover the drain; the cuda overlay asks for GPUs.
4. Starts Redis, a gateway, a worker and a batcher with the exact
   command/args/env of the rendered cpu overlay (addresses mapped to loopback,
   /models to the repository's models), waits on the manifests' own probes,
   then scores rows through the gateway.

Usage: deploy_check.py KUBECTL SWITCHBOARD_BINARY
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy", "k8s")
OVERLAYS = ["cpu", "cuda", "ha"]
failures = []


def fail(msg):
    failures.append(msg)
    print(f"deploy_check: FAIL {msg}", file=sys.stderr)


def render(kubectl, overlay):
    out = subprocess.run([kubectl, "kustomize", os.path.join(K8S, "overlays", overlay)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
        return None, []
    return out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d]


def find(objs, kind, name):
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise KeyError(f"{kind}/{name} not rendered")


def container(objs, kind, name):
    return find(objs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def flag(args, name):
    """Value of --name=VALUE in args (the manifests use the = form)."""
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def validate(overlay, text, objs, tmp):
    # Kubernetes kinds: kubernetes-validate, strict (unknown fields fail).
    path = os.path.join(tmp, f"{overlay}.yaml")
    with open(path, "w") as f:
        f.write(text)
    out = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet",
                          "-k", "1.30", path], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"kubernetes-validate {overlay}: {(out.stdout + out.stderr).strip()}")
    # CRD kinds: the schemas written from the projects' documentation.
    for o in objs:
        if "." not in o["apiVersion"].split("/")[0] or o["apiVersion"].startswith(
                ("apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/")):
            continue
        schema_file = os.path.join(K8S, "schemas", o["apiVersion"].replace("/", "_") + "_" + o["kind"] + ".json")
        if not os.path.exists(schema_file):
            fail(f"{overlay}: no schema for {o['apiVersion']} {o['kind']}")
            continue
        with open(schema_file) as f:
            schema = json.load(f)
        errs = sorted(jsonschema.Draft202012Validator(schema).iter_errors(o), key=str)
        for e in errs:
            fail(f"{overlay}: {o['kind']}/{o['metadata']['name']} {list(e.absolute_path)}: {e.message}")


def store_streams():
    src = open(os.path.join(ROOT, "batcher", "queue", "src", "store.rs")).read()
    consts = {}
    for m in re.finditer(r'const (\w+): \[&str; \d+\] = \[([^\]]*)\]', src):
        consts[m.group(1)] = re.findall(r'"([^"]+)"', m.group(2))
    group = re.search(r'pub const GROUP: &str = "([^"]+)"', src).group(1)
    # STREAMS is built from JOB_STREAMS and SHARD_STREAMS: the streams read.
    streams = set(consts["JOB_STREAMS"]) | set(consts["SHARD_STREAMS"])
    if not re.search(r"pub const STREAMS: \[&str; 6\]", src):
        fail("store.rs: STREAMS is no longer the 6 job and shard streams; update this check")
    return streams, group


def cross_check(overlay, objs):
    streams, group = store_streams()
    so = find(objs, "ScaledObject", "batcher")
    seen = [t["metadata"]["stream"] for t in so["spec"]["triggers"]]
    if sorted(seen) != sorted(streams):
        fail(f"{overlay}: ScaledObject streams {sorted(seen)} != the batchers' {sorted(streams)}")
    for t in so["spec"]["triggers"]:
        if t["metadata"].get("consumerGroup") != group or "lagCount" not in t["metadata"]:
            fail(f"{overlay}: trigger on {t['metadata']['stream']} must use lagCount on group {group}")
    if so["spec"].get("minReplicaCount", 0) != 0:
        fail(f"{overlay}: an idle queue must scale the batchers to zero")
    if so["spec"]["scaleTargetRef"]["name"] != "batcher":
        fail(f"{overlay}: ScaledObject targets {so['spec']['scaleTargetRef']['name']}")
    for name in ["gateway", "worker", "batcher"]:
        d = find(objs, "Deployment", name)
        c = d["spec"]["template"]["spec"]["containers"][0]
        drain = float(flag(c["args"], "drain-timeout") or 30) + float(flag(c["args"], "drain-grace") or (1 if name == "worker" else 0))
        grace = d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if grace <= drain:
            fail(f"{overlay}: {name} terminationGracePeriodSeconds {grace} <= drain {drain}")
    w = container(objs, "Deployment", "worker")
    if overlay == "cuda":
        for name in ["worker", "batcher"]:
            c = container(objs, "Deployment", name)
            if flag(c["args"], "device") != "cuda:0":
                fail(f"cuda: {name} runs on {flag(c['args'], 'device')}")
            if str(c["resources"]["limits"].get("nvidia.com/gpu")) != "1":
                fail(f"cuda: {name} must ask for exactly one nvidia.com/gpu")
    if not (flag(w["args"], "advertise") or "").startswith("$(POD_IP):"):
        fail(f"{overlay}: worker must advertise its pod IP")
    if overlay == "ha":
        redis = find(objs, "StatefulSet", "redis")
        if redis["spec"]["replicas"] < 3 or find(objs, "StatefulSet", "sentinel")["spec"]["replicas"] < 3:
            fail("ha: Redis and Sentinel need 3 replicas each")
    conf = find(objs, "ConfigMap", "redis-config")["data"]["redis.conf"]
    for line in ["appendonly yes", "appendfsync always"]:
        if line not in conf.splitlines():
            fail(f"{overlay}: redis.conf lacks '{line}'")


# --- the manifest-driven start ------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Fleet:
    def __init__(self, objs, binary, tmp):
        self.objs, self.binary, self.tmp = objs, binary, tmp
        self.ports = {}
        self.procs = []
        secret = find(objs, "Secret", "switchboard-admin")
        self.secrets = {"switchboard-admin": secret.get("stringData", {})}

    def port(self, p):
        return self.ports.setdefault(int(p), free_port())

    def local(self, s):
        """A manifest string with cluster addresses and paths mapped to this machine."""
        s = re.sub(r"\b(?:0\.0\.0\.0|127\.0\.0\.1|redis|gateway|localhost):(\d+)",
                   lambda m: f"127.0.0.1:{self.port(m.group(1))}", s)
        s = re.sub(r"(^|=)/models/", lambda m: m.group(1) + os.path.join(ROOT, "models") + "/", s)
        s = re.sub(r"(^|=)/cache$", lambda m: m.group(1) + os.path.join(self.tmp, "cache"), s)
        return s

    def env(self, c, pod_name):
        env = {"PATH": os.environ["PATH"], "RUST_LOG": "warn"}
        for e in c.get("env", []):
            if "value" in e:
                v = e["value"]
            elif "fieldRef" in e["valueFrom"]:
                v = {"status.podIP": "127.0.0.1", "metadata.name": pod_name}[e["valueFrom"]["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in e["valueFrom"]:
                ref = e["valueFrom"]["secretKeyRef"]
                v = self.secrets[ref["name"]][ref["key"]]
            else:
                raise ValueError(f"unsupported env source {e}")
            # Kubernetes expands $(VAR) from variables defined before this one.
            env[e["name"]] = self.local(re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), v))
        return env

    def start(self, name):
        c = container(self.objs, "Deployment", name)
        env = self.env(c, f"{name}-0")
        expand = lambda a: self.local(re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a))
        cmd = [expand(a) for a in c["command"] + c.get("args", [])]
        if cmd[0] != "switchboard":
            fail(f"{name}: command is {cmd[0]}, the image's binary is switchboard")
        cmd[0] = self.binary
        print(f"deploy_check: {name}: {' '.join(cmd[1:])}", file=sys.stderr)
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p))
        return c

    def start_redis(self):
        ss = find(self.objs, "StatefulSet", "redis")
        c = ss["spec"]["template"]["spec"]["containers"][0]
        conf = find(self.objs, "ConfigMap", "redis-config")["data"]["redis.conf"]
        mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
        if c["command"][:2] != ["redis-server", f"{mount}/redis.conf"]:
            fail(f"redis command {c['command']} does not run the ConfigMap's redis.conf")
        port = self.port(c["ports"][0]["containerPort"])
        os.makedirs(os.path.join(self.tmp, "data"))
        path = os.path.join(self.tmp, "redis.conf")
        with open(path, "w") as f:
            f.write(conf.replace("dir /data", f"dir {self.tmp}/data"))
            f.write(f"\nport {port}\nbind 127.0.0.1\n")
        p = subprocess.Popen(["redis-server", path], stdout=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(("redis", p))
        wait(f"redis on {port}", lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                                        capture_output=True, text=True).stdout.strip() == "PONG")

    def probe_ok(self, probe):
        if "grpc" in probe:
            return subprocess.run([self.binary, "health", "--timeout", "1", "--url",
                                   f"http://127.0.0.1:{self.port(probe['grpc']['port'])}"],
                                  capture_output=True).returncode == 0
        if "httpGet" in probe:
            try:
                url = f"http://127.0.0.1:{self.port(probe['httpGet']['port'])}{probe['httpGet']['path']}"
                return urllib.request.urlopen(url, timeout=1).status == 200
            except OSError:
                return False
        raise ValueError(f"unsupported probe {probe}")

    def ready(self, name, c):
        for kind in ["readinessProbe", "livenessProbe"]:
            wait(f"{name} {kind}", lambda: self.alive(name) and self.probe_ok(c[kind]))

    def alive(self, name):
        for n, p in self.procs:
            if n == name and p.poll() is not None:
                log = open(os.path.join(self.tmp, f"{name}.log")).read()
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{log}")
        return True

    def stop(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for _, p in self.procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def wait(what, cond, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)  # polling interval of a condition with a deadline
    raise RuntimeError(f"timed out waiting for {what}")


def sb(binary, env, *args):
    out = subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"switchboard {' '.join(args)}: {out.stderr}{out.stdout}")
    return out.stdout


def start_fleet(objs, binary, tmp):
    fleet = Fleet(objs, binary, tmp)
    try:
        fleet.start_redis()
        cs = {name: fleet.start(name) for name in ["gateway", "worker", "batcher"]}
        for name, c in cs.items():
            fleet.ready(name, c)
        gw = f"http://127.0.0.1:{fleet.port(8001)}"
        admin = fleet.secrets["switchboard-admin"]["SWITCHBOARD_ADMIN_KEY"]
        env = {"PATH": os.environ["PATH"], "SWITCHBOARD_URL": gw, "SWITCHBOARD_ADMIN_KEY": admin}
        created = json.loads(sb(binary, env, "endpoint", "create", "digits", "--auth", "key"))
        worker_args = container(objs, "Deployment", "worker")["args"]
        model = fleet.local(flag(worker_args, "deployment").split("=", 1)[1])
        sb(binary, env, "deployment", "create", "digits", "blue", "--model", model)
        key_env = {"PATH": os.environ["PATH"], "SWITCHBOARD_URL": gw, "SWITCHBOARD_KEY": created["primary_key"]}
        expected = os.path.join(ROOT, "models", "digits_mlp.expected.json")
        out = {}
        def scored():
            r = subprocess.run([binary, "invoke", "digits", "--file", expected], env=key_env,
                               capture_output=True, text=True, timeout=30)
            out["r"] = r
            return r.returncode == 0
        # The gateway sees the worker's registration within its 250 ms poll.
        wait("a scored request through the gateway", scored, 20)
        if '"model_version": "blue"' not in out["r"].stdout:
            fail(f"invoke through the gateway answered {out['r'].stdout[:400]}")
        print("deploy_check: scored 16 rows through the gateway of the cpu overlay's fleet", file=sys.stderr)
    finally:
        fleet.stop()


def main():
    kubectl, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    tmp = tempfile.mkdtemp(prefix="deploy-check-")
    try:
        rendered = {}
        for overlay in OVERLAYS:
            text, objs = render(kubectl, overlay)
            if text is None:
                continue
            rendered[overlay] = objs
            validate(overlay, text, objs, tmp)
            cross_check(overlay, objs)
            print(f"deploy_check: {overlay}: {len(objs)} objects rendered and validated", file=sys.stderr)
        if "cpu" in rendered and not failures:
            start_fleet(rendered["cpu"], binary, tmp)
    except Exception as e:  # a broken manifest shows as a failed check, not a traceback only
        fail(f"{type(e).__name__}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"deploy_check: {len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("deploy_check: all checks passed", file=sys.stderr)


if __name__ == "__main__":
    main()
