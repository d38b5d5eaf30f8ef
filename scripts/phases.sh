# Sourced by the test scripts: `phase NAME COMMAND...` runs a command and records its wall time;
# the recorded times and the total since phases_start are printed when the script exits.
phases=()
phase() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  phases+=("$(printf '%-34s %5d s' "$name" $((SECONDS - start)))")
}
phases_report() { printf '%s\n' "${phases[@]}" "$(printf '%-34s %5d s' "total (after setup)" $((SECONDS - suite_start)))"; }
phases_start() {
  suite_start=$SECONDS
  trap phases_report EXIT
}
