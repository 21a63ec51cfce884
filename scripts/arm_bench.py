#!/usr/bin/env python3
"""One inference pass on emulated Raspberry Pi cores, counted (called by scripts/arm-bench).

    arm_bench.py WORK EDGEBERT_HOST EDGEBERT_ARM HARNESS_ARM PLUGIN LIBONNXRUNTIME DOCS [--smoke]

Every program runs under `qemu-aarch64 -cpu CORE` with the edgebert-qemu-count plugin, which
counts retired instructions per class, per function and per mark (the marks that `edgebert bench`
and the harness set around each timed pass, and `edgebert bench --profile` around each operator).
Instructions per pass come from those marks; cycles are an ESTIMATE from a throughput model of
each core (CORES below), checked first on microkernels whose throughput the cores' guides
publish. Rows: edgebert as shipped (int8 built-in model, and its f32 twin), tract's stock path
(EDGEBERT_FUSE/QGEMM/ATTENTION=off), onnxruntime 1.30 (linux-arm64 C library from npm) on the
same int8 file, on its own quantize_dynamic and on the f32 twin. Plus instructions to the first
answer (cold start) and peak RSS under emulation minus qemu's own. Writes WORK/results.json,
WORK/report.md and (full run) the `<!-- builtin:ARM, emulated -->` section of DOCS/BENCHMARKS.md.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_builtin  # noqa: E402

LENGTHS = [16, 32, 64, 128]
SYSROOT = "/usr/aarch64-linux-gnu"
# The board whose kernel files (boards/tests/recorded/) each emulated core sees: qemu-user 7.2
# shows the host's /proc/cpuinfo to the guest, and onnxruntime's cpuinfo library crashes on an
# x86 one, so each core runs in a root (`-L`) with its board's /proc/cpuinfo and device tree.
BOARD_FILES = {"cortex-a53": "pi3", "cortex-a72": "pi4", "cortex-a76": "pi5"}
CLASSES = ["branch", "load", "store", "int", "int_mul", "fp", "simd_fmla", "simd_mlal", "simd_dot",
           "simd_adalp", "simd_other"]

# The cycle model: a throughput bound. Each class occupies one or more pipe groups for COST cycles
# of that group per instruction; a pass takes the larger of (instructions / issue width) and the
# busiest group's total. It ignores latency chains, cache and TLB misses, branch mispredictions
# and, on the in-order A53, the pairing rules of dual issue, so it is a lower bound on cycles:
# read it as an estimate (the microkernel check below shows by how much a latency-bound loop
# misses). Costs from the Cortex-A72 and Cortex-A76 Software Optimization Guides (Arm, UAN0016A
# and PJDOC-466751330-7215) and, for the A53 (no guide published), from Arm's A53 TRM pipeline
# description and the figures in edgebert's issue 23: FMLA.4s and SMLAL 1/cycle on A53 and A72,
# SDOT and FMLA.4s 2/cycle on the A76, SADALP 0.5/cycle on the A53. "q" = extra cost per 128-bit
# register a load/store moves (the A53's load/store path is 64 bits wide).
CORES = {
    "cortex-a53": {
        "width": 2, "boards": [("Pi Zero 2 W", 1.0), ("Pi 3 B+", 1.4)], "q": ("ls", 1.0),
        "costs": {"branch": [("br", 1)], "load": [("ls", 1)], "store": [("ls", 1)],
                  "int": [("alu", 0.5)], "int_mul": [("mul", 1)], "fp": [("neon", 1)],
                  "simd_fmla": [("neon", 1)], "simd_mlal": [("neon", 1)], "simd_dot": [("neon", 1)],
                  "simd_adalp": [("neon", 2)], "simd_other": [("neon", 1)]},
    },
    "cortex-a72": {
        "width": 3, "boards": [("Pi 4 B", 1.5), ("Pi 4 B (1.8 GHz)", 1.8)], "q": None,
        "costs": {"branch": [("br", 1)], "load": [("ld", 1)], "store": [("st", 1)],
                  "int": [("alu", 0.5)], "int_mul": [("mul", 1)], "fp": [("neon", 0.5)],
                  "simd_fmla": [("neon", 1)], "simd_mlal": [("neon", 1)], "simd_dot": [("neon", 1)],
                  "simd_adalp": [("neon", 1)], "simd_other": [("neon", 0.5)]},
    },
    "cortex-a76": {
        "width": 4, "boards": [("Pi 5", 2.4)], "q": None,
        "costs": {"branch": [("br", 1)], "load": [("ld", 0.5)], "store": [("st", 1)],
                  "int": [("alu", 1 / 3)], "int_mul": [("mul", 1)], "fp": [("neon", 0.5)],
                  "simd_fmla": [("neon", 0.5)], "simd_mlal": [("neon", 0.5), ("v0", 1)],
                  "simd_dot": [("neon", 0.5)], "simd_adalp": [("neon", 0.5), ("v1", 1)],
                  "simd_other": [("neon", 0.5)]},
    },
}

# Microkernels (edgebert-arm-harness micro): 8 instructions of one kind + subs + b.ne per
# iteration. `published`: cycles per iteration from each core's published throughput (latency for
# the chain: FMLA 4 cycles on A53 (A55 guide's figure), 3 on A72 with accumulator forwarding,
# 2 on A76 with forwarding). None: the core lacks the instruction.
MICRO = {
    "fmla-independent": {"cortex-a53": 8, "cortex-a72": 8, "cortex-a76": 4},
    "smlal-independent": {"cortex-a53": 8, "cortex-a72": 8, "cortex-a76": 8},
    "sdot-independent": {"cortex-a53": None, "cortex-a72": None, "cortex-a76": 4},
    "sadalp-independent": {"cortex-a53": 16, "cortex-a72": 8, "cortex-a76": 8},
    "ldr-q": {"cortex-a53": 16, "cortex-a72": 8, "cortex-a76": 4},
    "add-independent": {"cortex-a53": 5, "cortex-a72": 4.5, "cortex-a76": 3},
    "fmla-chain": {"cortex-a53": 32, "cortex-a72": 24, "cortex-a76": 16},
}
MICRO_ITERATIONS = 20000


def cycles(core, classes, q_transfers):
    """Estimated cycles for a histogram of instruction classes (the model above)."""
    spec = CORES[core]
    load = {}
    for name, count in classes.items():
        for group, cost in spec["costs"][name]:
            load[group] = load.get(group, 0.0) + count * cost
    if spec["q"]:
        group, cost = spec["q"]
        load[group] = load.get(group, 0.0) + q_transfers * cost
    total = sum(classes.values())
    return max([total / spec["width"]] + list(load.values()))


def guest_root(work, core):
    """WORK/root-CORE: the aarch64 libraries (a link to SYSROOT/lib) and the board's /proc files."""
    root = os.path.abspath(os.path.join(work, f"root-{core}"))
    if not os.path.isdir(root):
        tmp = root + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        os.symlink(os.path.join(SYSROOT, "lib"), os.path.join(tmp, "lib"))
        shutil.copytree(os.path.join("boards/tests/recorded", BOARD_FILES[core], "proc"), os.path.join(tmp, "proc"))
        os.rename(tmp, root)
    return root


