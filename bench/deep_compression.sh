#!/usr/bin/env bash
# Issue-6 Deep Compression path: prune 50 % (SparseGPT) -> share 4-bit (k-means, under the Sparse
# pattern) -> entropy-code the sections; per stage the file size, bits per weight, compression
# ratio against the stage before and against the f32 model, and quality vs the f32 model.
# Usage: bench/deep_compression.sh [BUILD] [WORKDIR] [MODEL]   MODEL: stories260K (default) | smollm2
# Eval settings are the issue's: stories260K on tinystories-sample ctx 256, SmolLM2 on
# wikitext2-test ctx 512, first 20 chunks. Calibration: 32 x 256 tokens of tinyshakespeare.
set -euo pipefail
build=${1:-build}
work=${2:-/tmp/llmc-deep-compression}
model=${3:-stories260K}
src=$(cd "$(dirname "$0")/.." && pwd)
fx=$src/../shared/fixtures
llmc=$build/llmc
mkdir -p "$work"
case $model in
  stories260K)
    in=("$fx/models/stories260K/stories260K.bin" --tokenizer "$fx/models/stories260K/tok512.bin")
    eval_args=(--data "$fx/text/tinystories-sample.txt" --ctx 256) ;;
  smollm2)
    in=("${LLMC_CACHE:-$HOME/.cache/llmc}/SmolLM2-135M-Instruct.gguf")
    eval_args=(--data "$fx/text/wikitext2-test.txt" --ctx 512 --max-chunks 20) ;;
  *) echo "unknown model $model" >&2; exit 2 ;;
esac
calib=(--calib "$fx/text/tinyshakespeare.txt" --calib-samples 32 --calib-ctx 256)
w=$work/$model
# Stage files, each stored without entropy coding except the last (the same tensors as "shared").
"$llmc" convert "${in[@]}" -o "$w-f32.llmc" --dtype f32 --entropy none --force >/dev/null
"$llmc" prune "$w-f32.llmc" -o "$w-pruned.llmc" --sparsity 0.5 --method sparsegpt "${calib[@]}" --entropy none \
  --force >/dev/null 2>&1
"$llmc" share "$w-pruned.llmc" -o "$w-shared.llmc" --bits 4 --entropy none --force >/dev/null 2>&1
"$llmc" convert "$w-shared.llmc" -o "$w-coded.llmc" --entropy auto --force >/dev/null

row() {  # row STAGE FILE PREV_BYTES
  local bytes bpw q
  bytes=$(stat -c %s "$2")
  bpw=$("$llmc" inspect "$2" --json - | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"]["bits_per_weight"])')
  if [ "$1" = f32 ]; then
    q="0 | 100.0 | 1.0000"
  else
    q=$("$llmc" eval "$2" "${eval_args[@]}" --ref "$w-f32.llmc" --json - 2>/dev/null | python3 -c '
import json, sys
k = json.load(sys.stdin)["metrics"]["vs_reference"]
print("%.4f | %.1f | %.4f" % (k["kld"]["mean"], 100 * k["same_top"]["mean"], k["ppl_ratio"]["value"]))')
  fi
  printf "| %s | %d | %.3f | %.2fx | %.2fx | %s |\n" "$1" "$bytes" "$bpw" "$(echo "$3 / $bytes" | bc -l)" \
    "$(echo "$base / $bytes" | bc -l)" "$q"
}
base=$(stat -c %s "$w-f32.llmc")
echo "$model: prune 50 % sparsegpt -> share 4-bit -> entropy auto (eval ${eval_args[*]})"
echo "| stage | file bytes | bpw | x previous | x f32 | mean KLD | top-1 % | PPL ratio |"
echo "| --- | --: | --: | --: | --: | --: | --: | --: |"
row f32 "$w-f32.llmc" "$base"
row "prune 50 % (sparsegpt)" "$w-pruned.llmc" "$base"
row "share 4-bit (k-means)" "$w-shared.llmc" "$(stat -c %s "$w-pruned.llmc")"
row "entropy auto" "$w-coded.llmc" "$(stat -c %s "$w-shared.llmc")"
