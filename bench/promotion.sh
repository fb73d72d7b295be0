#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Promotion: a release of two 1 GiB layers in repository bench/release of one registry is
#   - retagged onto `latest` in the same repository, and
#   - mirrored to another repository (bench/mirror) of the same registry,
# with one `garden-artifacts apply -f DIR` of two GardenArtifacts (source.image). Target: zero
# bytes of blob data transferred: no blob PUT/PATCH (uploads), no blob GET, the mirror's
# blobs mounted (POST ...?mount= answered 201).
# Peer, for comparison: skopeo copy doing the same two copies (latest-skopeo, bench/mirror-skopeo).
#
# usage: bench/promotion.sh [SIZE_MIB]     (default 2048: two layers of 1024 MiB)
# env:   those of bench/lib.sh
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="promotion"
# shellcheck source=lib.sh
source "${BENCH_DIR}/lib.sh"

SIZE_MIB="${1:-2048}"
[[ "${SIZE_MIB}" =~ ^[0-9]+$ && "${SIZE_MIB}" -ge 2 ]] || ga_die "SIZE_MIB must be a number >= 2"
HALF_MIB=$((SIZE_MIB / 2))

BG_PIDS=()
bench_init promotion
bench_deps
bench_binary

DATA="${BENCH_TMP}/data"
mkdir -p "${DATA}"
ga_log "writing two layers of ${HALF_MIB} MiB random data"
bench_random_file "${DATA}/release-1.raw" "${HALF_MIB}" &
BG_PIDS+=("$!")
bench_random_file "${DATA}/release-2.raw" "${HALF_MIB}" &
BG_PIDS+=("$!")
bench_wait_pids "${BG_PIDS[@]}"
BG_PIDS=()
printf '{}' >"${DATA}/config.json"
bench_layer_manifest "${DATA}/manifest.json" "${DATA}/config.json" \
  application/vnd.gardenlinux.bench.release.v1 "${DATA}/release-1.raw" "${DATA}/release-2.raw"
MANIFEST_DIGEST="$(bench_sha256 "${DATA}/manifest.json")"

bench_registry_start reg
REG="$(bench_reg_addr reg)"
REG_PID="$(bench_reg_pid reg)"
ga_log "pushing the release into ${REG}/bench/release:1.0 with curl"
bench_curl_blob "${REG}" bench/release "${DATA}/release-1.raw" &
BG_PIDS+=("$!")
bench_curl_blob "${REG}" bench/release "${DATA}/release-2.raw" &
BG_PIDS+=("$!")
bench_curl_blob "${REG}" bench/release "${DATA}/config.json" &
BG_PIDS+=("$!")
bench_wait_pids "${BG_PIDS[@]}"
BG_PIDS=()
bench_curl_manifest "${REG}" bench/release 1.0 "${DATA}/manifest.json"
rm -f "${DATA}"/release-*.raw

MANIFESTS="${BENCH_TMP}/manifests"
mkdir -p "${MANIFESTS}"
cat >"${MANIFESTS}/promotion.yaml" <<EOF
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata:
  name: release-latest
  namespace: bench
spec:
  repository: ${REG}/bench/release
  tags: ["latest"]
  source:
    image:
      reference: ${REG}/bench/release:1.0
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata:
  name: release-mirror
  namespace: bench
spec:
  repository: ${REG}/bench/mirror
  tags: ["1.0"]
  source:
    image:
      reference: ${REG}/bench/release:1.0
EOF

# Blob bytes in the registry's storage (content-addressed: a transferred blob adds a file).
blob_bytes() {
  find "$(bench_reg_data reg)/docker/registry/v2/blobs" -type f -name data -printf '%s\n' 2>/dev/null \
    | awk '{s += $1} END {printf "%.0f\n", s}'
}
# Bytes the registry process has read with read() (sockets and files): an upper bound of what
# clients sent it.
reg_rchar() { awk '$1 == "rchar:" {print $2}' "/proc/${REG_PID}/io"; }

# $1 label, then the command; sets M_* for the window.
measure() {
  local label="$1" mark store0 rchar0 store1 rchar1
  shift
  mark="$(bench_log_mark "$(bench_reg_log reg)")"
  store0="$(blob_bytes)"
  bench_wait_quiet "${label}"
  rchar0="$(reg_rchar)"
  bench_timed "${label}" "$@"
  rchar1="$(reg_rchar)"
  store1="$(blob_bytes)"
  M_WALL="${BENCH_WALL}"
  M_RSS="${BENCH_RSS_KB}"
  M_READ=$((rchar1 - rchar0))
  M_STORED=$((store1 - store0))
  bench_requests "$(bench_reg_log reg)" "${mark}" | bench_classify >"${BENCH_TMP}/${label}.kinds"
  M_UPLOADS="$({ grep -cE '^(PUT|PATCH) upload ' "${BENCH_TMP}/${label}.kinds" || true; })"
  M_BLOB_GETS="$({ grep -cE '^GET blob ' "${BENCH_TMP}/${label}.kinds" || true; })"
  M_MOUNTS="$({ grep -cE '^POST mount 201$' "${BENCH_TMP}/${label}.kinds" || true; })"
  # Bytes the registry sent as blob bodies (its app log: http.response.written of blob GETs).
  M_SENT="$(awk '/http.request.method=GET/ && /\/blobs\/sha256:/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^http.response.written=/) {split($i, a, "="); s += a[2]}
    } END {printf "%.0f\n", s}' "$(bench_reg_applog reg)")"
  M_TOTAL="$(wc -l <"${BENCH_TMP}/${label}.kinds")"
}

