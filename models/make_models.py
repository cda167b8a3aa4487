#!/usr/bin/env python3
"""Generate the test/demo ONNX models and their expected-output fixtures.

Run from the repository root:

    /tmp/modelenv/bin/python models/make_models.py

Everything is deterministic (fixed seeds, sklearn *bundled* datasets only, no
network). Outputs written into models/:

    digits_mlp.onnx         + digits_mlp.expected.json
    digits_logreg.onnx      + digits_logreg.expected.json
    breast_cancer.onnx      + breast_cancer.expected.json
    convnet.onnx            + convnet.expected.json

Each expected.json holds 16 input rows and the outputs ONNX Runtime gives for
them when run as ONE batch of 16.
"""

import json
import os
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
N_EXPECTED = 16

# Convnet architecture (channels). Tuned so that one sample takes roughly
# 0.3-1 ms with onnxruntime 1.31.1 on CPU at batch 1, intra_op_num_threads=1.
# Measured on the 2-core (shared) dev box: see CONVNET_TIMING below.
CONV_C1, CONV_C2, CONV_C3 = 32, 64, 64
# Measured per-sample latency (onnxruntime 1.31.1, 1 intra-op thread):
# CONVNET_TIMING (32/64/64 channels, ~29.2 M MACs/sample): batch 1 ~= 0.52 ms/sample,
# batch 32 ~= 0.57 ms/sample (median; 1 intra-op thread, shared 2-core x86_64 box).


def path(name):
    return os.path.join(HERE, name)


def f32_list(a):
    # float(np.float32(x)) -> Python float whose repr round-trips to the exact float32 value
    return [float(np.float32(x)) for x in np.asarray(a, dtype=np.float32).ravel()]


def session(model_path, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


DTYPE_NAMES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def tensor_json(a):
    a = np.asarray(a)
    if a.dtype == np.float32:
        data = f32_list(a)
    elif a.dtype == np.int64:
        data = [int(x) for x in a.ravel()]
    else:
        raise TypeError(f"unexpected dtype {a.dtype}")
    return {"datatype": DTYPE_NAMES[a.dtype], "shape": list(a.shape), "data": data}


def describe(model_path):
    m = onnx.load(model_path)

    def dims(vi):
        out = []
        for d in vi.type.tensor_type.shape.dim:
            out.append(d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else "?"))
        return out

    def dt(vi):
        return TensorProto.DataType.Name(vi.type.tensor_type.elem_type)

    ins = [(i.name, dt(i), dims(i)) for i in m.graph.input]
    outs = [(o.name, dt(o), dims(o)) for o in m.graph.output]
    opsets = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    print(f"  file: {os.path.basename(model_path)}  size={os.path.getsize(model_path)} bytes  "
          f"ir_version={m.ir_version} opsets={opsets}")
    for n, t, s in ins:
        print(f"  input  {n}: {t} {s}")
    for n, t, s in outs:
        print(f"  output {n}: {t} {s}")


