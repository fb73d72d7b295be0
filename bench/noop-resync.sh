#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# No-op resync: the N artefacts of bench/fan-out.sh are pushed (untimed), then applied again,
# converged, with `garden-artifacts apply -f DIR --concurrency 32`. Target: under 2 s, and
# exactly one HEAD per tag: no GET, no blob request, no write.
# For comparison, the ORAS SDK script of fan-out.sh re-run against its converged registry (it
# has no notion of "already there" for manifests: it re-HEADs every blob and re-PUTs every
# manifest). BENCH_PEER=0 skips it.
#
# usage: bench/noop-resync.sh [N]     (default 1000)
# env:   BENCH_CONCURRENCY [32], BENCH_PEER [1], and those of bench/lib.sh
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="noop-resync"
# shellcheck source=lib.sh
source "${BENCH_DIR}/lib.sh"

N="${1:-1000}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
PEER="${BENCH_PEER:-1}"
[[ "${N}" =~ ^[0-9]+$ && "${N}" -ge 1 ]] || ga_die "N must be a positive number"
REPO="bench/fanout"

bench_init noop-resync
bench_deps
bench_binary

bench_registry_start ours
OURS="$(bench_reg_addr ours)"
DIR="${BENCH_TMP}/fanout"
ga_log "writing ${N} GardenArtifact manifests"
bench_make_fanout "${DIR}" "${N}" "${OURS}" "${REPO}"
ga_log "first apply (converges the registry; not measured)"
# Concurrent objects may fail on a registry race (see bench/RESULTS.md): apply again until
# everything converged, at most 3 times.
for attempt in 1 2 3; do
  if "${GA_BIN}" apply -f "${DIR}" --concurrency "${CONCURRENCY}" >"${BENCH_TMP}/first.out"; then
    break
  fi
  failed="$(grep -c '  failed: ' "${BENCH_TMP}/first.out" || true)"
  BENCH_NOTES+=("first (unmeasured) apply, attempt ${attempt}: ${failed} object(s) failed; applied again")
  ((attempt < 3)) || ga_die "the first apply did not converge in 3 attempts; see ${BENCH_TMP}/first.out"
done
if [[ "${PEER}" == 1 ]]; then
  bench_registry_start oras
  ORAS="$(bench_reg_addr oras)"
  ga_log "first ORAS SDK push (not measured)"
  python3 "${BENCH_DIR}/py/oras_fanout.py" "${DIR}/oras.json" "${ORAS}" \
    || ga_die "the first ORAS SDK push failed"
fi

ours_mark="$(bench_log_mark "$(bench_reg_log ours)")"
bench_wait_quiet "garden-artifacts apply, converged (N=${N})"
cpu0="$(bench_proc_cpu "$(bench_reg_pid ours)")"
bench_timed ours "${GA_BIN}" apply -f "${DIR}" --concurrency "${CONCURRENCY}"
OURS_REG_CPU="$(awk -v a="${cpu0}" -v b="$(bench_proc_cpu "$(bench_reg_pid ours)")" 'BEGIN {printf "%.2f", b - a}')"
OURS_CPU="${BENCH_CPU}"
OURS_WALL="${BENCH_WALL}"
OURS_RSS="${BENCH_RSS_KB}"
unchanged="$(grep -c '  unchanged$' "${BENCH_TMP}/ours.out" || true)"
[[ "${unchanged}" == "${N}" ]] || ga_die "${unchanged} of ${N} objects unchanged; see ${BENCH_TMP}/ours.out"
bench_requests "$(bench_reg_log ours)" "${ours_mark}" | bench_classify >"${BENCH_TMP}/ours.kinds"

if [[ "${PEER}" == 1 ]]; then
  oras_mark="$(bench_log_mark "$(bench_reg_log oras)")"
  bench_wait_quiet "ORAS SDK script, converged (N=${N})"
  cpu0="$(bench_proc_cpu "$(bench_reg_pid oras)")"
  bench_timed oras python3 "${BENCH_DIR}/py/oras_fanout.py" "${DIR}/oras.json" "${ORAS}"
  ORAS_REG_CPU="$(awk -v a="${cpu0}" -v b="$(bench_proc_cpu "$(bench_reg_pid oras)")" 'BEGIN {printf "%.2f", b - a}')"
  ORAS_CPU="${BENCH_CPU}"
  # shellcheck disable=SC2034 # read through ${!name} in peer()
  ORAS_WALL="$(printf "%.2f" "${BENCH_WALL}")"
  bench_requests "$(bench_reg_log oras)" "${oras_mark}" | bench_classify >"${BENCH_TMP}/oras.kinds"
