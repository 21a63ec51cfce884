# Steps that scripts/build-model (spam) and scripts/build-default-model (sentiment) share.
# Sourced after they set `out` (the run's folder) and `bin` (the release binaries).

# Whether the training run in DIR has finished.
finished() { grep -q '"status": "finished"' "$1/run.json" 2>/dev/null; }

# Whether TARGET is there and newer than every SOURCE (make's rule: what is up to date is kept,
# what an earlier step remade is remade after it).
fresh() {
  local target=$1; shift
  [ -e "$target" ] || return 1
  for s in "$@"; do [ "$target" -nt "$s" ] || return 1; done
}

# The student as ONNX f32, again only when its checkpoint changed.
export_student() {
  fresh "$out/student.onnx" "$out/student/model.safetensors" ||
    "$bin/edgebert-distill" export "$out/student" -o "$out/student.onnx"
}

# text_lines CSV OUT [N]: the texts of CSV (its first N), one per line (a text's newlines and runs
# of spaces are whitespace to the tokenizer: one space gives the same tokens).
text_lines() {
  python3 - "$@" <<'PY'
import csv, sys
csv.field_size_limit(1 << 30)
rows = [r["text"] for r in csv.DictReader(open(sys.argv[1], newline=""))]
n = int(sys.argv[3]) if len(sys.argv) > 3 else len(rows)
open(sys.argv[2], "w").write("".join(" ".join(t.split()) + "\n" for t in rows[:n]))
PY
}

# The first 500 training texts, for static quantization's calibration.
calibration_texts() { text_lines "$out/data/train.csv" "$out/data/calibration.txt" 500; }

# quantize SCHEME VARIANT [extra args]: the student to OUT/student-int8-VARIANT.ebm, int8 by SCHEME
# (dynamic, or static calibrated on calibration_texts), with the accuracy guard (≤ 0.5 dev points
# below f32) and a report; a bundle newer than the student's ONNX is kept.
quantize() {
  local scheme=$1 variant=$2; shift 2
  fresh "$out/student-int8-$variant.ebm" "$out/student.onnx" && return
  local extra=(); [ "$scheme" = static ] && extra=(--calibrate "$out/data/calibration.txt" --method percentile)
  "$bin/edgebert-quantize" "$scheme" "$out/student.onnx" -o "$out/student-int8-$variant.ebm" \
    --tokenizer "$out/student/tokenizer.json" --labels "$out/student/config.json" \
    --eval "$out/data/dev.csv" --max-drop 0.5 --report "$out/quantization-$variant.md" \
    "${extra[@]}" "$@" || echo "$scheme $variant: refused by the accuracy guard or failed"
}

# A bundle's int8 dev accuracy, as quantize measured it (-1 when there is no such bundle).
dev_acc() {
  [ -f "$1" ] || { echo -1; return; }
  "$bin/edgebert" info --json "$1" | python3 -c "import json,sys; m=json.load(sys.stdin)['manifest']['provenance']['metrics']; print([x['value'] for x in m if x['name']=='int8_accuracy'][0])"
}

# better A B NAME_B NAME_A MARGIN: NAME_B when accuracy B beats A by more than MARGIN, else NAME_A.
better() { python3 -c "import sys; print(sys.argv[3] if float(sys.argv[2]) > float(sys.argv[1]) + float(sys.argv[5]) else sys.argv[4])" "$@"; }

# metric NAME KEY: a score from OUT/test-NAME.json.
metric() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['scores'][sys.argv[2]])" "$out/test-$1.json" "$2"; }

# install_reports DEST: the training curves and reports and the quantization report, as a model
# card links them (DEST/teacher-training.png, …).
install_reports() {
  local dest=$1
  mkdir -p "$dest"
  for m in teacher student; do
    cp "$out/$m/training.png" "$dest/$m-training.png"
    sed "s/(training.png)/($m-training.png)/" "$out/$m/report.md" > "$dest/$m-report.md"
  done
  cp "$out/quantization.md" "$out/quantization.png" "$dest/"
}
