#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Fan-out: N small artefacts (two 4 KiB random layers each, two tags each, one repository),
# described as GardenArtifact manifests with `path:` files, pushed into a fresh registry by
#   - garden-artifacts apply -f DIR --concurrency 32
#   - one Python process with the ORAS SDK (oras.client.OrasClient), one artefact after the
#     other, as a typical script does (bench/py/oras_fanout.py), into another fresh registry.
# Reports wall time, the speed-up, and registry requests per artefact from the access logs.
#
# usage: bench/fan-out.sh [N]     (default 1000)
# env:   BENCH_CONCURRENCY [32], and those of bench/lib.sh
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="fan-out"
# shellcheck source=lib.sh
source "${BENCH_DIR}/lib.sh"

N="${1:-1000}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
[[ "${N}" =~ ^[0-9]+$ && "${N}" -ge 1 ]] || ga_die "N must be a positive number"
REPO="bench/fanout"

bench_init fan-out
bench_deps
bench_binary

bench_registry_start ours
bench_registry_start oras
OURS="$(bench_reg_addr ours)"
ORAS="$(bench_reg_addr oras)"
DIR="${BENCH_TMP}/fanout"
ga_log "writing ${N} GardenArtifact manifests and $((2 * N)) 4 KiB files"
bench_make_fanout "${DIR}" "${N}" "${OURS}" "${REPO}"
# Warm the page cache and Python's imports alike for both.
cat "${DIR}"/data/* >/dev/null
python3 -c 'import oras.client' >/dev/null

bench_wait_quiet "garden-artifacts apply (N=${N})"
# Exit 1 (some object failed) is a result, not a broken benchmark: it is counted and shown.
cpu0="$(bench_proc_cpu "$(bench_reg_pid ours)")"
BENCH_ALLOW_FAIL=1 bench_timed ours "${GA_BIN}" apply -f "${DIR}" --concurrency "${CONCURRENCY}"
OURS_REG_CPU="$(awk -v a="${cpu0}" -v b="$(bench_proc_cpu "$(bench_reg_pid ours)")" 'BEGIN {printf "%.2f", b - a}')"
OURS_CPU="${BENCH_CPU}"
OURS_WALL="${BENCH_WALL}"
OURS_RSS="${BENCH_RSS_KB}"
OURS_RC="${BENCH_RC}"
created="$(grep -c '  created$' "${BENCH_TMP}/ours.out" || true)"
failed="$(grep -c '  failed: ' "${BENCH_TMP}/ours.out" || true)"
((OURS_RC <= 1 && created + failed == N)) \
  || ga_die "apply exited ${OURS_RC}: ${created} created, ${failed} failed of ${N}; see ${BENCH_TMP}/ours.out"

bench_wait_quiet "ORAS SDK script (N=${N})"
cpu0="$(bench_proc_cpu "$(bench_reg_pid oras)")"
bench_timed oras python3 "${BENCH_DIR}/py/oras_fanout.py" "${DIR}/oras.json" "${ORAS}"
ORAS_REG_CPU="$(awk -v a="${cpu0}" -v b="$(bench_proc_cpu "$(bench_reg_pid oras)")" 'BEGIN {printf "%.2f", b - a}')"
ORAS_CPU="${BENCH_CPU}"
ORAS_WALL="${BENCH_WALL}"
ORAS_RSS="${BENCH_RSS_KB}"

# --- requests ---------------------------------------------------------------------------------
bench_requests "$(bench_reg_log ours)" >"${BENCH_TMP}/ours.requests"
bench_requests "$(bench_reg_log oras)" >"${BENCH_TMP}/oras.requests"
tag_puts="$(bench_classify <"${BENCH_TMP}/oras.requests" | grep -c '^PUT manifest 201$' || true)"
[[ "${tag_puts}" == "$((2 * N))" ]] || ga_die "oras: ${tag_puts} manifest PUTs answered 201, expected $((2 * N))"
count() { # file [grep -E pattern on "METHOD kind status"]
  bench_classify <"$1" | { grep -cE "${2:-.}" || true; }
}
per() { awk -v a="$1" -v n="${N}" 'BEGIN {printf "%.2f", a / n}'; }
WRITE_RE='^(POST|PUT|PATCH|DELETE) '
READ_RE='^(GET|HEAD) '
ours_total="$(count "${BENCH_TMP}/ours.requests")"
oras_total="$(count "${BENCH_TMP}/oras.requests")"
ours_writes="$(count "${BENCH_TMP}/ours.requests" "${WRITE_RE}")"
oras_writes="$(count "${BENCH_TMP}/oras.requests" "${WRITE_RE}")"
ours_reads="$(count "${BENCH_TMP}/ours.requests" "${READ_RE}")"
oras_reads="$(count "${BENCH_TMP}/oras.requests" "${READ_RE}")"
speedup="$(bench_ratio "${ORAS_WALL}" "${OURS_WALL}")"
min_writes="$((6 * N + 2))"

printf '\n### fan-out: N=%s artefacts (two 4 KiB layers, two tags each), %s\n\n' "${N}" "$(bench_machine)"
printf '| measure | garden-artifacts apply --concurrency %s | ORAS SDK script (sequential) | ratio | target | met |\n' "${CONCURRENCY}"
printf '|---|---:|---:|---:|---|---|\n'
printf '| wall time | %.2f s | %.2f s | %sx faster | >= 5x faster | %s |\n' \
  "${OURS_WALL}" "${ORAS_WALL}" "${speedup}" "$(bench_meets "${speedup}" '>=' 5)"
printf '| objects failed | %s | 0 | - | 0 | %s |\n' "${failed}" "$(bench_meets "${failed}" '==' 0)"
printf '| requests per artefact | %s | %s | %s | min %s (the 6 writes, plus a look at the tags) | - |\n' \
  "$(per "${ours_total}")" "$(per "${oras_total}")" "$(bench_ratio "${ours_total}" "${oras_total}")" \
  "$(per $((6 * N + 2)))"
printf '| writes per artefact | %s | %s | %s | %s (6, config once: %s in all) | %s |\n' \
  "$(per "${ours_writes}")" "$(per "${oras_writes}")" "$(bench_ratio "${ours_writes}" "${oras_writes}")" \
  "$(per "${min_writes}")" "${min_writes}" "$(bench_meets "${ours_writes}" '<=' "${min_writes}")"
printf '| reads per artefact | %s | %s | %s | (see below) | - |\n' \
  "$(per "${ours_reads}")" "$(per "${oras_reads}")" "$(bench_ratio "${ours_reads}" "${oras_reads}")"
printf '| CPU s: client / its registry | %s / %s | %s / %s | - | (for reference) | - |\n' \
  "${OURS_CPU}" "${OURS_REG_CPU}" "${ORAS_CPU}" "${ORAS_REG_CPU}"
printf '| peak RSS | %s MiB | %s MiB | %s | (for reference) | - |\n' \
  "$(bench_mib "${OURS_RSS}")" "$(bench_mib "${ORAS_RSS}")" "$(bench_ratio "${OURS_RSS}" "${ORAS_RSS}")"

if ((failed > 0)); then
  printf '\nFailures of garden-artifacts apply (exit %s), by message:\n' "${OURS_RC}"
  sed -n -E 's/.*  failed: (PUT|POST|HEAD|GET) [^ ]+: (.*)/- \1 \2/p' "${BENCH_TMP}/ours.out" \
    | sort | uniq -c | awk '{n = $1; $1 = ""; printf "%s (x%d)\n", substr($0, 2), n}'
fi
printf '\nRequests by method, kind and status (count, per artefact):\n'
for who in ours oras; do
  printf -- '- %s:\n' "$([[ "${who}" == ours ]] && echo garden-artifacts || echo 'ORAS SDK')"
  bench_breakdown <"${BENCH_TMP}/${who}.requests" | while IFS=: read -r what n; do
    printf '  - %s: %d (%s)\n' "${what}" "${n}" "$(per "${n}")"
  done
done
cat <<EOF

Theoretical minimum for N new artefacts in one repository: per artefact 2 blob uploads x
(POST + PUT) + 2 manifest PUTs (one per tag) = 6 writes, plus the shared config blob once
(POST + PUT) = $((6 * N + 2)) writes. A declarative tool also has to look before it writes, and
the cheapest look at many new tags of one repository is one tag listing (GET tags/list) rather
than a HEAD per tag: garden-artifacts HEADs tags until 16 of a repository turned out missing
(more are in flight at --concurrency ${CONCURRENCY}), then lists the repository once and HEADs
only the tags the listing has. The ORAS SDK HEADs each blob before uploading, and the script
GETs the manifest once to put it under the second tag (oras-py has no tag call).
EOF
bench_print_notes
