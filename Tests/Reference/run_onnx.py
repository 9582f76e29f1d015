"""Runs an ONNX model with ONNX Runtime on raw float32 input and writes the
raw float32 output. Used by the Swift ONNX export test.

    python run_onnx.py MODEL.onnx INPUT.bin N C H W OUTPUT.bin"""
import sys

import numpy as np
import onnxruntime as ort

model, source, n, c, h, w, target = sys.argv[1:8]
x = np.fromfile(source, dtype=np.float32).reshape(int(n), int(c), int(h), int(w))
options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
(logits,) = session.run(["logits"], {"input": x})
logits.astype(np.float32).tofile(target)
print(f"onnxruntime {ort.__version__}: logits {logits.shape}")
