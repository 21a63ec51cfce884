#!/usr/bin/env python3
"""How `edgebert classify --long head|head+tail|chunks` read texts longer than the model: accuracy
(95% Wilson intervals), per-class recall, confusion matrix and time, on one split of a labelled CSV
(columns text,label,split, as scripts/fetch-assets writes assets/data/imdb.csv), all texts and the
long ones alone. The default of `--long` is chosen with this on IMDB's dev split (never its test
split); docs/long-texts.md holds the figures.

Usage: scripts/long_texts.py [--bin target/release/edgebert] [--model M.ebm] [--data CSV]
                             [--split dev] [--limit N] [--markdown OUT.md]
"""
import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time

MODES = ["head", "head+tail", "chunks"]


def wilson(correct, n):
    """The 95% Wilson interval's centre-less half-width, in points."""
    if n == 0:
        return 0.0
    p, z = correct / n, 1.96
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n) * 100


def mcnemar(b, c):
    """Exact two-sided McNemar p-value for discordant counts b and c (binomial, p = 1/2)."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def classify(args, texts, mode):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(texts) + "\n")
        path = f.name
    try:
        cmd = [args.bin, "--threads", "1", "classify", "--json", "--long", mode, "--file", path]
        if args.model:
            cmd += ["--model", args.model]
        start = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        os.unlink(path)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    answers = [json.loads(line) for line in p.stdout.splitlines()]
    if len(answers) != len(texts):
        sys.exit(f"error: {len(texts)} texts, {len(answers)} answers")
    return answers, seconds


def scores(gold, answers, labels):
    confusion = {g: {p: 0 for p in labels} for g in labels}
    for g, a in zip(gold, answers):
        confusion[g][a["label"]] += 1
    n = len(gold)
    correct = sum(confusion[l][l] for l in labels)
    recall = {l: confusion[l][l] / max(1, sum(confusion[l].values())) for l in labels}
    return {"n": n, "accuracy": correct / max(1, n), "ci": wilson(correct, n),
            "recall": recall, "confusion": confusion}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="target/release/edgebert")
    ap.add_argument("--model", help="a bundle (default: the built-in model)")
    ap.add_argument("--data", default="assets/data/imdb.csv")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=0, help="the first N rows of the split only")
    ap.add_argument("--markdown", help="also write the tables here")
    args = ap.parse_args()

    rows = [r for r in csv.DictReader(open(args.data, newline="", encoding="utf-8"))
            if r.get("split", args.split) == args.split]
    if args.limit:
        rows = rows[: args.limit]
    if not rows:
        sys.exit(f"error: no rows of split {args.split} in {args.data}")
    texts = [" ".join(r["text"].split()) for r in rows]
    gold = [r["label"] for r in rows]
    labels = sorted(set(gold))

    results = {}
    for mode in MODES:
        answers, seconds = classify(args, texts, mode)
        unknown = {a["label"] for a in answers} - set(labels)
        if unknown:
            sys.exit(f"error: the model answers labels the data lacks: {sorted(unknown)}")
        results[mode] = (answers, seconds)
    # "Long": cut by `head`, i.e. more tokens than one input holds.
    long_ix = [i for i, a in enumerate(results["head"][0]) if a["truncated"]]

    cpu, flags = "unknown CPU", ""
    if os.path.exists("/proc/cpuinfo"):
        info = open("/proc/cpuinfo").read().splitlines()
        cpu = next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), cpu)
        flags = next((l.split(":", 1)[1] for l in info if l.startswith("flags")), "").split()
    if "avx512_vnni" in flags:
        cpu += ", AVX-512 VNNI"
    elif "avx2" in flags:
        cpu += ", AVX2, no AVX-512"
    out = ["# Long texts: `--long head|head+tail|chunks`\n",
           "A text longer than the model's maximum length is read by its start (`head`), by its "
           "first quarter-window and the rest from its end (`head+tail`), or whole in windows of "
           "equal size whose logits are averaged, weighted by their tokens (`chunks`, at most 16 "
           "windows). Written by `scripts/long_texts.py` (the default of `--long` is chosen from "
           "these figures, on the dev split, never the test split); seconds are the whole "
           f"`edgebert classify` run on one thread of this host ({cpu}), model load included.\n",
           f"{len(rows):,} texts of split `{args.split}` of `{os.path.basename(args.data)}`, "
           f"{len(long_ix):,} of them ({100 * len(long_ix) / len(rows):.1f}%) longer than the "
           f"model reads at once. Model: {args.model or 'the built-in model'}; 1 thread.\n",
           "| --long | texts | accuracy (95% CI) | " + " | ".join(f"recall {l}" for l in labels)
           + " | windows per text | tokens run per text | seconds |",
           "|---|---|---|" + "---|" * len(labels) + "---|---|---|"]
    for mode in MODES:
        answers, seconds = results[mode]
        for name, ix in [("all", range(len(rows))), ("long only", long_ix)]:
            s = scores([gold[i] for i in ix], [answers[i] for i in ix], labels)
            windows = sum(answers[i]["windows"] for i in ix) / max(1, len(ix))
            tokens = sum(answers[i]["tokens"] for i in ix) / max(1, len(ix))
            out.append(f"| {mode} | {name} ({s['n']:,}) | {100 * s['accuracy']:.2f}% ± "
                       f"{s['ci']:.2f} | "
                       + " | ".join(f"{100 * s['recall'][l]:.1f}%" for l in labels)
                       + f" | {windows:.2f} | {tokens:.0f} | "
                       + (f"{seconds:.1f} |" if name == "all" else "|"))
    out.append("\nPaired, on the same texts (exact two-sided McNemar test on the texts one way gets "
               "right and the other wrong):\n")
    for i, x in enumerate(MODES):
        for y in MODES[i + 1:]:
            ok = [[a["label"] == g for a, g in zip(results[m][0], gold)] for m in (x, y)]
            only_x = sum(p and not q for p, q in zip(*ok))
            only_y = sum(q and not p for p, q in zip(*ok))
            out.append(f"- `{y}` vs `{x}`: {only_y} texts right only with `{y}`, {only_x} only "
                       f"with `{x}`; p = {mcnemar(only_x, only_y):.2g}")
    out.append("\nConfusion matrices (all texts; rows: gold, columns: predicted):\n")
    for mode in MODES:
        s = scores(gold, results[mode][0], labels)
        out.append(f"`{mode}`:\n")
        out.append("| gold \\ predicted | " + " | ".join(labels) + " |")
        out.append("|---|" + "---:|" * len(labels))
        for g in labels:
            out.append(f"| {g} | " + " | ".join(str(s["confusion"][g][p]) for p in labels) + " |")
        out.append("")
    text = "\n".join(out)
    print(text)
    if args.markdown:
        tmp = args.markdown + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.markdown)


if __name__ == "__main__":
    main()
