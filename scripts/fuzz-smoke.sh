#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ briefly (see fuzz/README.md).
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   search: default 20 s each (FUZZ_SECONDS works
#                                                too), growing a corpus kept between runs
#   scripts/fuzz-smoke.sh --ci                   CI: replay every seed, then a fixed number of
#                                                mutations from a fixed random seed and an
#                                                empty corpus (RUNS_<TARGET> overrides)
#
# The search is open-ended: what it finds depends on luck, machine speed and the corpus earlier
# runs left. That is what a developer wants and what a CI verdict must not be, so --ci makes the
# same commit pass or fail the same way on any machine (about 15 s per target on two cores).
#
# A search stays within FUZZ_TOTAL_SECONDS (default 110, build included): when the build took
# long (the library changed since the last run: about a minute on two cores), the targets get
# less time each, never less than 5 s.
#
# The stable toolchain is enough: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo-fuzz passes.
# Builds into $GA_CACHE_DIR/fuzz-target (default ~/.cache/garden-artifacts), never into the
# repository; the growing corpus and any crash input live next to it. Targets run side by side,
# one per core. Exits 1 when a target crashed, with the input printed in base64.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=search
if [ "${1:-}" = --ci ]; then
  mode=ci
  shift
fi
seconds="${1:-${FUZZ_SECONDS:-20}}"
cache="${GA_CACHE_DIR:-$HOME/.cache/garden-artifacts}"
export CARGO_TARGET_DIR="$cache/fuzz-target"
export RUSTC_BOOTSTRAP=1
work="$cache/fuzz-work"
targets=(reference_parse manifest_parse docker_config spec_to_manifest)
sanitizer="${FUZZ_SANITIZER:-address}"
total="${FUZZ_TOTAL_SECONDS:-110}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

build() {
  (cd fuzz && cargo fuzz build --sanitizer "$1" --target-dir "$CARGO_TARGET_DIR" "${@:2}")
}
started=$SECONDS
if ! build "$sanitizer"; then
  if [ "$sanitizer" = address ]; then
    echo "fuzz-smoke: the AddressSanitizer build failed; building without a sanitizer" >&2
    sanitizer=none
    build none
  else
    exit 1
  fi
fi
echo "fuzz-smoke: built (sanitizer: $sanitizer) in $((SECONDS - started))s" >&2

triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"
jobs="$(nproc 2>/dev/null || echo 2)"
mkdir -p "$work"

# Mutations per target in CI mode: about 15 s each at the speeds of fuzz/FINDINGS.md.
declare -A ci_runs=(
  [reference_parse]="${RUNS_REFERENCE_PARSE:-400000}"
  [manifest_parse]="${RUNS_MANIFEST_PARSE:-100000}"
  [docker_config]="${RUNS_DOCKER_CONFIG:-250000}"
  [spec_to_manifest]="${RUNS_SPEC_TO_MANIFEST:-20000}"
)

# Fit a search into what is left of the total: targets run `jobs` at a time.
batches=$(( (${#targets[@]} + jobs - 1) / jobs ))
left=$(( total - (SECONDS - started) - 8 * batches ))
if [ "$mode" = search ] && [ $(( seconds * batches )) -gt "$left" ]; then
  fitted=$(( left / batches ))
  [ "$fitted" -lt 5 ] && fitted=5
  echo "fuzz-smoke: ${seconds}s per target would exceed ${total}s in all; ${fitted}s each" >&2
  seconds=$fitted
fi

run_one() {
  local target="$1"
  mkdir -p "$work/artifacts/$target"
  rm -f "$work/artifacts/$target"/* "$work/$target.rc"
  local dict=() budget corpus
  [ -f "fuzz/dicts/$target.dict" ] && dict=("-dict=fuzz/dicts/$target.dict")
  if [ "$mode" = ci ]; then
    corpus="$work/ci-corpus/$target"
    rm -rf "$corpus"
    budget=(-seed=1 -runs="${ci_runs[$target]}")
  else
    corpus="$work/corpus/$target"
    budget=(-max_total_time="$seconds")
  fi
  mkdir -p "$corpus"
  # The first folder is the working corpus libFuzzer adds to; the seeds are only read.
  "$bin_dir/$target" "$corpus" "fuzz/seeds/$target" "${dict[@]}" "${budget[@]}" \
    -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/$target/" \
    >"$work/$target.log" 2>&1
  echo "$?" >"$work/$target.rc"
}

for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    sleep 1
  done
  # `|| true`: the exit code goes to $target.rc; set -e must not stop the background shell.
  { run_one "$target" || true; } &
done
wait
failed=()
for target in "${targets[@]}"; do
  if [ "$(cat "$work/$target.rc" 2>/dev/null)" != 0 ]; then
    failed+=("$target")
  fi
done

for target in "${targets[@]}"; do
  log="$work/$target.log"
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  echo "fuzz-smoke: $target: ${runs:-?} runs, ${speed:-?}/s"
done

if [ "${#failed[@]}" -gt 0 ]; then
  for target in "${failed[@]}"; do
    log="$work/$target.log"
    echo "fuzz-smoke: $target FAILED; the end of its log ($log):" >&2
    tail -n 40 "$log" >&2
    for artifact in "$work/artifacts/$target"/*; do
      [ -f "$artifact" ] || continue
      echo "fuzz-smoke: $target input $artifact (base64):" >&2
      base64 -w 76 "$artifact" >&2
      echo "fuzz-smoke: reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target $artifact)" >&2
    done
  done
  exit 1
fi
if [ "$mode" = ci ]; then
  echo "fuzz-smoke: ${#targets[@]} targets, seeds replayed and a fixed run from seed 1, no crash ($((SECONDS - started))s in all)"
else
  echo "fuzz-smoke: ${#targets[@]} targets, ${seconds}s each, no crash ($((SECONDS - started))s in all)"
fi
