#!/usr/bin/env python3
"""Runs cross-built `edgebert` binaries under qemu-user and compares them with the host binary.

    scripts/qemu_check.py HOST_BIN TARGET:BIN [TARGET:BIN ...]     (called by scripts/qemu-check)

For each ARM binary and each emulated core (with and without dotprod on aarch64, so both of
tract's int8 kernels run): the same labels as the host for every text of scripts/qemu-texts.txt
and probabilities within TOLERANCE; `serve` answers the same requests the same way; the bad-input
cases end with the host's exit code and an `error:` line; `edgebert board` reports the kernel the
core implies. Prints the largest probability difference seen; exits 1 on any disagreement.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

TOLERANCE = 0.02
HERE = os.path.dirname(os.path.abspath(__file__))

# (target, qemu -cpu, board it stands for, dotprod expected)
CORES = {
    "aarch64-unknown-linux-gnu": [
        ("cortex-a53", "Pi 3 / Zero 2 W", False),
        ("cortex-a72", "Pi 4", False),
        ("cortex-a76", "Pi 5", True),
    ],
    "armv7-unknown-linux-gnueabihf": [
        ("cortex-a15", "32-bit OS (NEON, VFPv4)", None),
    ],
}
QEMU = {
    "aarch64-unknown-linux-gnu": ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
    "armv7-unknown-linux-gnueabihf": ["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"],
}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}")


def run(cmd, stdin=b"", env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, input=stdin, capture_output=True, env=e, timeout=600)


def classify(cmd, texts, env=None):
    p = run(cmd + ["classify", "--json", "--top-k", "9", "--threads", "1"], "\n".join(texts).encode() + b"\n", env)
    if p.returncode != 0:
        raise RuntimeError(f"classify exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    return [json.loads(line) for line in p.stdout.decode().splitlines()]


def compare(name, host, other):
    worst = 0.0
    if len(host) != len(other):
        fail(f"{name}: {len(other)} answers, host {len(host)}")
        return worst
    for i, (h, o) in enumerate(zip(host, other)):
        if h.get("label") != o.get("label"):
            fail(f"{name}: text {i + 1}: label {o.get('label')} vs host {h.get('label')}")
        hp = {s["label"]: s["probability"] for s in h.get("scores", [])}
        for s in o.get("scores", []):
            worst = max(worst, abs(s["probability"] - hp.get(s["label"], -1.0)))
    if worst > TOLERANCE:
        fail(f"{name}: probabilities differ by {worst:.4f} > {TOLERANCE}")
    return worst


def bad_input_cases(tmp):
    """(name, args, stdin) cases of the runtime issue; their exit codes come from the host."""
    from pathlib import Path

    bundle = Path(HERE, "..", "models", "sentiment-en.ebm")
    Path(tmp, "truncated.ebm").write_bytes(b"EBM")
    Path(tmp, "garbage.ebm").write_bytes(b"not a bundle at all\n" * 100)
    cases = [
        ("empty text", ["classify", ""], b""),
        ("invalid UTF-8 line among good ones", ["classify"], b"good\n\xff\xfe bad\nfine film\n"),
        ("missing model file", ["classify", "--model", str(Path(tmp, "absent.ebm")), "x"], b""),
        ("truncated bundle", ["classify", "--model", str(Path(tmp, "truncated.ebm")), "x"], b""),
        ("not a bundle", ["classify", "--model", str(Path(tmp, "garbage.ebm")), "x"], b""),
        ("huge text", ["classify", "word " * 20000], b""),
        ("unknown board", ["board", "--board", "pi9"], b""),
        ("unknown label pin", ["classify", "--pin", "happy=5", "x"], b""),
    ]
    if bundle.exists():
        raw = bytearray(bundle.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        Path(tmp, "flipped.ebm").write_bytes(bytes(raw))
        cases.append(("one flipped byte", ["classify", "--model", str(Path(tmp, "flipped.ebm")), "x"], b""))
    return cases


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 1
    host = [sys.argv[1]]
    pairs = [a.split(":", 1) for a in sys.argv[2:]]
    texts = [t for t in open(os.path.join(HERE, "qemu-texts.txt"), encoding="utf-8").read().splitlines() if t]
    host_answers = classify(host, texts)
    requests = b"".join(
        json.dumps(r).encode() + b"\n"
        for r in [{"text": texts[0], "id": 1}, {"texts": texts[1:4], "id": 2, "top_k": 2}, {"id": 3}]
    ) + b"{not json\n"
    host_serve = [json.loads(l) for l in run(host + ["serve"], requests).stdout.decode().splitlines()]

    with tempfile.TemporaryDirectory() as tmp:
        cases = bad_input_cases(tmp)
        host_codes = {name: run(host + args, stdin).returncode for name, args, stdin in cases}
        summary = []
        for triple, binary in pairs:
            for cpu, board, dotprod in CORES[triple]:
                cmd = QEMU[triple] + ["-cpu", cpu, binary]
                # Under qemu-user /proc/cpuinfo is the host's: tell tract's armv7 code NEON is there.
                env = {"TRACT_CPU_ARM32_NEON": "true"} if triple.startswith("armv7") else {}
                name = f"{triple} -cpu {cpu} ({board})"
                print(f"{name}:")
                start = time.time()
                try:
                    answers = classify(cmd, texts, env)
                except RuntimeError as e:
                    fail(f"{name}: {e}")
                    continue
                secs = time.time() - start
                worst = compare(name, host_answers, answers)
                served = [json.loads(l) for l in run(cmd + ["serve"], requests, env).stdout.decode().splitlines()]
                worst = max(worst, compare(f"{name} serve", [a for a in host_serve if "label" in a], [a for a in served if "label" in a]))
                host_errors = [("error" in a, a.get("id")) for a in host_serve]
                if [("error" in a, a.get("id")) for a in served] != host_errors:
                    fail(f"{name} serve: answers {served} vs host {host_serve}")
                board_info = json.loads(run(cmd + ["board", "--json"], env=env).stdout or b"{}")
                kernel = board_info.get("kernels", {}).get("int8_kernel", "?")
                if dotprod is not None and ("sdot" in kernel.lower()) != dotprod:
                    fail(f"{name}: int8 kernel {kernel}, expected dotprod={dotprod}")
                for case, args, stdin in cases:
                    p = run(cmd + args, stdin, env)
                    if p.returncode != host_codes[case] or (p.returncode != 0 and b"error:" not in p.stderr):
                        fail(f"{name}: {case}: exit {p.returncode} (host {host_codes[case]}): {p.stderr[:200]!r}")
                print(f"  {len(texts)} texts: same labels, max |dp| {worst:.5f}; serve ok; int8 kernel: {kernel}; "
                      f"{len(cases)} bad-input cases as on the host ({secs:.1f} s under emulation)")
                summary.append((name, worst, kernel))
    print()
    print("largest probability difference vs host per emulated core:")
    for name, worst, kernel in summary:
        print(f"  {worst:.5f}  {name}  [{kernel}]")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("qemu check: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