SENT_BEFORE=0
measure ours "${GA_BIN}" apply -f "${MANIFESTS}"
O_WALL="${M_WALL}" O_RSS="${M_RSS}" O_READ="${M_READ}" O_STORED="${M_STORED}" O_UPLOADS="${M_UPLOADS}"
O_GETS="${M_BLOB_GETS}" O_MOUNTS="${M_MOUNTS}" O_SENT=$((M_SENT - SENT_BEFORE)) O_TOTAL="${M_TOTAL}"
SENT_BEFORE="${M_SENT}"
for ref in release:latest mirror:1.0; do
  got="$(bench_manifest_digest "${REG}" "bench/${ref%%:*}" "${ref#*:}")"
  [[ "${got}" == "${MANIFEST_DIGEST}" ]] || ga_die "bench/${ref} is ${got:-absent}, expected ${MANIFEST_DIGEST}"
done

cat >"${BENCH_TMP}/skopeo-promote.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
  docker://${REG}/bench/release:1.0 docker://${REG}/bench/release:latest-skopeo
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
  docker://${REG}/bench/release:1.0 docker://${REG}/bench/mirror-skopeo:1.0
EOF
chmod +x "${BENCH_TMP}/skopeo-promote.sh"
measure skopeo "${BENCH_TMP}/skopeo-promote.sh"
S_WALL="${M_WALL}" S_RSS="${M_RSS}" S_READ="${M_READ}" S_STORED="${M_STORED}" S_UPLOADS="${M_UPLOADS}"
S_GETS="${M_BLOB_GETS}" S_MOUNTS="${M_MOUNTS}" S_SENT=$((M_SENT - SENT_BEFORE)) S_TOTAL="${M_TOTAL}"

mib() { awk -v b="$1" 'BEGIN {printf "%.2f MiB", b / 1048576}'; }
printf '\n### promotion: %s MiB release (two layers of %s MiB): retag onto latest + mirror to another repository, %s\n\n' \
  "${SIZE_MIB}" "${HALF_MIB}" "$(bench_machine)"
printf '| measure | garden-artifacts apply | skopeo copy (x2) | ratio ours/peer | target | met |\n'
printf '|---|---:|---:|---:|---|---|\n'
printf '| blob upload requests (PUT/PATCH) | %s | %s | - | 0 | %s |\n' "${O_UPLOADS}" "${S_UPLOADS}" \
  "$(bench_meets "${O_UPLOADS}" '==' 0)"
printf '| blob GETs | %s | %s | - | 0 | %s |\n' "${O_GETS}" "${S_GETS}" "$(bench_meets "${O_GETS}" '==' 0)"
printf '| blob bytes sent by the registry (GET bodies) | %s | %s | - | 0 | %s |\n' \
  "$(mib "${O_SENT}")" "$(mib "${S_SENT}")" "$(bench_meets "${O_SENT}" '==' 0)"
printf '| bytes read by the registry (sockets + files, /proc/PID/io rchar) | %s | %s | %s | << %s MiB | %s |\n' \
  "$(mib "${O_READ}")" "$(mib "${S_READ}")" "$(bench_ratio "${O_READ}" "${S_READ}" 4)" "${SIZE_MIB}" \
  "$(bench_meets "${O_READ}" '<' 1048576)"
printf '| new blob bytes in storage | %s | %s | - | 0 | %s |\n' "${O_STORED}" "${S_STORED}" \
  "$(bench_meets "${O_STORED}" '==' 0)"
printf '| mount POSTs answered 201 | %s | %s | - | 3 (config + 2 layers) | %s |\n' "${O_MOUNTS}" "${S_MOUNTS}" \
  "$(bench_meets "${O_MOUNTS}" '==' 3)"
printf '| requests | %s | %s | %s | - | - |\n' "${O_TOTAL}" "${S_TOTAL}" "$(bench_ratio "${O_TOTAL}" "${S_TOTAL}")"
printf '| wall time | %.2f s | %.2f s | %s | (for reference) | - |\n' "${O_WALL}" "${S_WALL}" \
  "$(bench_ratio "${O_WALL}" "${S_WALL}")"
printf '| peak RSS | %s MiB | %s MiB | %s | (for reference) | - |\n' "$(bench_mib "${O_RSS}")" \
  "$(bench_mib "${S_RSS}")" "$(bench_ratio "${O_RSS}" "${S_RSS}")"
for who in ours skopeo; do
  printf '\nRequests of %s by method, kind and status:\n' "$([[ "${who}" == ours ]] && echo garden-artifacts || echo skopeo)"
  sort "${BENCH_TMP}/${who}.kinds" | uniq -c | awk '{printf "- %s %s %s: %d\n", $2, $3, $4, $1}'
done
bench_print_notes