def write_expected(model_name, x):
    """Run x (N_EXPECTED rows) as one batch, store outputs; check row-by-row agreement."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.shape[0] == N_EXPECTED
    sess = session(path(model_name))
    out_names = [o.name for o in sess.get_outputs()]
    batch = sess.run(out_names, {"input": x})

    # Consistency: one row at a time vs. the batch of 16.
    max_diff = 0.0
    label_mismatch = 0
    for i in range(N_EXPECTED):
        single = sess.run(out_names, {"input": x[i:i + 1]})
        for name, b, s in zip(out_names, batch, single):
            if b.dtype == np.int64:
                label_mismatch += int((b[i:i + 1] != s).sum())
            else:
                max_diff = max(max_diff, float(np.max(np.abs(b[i:i + 1].astype(np.float64) - s))))
    status = "OK" if (max_diff <= 1e-6 and label_mismatch == 0) else "DISCREPANCY"
    print(f"  batch-of-16 vs one-at-a-time: max |diff| = {max_diff:.3g}, "
          f"label mismatches = {label_mismatch} -> {status}")

    doc = {
        "model": model_name,
        "inputs": {"input": tensor_json(x)},
        "outputs": {name: tensor_json(v) for name, v in zip(out_names, batch)},
    }
    with open(path(model_name.replace(".onnx", ".expected.json")), "w") as f:
        json.dump(doc, f)
        f.write("\n")
    return batch


def save_sklearn_onnx(onx, model_name):
    onx.doc_string = ""
    onx.graph.name = model_name.replace(".onnx", "")  # skl2onnx uses a random uuid -> non-reproducible bytes
    # skl2onnx leaves the batch dimension anonymous; name it "N" (like convnet.onnx).
    for vi in list(onx.graph.input) + list(onx.graph.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        if not d0.HasField("dim_value"):
            d0.dim_param = "N"
    onnx.checker.check_model(onx, full_check=True)
    with open(path(model_name), "wb") as f:
        f.write(onx.SerializeToString())


def export_sklearn(model, n_features, model_name):
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    save_sklearn_onnx(onx, model_name)


def check_onnx_accuracy(model_name, X, y, sk_model):
    sess = session(path(model_name))
    label, proba = sess.run(["label", "probabilities"], {"input": X.astype(np.float32)})
    acc = float((label == y).mean())
    agree = float((label == sk_model.predict(X)).mean())
    pmax = float(np.max(np.abs(proba - sk_model.predict_proba(X))))
    print(f"  test accuracy (onnxruntime) = {acc:.4f}  (sklearn-vs-onnx label agreement {agree:.4f}, "
          f"max |proba diff| {pmax:.2g})")
    return acc


def make_digits():
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    y = y.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

    print("digits_mlp.onnx")
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=0)
    mlp.fit(Xtr, ytr)
    print(f"  MLP converged in {mlp.n_iter_} iterations")
    export_sklearn(mlp, 64, "digits_mlp.onnx")
    describe(path("digits_mlp.onnx"))
    check_onnx_accuracy("digits_mlp.onnx", Xte, yte, mlp)
    write_expected("digits_mlp.onnx", X[:N_EXPECTED])

    print("digits_logreg.onnx")
    lr = LogisticRegression(max_iter=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fail loudly if lbfgs does not converge
        lr.fit(Xtr, ytr)
    export_sklearn(lr, 64, "digits_logreg.onnx")
    describe(path("digits_logreg.onnx"))
    check_onnx_accuracy("digits_logreg.onnx", Xte, yte, lr)
    write_expected("digits_logreg.onnx", X[:N_EXPECTED])


def make_breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    y = y.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

    print("breast_cancer.onnx")
    pipe = Pipeline([("scaler", StandardScaler()), ("clf", LogisticRegression(max_iter=5000))])
    pipe.fit(Xtr, ytr)
    onx = convert_sklearn(
        pipe,
        initial_types=[("input", FloatTensorType([None, 30]))],
        options={id(pipe.named_steps["clf"]): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    save_sklearn_onnx(onx, "breast_cancer.onnx")
    describe(path("breast_cancer.onnx"))
    check_onnx_accuracy("breast_cancer.onnx", Xte, yte, pipe)
    write_expected("breast_cancer.onnx", X[:N_EXPECTED])


def make_convnet():
    print("convnet.onnx")
    rng = np.random.default_rng(0)
    np.random.seed(0)

    def conv_w(cout, cin, k=3):
        fan_in = cin * k * k
        return (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def bias(c):
        return (rng.standard_normal(c) * 0.01).astype(np.float32)

    inits = [
        numpy_helper.from_array(conv_w(CONV_C1, 3), "conv1.w"),
        numpy_helper.from_array(bias(CONV_C1), "conv1.b"),
        numpy_helper.from_array(conv_w(CONV_C2, CONV_C1), "conv2.w"),
        numpy_helper.from_array(bias(CONV_C2), "conv2.b"),
        numpy_helper.from_array(conv_w(CONV_C3, CONV_C2), "conv3.w"),
        numpy_helper.from_array(bias(CONV_C3), "conv3.b"),
        numpy_helper.from_array(
            (rng.standard_normal((10, CONV_C3)) * np.sqrt(1.0 / CONV_C3)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(bias(10), "fc.b"),
    ]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "conv3.w", "conv3.b"], ["c3"], name="conv3", **conv),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="make_models.py")
    model.ir_version = 8  # opset 17 <-> IR 8; keeps the file loadable by older runtimes too
    onnx.checker.check_model(model, full_check=True)
    with open(path("convnet.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    describe(path("convnet.onnx"))

    macs = (32 * 32 * CONV_C1 * 3 * 9 + 32 * 32 * CONV_C2 * CONV_C1 * 9
            + 16 * 16 * CONV_C3 * CONV_C2 * 9 + CONV_C3 * 10)
    print(f"  ~{macs / 1e6:.1f} M MACs / sample")

    # Timing, 1 intra-op thread. Median of repeated runs.
    sess = session(path("convnet.onnx"), threads=1)
    trng = np.random.default_rng(1)
    for bs, reps in ((1, 200), (32, 15)):
        x = trng.standard_normal((bs, 3, 32, 32)).astype(np.float32)
        for _ in range(5):
            sess.run(None, {"input": x})
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            sess.run(None, {"input": x})
            ts.append(time.perf_counter() - t0)
        med = float(np.median(ts))
        print(f"  latency batch {bs:2d}: {med * 1e3:.3f} ms/batch, {med * 1e3 / bs:.3f} ms/sample "
              f"(median of {reps}, min {min(ts) * 1e3 / bs:.3f} ms/sample)")

    # Expected fixture: 16 random rows, multiples of 1/128 in [-2, 2) (exact in float32, short JSON).
    erng = np.random.default_rng(0)
    x = (erng.integers(-256, 256, size=(N_EXPECTED, 3, 32, 32)) / 128.0).astype(np.float32)
    write_expected("convnet.onnx", x)


def make_fails_on_odd_rows():
    """A model that fails inside ONNX Runtime on input that matches its
    signature: Reshape of [N, 4] to [3, -1] only works when 3 divides 4*N.
    Tests use it for the INTERNAL row of the error table."""
    print("fails_at_runtime.onnx")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [3, None])
    shape = numpy_helper.from_array(np.array([3, -1], dtype=np.int64), name="shape")
    node = helper.make_node("Reshape", ["input", "shape"], ["output"])
    graph = helper.make_graph([node], "fails_at_runtime", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path("fails_at_runtime.onnx"))


def main():
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    make_digits()
    make_breast_cancer()
    make_convnet()
    make_fails_on_odd_rows()


if __name__ == "__main__":
    main()
