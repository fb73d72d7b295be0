#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Large copy: an artefact with two layers of random data (SIZE_MIB/2 each) in registry A,
# copied to a fresh registry by
#   - garden-artifacts copy A/... B/...          (the engine's source.image, streamed)
#   - skopeo copy docker://A/... docker://B/...
#   - the ORAS Python SDK: pull to a temp dir + push (oras-py has no copy API)
#   - the physical limit: the same blobs PUT straight from local files with curl, both layers
#     (and the config) in parallel, each a POST + one streamed PUT, then the manifest.
# Each tool copies into a FRESH registry (own storage), so nothing is skipped or mounted.
# Wall time: median of BENCH_RUNS runs (tools interleaved); peak RSS: max over the runs.
#
# usage: bench/large-copy.sh [SIZE_MIB]     (default 2048; also run with 256)
# env:   BENCH_RUNS [3], and those of bench/lib.sh (GA_BIN, BENCH_KEEP, BENCH_MAX_LOAD, ...)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="large-copy"
# shellcheck source=lib.sh
source "${BENCH_DIR}/lib.sh"

SIZE_MIB="${1:-2048}"
RUNS="${BENCH_RUNS:-3}"
[[ "${SIZE_MIB}" =~ ^[0-9]+$ && "${SIZE_MIB}" -ge 2 ]] || ga_die "SIZE_MIB must be a number >= 2"
HALF_MIB=$((SIZE_MIB / 2))
TOOLS=(ours skopeo oras curl)
REPO="bench/large"
TAG="1.0"

BG_PIDS=()
bench_init "large-copy-${SIZE_MIB}"
bench_deps
bench_binary

# --- the source artefact ----------------------------------------------------------------------
DATA="${BENCH_TMP}/data"
mkdir -p "${DATA}"
ga_log "writing two layers of ${HALF_MIB} MiB random data"
bench_random_file "${DATA}/disk-1.raw" "${HALF_MIB}" &
BG_PIDS+=("$!")
bench_random_file "${DATA}/disk-2.raw" "${HALF_MIB}" &
BG_PIDS+=("$!")
bench_wait_pids "${BG_PIDS[@]}"
BG_PIDS=()
printf '{}' >"${DATA}/config.json"
bench_layer_manifest "${DATA}/manifest.json" "${DATA}/config.json" \
  application/vnd.gardenlinux.bench.large.v1 "${DATA}/disk-1.raw" "${DATA}/disk-2.raw"
LAYER_DIGESTS=()
mapfile -t LAYER_DIGESTS < <(jq -r '.layers[].digest' "${DATA}/manifest.json")
CONFIG_DIGEST="$(jq -r '.config.digest' "${DATA}/manifest.json")"
MANIFEST_DIGEST="$(bench_sha256 "${DATA}/manifest.json")"

bench_registry_start src
SRC="$(bench_reg_addr src)"
ga_log "pushing the source artefact into ${SRC}/${REPO}:${TAG} with curl"
bench_curl_blob "${SRC}" "${REPO}" "${DATA}/disk-1.raw" "${LAYER_DIGESTS[0]}" &
BG_PIDS+=("$!")
bench_curl_blob "${SRC}" "${REPO}" "${DATA}/disk-2.raw" "${LAYER_DIGESTS[1]}" &
BG_PIDS+=("$!")
bench_curl_blob "${SRC}" "${REPO}" "${DATA}/config.json" "${CONFIG_DIGEST}" &
BG_PIDS+=("$!")
bench_wait_pids "${BG_PIDS[@]}"
BG_PIDS=()
bench_curl_manifest "${SRC}" "${REPO}" "${TAG}" "${DATA}/manifest.json"
[[ "$(bench_manifest_digest "${SRC}" "${REPO}" "${TAG}")" == "${MANIFEST_DIGEST}" ]] \
  || ga_die "the source manifest is not where it should be"

