#!/usr/bin/env python3
"""Checks that an unmodified `tritonclient[http]` (2.51.0) works against a running
Switchboard gateway's KServe V2 REST front door, with binary_data=True and False.
Run by scripts/compat.sh, or by hand:

    .local/compat-venv/bin/python scripts/compat_tritonclient_http.py \
        --url 127.0.0.1:8000 --key "$KEY"

Expects the demo endpoint `digits` of `switchboard up` (blue = digits_mlp,
green = digits_logreg). Prints one line per check and a summary; exits 1 if any
check fails.
"""
import argparse
import json
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import tritonclient.http as tc
from tritonclient.utils import InferenceServerException

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat_tritonclient import check, expect, results  # noqa: E402  (shared runner)

ROOT = Path(__file__).resolve().parent.parent
MODEL = "digits"
TOL = 1e-5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="127.0.0.1:8000", help="REST host:port (no scheme)")
    ap.add_argument("--key", required=True, help="endpoint key or admin key")
    ap.add_argument("--expected", default=str(ROOT / "models/digits_mlp.expected.json"))
    args = ap.parse_args()

    # tritonclient.http writes Inference-Header-Content-Length into the headers
    # dict it is given and leaves it there (a stale length would then split the
    # next, JSON-only body), so every call gets a fresh dict.
    auth_base = {"Authorization": f"Bearer {args.key}"}
    blue_base = {**auth_base, "switchboard-deployment": "blue"}
    client = tc.InferenceServerClient(args.url, concurrency=4)

    exp = json.loads(Path(args.expected).read_text())
    x = np.array(exp["inputs"]["input"]["data"], dtype=np.float32).reshape(exp["inputs"]["input"]["shape"])
    want_p = np.array(exp["outputs"]["probabilities"]["data"], dtype=np.float32).reshape(
        exp["outputs"]["probabilities"]["shape"])
    want_l = np.array(exp["outputs"]["label"]["data"], dtype=np.int64)
    n = x.shape[0]

    def inp(arr=x, name="input", binary=True):
        i = tc.InferInput(name, list(arr.shape), "FP32")
        i.set_data_from_numpy(arr, binary_data=binary)
        return i

    def outs(binary):
        return [tc.InferRequestedOutput("label", binary_data=binary),
                tc.InferRequestedOutput("probabilities", binary_data=binary)]

    def matches_blue(res, rows=n):
        p, l = res.as_numpy("probabilities"), res.as_numpy("label")
        expect(p is not None and l is not None, "missing output")
        expect(p.shape == (rows, 10) and p.dtype == np.float32, f"probabilities {p.shape} {p.dtype}")
        expect(l.shape == (rows,) and l.dtype == np.int64, f"label {l.shape} {l.dtype}")
        d = float(np.abs(p - want_p[:rows]).max())
        expect(d <= TOL, f"probabilities differ from the fixture by {d:g} > {TOL}")
        expect((l == want_l[:rows]).all(), f"labels {l.tolist()} != {want_l[:rows].tolist()}")
        return d

    @check("http is_server_live / is_server_ready / is_model_ready")
    def _():
        expect(client.is_server_live(headers=dict(auth_base)) is True, "not live")
        expect(client.is_server_ready(headers=dict(auth_base)) is True, "not ready")
        expect(client.is_model_ready(MODEL, headers=dict(auth_base)) is True, "model not ready")
        expect(client.is_model_ready(MODEL, headers={"Authorization": "Bearer sbk_wrong"}) is False,
               "ready with a wrong key")

    @check("http get_server_metadata lists binary_tensor_data")
    def _():
        m = client.get_server_metadata(headers=dict(auth_base))
        expect("binary_tensor_data" in m.get("extensions", []), f"extensions {m.get('extensions')}")
        return f"{m['name']} {m['version']} extensions={m['extensions']}"

    @check("http get_model_metadata / get_model_config")
    def _():
        m = client.get_model_metadata(MODEL, headers=dict(auth_base))
        ins = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in m["inputs"]}
        expect(ins == {"input": ("FP32", [-1, 64])}, f"inputs {ins}")
        c = client.get_model_config(MODEL, headers=dict(auth_base))
        expect(int(c["max_batch_size"]) >= 8, f"max_batch_size {c.get('max_batch_size')}")
        expect(c["input"][0]["data_type"] == "TYPE_FP32" and c["input"][0]["dims"] == [64], f"input {c['input']}")
        g = client.get_model_metadata(MODEL, model_version="green", headers=dict(auth_base))
        expect(g["name"] == MODEL, f"green metadata {g}")
        return f"versions={m['versions']} max_batch_size={c['max_batch_size']}"

    for binary in (True, False):
        @check(f"http infer binary_data={binary}, pinned blue: outputs match fixture")
        def _():
            r = client.infer(MODEL, [inp(binary=binary)], outputs=outs(binary), headers=dict(blue_base), request_id="h1")
            d = matches_blue(r)
            resp = r.get_response()
            expect(resp["model_version"] == "blue", f"model_version {resp['model_version']!r}")
            expect(resp["id"] == "h1", f"id {resp.get('id')!r}")
            has_data = all("data" in o for o in resp["outputs"])
            expect(has_data != binary, f"outputs {'binary' if binary else 'JSON'} expected: {resp['outputs']}")
            return f"max |dp|={d:g}"

    @check("http infer JSON input, no outputs named: all outputs, binary")
    def _():
        r = client.infer(MODEL, [inp(x[:1], binary=False)], headers=dict(blue_base))
        matches_blue(r, rows=1)
        names = sorted(o["name"] for o in r.get_response()["outputs"])
        expect(names == ["label", "probabilities"], f"outputs {names}")

    @check("http infer with gzip and deflate request bodies (and Accept-Encoding)")
    def _():
        for algo in ("gzip", "deflate"):
            r = client.infer(MODEL, [inp(binary=False)], outputs=outs(False), headers=dict(blue_base),
                             request_compression_algorithm=algo, response_compression_algorithm=algo)
            matches_blue(r)

    @check("http infer model_version='green' and unpinned")
    def _():
        r = client.infer(MODEL, [inp(x[:1])], headers=dict(auth_base), model_version="green")
        expect(r.get_response()["model_version"] == "green", f"{r.get_response()['model_version']!r}")
        seen = {}
        for _ in range(20):
            v = client.infer(MODEL, [inp(x[:1])], headers=dict(auth_base)).get_response()["model_version"]
            seen[v] = seen.get(v, 0) + 1
        expect(set(seen) <= {"blue", "green"} and seen, f"versions {seen}")
        return f"20 unpinned: {seen}"

    @check("http async_infer x8 (pinned blue)")
    def _():
        pending = [client.async_infer(MODEL, [inp()], outputs=outs(True), headers=dict(blue_base)) for _ in range(8)]
        for p in pending:
            matches_blue(p.get_result())

    @check("http errors: wrong input 400, wrong key 401, no key 401, unknown model 404")
    def _():
        got = []
        for what, call, status in [
            ("wrong input", lambda: client.infer(MODEL, [inp(name="nope")], headers=dict(auth_base)), "400"),
            ("wrong key", lambda: client.infer(MODEL, [inp()], headers={"Authorization": "Bearer sbk_wrong"}), "401"),
            ("no key", lambda: client.infer(MODEL, [inp()]), "401"),
            ("unknown model", lambda: client.infer("nope", [inp()], headers=dict(auth_base)), "404"),
        ]:
            try:
                call()
            except InferenceServerException as e:
                expect(e.status() == status, f"{what}: {e.status()} {e.message()}")
                got.append(f"{what}: {e.status()}")
                continue
            raise AssertionError(f"{what} succeeded")
        return "; ".join(got)

    @check("http timeout (microseconds) of 1 -> 504")
    def _():
        try:
            client.infer(MODEL, [inp()], headers=dict(blue_base), timeout=1)
        except InferenceServerException as e:
            expect(e.status() == "504", f"{e.status()} {e.message()}")
            return e.message()
        raise AssertionError("a 1 us deadline was met")

    @check("http get_inference_statistics(digits)")
    def _():
        s = client.get_inference_statistics(MODEL, headers=dict(auth_base))
        ms = s.get("model_stats", [])
        ok = sum(int(m["inference_stats"]["success"]["count"]) for m in ms)
        expect(ms and ok > 0, f"model_stats {ms}")
        bad = [m["version"] for m in ms if not str(m["version"]).lstrip("-").isdigit()]
        expect(not bad, f"non-numeric versions {bad}: perf_analyzer aborts on them")
        return f"success count={ok}"

    @check("http 8-row binary request has no ~40 ms stall (TCP_NODELAY)")
    def _():
        i8 = inp(x[:8])
        client.infer(MODEL, [i8], headers=dict(blue_base))
        ts = []
        for _ in range(15):
            t = time.perf_counter()
            client.infer(MODEL, [i8], headers=dict(blue_base))
            ts.append((time.perf_counter() - t) * 1e3)
        med = statistics.median(ts)
        expect(med < 25, f"median {med:.1f} ms for 8 rows")
        return f"median {med:.1f} ms"

    client.close()
    failed = [r for r in results if not r[1]]
    print(f"\ntritonclient.http {version('tritonclient')} checks: {len(results) - len(failed)} passed, {len(failed)} failed")
    for name, _, detail in failed:
        print(f"  FAILED {name}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
