#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The GardenMirror controller at size: one GardenMirror selecting N tags (default 1000) of a
# source repository of N + N/5 tags (bench/py/seed_mirror.py: small real images, some
# indexes, 20 % sharing a blob), on a real kube-apiserver with the controller running (release
# binary), source and target repositories in one Distribution registry with access log
# (scripts/dev-env.sh with a GA_STATE_DIR and free ports of its own, torn down after). Measures:
#   - convergence: from the create until the mirror is Ready with N tags copied, and the
#     controller's CPU seconds for it;
#   - a converged window of BENCH_WINDOW seconds (default: interval + 15 s, so at least one
#     resync falls in it): resync rounds (the source listings that start from the first page),
#     the registry's requests by kind (target: per round the listing pages of each side plus
#     one manifest HEAD per selected tag on each side, nothing else), status writes (the
#     mirror's resourceVersion), Events, the controller's CPU per round and RSS.
#
# usage: bench/mirror-controller.sh [N]
# env:   BENCH_INTERVAL [30] (s), BENCH_WINDOW, BENCH_READY_TIMEOUT [900] (s), and those of
#        bench/lib.sh (GA_BIN, BENCH_MAX_LOAD, BENCH_LOAD_WAIT)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="mirror-controller"
# shellcheck source=lib.sh
source "${BENCH_DIR}/lib.sh"

N="${1:-1000}"
[[ "${N}" =~ ^[0-9]+$ && "${N}" -ge 10 && "${N}" -le 20000 ]] \
  || ga_die "N must be a number from 10 to 20000, not ${N}"
OTHERS=$((N / 5))
INTERVAL="${BENCH_INTERVAL:-30}"
WINDOW="${BENCH_WINDOW:-$((INTERVAL + 15))}"
READY_TIMEOUT="${BENCH_READY_TIMEOUT:-900}"

bench_init mirror-controller
bench_deps
bench_binary
DEV_ENV="${BENCH_REPO_ROOT}/scripts/dev-env.sh"
HZ="$(getconf CLK_TCK)"

vm() { awk -v f="$1:" '$1 == f {print $2}' "/proc/${CONTROLLER_PID}/status"; }
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/${CONTROLLER_PID}/stat"; }
mirror_json() { kubectl get gardenmirror releases -n bench -o json; }

