#!/usr/bin/env bash
# Issue-2 figures: conversion time/throughput/peak RSS and load times of SmolLM2-135M and a
# synthetic tinyllama-1.1b f16 as raw .llmc, zstd .llmc and GGUF. Usage: bench/load_and_convert.sh [BUILD] [WORKDIR]
set -euo pipefail
build=${1:-build}
work=${2:-/tmp/llmc-bench}
smol=${LLMC_CACHE:-$HOME/.cache/llmc}/SmolLM2-135M-Instruct.gguf
mkdir -p "$work"
llmc=$build/llmc
conv() {  # conv IN OUT ARGS...: prints llmc's summary line plus wall/peak RSS from GNU time
  local in=$1 out=$2; shift 2
  /usr/bin/time -f "  time: %e s wall, peak RSS %M KiB" "$llmc" convert "$in" -o "$out" --force "$@"
}
[ -s "$work/tinyllama-f16.llmc" ] || "$llmc" synth --shape tinyllama-1.1b --dtype f16 -o "$work/tinyllama-f16.llmc" --force
conv "$work/tinyllama-f16.llmc" "$work/tinyllama-f16.gguf"
conv "$work/tinyllama-f16.llmc" "$work/tinyllama-f16-z3.llmc" --zstd 3
conv "$work/tinyllama-f16.gguf" "$work/tinyllama-f16-from-gguf.llmc"
conv "$smol" "$work/smollm2-f32.llmc"
conv "$smol" "$work/smollm2-f32-z3.llmc" --zstd 3
conv "$smol" "$work/smollm2-f16.llmc" --dtype f16
conv "$smol" "$work/smollm2-f16-z3.llmc" --dtype f16 --zstd 3
conv "$smol" "$work/smollm2-q8_0.gguf" --dtype q8_0
"$build/bench_load" --repeat 3 "$smol" "$work"/smollm2-*.llmc "$work/smollm2-q8_0.gguf" \
  "$work/tinyllama-f16.llmc" "$work/tinyllama-f16-z3.llmc" "$work/tinyllama-f16.gguf"
