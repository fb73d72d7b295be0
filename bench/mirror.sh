#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Repository mirror: a source repository of SELECTED + OTHERS tags (default 200 + 100) on one
# Distribution registry, SELECTED of them chosen by a regex, mirrored into another registry by
#   - garden-artifacts mirror SRC DST --include RE
#   - skopeo sync --src yaml --dest docker --all --preserve-digests (images-by-tag-regex: RE)
# The source (bench/py/seed_mirror.py): small real images (two gzipped-tar layers of 2 KiB and
# an OCI config), every tenth tag an OCI index over two platform manifests, 20 % of the tags
# sharing their first layer blob. Release tags 1877.N are selected by ^[0-9]+\.[0-9]+$, the
# nightly-NNN tags are not.
#
# Each of BENCH_RUNS runs mirrors into fresh target registries (new ports: no tool can reuse a
# blob it saw in an earlier run), one per tool, then resyncs each tool into its own converged
# target (the no-op). After the last run a new release tag is pushed upstream and both resync
# again; our requests beyond the no-op are compared with those of mirroring that one tag alone
# into an empty registry.
# Targets (issue 12): first mirror <= 0.5 x skopeo sync's wall time; no-op resync <= 0.2 x
# skopeo's, with nothing but the tag listings and one manifest HEAD per selected tag on each
# side; a new upstream tag costs exactly one artefact's requests beyond the no-op.
#
# usage: bench/mirror.sh [SELECTED [OTHERS]]     (default 200 100)
# env:   BENCH_RUNS [3], and those of bench/lib.sh
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="mirror"
# shellcheck source=lib.sh
source "${BENCH_DIR}/lib.sh"

SELECTED="${1:-200}"
OTHERS="${2:-100}"
RUNS="${BENCH_RUNS:-3}"
[[ "${SELECTED}" =~ ^[0-9]+$ && "${SELECTED}" -ge 1 ]] || ga_die "SELECTED must be a positive number"
[[ "${OTHERS}" =~ ^[0-9]+$ ]] || ga_die "OTHERS must be a number"
[[ "${RUNS}" =~ ^[0-9]+$ && "${RUNS}" -ge 1 ]] || ga_die "BENCH_RUNS must be a positive number"
TOTAL=$((SELECTED + OTHERS))
SRC_REPO="bench/src"
DST_REPO="mirror/src" # skopeo sync puts bench/src under DEST/ as DEST/src: the same for both
REGEX='^[0-9]+\.[0-9]+$'
NEW_TAG="1877.${SELECTED}"

bench_init mirror
ga_apt_install skopeo docker-registry curl jq time python3
bench_binary

bench_registry_start src
SRC="$(bench_reg_addr src)"
ga_log "seeding ${SRC}/${SRC_REPO}: ${SELECTED} release tags, ${OTHERS} nightly tags"
python3 "${BENCH_DIR}/py/seed_mirror.py" "${SRC}" "${SRC_REPO}" "${SELECTED}" "${OTHERS}" \
  >"${BENCH_TMP}/seed.json" || ga_die "seeding failed"
curl -fsS "http://${SRC}/v2/${SRC_REPO}/tags/list?n=10000" | jq -r '.tags[]' >"${BENCH_TMP}/source.tags"
listed="$(wc -l <"${BENCH_TMP}/source.tags")"
matching="$(grep -cE "${REGEX}" "${BENCH_TMP}/source.tags" || true)"
((listed == TOTAL && matching == SELECTED)) \
  || ga_die "source lists ${listed} tags (${matching} matching ${REGEX}); expected ${TOTAL} (${SELECTED})"
ga_log "source: $(cat "${BENCH_TMP}/seed.json")"

cat >"${BENCH_TMP}/sync.yml" <<EOF
${SRC}:
  tls-verify: false
  images-by-tag-regex:
    ${SRC_REPO}: '${REGEX}'
EOF

# --- helpers ----------------------------------------------------------------------------------

