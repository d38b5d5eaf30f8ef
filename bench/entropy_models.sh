#!/usr/bin/env bash
# Issue-6 figures: what section coding (--entropy none|zstd|huffman|rans|auto) saves on stories260K
# and SmolLM2-135M quantized with RTN to 4 and 3 bits (asym g32, the default, and sym g128).
# Prints bench_entropy's tables (docs/storage.md "Measurements" records them).
# Usage: bench/entropy_models.sh [BUILD] [WORKDIR]   (quantized files already in WORKDIR are reused)
set -euo pipefail
build=${1:-build}
work=${2:-/tmp/llmc-bench-entropy}
src=$(cd "$(dirname "$0")/.." && pwd)
stories=$src/../shared/fixtures/models/stories260K
smol=${LLMC_CACHE:-$HOME/.cache/llmc}/SmolLM2-135M-Instruct.gguf
mkdir -p "$work"
files=()
for model in stories260K smollm2; do
  if [ "$model" = stories260K ]; then in=("$stories/stories260K.bin" --tokenizer "$stories/tok512.bin"); else in=("$smol"); fi
  for cfg in "4 asym 32" "4 sym 128" "3 asym 32" "3 sym 128"; do
    set -- $cfg
    out=$work/$model-q$1-$2-g$3.llmc
    [ -s "$out" ] || "$build/llmc" quantize "${in[@]}" -o "$out" --method rtn --bits "$1" --scheme "$2" --group-size "$3" --force >/dev/null
    files+=("$out")
  done
done
uptime
"$build/bench_entropy" --reps 1 --fast --dir "$work" "${files[@]}"
