#!/usr/bin/env bash
# Issue-5 decode/prefill speed of sparse models vs dense: a synthetic tinyllama-1.1b (f16), magnitude-pruned to
# 50 %, 70 % and 2:4 with f16 values, the same with 4-bit values (prune, then RTN q4 g32 of the kept values), the
# dense f16 and dense q4 models; `llmc bench` on each, then one table of tok/s and the ratio to the dense model of
# the same value encoding.
# usage: bench/sparse_decode.sh [BUILD] [WORKDIR] [THREADS] [REPEAT]
# Models are generated once into WORKDIR and reused. The machine load (uptime) is printed with the table.
set -euo pipefail
build=${1:-build}
work=${2:-/tmp/llmc-sparse-bench}
threads=${3:-2}
repeat=${4:-5}
llmc=$build/llmc
mkdir -p "$work"
dense=$work/tinyllama-f16.llmc
[ -s "$dense" ] || "$llmc" synth --shape tinyllama-1.1b --dtype f16 -o "$dense" --force
[ -s "$work/dense-q4.llmc" ] || "$llmc" quantize "$dense" -o "$work/dense-q4.llmc" --threads "$threads" --force
prune() {  # prune NAME ARGS...
  local name=$1
  shift
  [ -s "$work/$name-f16.llmc" ] ||
    "$llmc" prune "$dense" -o "$work/$name-f16.llmc" --method magnitude --threads "$threads" --force "$@"
  [ -s "$work/$name-q4.llmc" ] ||
    "$build/sparse_quantize_values" "$work/$name-f16.llmc" "$work/dense-q4.llmc" "$work/$name-q4.llmc"
}
prune s50 --sparsity 0.5
prune s70 --sparsity 0.7
prune nm24 --pattern 2:4

bench() {  # bench FILE -> "decode prefill weight-bytes-per-token": best of REPEAT runs (a shared machine)
  "$llmc" bench "$1" --prompt-tokens 64 --gen-tokens 32 --repeat "$repeat" --threads "$threads" --membw-mib 0 \
    --json - 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)["metrics"]
print(m["decode_tokens_per_second"]["max"], m["prefill_tokens_per_second"]["max"], m["weight_bytes_per_token"])'
}
echo "load before: $(uptime)"
printf "| model | values | weight MB/token | decode tok/s | x dense | prefill-64 tok/s | x dense |\n| --- | --- | --- | --- | --- | --- | --- |\n"
for values in f16 q4; do
  base=$([ "$values" = f16 ] && echo "$dense" || echo "$work/dense-q4.llmc")
  read -r d0 p0 b0 < <(bench "$base")
  printf "| dense | %s | %.0f | %.2f | 1.00 | %.1f | 1.00 |\n" "$values" "$(echo "$b0 / 1000000" | bc -l)" "$d0" "$p0"
  for name in s50 s70 nm24; do
    read -r d p b < <(bench "$work/$name-$values.llmc")
    printf "| %s | %s | %.0f | %.2f | %.2f | %.1f | %.2f |\n" "$name" "$values" "$(echo "$b / 1000000" | bc -l)" "$d" \
      "$(echo "$d / $d0" | bc -l)" "$p" "$(echo "$p / $p0" | bc -l)"
  done
done
echo "load after: $(uptime)"
