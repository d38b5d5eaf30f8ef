#!/usr/bin/env bash
# Issue-4 speed table: a synthetic tinyllama-1.1b (f16) quantized with RTN to 8/4/3/2-bit, binary
# and ternary, each run by `llmc bench` (prefill and decode tok/s, fraction of the measured memory
# bandwidth). Prints one Markdown table. Quantized files are kept in WORKDIR and reused.
# Usage: bench/bench_quant_speed.sh [BUILD] [WORKDIR] [THREADS] [PROMPT] [GEN] [REPEAT]
set -euo pipefail
build=${1:-build}
work=${2:-/tmp/llmc-bench}
threads=${3:-2}
prompt=${4:-64}
gen=${5:-32}
repeat=${6:-3}
llmc=$build/llmc
mkdir -p "$work"
echo "load before: $(uptime)"
base=$work/tinyllama-f16.llmc
[ -s "$base" ] || "$llmc" synth --shape tinyllama-1.1b --dtype f16 -o "$base" --force

# name | llmc quantize arguments (RTN; default scheme asym, group 32, f16 scales)
formats=(
  "q8 asym g32|--bits 8"
  "q8 sym g32|--bits 8 --scheme sym"
  "q4 asym g32|--bits 4"
  "q4 sym g32|--bits 4 --scheme sym"
  "q3 asym g32|--bits 3"
  "q2 asym g32|--bits 2"
  "binary g32|--scheme binary"
  "ternary g32|--scheme ternary"
  "ternary g32 trits5|--scheme ternary --trits5"
)
reports=()
run_bench() {  # run_bench NAME MODEL
  local json=$work/bench-$(echo "$1" | tr ' ' '_').json
  "$llmc" bench "$2" --prompt-tokens "$prompt" --gen-tokens "$gen" --threads "$threads" --repeat "$repeat" \
    --json "$json" --force >/dev/null
  reports+=("$1|$json")
}
run_bench "f16 (unquantized)" "$base"
for row in "${formats[@]}"; do
  name=${row%%|*}
  args=${row#*|}
  out=$work/tinyllama-$(echo "$name" | tr ' ' '_').llmc
  if [ ! -s "$out" ]; then
    # shellcheck disable=SC2086
    /usr/bin/time -f "  quantize $name: %e s wall, peak RSS %M KiB" \
      "$llmc" quantize "$base" -o "$out" --method rtn $args --threads "$threads" --force >/dev/null
  fi
  run_bench "$name" "$out"
done
echo "load after: $(uptime)"
printf '%s\n' "${reports[@]}" | python3 -c '
import json, sys
print("| weights | bpw | weights MB/token | prefill tok/s | decode tok/s (median / best) | decode GB/s (best) | of measured bandwidth (best) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for line in sys.stdin:
    name, path = line.rstrip("\n").split("|")
    r = json.load(open(path))
    m = r["metrics"]
    bw = m["decode_weight_gb_per_s"] / m["bandwidth_fraction"] if m.get("bandwidth_fraction") else 0
    best = m["decode_tokens_per_second"]["max"]
    gbs = best * m["weight_bytes_per_token"] / 1e9
    print("| %s | %.2f | %.0f | %.1f | %.2f / %.2f | %.2f | %.0f %% of %.1f GB/s |" % (
        name, r["model"]["weights"]["bits_per_weight"], m["weight_bytes_per_token"] / 1e6,
        m["prefill_tokens_per_second"]["max"], m["decode_tokens_per_second"]["median"], best, gbs,
        100 * gbs / bw if bw else 0, bw))
'
