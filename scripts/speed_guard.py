#!/usr/bin/env python3
"""A sanity bound on the built-in model's speed, from its multiply-adds (called by scripts/test).

    speed_guard.py EDGEBERT BUNDLE [MIN_GMACS]

Times one pass at 64 tokens on one thread (`edgebert bench --json`, best of a few runs) and
fails if it ran below MIN_GMACS (default 1) billion multiply-adds per second: a tenth to a
fiftieth of what any x86_64 or ARM core of the last decade does on these products, so it never
fails for noise, only for a collapse such as tract 0.23.9's AVX2 int8 kernel (0.3-0.5 G/s). The
multiply-adds are counted from the graph: every MatMulInteger's weight once per token, plus the
attention's two products (2 * L^2 * hidden per layer). This is a benchmark-based bound, not a
timing assertion in the unit tests.
"""
import json
import struct
import subprocess
import sys

import onnx
from onnx import numpy_helper

L = 64


def main(edgebert, bundle, min_gmacs="1"):
    b = open(bundle, "rb").read()
    m, t, o = struct.unpack("<IQQ", b[12:32])
    model = onnx.load_from_string(b[32 + m + t:32 + m + t + o])
    inits = {i.name: i for i in model.graph.initializer}
    weights = 0
    hidden = layers = 0
    for n in model.graph.node:
        if n.op_type == "MatMulInteger" and n.input[1] in inits:
            shape = list(inits[n.input[1]].dims)
            weights += shape[0] * shape[1]
            hidden = max(hidden, min(shape))
        if n.op_type == "Softmax":
            layers += 1
    macs = L * weights + layers * 2 * L * L * hidden
    p = subprocess.run([edgebert, "bench", bundle, "--threads", "1", "--lengths", str(L),
                        "--iterations", "5", "--json"], capture_output=True, text=True, check=True)
    best = min(x["p50_ms"] for x in json.loads(p.stdout)["lengths"])
    gmacs = macs / (best * 1e-3) / 1e9
    print(f"speed guard: {macs / 1e6:.0f} M multiply-adds per {L}-token pass in {best:.1f} ms on 1 thread: "
          f"{gmacs:.2f} G/s (bound >= {float(min_gmacs):g})")
    return 0 if gmacs >= float(min_gmacs) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
