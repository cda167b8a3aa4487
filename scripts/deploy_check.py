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
   then scores rows through the gateway; runs `loadtest plan
   --emit-autoscaling` against that fleet and renders and validates the cpu
   overlay with the emitted Component.

5. Validates deploy/compose/compose.yaml against the compose schema and
   starts its services the same way (two gateways, two workers, a batcher).

Usage: deploy_check.py KUBECTL SWITCHBOARD_BINARY COMPOSE_SCHEMA_JSON
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
        # mTLS gateway -> worker: workers require client certificates, and
        # gateways check the one name the workers' Certificate holds.
        g = container(objs, "Deployment", "gateway")
        names = find(objs, "Certificate", "worker-tls")["spec"]["dnsNames"]
        if not flag(w["args"], "tls-client-ca") or not flag(g["args"], "worker-tls-cert"):
            fail("ha: workers must require client certificates and gateways present one")
        if flag(g["args"], "worker-tls-server-name") not in names:
            fail(f"ha: --worker-tls-server-name is not one of the worker Certificate's names {names}")
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
    """Processes started on loopback from a manifest's command lines."""

    def __init__(self, binary, tmp, hosts):
        os.makedirs(tmp)
        self.binary, self.tmp, self.hosts = binary, tmp, sorted(hosts, key=len, reverse=True)
        self.ports = {}
        self.procs = []

    def port(self, host, p):
        """The loopback port standing for HOST:P (each pod or service has its own ports)."""
        return self.ports.setdefault((host, int(p)), free_port())

    def local(self, s, me):
        """A manifest string with addresses and paths mapped to this machine: the
        process's own addresses (0.0.0.0, its pod IP, localhost) and other
        services' names become loopback ports of their own."""
        def addr(m):
            host = me if m.group(1) in ("0.0.0.0", "127.0.0.1", "localhost") else m.group(1)
            return f"127.0.0.1:{self.port(host, m.group(2))}"
        s = re.sub(r"\b(0\.0\.0\.0|127\.0\.0\.1|localhost|" + "|".join(map(re.escape, self.hosts)) + r"):(\d+)\b", addr, s)
        s = re.sub(r"(^|=)/models/", lambda m: m.group(1) + os.path.join(ROOT, "models") + "/", s)
        s = re.sub(r"(^|=)/cache$", lambda m: m.group(1) + os.path.join(self.tmp, "cache-" + me), s)
        return s

    def spawn(self, name, argv, env):
        if argv[0] != "switchboard":
            fail(f"{name}: runs {argv[0]}, the image's binary is switchboard")
        argv = [self.binary] + argv[1:]
        print(f"deploy_check: {name}: {' '.join(argv[1:])}", file=sys.stderr)
        env = {"PATH": os.environ["PATH"], "RUST_LOG": "warn", **env}
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        p = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p))

    def redis(self, name, argv, port):
        """redis-server as the manifest runs it, its data dir and port on this machine."""
        d = os.path.join(self.tmp, f"data-{name}")
        os.makedirs(d)
        if "--dir" in argv:  # the volume's mount point: here, a folder of its own
            i = argv.index("--dir")
            argv = argv[:i] + argv[i + 2:]
        argv = argv + ["--dir", d, "--port", str(self.port(name, port)), "--bind", "127.0.0.1"]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, p))
        wait(f"{name} on {self.port(name, port)}", lambda: self.alive(name) and subprocess.run(
            ["redis-cli", "-p", str(self.port(name, port)), "ping"], capture_output=True, text=True).stdout.strip() == "PONG")

    def sentinel(self, name, port, redis_port, master):
        """redis-sentinel watching the local Redis on REDIS_PORT as MASTER."""
        conf = os.path.join(self.tmp, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port(name, port)}\nbind 127.0.0.1\ndir {self.tmp}\n"
                    f"sentinel monitor {master} 127.0.0.1 {redis_port} 1\n")
        p = subprocess.Popen(["redis-sentinel", conf], stdout=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, p))
        wait(f"{name} on {self.port(name, port)}", lambda: self.alive(name) and subprocess.run(
            ["redis-cli", "-p", str(self.port(name, port)), "sentinel", "get-master-addr-by-name", master],
            capture_output=True, text=True).stdout.split() == ["127.0.0.1", str(redis_port)])

    def health(self, url):
        return subprocess.run([self.binary, "health", "--timeout", "1", "--url", url], capture_output=True).returncode == 0

    def http_ok(self, url):
        try:
            return urllib.request.urlopen(url, timeout=1).status == 200
        except OSError:
            return False

    def alive(self, name):
        for n, p in self.procs:
            if n == name and p.poll() is not None:
                log = open(os.path.join(self.tmp, f"{name}.log")).read() if os.path.exists(os.path.join(self.tmp, f"{name}.log")) else ""
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
                p.wait()


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


