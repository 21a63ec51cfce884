#!/usr/bin/env python3
"""edgebert vs onnxruntime, side by side (called by scripts/bench-compare).

    bench_compare.py WORK EDGEBERT TEST_CSV DOCS

WORK holds {teacher,student}-{f32,int8}.{onnx,ebm}. Every cell is batch 1 at exactly L tokens
(onnxruntime gets [1, L] inputs; edgebert pads to its length buckets, which are these L), median
of ROUNDS rounds run in turn so that machine noise hits every engine alike.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

LENGTHS = [16, 32, 64, 128]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", 60))
AGREEMENT_TEXTS = 400

work, edgebert, test_csv, docs = sys.argv[1:5]
threads_all = os.cpu_count() or 1
thread_settings = [1] if threads_all == 1 else [1, threads_all]


def ort_own_int8(model):
    out = os.path.join(work, f"{model}-ort-int8.onnx")
    if not os.path.exists(out):
        quantize_dynamic(os.path.join(work, f"{model}-f32.onnx"), out, per_channel=True,
                         weight_type=QuantType.QInt8)
    return out


def ort_session(path, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def feeds(session, ids, mask):
    names = {i.name for i in session.get_inputs()}
    f = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        f["token_type_ids"] = np.zeros_like(ids)
    return {k: v for k, v in f.items() if k in names}


SPECIAL = {}  # vocabulary size and [CLS]/[SEP] ids, from the student's tokenizer (set in main)


def time_ort(path, threads):
    s = ort_session(path, threads)
    rng = np.random.default_rng(7)
    out = {}
    v = SPECIAL["vocab"]
    for L in LENGTHS:
        ids = rng.integers(v // 4, v, size=(1, L), dtype=np.int64)
        ids[0, 0], ids[0, -1] = SPECIAL["cls"], SPECIAL["sep"]
        f = feeds(s, ids, np.ones_like(ids))
        for _ in range(10):
            s.run(None, f)
        t = []
        for _ in range(ITERATIONS):
            a = time.perf_counter()
            s.run(None, f)
            t.append((time.perf_counter() - a) * 1e3)
        out[L] = (statistics.median(t), float(np.percentile(t, 95)))
    return out


def time_edgebert(bundle, threads):
    p = subprocess.run([edgebert, "bench", bundle, "--threads", str(threads), "--iterations",
                        str(ITERATIONS), "--lengths", ",".join(map(str, LENGTHS)), "--json"],
                       capture_output=True, check=True, text=True)
    v = json.loads(p.stdout)
    return {x["tokens"]: (x["p50_ms"], x["p95_ms"]) for x in v["lengths"]}


# Run by a fresh, small interpreter: a child's ru_maxrss includes the memory of the process it
# was forked from, so edgebert started from this one (onnxruntime loaded) would report our RSS.
TIMED_CHILD = """
import os, subprocess, sys, time
a = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print((time.perf_counter() - a) * 1e3, usage.ru_maxrss / 1024, status)
"""


def cold_and_rss(runs=5):
    """`edgebert classify` with the built-in model as a whole process: wall time and peak RSS."""
    walls, rss = [], []
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-c", TIMED_CHILD, edgebert, "classify", "a gripping, beautiful film"],
                           capture_output=True, check=True, text=True)
        wall, maxrss, status = p.stdout.split()
        assert status == "0", p.stderr
        walls.append(float(wall))
        rss.append(float(maxrss))
    return statistics.median(walls), max(rss)


def ort_cold(path, runs=5):
    t = []
    for _ in range(runs):
        a = time.perf_counter()
        s = ort_session(path, 1)
        ids = np.array([[SPECIAL["cls"], SPECIAL["vocab"] // 2, SPECIAL["sep"]]], dtype=np.int64)
        s.run(None, feeds(s, ids, np.ones_like(ids)))
        t.append((time.perf_counter() - a) * 1e3)
    return statistics.median(t)


def texts():
    with open(test_csv, newline="", encoding="utf-8") as f:
        rows = [r["text"].replace("\n", " ").strip() for r in csv.DictReader(f)]
    return [r for r in rows if r][:AGREEMENT_TEXTS]


def ort_labels(path, tokenizer, items):
    s = ort_session(path, threads_all)
    out = []
    for t in items:
        e = tokenizer.encode(t)
        ids = np.array([e.ids], dtype=np.int64)
        logits = s.run(None, feeds(s, ids, np.ones_like(ids)))[0]
        out.append(int(np.argmax(logits[0])))
    return out


def edgebert_labels(bundle, items, names):
    path = os.path.join(work, "agreement.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(items) + "\n")
    p = subprocess.run([edgebert, "classify", "--model", bundle, "--file", path, "--json"],
                       capture_output=True, check=True, text=True)
    return [names.index(json.loads(line)["label"]) for line in p.stdout.splitlines()]


def main():
    from tokenizers import Tokenizer

    student_dir = os.path.join(os.path.dirname(os.path.abspath(test_csv)), "..", "student")
    tok = Tokenizer.from_file(os.path.join(student_dir, "tokenizer.json"))
    SPECIAL.update(vocab=tok.get_vocab_size(), cls=tok.token_to_id("[CLS]"), sep=tok.token_to_id("[SEP]"))
    variants = []  # (model, engine, precision, runner)
    for m in ["student", "teacher"]:
        f32, ours = os.path.join(work, f"{m}-f32.onnx"), os.path.join(work, f"{m}-int8.onnx")
        own = ort_own_int8(m)
        variants += [
            (m, "onnxruntime", "f32", lambda th, p=f32: time_ort(p, th)),
            (m, "onnxruntime", "int8 (its quantize_dynamic)", lambda th, p=own: time_ort(p, th)),
            (m, "onnxruntime", "int8 (edgebert's graph)", lambda th, p=ours: time_ort(p, th)),
            (m, "edgebert", "f32", lambda th, b=os.path.join(work, f"{m}-f32.ebm"): time_edgebert(b, th)),
            (m, "edgebert", "int8", lambda th, b=os.path.join(work, f"{m}-int8.ebm"): time_edgebert(b, th)),
        ]
    results = {}
    for r in range(ROUNDS):
        for th in thread_settings:
            for m, engine, prec, runner in variants:
                print(f"round {r + 1}/{ROUNDS}, {th} thread(s): {m} {engine} {prec}", file=sys.stderr)
                for L, (p50, p95) in runner(th).items():
                    results.setdefault((m, engine, prec, th, L), []).append((p50, p95))
    cell = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
            for k, v in results.items()}

    sizes = {}
    for m in ["student", "teacher"]:
        for name, f in [("f32 ONNX", f"{m}-f32.onnx"), ("edgebert int8 ONNX", f"{m}-int8.onnx"),
                        ("edgebert int8 bundle", f"{m}-int8.ebm"), ("onnxruntime int8 ONNX", f"{m}-ort-int8.onnx")]:
            sizes[(m, name)] = os.path.getsize(os.path.join(work, f))

    # Labels of every int8 variant against f32, on the same test reviews.
    items = texts()
    agreement = {}
    for m in ["student"]:
        cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(test_csv)), "..", m, "config.json")))
        names = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
        tok = Tokenizer.from_file(os.path.join(os.path.dirname(os.path.abspath(test_csv)), "..", m, "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(128)
        ref = ort_labels(os.path.join(work, f"{m}-f32.onnx"), tok, items)
        others = {
            "onnxruntime int8 (its quantize_dynamic)": ort_labels(os.path.join(work, f"{m}-ort-int8.onnx"), tok, items),
            "onnxruntime int8 (edgebert's graph)": ort_labels(os.path.join(work, f"{m}-int8.onnx"), tok, items),
            "edgebert f32": edgebert_labels(os.path.join(work, f"{m}-f32.ebm"), items, names),
            "edgebert int8": edgebert_labels(os.path.join(work, f"{m}-int8.ebm"), items, names),
        }
        for k, v in others.items():
            agreement[(m, k)] = sum(a == b for a, b in zip(ref, v)) / len(ref)

    cold_ms, rss_mib = cold_and_rss()
    ort_cold_ms = ort_cold(os.path.join(work, "student-ort-int8.onnx"))
    info = subprocess.run([edgebert, "info", "--json"], capture_output=True, text=True, check=True)
    bundle_bytes = json.loads(info.stdout)["bytes"]["total"]

    # The raw figures, so that the report can be rewritten without measuring again.
    with open(os.path.join(work, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"cell": [[list(k), v] for k, v in cell.items()],
                   "sizes": [[list(k), v] for k, v in sizes.items()],
                   "agreement": [[list(k), v] for k, v in agreement.items()],
                   "cold_ms": cold_ms, "rss_mib": rss_mib, "ort_cold_ms": ort_cold_ms,
                   "bundle_bytes": bundle_bytes, "texts": len(items),
                   "date": time.strftime("%Y-%m-%d"), "onnxruntime": ort.__version__,
                   "rounds": ROUNDS, "iterations": ITERATIONS}, f)
    write_report(cell, sizes, agreement, cold_ms, rss_mib, ort_cold_ms, bundle_bytes, len(items))
    return 0


def report_only():
    """BENCH_REPORT_ONLY=1: rewrite BENCHMARKS.md from WORK/results.json."""
    global ROUNDS, ITERATIONS
    with open(os.path.join(work, "results.json"), encoding="utf-8") as f:
        r = json.load(f)
    ROUNDS, ITERATIONS = r["rounds"], r["iterations"]
    cell = {tuple(k): tuple(v) for k, v in r["cell"]}
    sizes = {tuple(k): v for k, v in r["sizes"]}
    agreement = {tuple(k): v for k, v in r["agreement"]}
    student_dir = os.path.join(os.path.dirname(os.path.abspath(test_csv)), "..", "student")
    write_report(cell, sizes, agreement, r["cold_ms"], r["rss_mib"], r["ort_cold_ms"], r["bundle_bytes"],
                 r["texts"], r["date"])
    return 0


def cpu_family():
    """The CPU and what decides the x86 kernels (AVX-512 VNNI, AVX2), as /proc/cpuinfo says."""
    import platform

    try:
        info = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        return platform.machine()
    flags = next((l for l in info if l.startswith("flags")), "").split()
    model = next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), "")
    isa = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX2, no AVX-512" if "avx2" in flags else ""
    return f"{platform.machine()} {model} ({isa})" if isa else f"{platform.machine()} {model}"


def write_report(cell, sizes, agreement, cold_ms, rss_mib, ort_cold_ms, bundle_bytes, n_texts, date=None):
    import platform

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Benchmarks: edgebert vs onnxruntime", "",
             f"Measured by `scripts/bench-compare` on {cpu_family()} ({os.cpu_count()} cores), "
             f"{date or time.strftime('%Y-%m-%d')}: onnxruntime {ort.__version__}, edgebert release build. Batch 1, "
             f"median ms of {ROUNDS} rounds × {ITERATIONS} runs, every engine in turn in each round. "
             "Ratios are to edgebert int8 in the same row group (>1: slower than edgebert int8). "
             "Where the time goes and what was changed to get here: [performance.md](performance.md).", ""]
    for th in thread_settings:
        lines += [f"## {th} thread{'s' if th > 1 else ''}", "",
                  "| model | engine | precision | " + " | ".join(f"p50 {L}" for L in LENGTHS) +
                  " | p95 64 | texts/s 64 | vs edgebert int8 @64 |",
                  "|---|---|---|" + "---|" * len(LENGTHS) + "---|---|---|"]
        for m in ["student", "teacher"]:
            base = cell[(m, "edgebert", "int8", th, 64)][0]
            for (mm, engine, prec, t, L) in sorted({k[:4] + (64,) for k in cell}, key=lambda k: (k[0] != "student", k[1], k[2])):
                if mm != m or t != th:
                    continue
                p50 = [cell[(m, engine, prec, th, L)][0] for L in LENGTHS]
                p95 = cell[(m, engine, prec, th, 64)][1]
                lines.append(f"| {m} | {engine} | {prec} | " + " | ".join(f"{x:.2f}" for x in p50) +
                             f" | {p95:.2f} | {1e3 / p50[2]:.0f} | {p50[2] / base:.2f}× |")
        lines.append("")
    lines += ["## Ratios (1 thread)", "", "| ratio | " + " | ".join(f"{L} tokens" for L in LENGTHS) + " |",
              "|---|" + "---|" * len(LENGTHS)]

    def ratio_row(name, a, b):
        lines.append(f"| {name} | " + " | ".join(f"{cell[a + (1, L)][0] / cell[b + (1, L)][0]:.2f}×" for L in LENGTHS) + " |")

    ratio_row("edgebert student: f32 / int8 (goal ≥ 2.0 at 64)", ("student", "edgebert", "f32"), ("student", "edgebert", "int8"))
    ratio_row("edgebert int8: teacher / student (goal ≥ 1.8)", ("teacher", "edgebert", "int8"), ("student", "edgebert", "int8"))
    ratio_row("student int8: edgebert / onnxruntime's own int8 (goal ≤ 1.0)", ("student", "edgebert", "int8"), ("student", "onnxruntime", "int8 (its quantize_dynamic)"))
    ratio_row("student int8 graph: edgebert / onnxruntime on the same file", ("student", "edgebert", "int8"), ("student", "onnxruntime", "int8 (edgebert's graph)"))
    ratio_row("onnxruntime student: f32 / its int8", ("student", "onnxruntime", "f32"), ("student", "onnxruntime", "int8 (its quantize_dynamic)"))
    lines += ["", "## Labels", "", f"Agreement with onnxruntime f32 on the first {n_texts} test reviews (student):", "",
              "| variant | agreement |", "|---|---|"]
    lines += [f"| {k} | {100 * v:.2f}% |" for (m, k), v in agreement.items()]
    lines += ["", "## Sizes", "", "| model | file | bytes |", "|---|---|---|"]
    lines += [f"| {m} | {n} | {b:,} |" for (m, n), b in sizes.items()]
    lines += ["", "## Cold start and memory (`edgebert classify` with the built-in model, whole process, 5 runs)", "",
              f"- cold start (process start → label printed), median: {cold_ms:.0f} ms (goal ≤ 100); "
              f"onnxruntime int8 student session + first run inside Python: {ort_cold_ms:.0f} ms",
              f"- peak RSS: {rss_mib:.1f} MiB = {rss_mib * 2**20 / bundle_bytes:.2f}× the built-in bundle's "
              f"{bundle_bytes:,} bytes (goal ≤ 2.5×)", ""]
    os.makedirs(docs, exist_ok=True)
    report = os.path.join(docs, "BENCHMARKS.md")
    # The per-CPU sections of `bench-compare --builtin` (bench_builtin.py) are kept as they are.
    kept = []
    if os.path.exists(report):
        old = open(report, encoding="utf-8").read()
        while "<!-- builtin:" in old:
            old = old[old.index("<!-- builtin:"):]
            end = old.index("<!-- /builtin:")
            end = old.index("-->", end) + 3
            kept.append(old[:end])
            old = old[end:]
    with open(report, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n" + arm_section() + "".join("\n" + k + "\n" for k in kept))

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, m in zip(axes, ["student", "teacher"]):
        keys = sorted({k[1:3] for k in cell if k[0] == m})
        width = 0.8 / len(keys)
        for i, (engine, prec) in enumerate(keys):
            ys = [cell[(m, engine, prec, 1, L)][0] for L in LENGTHS]
            ax.bar([x + i * width for x in range(len(LENGTHS))], ys, width, label=f"{engine} {prec}")
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(LENGTHS))], [f"{L} tokens" for L in LENGTHS])
        ax.set_ylabel("p50 latency, ms (lower is better)")
        ax.set_title(f"{m}, batch 1, 1 thread")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    for ext in ["png", "svg"]:
        fig.savefig(os.path.join(docs, f"benchmarks.{ext}"), dpi=110)


def arm_section():
    """What a Pi owner runs to add a real measurement; the emulated-core figures are
    scripts/arm-bench's section (`<!-- builtin:ARM, emulated -->`), kept as it is."""
    lines = ["", "![p50 latency per engine](benchmarks.png)", "",
             "## On a real Raspberry Pi", "",
             "The boards' figures come from emulated cores (`scripts/arm-bench`, section \"On the boards\" "
             "below). A Pi owner measures the real figure with the tarball's binary (`scripts/cross-build pi4`, "
             "README \"On a Raspberry Pi\") and pastes it here:", "", "```sh",
             "./edgebert bench --json            # built-in model: p50/p95 per length, cold start, peak RSS",
             "./edgebert bench --threads 1 --json",
             "./edgebert bench --threads 1 --profile   # where the time goes, per tract operator", "```", "",
             "| board | OS | threads | p50 16 | p50 32 | p50 64 | p50 128 | cold start | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|", "| | | | | | | | | |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(report_only() if os.environ.get("BENCH_REPORT_ONLY") else main())