# kinds LABEL REGISTRY MARK: the requests logged on REGISTRY since MARK, classified, into
# BENCH_TMP/LABEL.kinds ("METHOD kind STATUS" lines).
kinds() {
  bench_requests "$(bench_reg_log "$2")" "$3" | bench_classify >"${BENCH_TMP}/$1.kinds"
}
# n_of LABEL [ERE]: how many of LABEL's requests match.
n_of() {
  { grep -cE "${2:-.}" "${BENCH_TMP}/$1.kinds" || true; }
}
reg_cpu() { bench_proc_cpu "$(bench_reg_pid "$1")"; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a - b}'; }

ours_mirror() { # LABEL REGISTRY [ARGS...]
  local label="$1" registry="$2"
  shift 2
  bench_timed "${label}" "${GA_BIN}" mirror "${SRC}/${SRC_REPO}" "${registry}/${DST_REPO}" \
    --include "${REGEX}" -o json "$@"
}
skopeo_sync() { # LABEL REGISTRY
  bench_timed "$1" skopeo sync --src yaml --dest docker --dest-tls-verify=false --all \
    --preserve-digests "${BENCH_TMP}/sync.yml" "$2/${DST_REPO%/*}"
}
# expect_ours LABEL SELECTED COPIED UNCHANGED: what our JSON report says.
expect_ours() {
  local got
  got="$(jq -r '"\(.selected) \(.copied) \(.unchanged) \(.failed)"' "${BENCH_TMP}/$1.out")"
  [[ "${got}" == "$2 $3 $4 0" ]] \
    || ga_die "$1: selected/copied/unchanged/failed ${got}; expected $2 $3 $4 0"
}
# expect_tags LABEL REGISTRY COUNT: the target lists COUNT tags, each at the source's digest.
expect_tags() {
  local tag got want bad=0
  curl -fsS "http://$2/v2/${DST_REPO}/tags/list?n=10000" | jq -r '.tags[]' | sort >"${BENCH_TMP}/$1.tags"
  [[ "$(wc -l <"${BENCH_TMP}/$1.tags")" == "$3" ]] \
    || ga_die "$1: target lists $(wc -l <"${BENCH_TMP}/$1.tags") tags; expected $3"
  # The indexes and a sample of the others: same digest on both sides.
  while read -r tag; do
    want="$(index_digest "${SRC}" "${SRC_REPO}" "${tag}")"
    got="$(index_digest "$2" "${DST_REPO}" "${tag}")"
    [[ -n "${want}" && "${got}" == "${want}" ]] || bad=$((bad + 1))
  done < <(grep -E '^1877\.([0-9]*3|[0-9]*0)$' "${BENCH_TMP}/$1.tags")
  ((bad == 0)) || ga_die "$1: ${bad} tags with another digest than the source's"
}
index_digest() { # REGISTRY REPO TAG
  curl -sS -I -H 'Accept: application/vnd.oci.image.index.v1+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$1/v2/$2/manifests/$3" | awk 'tolower($1) == "docker-content-digest:" {print $2}' | tr -d '\r'
}

# --- runs -------------------------------------------------------------------------------------