def score_through(binary, gateways, admin, model, what):
    """Creates the digits endpoint through the first gateway, scores through each."""
    env = {"PATH": os.environ["PATH"], "SWITCHBOARD_URL": gateways[0], "SWITCHBOARD_ADMIN_KEY": admin}
    created = json.loads(sb(binary, env, "endpoint", "create", "digits", "--auth", "key"))
    sb(binary, env, "deployment", "create", "digits", "blue", "--model", model)
    expected = os.path.join(ROOT, "models", "digits_mlp.expected.json")
    for gw in gateways:
        key_env = {"PATH": os.environ["PATH"], "SWITCHBOARD_URL": gw, "SWITCHBOARD_KEY": created["primary_key"]}
        out = {}
        def scored():
            out["r"] = subprocess.run([binary, "invoke", "digits", "--file", expected], env=key_env,
                                      capture_output=True, text=True, timeout=30)
            return out["r"].returncode == 0
        # A gateway sees a worker's registration within its 250 ms poll.
        wait(f"a scored request through {gw}", scored, 20)
        if '"model_version": "blue"' not in out["r"].stdout:
            fail(f"{what}: invoke through {gw} answered {out['r'].stdout[:400]}")
    print(f"deploy_check: {what}: scored 16 rows through {len(gateways)} gateway(s)", file=sys.stderr)
    return created["primary_key"]


