#!/usr/bin/env python3
"""Checks that an ONNX file edgebert exported is valid for other tools, not only tract.

Usage: onnx_interop.py MODEL.onnx EXPECTED.json

EXPECTED.json holds {"inputs": {"input_ids": [[...]], ...}, "logits": [[...]]}, written by the
Rust test that exported the model (tract's logits). The model must pass onnx.checker (full check,
with shape inference) and onnxruntime must load it and reproduce the logits within 1e-4.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(model_path: str, expected_path: str) -> int:
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    with open(expected_path) as f:
        expected = json.load(f)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    feeds = {k: np.array(v, dtype=np.int64) for k, v in expected["inputs"].items()}
    (logits,) = session.run(["logits"], feeds)
    want = np.array(expected["logits"], dtype=np.float32)
    diff = float(np.max(np.abs(logits - want)))
    print(f"{model_path}: onnx.checker ok, onnxruntime {ort.__version__} max |Δlogit| = {diff:.2e}")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