OURS_FIRST=() SKO_FIRST=() OURS_NOOP=() SKO_NOOP=()
OURS_FIRST_CPU=() SKO_FIRST_CPU=() OURS_RSS=() SKO_RSS=()
for run in $(seq 1 "${RUNS}"); do
  bench_registry_start "ours${run}"
  bench_registry_start "sko${run}"
  OURS="$(bench_reg_addr "ours${run}")"
  SKO="$(bench_reg_addr "sko${run}")"
  # Alternate who goes first: a load that drifts during a run favours neither.
  order=(ours sko)
  ((run % 2 == 0)) && order=(sko ours)
  for who in "${order[@]}"; do
    src_mark="$(bench_log_mark "$(bench_reg_log src)")"
    src_cpu="$(reg_cpu src)"
    dst_cpu="$(reg_cpu "${who}${run}")"
    if [[ "${who}" == ours ]]; then
      bench_wait_quiet "run ${run}: garden-artifacts mirror, first"
      ours_mirror "ours-first-${run}" "${OURS}"
      expect_ours "ours-first-${run}" "${SELECTED}" "${SELECTED}" 0
      OURS_FIRST+=("${BENCH_WALL}")
      OURS_RSS+=("${BENCH_RSS_KB}")
      OURS_FIRST_CPU+=("${BENCH_CPU} / $(minus "$(reg_cpu src)" "${src_cpu}") / $(minus "$(reg_cpu "ours${run}")" "${dst_cpu}")")
      # Counted before expect_tags, whose HEADs and listing are not the tool's.
      kinds "${who}-first-${run}.src" src "${src_mark}"
      kinds "${who}-first-${run}.dst" "${who}${run}" 0
      expect_tags "ours-first-${run}" "${OURS}" "${SELECTED}"
    else
      bench_wait_quiet "run ${run}: skopeo sync, first"
      skopeo_sync "sko-first-${run}" "${SKO}"
      SKO_FIRST+=("${BENCH_WALL}")
      SKO_RSS+=("${BENCH_RSS_KB}")
      SKO_FIRST_CPU+=("${BENCH_CPU} / $(minus "$(reg_cpu src)" "${src_cpu}") / $(minus "$(reg_cpu "sko${run}")" "${dst_cpu}")")
      kinds "${who}-first-${run}.src" src "${src_mark}"
      kinds "${who}-first-${run}.dst" "${who}${run}" 0
      expect_tags "sko-first-${run}" "${SKO}" "${SELECTED}"
    fi
  done
  for who in "${order[@]}"; do
    src_mark="$(bench_log_mark "$(bench_reg_log src)")"
    dst_mark="$(bench_log_mark "$(bench_reg_log "${who}${run}")")"
    if [[ "${who}" == ours ]]; then
      bench_wait_quiet "run ${run}: garden-artifacts mirror, no-op resync"
      ours_mirror "ours-noop-${run}" "${OURS}"
      expect_ours "ours-noop-${run}" "${SELECTED}" 0 "${SELECTED}"
      OURS_NOOP+=("${BENCH_WALL}")
    else
      bench_wait_quiet "run ${run}: skopeo sync, no-op resync"
      skopeo_sync "sko-noop-${run}" "${SKO}"
      SKO_NOOP+=("${BENCH_WALL}")
    fi
    kinds "${who}-noop-${run}.src" src "${src_mark}"
    kinds "${who}-noop-${run}.dst" "${who}${run}" "${dst_mark}"
  done
  if ((run < RUNS)); then
    bench_registry_stop "ours${run}" --purge
    bench_registry_stop "sko${run}" --purge
  fi
done

# --- a new upstream tag, into the last run's converged targets --------------------------------

ga_log "pushing ${NEW_TAG} upstream"
python3 "${BENCH_DIR}/py/seed_mirror.py" "${SRC}" "${SRC_REPO}" --one "${NEW_TAG}" >/dev/null \
  || ga_die "pushing ${NEW_TAG} failed"
for who in ours sko; do
  src_mark="$(bench_log_mark "$(bench_reg_log src)")"
  dst_mark="$(bench_log_mark "$(bench_reg_log "${who}${RUNS}")")"
  if [[ "${who}" == ours ]]; then
    bench_wait_quiet "garden-artifacts mirror, one new upstream tag"
    ours_mirror ours-new "${OURS}"
    expect_ours ours-new "$((SELECTED + 1))" 1 "${SELECTED}"
    OURS_NEW="${BENCH_WALL}"
  else
    bench_wait_quiet "skopeo sync, one new upstream tag"
    skopeo_sync sko-new "${SKO}"
    SKO_NEW="${BENCH_WALL}"
  fi
  kinds "${who}-new.src" src "${src_mark}"
  kinds "${who}-new.dst" "${who}${RUNS}" "${dst_mark}"