def autoscaling_check(kubectl, binary, gateway, key, tmp):
    """`loadtest plan --emit-autoscaling` against the manifests' own fleet, its
    Component included in an overlay of the base, rendered and validated."""
    out_dir = os.path.join(tmp, "autoscaling")
    r = subprocess.run([binary, "loadtest", "--url", gateway, "--token", key, "--model", "digits",
                        "--warmup", "0.2", "--quiet",
                        "plan", "--target-rate", "3000", "--slo-p99-ms", "50", "--lo", "100", "--hi", "1000",
                        "--iterations", "3", "--repeats", "1", "--duration", "0.4",
                        "--emit-autoscaling", out_dir, "--prometheus-url", "http://prometheus.monitoring:9090"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail(f"loadtest plan --emit-autoscaling: {r.stderr}")
        return
    plan = json.loads(r.stdout)
    overlay = os.path.join(tmp, "overlay")
    os.makedirs(overlay)
    with open(os.path.join(overlay, "kustomization.yaml"), "w") as f:
        f.write(f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: switchboard\n"
                f"resources:\n  - {os.path.relpath(os.path.join(K8S, 'overlays', 'cpu'), overlay)}\n"
                f"components:\n  - ../autoscaling\n")
    out = subprocess.run([kubectl, "kustomize", overlay], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"kubectl kustomize cpu + emitted autoscaling: {out.stderr.strip()}")
        return
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    validate("cpu+autoscaling", out.stdout, objs, tmp)
    if any(o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "gateway" for o in objs):
        fail("autoscaling: the gateway's CPU HPA is still rendered beside KEDA's")
    rate = plan["capacity_per_replica_per_s"] * (1 - plan["headroom"])
    for name in ["gateway", "worker"]:
        so = find(objs, "ScaledObject", name)
        t = so["spec"]["triggers"][0]["metadata"]
        if so["spec"]["maxReplicaCount"] != plan["replicas"] or int(t["threshold"]) != max(1, int(rate)):
            fail(f"autoscaling: {name} max {so['spec']['maxReplicaCount']} threshold {t['threshold']}, "
                 f"the plan says {plan['replicas']} replicas of {rate:.0f}/s")
        if so["spec"]["scaleTargetRef"]["name"] != name:
            fail(f"autoscaling: ScaledObject {name} scales {so['spec']['scaleTargetRef']['name']}")
    print(f"deploy_check: autoscaling: {plan['explanation']}; the emitted Component renders and validates", file=sys.stderr)


def k8s_fleet(kubectl, objs, binary, tmp):
    """The cpu overlay's roles with their rendered command/args/env."""
    fleet = Fleet(binary, tmp, [o["metadata"]["name"] for o in objs if o["kind"] == "Service"])
    secrets = {o["metadata"]["name"]: o.get("stringData", {}) for o in objs if o["kind"] == "Secret"}

    def env_of(c, me):
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                v = e["value"]
            elif "fieldRef" in e["valueFrom"]:
                v = {"status.podIP": "127.0.0.1", "metadata.name": f"{me}-0"}[e["valueFrom"]["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in e["valueFrom"]:
                ref = e["valueFrom"]["secretKeyRef"]
                v = secrets[ref["name"]][ref["key"]]
            else:
                raise ValueError(f"unsupported env source {e}")
            # Kubernetes expands $(VAR) from the variables defined before.
            env[e["name"]] = fleet.local(re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), v), me)
        return env

    def probe_ok(me, probe):
        if "grpc" in probe:
            return fleet.health(f"http://127.0.0.1:{fleet.port(me, probe['grpc']['port'])}")
        if "httpGet" in probe:
            return fleet.http_ok(f"http://127.0.0.1:{fleet.port(me, probe['httpGet']['port'])}{probe['httpGet']['path']}")
        raise ValueError(f"unsupported probe {probe}")

    try:
        ss = find(objs, "StatefulSet", "redis")
        c = ss["spec"]["template"]["spec"]["containers"][0]
        mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
        if c["command"] != ["redis-server", f"{mount}/redis.conf"]:
            fail(f"redis command {c['command']} does not run the ConfigMap's redis.conf")
        conf = os.path.join(tmp, "redis.conf")
        with open(conf, "w") as f:
            # /data is the PVC's mount; the command line below moves it here.
            f.write(find(objs, "ConfigMap", "redis-config")["data"]["redis.conf"].replace("dir /data", f"dir {tmp}"))
        fleet.redis("redis", ["redis-server", conf], c["ports"][0]["containerPort"])
        cs = {}
        for name in ["gateway", "worker", "batcher"]:
            c = cs[name] = container(objs, "Deployment", name)
            env = env_of(c, name)
            expand = lambda a: fleet.local(re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a), name)
            fleet.spawn(name, [expand(a) for a in c["command"] + c.get("args", [])], env)
        for name, c in cs.items():
            for kind in ["readinessProbe", "livenessProbe"]:
                wait(f"{name} {kind}", lambda: fleet.alive(name) and probe_ok(name, c[kind]))
        model = fleet.local(flag(cs["worker"]["args"], "deployment").split("=", 1)[1], "worker")
        admin = secrets["switchboard-admin"]["SWITCHBOARD_ADMIN_KEY"]
        gw = f"http://127.0.0.1:{fleet.port('gateway', 8001)}"
        key = score_through(binary, [gw], admin, model, "k8s cpu overlay")
        rest_ready(fleet, ["gateway"], "k8s cpu overlay")
        autoscaling_check(kubectl, binary, gw, key, tmp)
    finally:
        fleet.stop()


def rest_ready(fleet, gateways, what):
    """Each gateway's REST port (the Service's `http`, 8000) answers KServe V2 readiness."""
    for n in gateways:
        url = f"http://127.0.0.1:{fleet.port(n, 8000)}/v2/health/ready"
        if not fleet.http_ok(url):
            fail(f"{what}: {n}'s REST port: GET {url} did not answer 200")


def issue_secrets(objs, pod_spec, root):
    """Each Secret volume of POD_SPEC that a cert-manager Certificate fills,
    written here as cert-manager would (ca.crt, tls.crt, tls.key, one CA for
    all): {mount path: folder}."""
    os.makedirs(root)
    def openssl(*a, cwd=root):
        subprocess.run(["openssl", *a], cwd=cwd, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=switchboard-ca", "-days", "1")
    certs = {o["spec"]["secretName"]: o for o in objs if o["kind"] == "Certificate"}
    mounts = {}
    for vol in pod_spec.get("volumes", []):
        cert = certs.get(vol.get("secret", {}).get("secretName"))
        if cert is None:
            continue
        d = os.path.join(root, vol["name"])
        os.makedirs(d)
        shutil.copy(os.path.join(root, "ca.crt"), d)
        spec = cert["spec"]
        ext = {"server auth": "serverAuth", "client auth": "clientAuth"}
        lines = [f"extendedKeyUsage={','.join(ext[u] for u in spec['usages'])}"]
        if spec.get("dnsNames"):
            lines.append("subjectAltName=" + ",".join(f"DNS:{n}" for n in spec["dnsNames"]))
        with open(os.path.join(d, "ext"), "w") as f:
            f.write("\n".join(lines) + "\n")
        cn = spec.get("commonName") or spec["dnsNames"][0]
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", "tls.csr", "-CA", "../ca.crt", "-CAkey", "../ca.key",
                "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "ext", cwd=d)
        for m in pod_spec["containers"][0].get("volumeMounts", []):
            if m["name"] == vol["name"]:
                mounts[m["mountPath"]] = d
    return mounts


def ha_tls_check(objs, binary, tmp):
    """The ha overlay's gateway with its rendered args, the cert-manager
    Secrets' mounts filled with certificates made here: its probe answers
    and TLS works. (switchboard/tests/fleet.rs runs the whole overlay.)"""
    import ssl
    fleet = Fleet(binary, tmp, [o["metadata"]["name"] for o in objs if o["kind"] == "Service"])
    d = find(objs, "Deployment", "gateway")["spec"]["template"]["spec"]
    c = d["containers"][0]
    cert = find(objs, "Certificate", "gateway-tls")
    mounts = issue_secrets(objs, d, os.path.join(tmp, "secrets"))
    certs = next(folder for folder in mounts.values() if folder.endswith("/tls"))
    def local_path(a):
        for mount, folder in mounts.items():
            a = a.replace(mount + "/", folder + "/")
        return a
    try:
        fleet.redis("redis", ["redis-server", "--save", ""], 6379)
        fleet.sentinel("sentinel", 26379, fleet.port("redis", 6379), "switchboard")
        env = {e["name"]: fleet.local(e["value"], "gateway") for e in c["env"] if "value" in e}
        if not env.get("SWITCHBOARD_REDIS", "").startswith("redis+sentinel://"):
            fail(f"ha: the gateway's SWITCHBOARD_REDIS is {env.get('SWITCHBOARD_REDIS')!r}, not a Sentinel URL")
        env["SWITCHBOARD_ADMIN_KEY"] = "ha-check"
        argv = [local_path(fleet.local(a, "gateway")) for a in c["command"] + c["args"]]
        fleet.spawn("ha-gateway", argv, env)
        port = fleet.port("gateway", c["readinessProbe"]["tcpSocket"]["port"])
        def handshake():
            fleet.alive("ha-gateway")
            ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
            ctx.set_alpn_protocols(["h2"])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    with ctx.wrap_socket(sock, server_hostname=cert["spec"]["dnsNames"][0]) as t:
                        return t.selected_alpn_protocol() == "h2"
            except OSError:
                return False
        wait("the ha gateway's TLS handshake", handshake, 30)
        print("deploy_check: ha: the gateway serves TLS with the Certificate's names", file=sys.stderr)
    finally:
        fleet.stop()


def compose_check(binary, tmp, schema_file):
    """deploy/compose/compose.yaml: the compose schema, then its services on loopback."""
    path = os.path.join(ROOT, "deploy", "compose", "compose.yaml")
    doc = yaml.safe_load(open(path))
    schema = json.load(open(schema_file))
    for e in sorted(jsonschema.Draft201909Validator(schema).iter_errors(doc), key=str):
        fail(f"compose.yaml {list(e.absolute_path)}: {e.message}")
    services = doc["services"]
    # Prometheus scrapes every role's --metrics-listen.
    prom = yaml.safe_load(open(os.path.join(ROOT, "deploy", "compose", "prometheus.yml")))
    targets = {t for j in prom["scrape_configs"] for sc in j["static_configs"] for t in sc["targets"]}
    metrics = {f"{n}:{flag(s['command'], 'metrics-listen').rsplit(':', 1)[1]}"
               for n, s in services.items() if s.get("entrypoint") == ["switchboard"]}
    if targets != metrics:
        fail(f"prometheus.yml scrapes {sorted(targets)}, the roles serve metrics at {sorted(metrics)}")
    if failures:
        return
    fleet = Fleet(binary, tmp, list(services))

    def env_of(name, s):
        env = {}
        for f in s.get("env_file", []):
            f = os.path.join(ROOT, "deploy", "compose", f)
            if not os.path.exists(f):
                f += ".example"  # admin.env is the user's own copy of admin.env.example
            for line in open(f):
                if line.strip() and not line.startswith("#"):
                    k, v = line.rstrip("\n").split("=", 1)
                    env[k] = v
        env.update({k: fleet.local(str(v), name) for k, v in s.get("environment", {}).items()})
        return env

    try:
        r = services["redis"]["command"]
        if "--appendfsync" not in r or r[r.index("--appendfsync") + 1] != "always" or r[r.index("--appendonly") + 1] != "yes":
            fail("compose redis must run with --appendonly yes --appendfsync always")
        fleet.redis("redis", r, 6379)
        roles = {n: s for n, s in services.items() if s.get("entrypoint") == ["switchboard"]}
        for n, s in roles.items():
            fleet.spawn(n, [fleet.local(a, n) for a in s["entrypoint"] + s["command"]], env_of(n, s))
        for n, s in roles.items():
            if "healthcheck" in s:
                test = [fleet.local(a, n) for a in s["healthcheck"]["test"]]
                if test[:3] != ["CMD", "switchboard", "health"]:
                    fail(f"compose {n}: healthcheck {test} is not switchboard health")
                wait(f"compose {n} healthcheck", lambda: fleet.alive(n) and subprocess.run(
                    [binary] + test[2:], capture_output=True).returncode == 0)
            else:
                m = fleet.local(flag(s["command"], "metrics-listen"), n)
                wait(f"compose {n} /ready", lambda: fleet.alive(n) and fleet.http_ok(f"http://{m}/ready"))
        gateways = [f"http://127.0.0.1:{fleet.port(n, 8001)}" for n, s in roles.items() if s["command"][0] == "gateway"]
        model = fleet.local(flag(roles["worker-1"]["command"], "deployment").split("=", 1)[1], "worker-1")
        admin = env_of("gateway-a", roles["gateway-a"])["SWITCHBOARD_ADMIN_KEY"]
        score_through(binary, gateways, admin, model, "compose")
        rest_ready(fleet, [n for n, s in roles.items() if s["command"][0] == "gateway"], "compose")
    finally:
        fleet.stop()


def main():
    kubectl, binary, compose_schema = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
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
            k8s_fleet(kubectl, rendered["cpu"], binary, os.path.join(tmp, "k8s"))
        if "ha" in rendered and not failures:
            ha_tls_check(rendered["ha"], binary, os.path.join(tmp, "ha"))
        compose_check(binary, os.path.join(tmp, "compose"), compose_schema)
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