# The physical limit, as its own script so /usr/bin/time measures exactly it.
cat >"${BENCH_TMP}/curl-limit.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
source "${BENCH_DIR}/lib.sh"
registry="\$1"
bench_curl_blob "\${registry}" "${REPO}" "${DATA}/disk-1.raw" "${LAYER_DIGESTS[0]}" &
p1=\$!
bench_curl_blob "\${registry}" "${REPO}" "${DATA}/disk-2.raw" "${LAYER_DIGESTS[1]}" &
p2=\$!
bench_curl_blob "\${registry}" "${REPO}" "${DATA}/config.json" "${CONFIG_DIGEST}" &
p3=\$!
bench_wait_pids "\${p1}" "\${p2}" "\${p3}"
bench_curl_manifest "\${registry}" "${REPO}" "${TAG}" "${DATA}/manifest.json"
EOF
chmod +x "${BENCH_TMP}/curl-limit.sh"

# --- the runs ---------------------------------------------------------------------------------
declare -A WALLS RSSS CPUS
declare -A BREAKDOWN_DST BREAKDOWN_SRC DURATIONS
for run in $(seq 1 "${RUNS}"); do
  for tool in "${TOOLS[@]}"; do
    name="${tool}-${run}"
    bench_registry_start "${name}"
    dst="$(bench_reg_addr "${name}")"
    src_mark="$(bench_log_mark "$(bench_reg_log src)")"
    # Page cache: the source registry's blob files and the local files were just written or
    # read; every tool finds them cached alike.
    bench_wait_quiet "${tool} run ${run} (${SIZE_MIB} MiB)"
    cpu_src0="$(bench_proc_cpu "$(bench_reg_pid src)")"
    cpu_dst0="$(bench_proc_cpu "$(bench_reg_pid "${name}")")"
    case "${tool}" in
      ours)
        bench_timed "${name}" "${GA_BIN}" copy "${SRC}/${REPO}:${TAG}" "${dst}/${REPO}:${TAG}"
        ;;
      skopeo)
        bench_timed "${name}" skopeo copy --src-tls-verify=false --dest-tls-verify=false \
          "docker://${SRC}/${REPO}:${TAG}" "docker://${dst}/${REPO}:${TAG}"
        ;;
      oras)
        mkdir -p "${BENCH_TMP}/oras-work"
        bench_timed "${name}" python3 "${BENCH_DIR}/py/oras_copy.py" \
          "${SRC}/${REPO}:${TAG}" "${dst}/${REPO}:${TAG}" "${BENCH_TMP}/oras-work"
        rm -rf "${BENCH_TMP}/oras-work"
        ;;
      curl)
        bench_timed "${name}" "${BENCH_TMP}/curl-limit.sh" "${dst}"
        ;;
    esac
    CPUS[${tool}]+="$(awk -v c="${BENCH_CPU}" -v s0="${cpu_src0}" -v d0="${cpu_dst0}" \
      -v s1="$(bench_proc_cpu "$(bench_reg_pid src)")" -v d1="$(bench_proc_cpu "$(bench_reg_pid "${name}")")" \
      'BEGIN {printf "%.2f/%.2f/%.2f", c, s1 - s0, d1 - d0}') "
    WALLS[${tool}]+="${BENCH_WALL} "
    RSSS[${tool}]+="${BENCH_RSS_KB} "
    # The copy is complete: same manifest digest (oras-py rebuilds the manifest: its layers).
    if [[ "${tool}" == oras ]]; then
      for digest in "${LAYER_DIGESTS[@]}"; do
        code="$(curl -sS -o /dev/null -w '%{http_code}' -I "http://${dst}/v2/${REPO}/blobs/${digest}")"
        [[ "${code}" == 200 ]] || ga_die "oras: layer ${digest} missing in the target (${code})"
      done
    else
      got="$(bench_manifest_digest "${dst}" "${REPO}" "${TAG}")"
      [[ "${got}" == "${MANIFEST_DIGEST}" ]] \
        || ga_die "${tool}: target manifest digest ${got:-absent}, expected ${MANIFEST_DIGEST}"
    fi
    if [[ "${run}" == 1 ]]; then
      BREAKDOWN_DST[${tool}]="$(bench_requests "$(bench_reg_log "${name}")" | bench_breakdown | paste -sd';' - | sed 's/;/; /g')"
      BREAKDOWN_SRC[${tool}]="$(bench_requests "$(bench_reg_log src)" "${src_mark}" | bench_breakdown | paste -sd';' - | sed 's/;/; /g')"
      # Registry-side durations of the blob PUTs and PATCHes (the upload itself).
      DURATIONS[${tool}]="$(grep -E 'http.request.method=(PUT|PATCH)' "$(bench_reg_applog "${name}")" \
        | grep 'blobs/uploads' \
        | sed -n -E 's/.*http.request.method=([A-Z]+).*http.response.duration=([^ ]+).*/\1 \2/p' \
        | paste -sd',' - | sed 's/,/, /g')"
    fi
    bench_registry_stop "${name}" --purge
  done