done
# One artefact's requests: that tag alone mirrored into an empty registry (the listing aside).
bench_registry_start one
src_mark="$(bench_log_mark "$(bench_reg_log src)")"
bench_timed ours-one "${GA_BIN}" mirror "${SRC}/${SRC_REPO}" "$(bench_reg_addr one)/${DST_REPO}" \
  --include "^${NEW_TAG//./\\.}\$" -o json
expect_ours ours-one 1 1 0
kinds ours-one.src src "${src_mark}"
kinds ours-one.dst one 0

# --- figures ----------------------------------------------------------------------------------

L="${RUNS}" # the run whose no-op is compared with the new tag's resync
OURS_FIRST_MED="$(bench_median "${OURS_FIRST[@]}")"
SKO_FIRST_MED="$(bench_median "${SKO_FIRST[@]}")"
OURS_NOOP_MED="$(bench_median "${OURS_NOOP[@]}")"
SKO_NOOP_MED="$(bench_median "${SKO_NOOP[@]}")"
first_ratio="$(bench_ratio "${OURS_FIRST_MED}" "${SKO_FIRST_MED}")"
noop_ratio="$(bench_ratio "${OURS_NOOP_MED}" "${SKO_NOOP_MED}")"

# No-op requests of our tool, worst run: what may be there, and anything else.
noop_ok=yes noop_worst=""
for run in $(seq 1 "${RUNS}"); do
  s="ours-noop-${run}.src" d="ours-noop-${run}.dst"
  lists=$(($(n_of "${s}" '^GET tags 200$') + $(n_of "${d}" '^GET tags 200$')))
  src_heads="$(n_of "${s}" '^HEAD manifest 200$')"
  dst_heads="$(n_of "${d}" '^HEAD manifest 200$')"
  others=$(($(n_of "${s}") + $(n_of "${d}") - lists - src_heads - dst_heads))
  line="run ${run}: ${lists} listing page(s), ${src_heads} source HEADs, ${dst_heads} target HEADs, ${others} other"
  noop_worst+="${line}; "
  # Listings are allowed in any number of pages (the table's breakdown shows how many).
  if ((src_heads != SELECTED || dst_heads != SELECTED || others != 0)); then
    noop_ok=NO
  fi
done
ours_noop_src="$(n_of "ours-noop-${L}.src")"
ours_noop_dst="$(n_of "ours-noop-${L}.dst")"
sko_noop_src="$(n_of "sko-noop-${L}.src")"
sko_noop_dst="$(n_of "sko-noop-${L}.dst")"
ours_noop_total=$((ours_noop_src + ours_noop_dst))
sko_noop_total=$((sko_noop_src + sko_noop_dst))
ours_new_total=$(($(n_of ours-new.src) + $(n_of ours-new.dst)))
sko_new_total=$(($(n_of sko-new.src) + $(n_of sko-new.dst)))
ours_extra=$((ours_new_total - ours_noop_total))
sko_extra=$((sko_new_total - sko_noop_total))
one_lists=$(($(n_of ours-one.src '^GET tags ') + $(n_of ours-one.dst '^GET tags ')))
one_total=$(($(n_of ours-one.src) + $(n_of ours-one.dst) - one_lists))

