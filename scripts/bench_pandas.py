#!/usr/bin/env python3
"""Baseline for the batch benchmarks: the plain Python loop a team would
write without Switchboard — pandas reads the CSV in chunks, onnxruntime
scores each chunk, pandas appends the predictions (with the row number) to
a CSV. One intra-op thread, as one batcher uses, unless --threads N is
given (0: onnxruntime's default, one per core).

    bench_pandas.py MODEL INPUT.csv OUTPUT.csv BATCH [--header] [--threads N]
Prints one JSON line: rows, seconds, rows_per_s.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
import pandas as pd


def main():
    model, inp, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    header = 0 if "--header" in sys.argv[5:] else None
    opts = ort.SessionOptions()
    args = sys.argv[5:]
    opts.intra_op_num_threads = int(args[args.index("--threads") + 1]) if "--threads" in args else 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outputs = [o.name for o in sess.get_outputs()]
    start = time.perf_counter()
    n = 0
    with open(out, "w") as f:
        for chunk in pd.read_csv(inp, header=header, chunksize=batch):
            x = chunk.to_numpy(dtype=np.float32)
            got = sess.run(outputs, {name: x})
            cols = {"row": np.arange(n, n + len(x))}
            for oname, v in zip(outputs, got):
                if v.ndim == 1:
                    cols[oname] = v
                else:
                    for k in range(v.shape[1]):
                        cols[f"{oname}_{k}"] = v[:, k]
            pd.DataFrame(cols).to_csv(f, header=(n == 0), index=False)
            n += len(x)
    secs = time.perf_counter() - start
    print(json.dumps({"rows": n, "seconds": round(secs, 3), "rows_per_s": round(n / secs)}))


if __name__ == "__main__":
    main()