done

# --- the table --------------------------------------------------------------------------------
declare -A WALL RSS_MIB
for tool in "${TOOLS[@]}"; do
  # shellcheck disable=SC2086 # word splitting of the space-separated lists is intended
  WALL[${tool}]="$(bench_median ${WALLS[${tool}]})"
  # shellcheck disable=SC2086
  RSS_MIB[${tool}]="$(bench_mib "$(bench_max ${RSSS[${tool}]})")"
done
declare -A LABEL=(
  [skopeo]="skopeo copy"
  [oras]="ORAS SDK pull + push"
  [curl]="curl PUT limit"
)

printf '\n### large-copy: %s MiB (two layers of %s MiB), %s run(s), %s\n\n' \
  "${SIZE_MIB}" "${HALF_MIB}" "${RUNS}" "$(bench_machine)"
printf '| measure | garden-artifacts copy | peer | peer figure | ratio ours/peer | target | met |\n'
printf '|---|---:|---|---:|---:|---|---|\n'
for tool in skopeo curl oras; do
  ratio="$(bench_ratio "${WALL[ours]}" "${WALL[${tool}]}")"
  case "${tool}" in
    skopeo) target="ratio <= 1.00"; met="$(bench_meets "${ratio}" '<=' 1.00)" ;;
    curl) target="ratio <= 1.15"; met="$(bench_meets "${ratio}" '<=' 1.15)" ;;
    *) target="(for reference)"; met="-" ;;
  esac
  printf '| wall time (median) | %.2f s | %s | %.2f s | %s | %s | %s |\n' \
    "${WALL[ours]}" "${LABEL[${tool}]}" "${WALL[${tool}]}" "${ratio}" "${target}" "${met}"
done
for tool in skopeo curl oras; do
  ratio="$(bench_ratio "${RSS_MIB[ours]}" "${RSS_MIB[${tool}]}")"
  if [[ "${tool}" == skopeo ]]; then
    target="ours <= 32 MiB, same at any size"
    met="$(bench_meets "${RSS_MIB[ours]}" '<=' 32)"
  else
    target="(for reference)"
    met="-"
  fi
  printf '| peak RSS (max) | %s MiB | %s | %s MiB | %s | %s | %s |\n' \
    "${RSS_MIB[ours]}" "${LABEL[${tool}]}" "${RSS_MIB[${tool}]}" "${ratio}" "${target}" "${met}"
done

printf '\nAll runs (wall s / peak RSS kB):\n'
for tool in "${TOOLS[@]}"; do
  printf -- '- %s: %s/ %s\n' "${tool}" "${WALLS[${tool}]}" "${RSSS[${tool}]}"
done
printf '\nCPU seconds per run (tool / source registry / target registry):\n'
for tool in "${TOOLS[@]}"; do
  printf -- '- %s: %s\n' "${tool}" "${CPUS[${tool}]}"
done
printf '\nRequests in run 1 (METHOD kind status: count), target registry | source registry:\n'
for tool in "${TOOLS[@]}"; do
  printf -- '- %s: %s | %s\n' "${tool}" "${BREAKDOWN_DST[${tool}]}" "${BREAKDOWN_SRC[${tool}]:-none}"
done
printf '\nRegistry-side duration of each blob upload request (PUT/PATCH) in run 1:\n'
for tool in "${TOOLS[@]}"; do
  printf -- '- %s: %s\n' "${tool}" "${DURATIONS[${tool}]:-none}"
done
bench_print_notes