fi

n_of() { # file pattern
  { grep -cE "$2" "$1" || true; }
}
TAGS=$((2 * N))
for who in ours oras; do
  [[ -f "${BENCH_TMP}/${who}.kinds" ]] || continue
  declare -g "${who}_total=$(wc -l <"${BENCH_TMP}/${who}.kinds")"
  declare -g "${who}_head_manifest=$(n_of "${BENCH_TMP}/${who}.kinds" '^HEAD manifest ')"
  declare -g "${who}_get=$(n_of "${BENCH_TMP}/${who}.kinds" '^GET ')"
  declare -g "${who}_blob=$(n_of "${BENCH_TMP}/${who}.kinds" ' (blob|upload|mount) ')"
  declare -g "${who}_write=$(n_of "${BENCH_TMP}/${who}.kinds" '^(POST|PUT|PATCH|DELETE) ')"
done
peer() { # variable name
  if [[ "${PEER}" == 1 ]]; then
    printf '%s' "${!1}"
  else
    printf 'not run'
  fi
}
peer_ratio() { # ours peer-variable
  if [[ "${PEER}" == 1 ]]; then bench_ratio "$1" "${!2}"; else printf -- '-'; fi
}

# shellcheck disable=SC2154 # the *_total etc. are set by declare -g above
{
  printf '\n### noop-resync: N=%s converged artefacts (%s tags), %s\n\n' "${N}" "${TAGS}" "$(bench_machine)"
  printf '| measure | garden-artifacts apply (converged) | ORAS SDK script re-run | ratio ours/peer | target | met |\n'
  printf '|---|---:|---:|---:|---|---|\n'
  printf '| wall time | %.2f s | %s s | %s | < 2 s | %s |\n' "${OURS_WALL}" \
    "$(peer ORAS_WALL)" "$(peer_ratio "${OURS_WALL}" ORAS_WALL)" "$(bench_meets "${OURS_WALL}" '<' 2)"
  printf '| requests | %s | %s | %s | %s (one per tag) | %s |\n' "${ours_total}" "$(peer oras_total)" \
    "$(peer_ratio "${ours_total}" oras_total)" "${TAGS}" "$(bench_meets "${ours_total}" '==' "${TAGS}")"
  printf '| manifest HEADs | %s | %s | %s | %s | %s |\n' "${ours_head_manifest}" "$(peer oras_head_manifest)" \
    "$(peer_ratio "${ours_head_manifest}" oras_head_manifest)" "${TAGS}" \
    "$(bench_meets "${ours_head_manifest}" '==' "${TAGS}")"
  printf '| GETs | %s | %s | - | 0 | %s |\n' "${ours_get}" "$(peer oras_get)" "$(bench_meets "${ours_get}" '==' 0)"
  printf '| blob requests | %s | %s | - | 0 | %s |\n' "${ours_blob}" "$(peer oras_blob)" "$(bench_meets "${ours_blob}" '==' 0)"
  printf '| writes | %s | %s | - | 0 | %s |\n' "${ours_write}" "$(peer oras_write)" "$(bench_meets "${ours_write}" '==' 0)"
  printf '| CPU s: client / its registry | %s / %s | %s | - | (for reference) | - |\n' "${OURS_CPU}" "${OURS_REG_CPU}" \
    "$(if [[ "${PEER}" == 1 ]]; then printf '%s / %s' "${ORAS_CPU}" "${ORAS_REG_CPU}"; else printf 'not run'; fi)"
  printf '| peak RSS | %s MiB | - | - | (for reference) | - |\n' "$(bench_mib "${OURS_RSS}")"
}
printf '\nRequests of the converged apply by method, kind and status:\n'
sort "${BENCH_TMP}/ours.kinds" | uniq -c | awk '{printf "- %s %s %s: %d\n", $2, $3, $4, $1}'
if [[ "${PEER}" == 1 ]]; then
  printf '\nRequests of the ORAS SDK re-run by method, kind and status:\n'
  sort "${BENCH_TMP}/oras.kinds" | uniq -c | awk '{printf "- %s %s %s: %d\n", $2, $3, $4, $1}'
fi
bench_print_notes
