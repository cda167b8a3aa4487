#!/usr/bin/env python3
"""Checks that an unmodified `tritonclient[grpc]` (2.51.0) works against a running
Switchboard gateway (KServe V2 / Triton gRPC). Run by scripts/compat.sh, or by hand:

    .local/compat-venv/bin/python scripts/compat_tritonclient.py \
        --url 127.0.0.1:8001 --key "$SWITCHBOARD_ADMIN_KEY"

Expects the demo endpoint `digits` of `switchboard up` (deployments blue = digits_mlp,
green = digits_logreg). Prints one line per check and a summary; exits 1 if any
check fails.
"""
import argparse
import json
import queue
import statistics
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parent.parent
MODEL = "digits"
TOL = 1e-5

results = []  # (name, ok, detail)


def check(name):
    """Runs the decorated function at once as one check; an exception is a failure."""
    def run(fn):
        try:
            detail = fn()
            results.append((name, True, detail or ""))
            print(f"PASS {name}" + (f": {detail}" if detail else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            msg = e.message() if isinstance(e, InferenceServerException) else str(e)
            status = e.status() if isinstance(e, InferenceServerException) else type(e).__name__
            results.append((name, False, f"{status}: {msg}"))
            print(f"FAIL {name}: {status}: {msg}", flush=True)
            if not isinstance(e, (AssertionError, InferenceServerException)):
                traceback.print_exc()
        return fn
    return run


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="127.0.0.1:8001", help="gateway host:port (no scheme)")
    ap.add_argument("--key", required=True, help="endpoint key or admin key")
    ap.add_argument("--expected", default=str(ROOT / "models/digits_mlp.expected.json"))
    args = ap.parse_args()

    auth = {"authorization": f"Bearer {args.key}"}
    blue = {**auth, "switchboard-deployment": "blue"}
    client = tc.InferenceServerClient(args.url)

    exp = json.loads(Path(args.expected).read_text())
    x = np.array(exp["inputs"]["input"]["data"], dtype=np.float32).reshape(exp["inputs"]["input"]["shape"])
    want_p = np.array(exp["outputs"]["probabilities"]["data"], dtype=np.float32).reshape(
        exp["outputs"]["probabilities"]["shape"])
    want_l = np.array(exp["outputs"]["label"]["data"], dtype=np.int64)
    n = x.shape[0]

    def inp(arr=x, name="input"):
        i = tc.InferInput(name, list(arr.shape), "FP32")
        i.set_data_from_numpy(arr)  # tritonclient always sends raw_input_contents
        return i

    def outs():
        return [tc.InferRequestedOutput("label"), tc.InferRequestedOutput("probabilities")]

    def matches_blue(res, rows=n):
        p, l = res.as_numpy("probabilities"), res.as_numpy("label")
        expect(p is not None and l is not None, "missing output")
        expect(p.shape == (rows, 10) and p.dtype == np.float32, f"probabilities {p.shape} {p.dtype}")
        expect(l.shape == (rows,) and l.dtype == np.int64, f"label {l.shape} {l.dtype}")
        d = float(np.abs(p - want_p[:rows]).max())
        expect(d <= TOL, f"probabilities differ from the fixture by {d:g} > {TOL}")
        expect((l == want_l[:rows]).all(), f"labels {l.tolist()} != {want_l[:rows].tolist()}")
        return d

    @check("is_server_live")
    def _():
        expect(client.is_server_live(headers=auth) is True, "not live")

    @check("is_server_ready")
    def _():
        expect(client.is_server_ready(headers=auth) is True, "not ready")

    @check("is_model_ready(digits)")
    def _():
        expect(client.is_model_ready(MODEL, headers=auth) is True, "not ready")

    @check("get_server_metadata")
    def _():
        m = client.get_server_metadata(headers=auth, as_json=True)
        expect(m.get("name") and m.get("version"), f"name/version missing: {m}")
        return f"{m['name']} {m['version']} extensions={m.get('extensions', [])}"

    @check("get_model_metadata(digits)")
    def _():
        m = client.get_model_metadata(MODEL, headers=auth, as_json=True)
        expect(m["name"] == MODEL, f"name {m['name']}")
        ins = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in m["inputs"]}
        o = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in m["outputs"]}
        expect(ins == {"input": ("FP32", [-1, 64])}, f"inputs {ins}")
        expect(o == {"label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 10])}, f"outputs {o}")
        return f"versions={m.get('versions')} platform={m.get('platform')}"

    @check("get_model_config(digits)")
    def _():
        c = client.get_model_config(MODEL, headers=auth, as_json=True)["config"]
        mbs = int(c.get("max_batch_size", 0))
        expect(mbs >= 8, f"max_batch_size {mbs} (perf_analyzer -b 8 needs >= 8)")
        ins = {t["name"]: (t["data_type"], [int(d) for d in t.get("dims", [])]) for t in c["input"]}
        o = {t["name"]: (t["data_type"], [int(d) for d in t.get("dims", [])]) for t in c["output"]}
        expect(ins == {"input": ("TYPE_FP32", [64])}, f"input {ins} (dims exclude the batch dim)")
        expect(o.get("probabilities") == ("TYPE_FP32", [10]), f"probabilities {o.get('probabilities')}")
        expect(o.get("label", ("?",))[0] == "TYPE_INT64", f"label {o.get('label')}")
        return f"max_batch_size={mbs} label dims={o['label'][1]}"

    @check("infer raw, pinned blue: outputs match fixture, model_version=blue")
    def _():
        r = client.infer(MODEL, [inp()], outputs=outs(), headers=blue)
        d = matches_blue(r)
        resp = r.get_response()
        expect(resp.model_name == MODEL, f"model_name {resp.model_name!r}")
        expect(resp.model_version == "blue", f"model_version {resp.model_version!r}")
        expect(len(resp.raw_output_contents) == 2, "answer to a raw request should be raw")
        return f"max |dp|={d:g}, labels equal"

    @check("infer with no outputs requested returns every output")
    def _():
        r = client.infer(MODEL, [inp()], headers=blue, request_id="r-all")
        names = sorted(o.name for o in r.get_response().outputs)
        expect(names == ["label", "probabilities"], f"outputs {names}")
        expect(r.get_response().id == "r-all", f"id {r.get_response().id!r}")
        matches_blue(r)

    @check("infer 1 row (pinned blue)")
    def _():
        matches_blue(client.infer(MODEL, [inp(x[:1])], outputs=outs(), headers=blue), rows=1)

    @check("infer model_version='green' selects green")
    def _():
        r = client.infer(MODEL, [inp()], headers=auth, model_version="green")
        expect(r.get_response().model_version == "green", f"model_version {r.get_response().model_version!r}")

    @check("infer unpinned: model_version names a deployment")
    def _():
        seen = {}
        for _ in range(40):
            v = client.infer(MODEL, [inp(x[:1])], headers=auth).get_response().model_version
            seen[v] = seen.get(v, 0) + 1
        expect(set(seen) <= {"blue", "green"} and seen, f"versions {seen}")
        return f"40 requests: {seen}"

    @check("infer typed contents (generated stub): answer mirrors typed")
    def _():
        ch = grpc.insecure_channel(args.url)
        try:
            req = pb.ModelInferRequest(model_name=MODEL)
            t = req.inputs.add()
            t.name, t.datatype = "input", "FP32"
            t.shape.extend(x.shape)
            t.contents.fp32_contents.extend(x.ravel().tolist())
            resp = pbg.GRPCInferenceServiceStub(ch).ModelInfer(req, metadata=list(blue.items()), timeout=30)
        finally:
            ch.close()
        expect(len(resp.raw_output_contents) == 0, "typed request got raw answer")
        o = {t.name: t for t in resp.outputs}
        p = np.array(o["probabilities"].contents.fp32_contents, dtype=np.float32).reshape(n, 10)
        l = np.array(o["label"].contents.int64_contents, dtype=np.int64)
        d = float(np.abs(p - want_p).max())
        expect(d <= TOL and (l == want_l).all(), f"typed outputs differ (max |dp|={d:g})")
        expect(resp.model_version == "blue", f"model_version {resp.model_version!r}")
        return f"max |dp|={d:g}"

    @check("infer wrong input name -> INVALID_ARGUMENT")
    def _():
        try:
            client.infer(MODEL, [inp(name="nope")], headers=auth)
        except InferenceServerException as e:
            expect(e.status() == "StatusCode.INVALID_ARGUMENT", f"{e.status()} {e.message()}")
            return e.message()
        raise AssertionError("accepted an unknown input")

    @check("wrong key -> UNAUTHENTICATED")
    def _():
        got = []
        for what, call in [
            ("infer", lambda h: client.infer(MODEL, [inp()], headers=h)),
            ("is_model_ready", lambda h: client.is_model_ready(MODEL, headers=h)),
        ]:
            try:
                call({"authorization": "Bearer sbk_wrong"})
            except InferenceServerException as e:
                expect(e.status() == "StatusCode.UNAUTHENTICATED", f"{what}: {e.status()} {e.message()}")
                got.append(f"{what}: {e.message()}")
                continue
            raise AssertionError(f"{what} succeeded with a wrong key")
        return "; ".join(got)

    @check("no credential -> UNAUTHENTICATED")
    def _():
        try:
            client.infer(MODEL, [inp()])
        except InferenceServerException as e:
            expect(e.status() == "StatusCode.UNAUTHENTICATED", f"{e.status()} {e.message()}")
            return e.message()
        raise AssertionError("infer succeeded without a credential")

    @check("streaming: start_stream + async_stream_infer (pinned blue)")
    def _():
        q = queue.Queue()
        client.start_stream(callback=lambda result, error: q.put((result, error)), headers=blue)
        try:
            ids = [f"s{i}" for i in range(6)]
            for i in ids:
                client.async_stream_infer(MODEL, [inp()], request_id=i, outputs=outs())
            got = {}
            for _ in ids:
                r, e = q.get(timeout=30)
                expect(e is None, f"stream error: {e}")
                matches_blue(r)
                expect(r.get_response().model_version == "blue", f"version {r.get_response().model_version!r}")
                got[r.get_response().id] = r
            expect(sorted(got) == sorted(ids), f"ids {sorted(got)}")
            # An error answer on the stream does not end the stream.
            client.async_stream_infer(MODEL, [inp(name="nope")], request_id="bad")
            client.async_stream_infer(MODEL, [inp()], request_id="after")
            r1, e1 = q.get(timeout=30)
            r2, e2 = q.get(timeout=30)
            errs = [e for e in (e1, e2) if e is not None]
            oks = [r for r in (r1, r2) if r is not None]
            expect(len(errs) == 1 and len(oks) == 1, f"errors {errs}, ok {len(oks)}")
            expect(oks[0].get_response().id == "after", f"id {oks[0].get_response().id!r}")
        finally:
            client.stop_stream()
        return f"{len(ids)} answers match; bad request -> error {errs[0].message()!r}, stream continued"

    @check("get_inference_statistics(digits)")
    def _():
        s = client.get_inference_statistics(MODEL, headers=auth, as_json=True)
        ms = s.get("model_stats", [])
        expect(ms and all(m["name"] == MODEL for m in ms), f"model_stats {ms}")
        ok = sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0)) for m in ms)
        expect(ok > 0, "success count is 0 after successful infers")
        return f"{len(ms)} entries, versions={[m.get('version') for m in ms]}, success count={ok}"

    @check("statistics versions are integers (perf_analyzer std::stoll)")
    def _():
        # perf_analyzer (InferenceProfiler::SummarizeServerStatsHelper) runs std::stoll on
        # every model_stats[].version of the model and then looks up the highest one; a
        # non-numeric version aborts it with "terminate ... std::invalid_argument: stoll".
        ms = client.get_inference_statistics(MODEL, headers=auth, as_json=True)["model_stats"]
        bad = [m.get("version", "") for m in ms if not m.get("version", "").lstrip("-").isdigit()]
        expect(not bad, f"non-numeric versions {bad}: perf_analyzer aborts on them")

    @check("8-row request has no ~40 ms stall (TCP_NODELAY)")
    def _():
        # Without TCP_NODELAY on the server's accepted sockets, requests of >= 1 KiB
        # wait for the client's delayed ACK (~40 ms on Linux).
        i8 = inp(x[:8])
        client.infer(MODEL, [i8], headers=blue)
        ts = []
        for _ in range(15):
            t = time.perf_counter()
            client.infer(MODEL, [i8], headers=blue)
            ts.append((time.perf_counter() - t) * 1e3)
        med = statistics.median(ts)
        expect(med < 25, f"median {med:.1f} ms for 8 rows (a 40 ms delayed-ACK stall?)")
        return f"median {med:.1f} ms"

    client.close()
    failed = [r for r in results if not r[1]]
    print(f"\ntritonclient {version('tritonclient')} checks: {len(results) - len(failed)} passed, {len(failed)} failed")
    for name, _, detail in failed:
        print(f"  FAILED {name}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