{
  printf '\n### mirror: %s of %s tags selected by %s, %s run(s), %s\n\n' "${SELECTED}" "${TOTAL}" \
    "\`${REGEX}\`" "${RUNS}" "$(bench_machine)"
  printf '| measure | garden-artifacts mirror | skopeo sync | ratio ours/skopeo | target | met |\n'
  printf '|---|---:|---:|---:|---|---|\n'
  printf '| first mirror, wall (median) | %.2f s | %.2f s | %s | <= 0.5 | %s |\n' "${OURS_FIRST_MED}" \
    "${SKO_FIRST_MED}" "${first_ratio}" "$(bench_meets "${first_ratio}" '<=' 0.5)"
  printf '| no-op resync, wall (median) | %.2f s | %.2f s | %s | <= 0.2 | %s |\n' "${OURS_NOOP_MED}" \
    "${SKO_NOOP_MED}" "${noop_ratio}" "$(bench_meets "${noop_ratio}" '<=' 0.2)"
  printf '| no-op resync, requests (source + target) | %s + %s | %s + %s | %s | listings + %s HEADs per side, nothing else | %s |\n' \
    "${ours_noop_src}" "${ours_noop_dst}" "${sko_noop_src}" "${sko_noop_dst}" \
    "$(bench_ratio "${ours_noop_total}" "${sko_noop_total}")" "${SELECTED}" "${noop_ok}"
  printf '| new upstream tag, requests beyond the no-op | %s | %s | %s | = one artefact alone: %s | %s |\n' \
    "${ours_extra}" "${sko_extra}" "$(bench_ratio "${ours_extra}" "${sko_extra}")" "${one_total}" \
    "$(bench_meets "${ours_extra}" '==' "${one_total}")"
  printf '| new upstream tag, wall | %.2f s | %.2f s | %s | (for reference) | - |\n' "${OURS_NEW}" "${SKO_NEW}" \
    "$(bench_ratio "${OURS_NEW}" "${SKO_NEW}")"
  printf '| first mirror, CPU s: client / source reg. / target reg. (run 1) | %s | %s | - | (for reference) | - |\n' \
    "${OURS_FIRST_CPU[0]}" "${SKO_FIRST_CPU[0]}"
  printf '| peak RSS (max) | %s MiB | %s MiB | %s | (for reference) | - |\n' \
    "$(bench_mib "$(bench_max "${OURS_RSS[@]}")")" "$(bench_mib "$(bench_max "${SKO_RSS[@]}")")" \
    "$(bench_ratio "$(bench_max "${OURS_RSS[@]}")" "$(bench_max "${SKO_RSS[@]}")")"
}
printf '\nWall times per run (s): first mirror ours %s, skopeo %s; no-op ours %s, skopeo %s.\n' \
  "${OURS_FIRST[*]}" "${SKO_FIRST[*]}" "${OURS_NOOP[*]}" "${SKO_NOOP[*]}"
printf 'Source: %s\n' "$(cat "${BENCH_TMP}/seed.json")"
printf '\nNo-op requests of garden-artifacts mirror, per run: %s\n' "${noop_worst%; }"
breakdown() { # TITLE LABEL...
  local title="$1" label
  shift
  printf '\n%s:\n' "${title}"
  for label in "$@"; do
    printf -- '- %s:' "${label%%.*}"
    printf ' %s' "${label##*.}"
    printf '\n'
    sort "${BENCH_TMP}/${label}.kinds" | uniq -c | awk '{printf "  - %s %s %s: %d\n", $2, $3, $4, $1}'
  done
}
breakdown "First mirror (run 1), by method, kind and status" \
  ours-first-1.src ours-first-1.dst sko-first-1.src sko-first-1.dst
breakdown "No-op resync (run ${L}), by method, kind and status" \
  "ours-noop-${L}.src" "ours-noop-${L}.dst" "sko-noop-${L}.src" "sko-noop-${L}.dst"
breakdown "New upstream tag ${NEW_TAG} then resync, by method, kind and status" \
  ours-new.src ours-new.dst sko-new.src sko-new.dst
breakdown "${NEW_TAG} alone into an empty registry (our reference for one artefact)" ours-one.src ours-one.dst
cat <<EOF

The minimum for a converged mirror is what the target says: the source's tag listing (to see
which tags exist) and one manifest HEAD per selected tag on each side (to see that each still
points where it did): ${SELECTED} + ${SELECTED} HEADs plus the listing pages. skopeo sync (1.9)
copies each selected image one after the other, opening new clients per image (the GET /v2/
lines), and in a resync compares each source manifest with the target's (a GET on each side),
re-PUTting the indexes. Each run's targets are fresh registries on new ports, so skopeo's
blob-info cache (/var/lib/containers/cache) offers it no blob to mount from an earlier run.
EOF
bench_print_notes