class Counter:
    """Runs aarch64 programs under qemu with the counting plugin."""

    def __init__(self, work, plugin):
        self.work, self.plugin = work, plugin
        os.makedirs(os.path.join(work, "counts"), exist_ok=True)

    def run(self, core, name, argv, env=None):
        out = os.path.join(self.work, "counts", f"{core}-{name}.json")
        root = guest_root(self.work, core)
        cmd = ["qemu-aarch64", "-L", root, "-cpu", core, "-plugin", f"{self.plugin},out={out}"] + argv
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
        counts = json.load(open(out))
        print(f"arm-bench: {core} {name}: {time.time() - t0:.0f} s", file=sys.stderr)
        return counts, p.stdout


def mark(counts, m):
    """(instructions, class histogram, 128-bit transfers, functions) under mark `m`."""
    for entry in counts["marks"]:
        if entry["mark"] == m:
            return entry
    raise RuntimeError(f"no mark {m} in the counts (marks: {[e['mark'] for e in counts['marks']]})")


def histogram(entry, runs=1):
    return {c: v / runs for c, v in zip(CLASSES, entry["classes"])}


def per_pass(counts, core, lengths, runs):
    """{length: (M instructions, M estimated cycles, histogram)} from the length marks."""
    out = {}
    for L in lengths:
        e = mark(counts, L)
        h = histogram(e, runs)
        out[L] = {"insns": e["insns"] / runs, "cycles": cycles(core, h, e["q_transfers"] / runs),
                  "classes": h}
    return out


