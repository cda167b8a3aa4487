#!/usr/bin/env python3
"""Checks that an unmodified `tritonclient[grpc]` talks to a Switchboard gateway
serving TLS (`--tls-cert/--tls-key`), trusting a private CA. Run by
scripts/compat.sh, or by hand:

    .local/compat-venv/bin/python scripts/compat_tls.py \
        --url localhost:8443 --ca ca.pem --key "$SWITCHBOARD_ADMIN_KEY"

Expects the demo endpoint `digits` of `switchboard up` (reached through a second
gateway on the same Redis). Exits 1 if any check fails.
"""
import argparse
import sys

import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="host:port of the TLS gateway")
    ap.add_argument("--ca", required=True, help="CA certificate (PEM) of the gateway")
    ap.add_argument("--key", required=True)
    a = ap.parse_args()
    headers = {"authorization": f"Bearer {a.key}"}
    failed = 0

    client = tc.InferenceServerClient(a.url, ssl=True, root_certificates=a.ca)
    try:
        assert client.is_server_live(headers=headers), "ServerLive false"
        assert client.is_model_ready("digits", headers=headers), "digits not ready"
        x = np.random.default_rng(7).random((2, 64), dtype=np.float32)
        inp = tc.InferInput("input", [2, 64], "FP32")
        inp.set_data_from_numpy(x)
        r = client.infer("digits", [inp], headers=headers)
        probs = r.as_numpy("probabilities")
        assert probs is not None and probs.shape == (2, 10), f"probabilities {probs!r}"
        print("PASS tritonclient ssl=True, root_certificates=CA: ServerLive, ModelReady, ModelInfer")
    except (AssertionError, InferenceServerException) as e:
        failed += 1
        print(f"FAIL tritonclient over TLS: {e}")

    # Plaintext against the TLS port: refused with a reason, not a hang.
    plain = tc.InferenceServerClient(a.url)
    try:
        plain.is_server_live(headers=headers, client_timeout=10)
        failed += 1
        print("FAIL plaintext client on the TLS port was answered")
    except InferenceServerException as e:
        # UNAVAILABLE with the reason at once, not DEADLINE_EXCEEDED after retrying.
        if e.status() == "StatusCode.UNAVAILABLE" and "https://" in (e.message() or ""):
            print(f"PASS plaintext client on the TLS port refused: {e.status()}: {e.message()}")
        else:
            failed += 1
            print(f"FAIL plaintext client on the TLS port: {e.status()}: {e.message()}")

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
