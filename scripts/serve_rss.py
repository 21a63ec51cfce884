#!/usr/bin/env python3
"""Peak and resident memory of `edgebert serve` over many requests (the Zero 2 W has 512 MB).

    scripts/serve_rss.py [EDGEBERT] [REQUESTS]      (default target/release/edgebert, 100000)

Sends REQUESTS JSON-lines requests (texts of varied lengths, all length buckets up to 128) to
one `serve` process, reads VmRSS/VmHWM from /proc every tenth of the way, and prints them.
Memory is flat when the last samples do not grow.
"""

import json
import subprocess
import sys
import threading

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/edgebert"
total = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
words = "a gripping beautiful film with a dull lifeless plot that never finds its footing".split()

proc = subprocess.Popen([binary, "serve", "--threads", "1"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, bufsize=1 << 16)


def status():
    fields = {}
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0]) / 1024
    return fields


def feed():
    for i in range(total):
        n = 1 + (i * 7919) % 90  # 1..90 words: 16- to 128-token buckets
        text = " ".join(words[(i + k) % len(words)] for k in range(n))
        proc.stdin.write(json.dumps({"id": i, "text": text}).encode() + b"\n")
    proc.stdin.close()


threading.Thread(target=feed, daemon=True).start()
samples = []
step = max(1, total // 10)
for i in range(total):
    line = proc.stdout.readline()
    if not line:
        sys.exit(f"serve stopped after {i} answers")
    if (i + 1) % step == 0:
        s = status()
        samples.append((i + 1, s["VmRSS"], s["VmHWM"]))
        print(f"{i + 1:>7} requests: RSS {s['VmRSS']:.1f} MiB, peak {s['VmHWM']:.1f} MiB", flush=True)
proc.wait()
first, last = samples[0], samples[-1]
print(f"RSS after {first[0]}: {first[1]:.1f} MiB; after {last[0]}: {last[1]:.1f} MiB "
      f"(growth {last[1] - first[1]:+.1f} MiB); peak {last[2]:.1f} MiB")