def teacher_models(work, quantize):
    """The teacher's shape as edgebert and onnxruntime run it: all-MiniLM-L6-v2 (assets/teacher, from
    scripts/fetch-assets) with an untrained two-label head (zeros: the cost of a pass, not its
    answers, is measured), exported f32 (bundle and ONNX) and quantized dynamically (bundle and
    ONNX) by edgebert-quantize. Returns {name: path}."""
    import struct

    import numpy as np

    out = os.path.join(work, "teacher")
    ckpt = os.path.join(out, "checkpoint")
    os.makedirs(ckpt, exist_ok=True)
    cfg = json.load(open("assets/teacher/config.json"))
    cfg.update({"architectures": ["BertForSequenceClassification"], "num_labels": 2,
                "id2label": {"0": "negative", "1": "positive"}, "label2id": {"negative": 0, "positive": 1}})
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open("assets/teacher/tokenizer.json", "rb") as src, open(os.path.join(ckpt, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())
    raw = open("assets/teacher/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header, body = json.loads(raw[8:8 + n]), raw[8 + n:]
    header.pop("__metadata__", None)
    h = cfg["hidden_size"]
    extra = {"classifier.weight": np.zeros((2, h), np.float32), "classifier.bias": np.zeros(2, np.float32)}
    offset = len(body)
    for name, value in extra.items():
        header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(os.path.join(ckpt, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + body + b"".join(v.tobytes() for v in extra.values()))
    paths = {"f32.ebm": os.path.join(out, "teacher.ebm"), "f32.onnx": os.path.join(out, "teacher.onnx"),
             "int8.ebm": os.path.join(out, "teacher-int8.ebm"), "int8.onnx": os.path.join(out, "teacher-int8.onnx")}
    for key in ["f32.ebm", "f32.onnx"]:
        subprocess.run([quantize, "export", ckpt, "-o", paths[key]], check=True, capture_output=True)
    subprocess.run([quantize, "dynamic", paths["f32.ebm"], "-o", paths["int8.ebm"], "--onnx-out", paths["int8.onnx"]],
                   check=True, capture_output=True)
    return paths


def profile_rows(core, counts, stdout):
    """Per operator kind of `edgebert bench --profile --json` (STDOUT), its counts under its mark,
    most expensive (estimated cycles) first."""
    rows = []
    for op in json.loads(stdout)["lengths"][0]["ops"]:
        e = next((m for m in counts["marks"] if m["mark"] == op["mark"]), None)
        if e is None:
            continue
        h = histogram(e)
        rows.append({"op": op["op"], "nodes": op["nodes"], "insns": e["insns"],
                     "cycles": cycles(core, h, e["q_transfers"]), "classes": h,
                     "functions": [(f["name"], f["insns"]) for f in e["functions"][:3]]})
    rows.sort(key=lambda r: -r["cycles"])
    return rows


def peak_rss_kib(root, argv, env=None):
    """Peak RSS (KiB) of one program run under qemu (no plugin), measured by a fresh Python process
    whose only child it is (RUSAGE_CHILDREN keeps the maximum over every child ever waited for)."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", probe, "qemu-aarch64", "-L", root, "-cpu", "cortex-a53"] + argv,
                       check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return int(p.stdout.strip())


def report_only(work, docs):
    """ARM_BENCH_REPORT_ONLY=1: the report again from WORK/results.json, without emulating anything."""
    r = json.load(open(os.path.join(work, "results.json")))
    table = {tuple(k): {int(n): v for n, v in cells.items()} for k, cells in r["table"]}
    cores = list(dict.fromkeys(k[0] for k in table))
    lengths = sorted({n for cells in table.values() for n in cells})
    section = report(table, r["micro"], r["profiles"], r["cold"], r["cold_cycles"], *r["rss_kib"], cores,
                     lengths, r["profile_length"], r["smoke"])
    with open(os.path.join(work, "report.md"), "w") as f:
        f.write(section)
    if not r["smoke"]:
        bench_builtin.write_section(docs, "ARM, emulated", section)
    print(section)
    return 0


def main(work, edgebert_host, edgebert, harness, plugin, libort, docs, smoke=False):
    if os.environ.get("ARM_BENCH_REPORT_ONLY"):
        return report_only(work, docs)
    os.makedirs(work, exist_ok=True)
    cores = ["cortex-a53"] if smoke else list(CORES)
    lengths = [16] if smoke else LENGTHS
    profile_length = 16 if smoke else 64
    runs = 1
    paths, f32_bundle, _, _, _ = bench_builtin.prepare(os.path.join(work, "models"), edgebert_host,
                                                       "models/sentiment-en.ebm")
    counter = Counter(work, plugin)
    for core in cores:
        guest_root(work, core)  # made before the pool's threads need them
    stock = {"EDGEBERT_FUSE": "off", "EDGEBERT_QGEMM": "off", "EDGEBERT_ATTENTION": "off"}
    bench = ["bench", "--threads", "1", "--iterations", str(runs), "--lengths", ",".join(map(str, lengths)),
             "--json"]
    ort = ["ort", libort]
    ort_args = ["--lengths", ",".join(map(str, lengths)), "--iterations", str(runs)]
    variants = [
        ("edgebert", "int8", [edgebert] + bench, None),
        ("tract stock", "int8", [edgebert] + bench, stock),
        ("edgebert", "f32", [edgebert] + bench[:1] + [f32_bundle] + bench[1:], None),
        ("onnxruntime", "int8 (edgebert's graph)", [harness] + ort + [paths["int8"]] + ort_args, None),
        ("onnxruntime", "int8 (its quantize_dynamic)", [harness] + ort + [paths["ort-int8"]] + ort_args, None),
        ("onnxruntime", "f32", [harness] + ort + [paths["f32"]] + ort_args, None),
    ]
    if smoke:
        variants = [v for v in variants if v[1] in ("int8", "int8 (edgebert's graph)")]
    else:
        teacher = teacher_models(work, os.path.join(os.path.dirname(edgebert_host), "edgebert-quantize"))
        variants += [
            ("edgebert", "teacher int8", [edgebert] + bench[:1] + [teacher["int8.ebm"]] + bench[1:], None),
            ("edgebert", "teacher f32", [edgebert] + bench[:1] + [teacher["f32.ebm"]] + bench[1:], None),
            ("onnxruntime", "teacher int8 (edgebert's graph)",
             [harness] + ort + [teacher["int8.onnx"]] + ort_args, None),
            ("onnxruntime", "teacher f32", [harness] + ort + [teacher["f32.onnx"]] + ort_args, None),
        ]
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for core in cores:
            for engine, prec, argv, env in variants:
                name = f"{engine}-{prec}".replace(" ", "_").replace("'", "").replace("(", "").replace(")", "")
                jobs[("pass", core, engine, prec)] = pool.submit(counter.run, core, name, argv, env)
            for micro, published in MICRO.items():
                if published[core] is not None:
                    jobs[("micro", core, micro)] = pool.submit(
                        counter.run, core, f"micro-{micro}",
                        [harness, "micro", micro, "--iterations", str(MICRO_ITERATIONS)])
            jobs[("profile", core)] = pool.submit(
                counter.run, core, "profile",
                [edgebert, "bench", "--threads", "1", "--profile", "--iterations", "1", "--lengths",
                 str(profile_length), "--json"])
            jobs[("cold", core)] = pool.submit(counter.run, core, "cold-start",
                                               [edgebert, "classify", "a gentle, funny and moving film"])
        results = {k: f.result() for k, f in jobs.items()}

    table = {}
    for (kind, core, *rest), (counts, stdout) in results.items():
        if kind == "pass":
            table[(core, *rest)] = per_pass(counts, core, lengths, runs)
    micro_rows = []
    for (kind, core, *rest), (counts, _) in results.items():
        if kind == "micro":
            e = mark(counts, 1)
            h = histogram(e, MICRO_ITERATIONS)
            micro_rows.append((rest[0], core, e["insns"] / MICRO_ITERATIONS,
                               cycles(core, h, e["q_transfers"] / MICRO_ITERATIONS), MICRO[rest[0]][core]))
    profiles = {core: profile_rows(core, counts, stdout)
                for (kind, core, *rest), (counts, stdout) in results.items() if kind == "profile"}
    cold = {core: sum(m["insns"] for m in counts["marks"])
            for (kind, core, *_), (counts, _) in results.items() if kind == "cold"}
    cold_cycles = {core: sum(cycles(core, histogram(m), m["q_transfers"]) for m in counts["marks"])
                   for (kind, core, *_), (counts, _) in results.items() if kind == "cold"}
    root = guest_root(work, "cortex-a53")
    qemu_rss = peak_rss_kib(root, [harness, "micro", "add-independent", "--iterations", "1"])
    edgebert_rss = peak_rss_kib(root, [edgebert, "classify", "a gentle, funny and moving film"])

    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({"table": [[list(k), v] for k, v in table.items()], "micro": micro_rows, "profiles": profiles,
                   "cold": cold, "cold_cycles": cold_cycles, "rss_kib": [qemu_rss, edgebert_rss],
                   "profile_length": profile_length, "smoke": smoke}, f)
    section = report(table, micro_rows, profiles, cold, cold_cycles, qemu_rss, edgebert_rss, cores,
                     lengths, profile_length, smoke)
    with open(os.path.join(work, "report.md"), "w") as f:
        f.write(section)
    print(section)
    if not smoke:
        bench_builtin.write_section(docs, "ARM, emulated", section)
    # The smoke run's check: every pass counted, the model within 2× of the published
    # throughput on the microkernels it is meant for.
    for name, core, _, est, published in micro_rows:
        if name != "fmla-chain" and not 0.5 <= est / published <= 2.0:
            print(f"error: cycle model off on {core} {name}: {est:.1f} vs {published}", file=sys.stderr)
            return 1
    return 0


def report(table, micro_rows, profiles, cold, cold_cycles, qemu_rss, edgebert_rss, cores, lengths,
           profile_length, smoke):
    L = [
        "<!-- builtin:ARM, emulated -->",
        "## On the boards: emulated Pi cores, counted (`scripts/arm-bench`)" + (" — smoke run" if smoke else ""),
        "",
        "No Raspberry Pi is reachable from here. Each program ran under `qemu-aarch64 -cpu CORE` "
        "with edgebert's instruction-counting plugin (`tools/qemu-count`); instructions are counted exactly, "
        "**cycles and milliseconds are an estimate** from a throughput model of each core "
        "(`scripts/arm_bench.py`, `CORES`: the busiest pipe or the issue width, whichever binds; no "
        "latency, cache or branch-miss costs, so a lower bound). Batch 1, 1 thread, one pass after a warm-up "
        "pass, the synthetic text of `edgebert bench` (the built-in model and its f32 twin; onnxruntime 1.30's "
        "linux-arm64 library from npm `onnxruntime-node@1.30.0`, through `tools/arm-harness`). "
        "\"tract stock\": edgebert with its own operators off (`EDGEBERT_FUSE=off EDGEBERT_QGEMM=off "
        "EDGEBERT_ATTENTION=off`).",
        "",
    ]
    for core in cores:
        board, ghz = CORES[core]["boards"][0]
        L += [f"### {core} ({', '.join(f'{b} {g} GHz' for b, g in CORES[core]['boards'])})", "",
              f"Cells: million instructions per pass / estimated ms at {ghz} GHz ({board}).", "",
              "| engine | model, precision | " + " | ".join(f"{n} tokens" for n in lengths) + " |",
              "|---|---|" + "---|" * len(lengths)]
        for (c, engine, prec), v in table.items():
            if c != core:
                continue
            L.append(f"| {engine} | {prec} | " + " | ".join(
                f"{v[n]['insns'] / 1e6:.1f} / {v[n]['cycles'] / ghz / 1e6:.1f}" for n in lengths) + " |")
        n = 64 if 64 in lengths else lengths[-1]

        def est(engine, prec):
            v = table.get((core, engine, prec))
            return v[n]["cycles"] if v else None

        ratios = [("edgebert int8 / edgebert f32", est("edgebert", "int8"), est("edgebert", "f32")),
                  ("edgebert int8 / onnxruntime, same int8 file", est("edgebert", "int8"),
                   est("onnxruntime", "int8 (edgebert's graph)")),
                  ("edgebert int8 / onnxruntime's own int8", est("edgebert", "int8"),
                   est("onnxruntime", "int8 (its quantize_dynamic)")),
                  ("edgebert int8 / tract stock int8", est("edgebert", "int8"), est("tract stock", "int8"))]
        L += ["", f"Estimated-cycle ratios at {n} tokens: " + "; ".join(
            f"{name} **{a / b:.2f}×**" for name, a, b in ratios if a and b) + ".", ""]
    L += ["### Where edgebert int8 spends a pass (per operator, estimated cycles)", ""]
    for core, rows in profiles.items():
        total = sum(r["cycles"] for r in rows) or 1
        L += [f"{core}, {profile_length} tokens:", "",
              "| operator | nodes | M insns | share of est. cycles | biggest classes | top functions |",
              "|---|---|---|---|---|---|"]
        for r in rows[:10]:
            top = sorted(r["classes"].items(), key=lambda kv: -kv[1])[:3]
            fns = ", ".join(f"`{name[:64]}`" for name, _ in r["functions"])
            L.append(f"| {r['op']} | {r['nodes']} | {r['insns'] / 1e6:.2f} | {100 * r['cycles'] / total:.1f}% | "
                     + ", ".join(f"{k} {v / max(r['insns'], 1) * 100:.0f}%" for k, v in top) + f" | {fns} |")
        L.append("")
    L += ["### Cold start and memory", "",
          "| core | instructions, process start → label printed (M) | est. ms |", "|---|---|---|"]
    for core, insns in cold.items():
        board, ghz = CORES[core]["boards"][0]
        L.append(f"| {core} | {insns / 1e6:.0f} | {cold_cycles[core] / ghz / 1e6:.0f} at {ghz} GHz ({board}) |")
    if qemu_rss and edgebert_rss:
        L += ["", f"Peak RSS of `edgebert classify` (built-in model) under qemu minus qemu's own (a trivial "
              f"program): {(edgebert_rss - qemu_rss) / 1024:.1f} MiB ({edgebert_rss / 1024:.1f} − "
              f"{qemu_rss / 1024:.1f})."]
    L += ["", "### The cycle model, checked on microkernels", "",
          "8 instructions of one kind + `subs` + `b.ne` per iteration; published = cycles per iteration from "
          "the cores' published throughput (the chain: latency).", "",
          "| kernel | core | insns / iteration | model cycles | published | model / published |", "|---|---|---|---|---|---|"]
    for name, core, insns, est_c, pub in sorted(micro_rows):
        L.append(f"| {name} | {core} | {insns:.1f} | {est_c:.1f} | {pub} | {est_c / pub:.2f} |")
    L += ["", "The model reproduces throughput-bound loops by construction and underestimates latency-bound ones "
          "(`fmla-chain`): a kernel with too few independent accumulators runs slower than estimated.",
          "", "<!-- /builtin:ARM, emulated -->", ""]
    return "\n".join(L)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--smoke"]
    sys.exit(main(*args[:7], smoke="--smoke" in sys.argv[1:]))