ports=()
while ((${#ports[@]} < 5)); do
  p="$(bench_free_port)"
  [[ " ${ports[*]} " == *" ${p} "* ]] || ports+=("${p}")
done
export GA_STATE_DIR="${BENCH_TMP}/dev-env"
export GA_ETCD_PORT="${ports[0]}" GA_ETCD_PEER_PORT="${ports[1]}"
export GA_APISERVER_PORT="${ports[2]}" GA_REGISTRY_PORT="${ports[3]}"
METRICS_PORT="${ports[4]}"
BENCH_CLEANUP_HOOKS+=("GA_STATE_DIR='${GA_STATE_DIR}' \"${DEV_ENV}\" down >/dev/null 2>&1")
ga_log "dev-env up (state ${GA_STATE_DIR})"
"${DEV_ENV}" up >&2 || ga_die "dev-env up failed"
eval "$("${DEV_ENV}" env)"
export KUBECONFIG
REG="127.0.0.1:${GA_REGISTRY_PORT}"
REG_LOG="${GA_REGISTRY_LOG}"
kubectl apply -f "${BENCH_REPO_ROOT}/crds/" >&2
kubectl wait --for condition=established --timeout=60s crd/gardenmirrors.oci.gardenlinux.io >&2
kubectl create namespace bench >&2

ga_log "seeding ${REG}/upstream/gardenlinux: ${N} release tags and ${OTHERS} others"
python3 "${BENCH_DIR}/py/seed_mirror.py" "${REG}" upstream/gardenlinux "${N}" "${OTHERS}" >/dev/null \
  || ga_die "seeding the source failed"

ga_log "starting the controller (metrics on 127.0.0.1:${METRICS_PORT})"
"${GA_BIN}" controller --metrics-addr "127.0.0.1:${METRICS_PORT}" --log-format json \
  --leader-elect=false >"${BENCH_TMP}/controller.log" 2>&1 </dev/null &
CONTROLLER_PID=$!
BENCH_PIDS+=("${CONTROLLER_PID}")
ga_wait_for 300 curl -fsS "http://127.0.0.1:${METRICS_PORT}/readyz" \
  || ga_die "the controller is not ready; see ${BENCH_TMP}/controller.log"
sleep 2
RSS_EMPTY="$(vm VmRSS)"

bench_wait_quiet "mirroring ${N} tags"
T0="$(cpu_ticks)"
START="$(bench_now)"
kubectl apply -f - >&2 <<EOF
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenMirror
metadata: {name: releases, namespace: bench}
spec:
  source: {repository: ${REG}/upstream/gardenlinux}
  repository: ${REG}/mirror/gardenlinux
  tags: {include: ['^1877\\.']}
  referrers: true
  interval: ${INTERVAL}s
EOF
deadline=$(($(date +%s) + READY_TIMEOUT))
while true; do
  ga_proc_alive "${CONTROLLER_PID}" || ga_die "the controller exited; see ${BENCH_TMP}/controller.log"
  state="$(mirror_json | jq -r '[.status.selected // 0, .status.copied // 0, .status.unchanged // 0,
      ((.status.conditions // []) | map(select(.type == "Ready")) | .[0].status // "-")] | @tsv')"
  read -r selected copied unchanged ready <<<"${state}"
  [[ "${ready}" == True && "${selected}" == "${N}" ]] && break
  (($(date +%s) < deadline)) || ga_die "not Ready after ${READY_TIMEOUT}s: ${state}"
  sleep 0.5
done
CONVERGED="$(bench_elapsed "${START}")"
T_READY="$(cpu_ticks)"
ga_log "Ready in ${CONVERGED}s: ${selected} selected, ${copied} copied, ${unchanged} unchanged"

# The converged window: starts after the first round's status write is in.
sleep 2
VERSION0="$(mirror_json | jq -r .metadata.resourceVersion)"
EVENTS0="$(kubectl get events -n bench -o name | wc -l)"
MARK="$(bench_log_mark "${REG_LOG}")"
T1="$(cpu_ticks)"
RSS_MAX=0
ga_log "converged window of ${WINDOW}s (interval ${INTERVAL}s)"
for _ in $(seq 1 "${WINDOW}"); do
  rss="$(vm VmRSS)"
  ((rss > RSS_MAX)) && RSS_MAX="${rss}"
  sleep 1
done
T2="$(cpu_ticks)"
MARK_END="$(bench_log_mark "${REG_LOG}")"
VERSION1="$(mirror_json | jq -r .metadata.resourceVersion)"
EVENTS1="$(kubectl get events -n bench -o name | wc -l)"
sed -n "$((MARK + 1)),${MARK_END}p" "${REG_LOG}" >"${BENCH_TMP}/window.log"
bench_requests "${BENCH_TMP}/window.log" >"${BENCH_TMP}/window.requests"
bench_classify <"${BENCH_TMP}/window.requests" >"${BENCH_TMP}/window.kinds"
ROUNDS="$(grep -cE '^GET [0-9]+ /v2/upstream/gardenlinux/tags/list(\?n=[0-9]+)?$' "${BENCH_TMP}/window.requests" || true)"
SRC_HEADS="$(grep -cE '^HEAD 200 /v2/upstream/gardenlinux/manifests/' "${BENCH_TMP}/window.requests" || true)"
DST_HEADS="$(grep -cE '^HEAD 200 /v2/mirror/gardenlinux/manifests/' "${BENCH_TMP}/window.requests" || true)"
LISTINGS="$(grep -cE '^GET [0-9]+ /v2/[^ ]+/tags/list' "${BENCH_TMP}/window.requests" || true)"
TOTAL="$(wc -l <"${BENCH_TMP}/window.requests")"
OTHER=$((TOTAL - SRC_HEADS - DST_HEADS - LISTINGS))
HWM="$(vm VmHWM)"
bench_stop_pid "${CONTROLLER_PID}"

cpu_ms() { awk -v t="$1" -v r="$2" -v hz="${HZ}" 'BEGIN {if (r == 0) print "n/a"; else printf "%.1f", 1000 * t / hz / r}'; }
printf '\n### mirror-controller: one GardenMirror of %s tags (source %s tags), interval %ss, %s\n\n' \
  "${N}" "$((N + OTHERS))" "${INTERVAL}" "$(bench_machine)"
printf '| measure | garden-artifacts controller | target | met |\n|---|---:|---|---|\n'
printf '| Ready with %s tags, from the create | %s s | converges | %s |\n' "${N}" "${CONVERGED}" \
  "$([[ "${selected}" == "${N}" && "$((copied + unchanged))" == "${N}" ]] && echo yes || echo NO)"
printf '| controller CPU to converge | %s s | - | - |\n' "$(awk -v t=$((T_READY - T0)) -v hz="${HZ}" 'BEGIN {printf "%.2f", t / hz}')"
printf '| resync rounds in the %s s window | %s | >= 1 | %s |\n' "${WINDOW}" "${ROUNDS}" "$(bench_meets "${ROUNDS}" '>=' 1)"
printf '| status writes in the window (resourceVersion %s -> %s) | %s | 0 | %s |\n' "${VERSION0}" "${VERSION1}" \
  "$([[ "${VERSION0}" == "${VERSION1}" ]] && echo 0 || echo 1+)" "$([[ "${VERSION0}" == "${VERSION1}" ]] && echo yes || echo NO)"
printf '| Events created in the window | %s | 0 | %s |\n' "$((EVENTS1 - EVENTS0))" "$(bench_meets $((EVENTS1 - EVENTS0)) '==' 0)"
# With `referrers: true` a round asks the source once whether it has the referrers API, of
# the first selected tag: one more source HEAD and one referrers request per round.
printf '| manifest HEADs per round: source / target | %s / %s | %s + 1 / %s | %s |\n' \
  "$(bench_ratio "${SRC_HEADS}" "${ROUNDS}" 0)" "$(bench_ratio "${DST_HEADS}" "${ROUNDS}" 0)" "${N}" "${N}" \
  "$([[ "${SRC_HEADS}" == $(((N + 1) * ROUNDS)) && "${DST_HEADS}" == $((N * ROUNDS)) ]] && echo yes || echo NO)"
printf '| tag listing pages per round (both sides) | %s | - | - |\n' "$(bench_ratio "${LISTINGS}" "${ROUNDS}" 1)"
printf '| other registry requests in the window | %s | one referrers request per round: %s | %s |\n' "${OTHER}" \
  "${ROUNDS}" "$(bench_meets "${OTHER}" '==' "${ROUNDS}")"
printf '| controller CPU per resync round | %s ms | - | - |\n' "$(cpu_ms $((T2 - T1)) "${ROUNDS}")"
printf '| RSS with no mirror / in the window (max) / peak | %s / %s / %s MiB | - | - |\n' \
  "$(bench_mib "${RSS_EMPTY}")" "$(bench_mib "${RSS_MAX}")" "$(bench_mib "${HWM}")"
printf '\nRegistry requests in the window by method, kind and status:\n'
sort "${BENCH_TMP}/window.kinds" | uniq -c | awk '{printf "- %s %s %s: %d\n", $2, $3, $4, $1}'
bench_print_notes
