#!/usr/bin/env python3
"""Generate models/digits_deep.onnx: a compute-bound model for the batch
benchmarks, with the digits model's input (64 FP32 features) and an output
of 10 logits. Three hidden layers of 512 with ReLU and fixed random weights
(seed 7): about 0.56 M multiply-adds per row, against 0.01 M for the digits
MLP, so a batch job over it is bound by the engine, not by parsing.

    python models/make_deep_mlp.py        (needs: onnx, numpy)
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTH = 512


def main():
    rng = np.random.default_rng(7)
    dims = [64, WIDTH, WIDTH, WIDTH, 10]
    nodes, inits = [], []
    x = "input"
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        bias = np.zeros(b, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        y = f"h{i}" if i < len(dims) - 2 else "logits"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}" if y != "logits" else y]))
        if y != "logits":
            nodes.append(helper.make_node("Relu", [f"g{i}"], [y]))
        x = y
    graph = helper.make_graph(
        nodes,
        "digits_deep",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, "digits_deep.onnx"))


if __name__ == "__main__":
    main()
