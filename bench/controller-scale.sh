#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Controller scale: N GardenArtifacts (one inline `content` file and one tag each) applied to a
# real kube-apiserver with the controller running (release binary, --concurrency 16).
# Measures
#   - the time from the start of `kubectl apply` until all N are Ready (polled with
#     `kubectl get ga -o json`; also from the Ready conditions' lastTransitionTime),
#   - the controller's RSS after convergence (VmRSS sampled every second for 30 s: max) and its
#     peak (VmHWM),
#   - API writes per resync of converged objects: spec.interval set to 10s on all, then over a
#     30 s window the controller's garden_artifacts_status_writes_total, the objects'
#     resourceVersions and the Events in the namespace before/after (target: zero writes), and
#     the registry requests of that window (expected: one HEAD per tag per resync).
# The environment is its own: scripts/dev-env.sh with a separate GA_STATE_DIR and free ports
# (etcd, kube-apiserver, a Distribution registry with access log), torn down on exit.
#
# usage: bench/controller-scale.sh [N]     (default 1000)
# env:   BENCH_CONCURRENCY [16], BENCH_KUBECTL_PARALLEL [4] (kubectl processes that apply
#        the objects, each a quarter), BENCH_WINDOW [30] (s), BENCH_READY_TIMEOUT [600] (s),
#        and those of bench/lib.sh
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="controller-scale"
# shellcheck source=lib.sh
source "${BENCH_DIR}/lib.sh"

N="${1:-1000}"
CONCURRENCY="${BENCH_CONCURRENCY:-16}"
PARALLEL="${BENCH_KUBECTL_PARALLEL:-4}"
WINDOW="${BENCH_WINDOW:-30}"
READY_TIMEOUT="${BENCH_READY_TIMEOUT:-600}"
[[ "${N}" =~ ^[0-9]+$ && "${N}" -ge 1 ]] || ga_die "N must be a positive number"

bench_init controller-scale
bench_deps
bench_binary

# --- a dev environment of our own -------------------------------------------------------------
ports=()
while ((${#ports[@]} < 5)); do
  p="$(bench_free_port)"
  [[ " ${ports[*]} " == *" ${p} "* ]] || ports+=("${p}")
done
export GA_STATE_DIR="${BENCH_TMP}/dev-env"
export GA_ETCD_PORT="${ports[0]}" GA_ETCD_PEER_PORT="${ports[1]}"
export GA_APISERVER_PORT="${ports[2]}" GA_REGISTRY_PORT="${ports[3]}"
METRICS_PORT="${ports[4]}"
DEV_ENV="${BENCH_REPO_ROOT}/scripts/dev-env.sh"
BENCH_CLEANUP_HOOKS+=("\"${DEV_ENV}\" down >/dev/null 2>&1")
ga_log "dev-env up (state ${GA_STATE_DIR}; etcd ${GA_ETCD_PORT}, apiserver ${GA_APISERVER_PORT}, registry ${GA_REGISTRY_PORT})"
"${DEV_ENV}" up >&2 || ga_die "dev-env up failed"
eval "$("${DEV_ENV}" env)"
export KUBECONFIG
REG="127.0.0.1:${GA_REGISTRY_PORT}"
REG_LOG="${GA_REGISTRY_LOG}"

kubectl apply -f "${BENCH_REPO_ROOT}/crds/" >&2
kubectl wait --for condition=established --timeout=60s crd/gardenartifacts.oci.gardenlinux.io >&2
kubectl create namespace bench >&2

# --- the objects ------------------------------------------------------------------------------
# write_objects DIR INTERVAL: PARALLEL files of about N/PARALLEL objects each.
write_objects() {
  local dir="$1" interval="$2" i chunk
  mkdir -p "${dir}"
  rm -f "${dir}"/*.yaml
  for ((i = 1; i <= N; i++)); do
    chunk=$(((i - 1) % PARALLEL))
    {
      printf -- '---\napiVersion: oci.gardenlinux.io/v1alpha1\nkind: GardenArtifact\n'
      printf 'metadata:\n  name: scale-%04d\n  namespace: bench\n' "${i}"
      printf 'spec:\n  repository: %s/bench/scale\n  tags: ["%04d"]\n' "${REG}" "${i}"
      [[ -n "${interval}" ]] && printf '  interval: %s\n' "${interval}"
      printf '  source:\n    files:\n      - name: notes-%04d.txt\n' "${i}"
      printf '        mediaType: text/plain\n        content: "artefact %04d\\n"\n' "${i}"
    } >>"${dir}/chunk-${chunk}.yaml"
  done
}

# apply_objects DIR: the chunks with PARALLEL kubectl processes (server-side apply: one request
# per object).
apply_objects() {
  local dir="$1" f pids=() pid rc=0
  for f in "${dir}"/chunk-*.yaml; do
    kubectl apply --server-side -f "${f}" >"${f}.out" 2>&1 &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do
    wait "${pid}" || rc=1
  done
  ((rc == 0)) || { cat "${dir}"/chunk-*.out >&2; ga_die "kubectl apply failed"; }
}

objects_json() { kubectl get ga -n bench -o json; }
count_ready() { # JSON on stdin: objects Ready=True whose status is of the current generation
  jq '[.items[] | select(.status.observedGeneration == .metadata.generation)
       | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length'
}
metric() { # name: the value of an unlabelled metric
  curl -fsS "http://127.0.0.1:${METRICS_PORT}/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
vm() { # field of /proc/PID/status, in kB
  awk -v f="$1:" '$1 == f {print $2}' "/proc/${CONTROLLER_PID}/status"
}

# wait_ready LABEL START: polls until all N are Ready; sets READY_AT (s after START).
wait_ready() {
  local label="$1" start="$2" ready=0 elapsed
  while true; do
    ready="$(objects_json | count_ready)"
    elapsed="$(bench_elapsed "${start}")"
    if ((ready == N)); then
      READY_AT="${elapsed}"
      ga_log "${label}: all ${N} Ready after ${elapsed}s"
      return 0
    fi
    awk -v e="${elapsed}" -v t="${READY_TIMEOUT}" 'BEGIN {exit !(e > t)}' \
      && ga_die "${label}: only ${ready} of ${N} Ready after ${elapsed}s"
    ga_proc_alive "${CONTROLLER_PID}" || ga_die "the controller exited; see ${BENCH_TMP}/controller.log"
    sleep 2
  done
}

# --- the controller ---------------------------------------------------------------------------
ga_log "starting the controller (metrics on 127.0.0.1:${METRICS_PORT})"
"${GA_BIN}" controller --metrics-addr "127.0.0.1:${METRICS_PORT}" --log-format json \
  --leader-elect=false \
  --concurrency "${CONCURRENCY}" >"${BENCH_TMP}/controller.log" 2>&1 </dev/null &
CONTROLLER_PID=$!
BENCH_PIDS+=("${CONTROLLER_PID}")
ga_wait_for 300 curl -fsS "http://127.0.0.1:${METRICS_PORT}/readyz" \
  || ga_die "the controller is not ready; see ${BENCH_TMP}/controller.log"

write_objects "${BENCH_TMP}/objects" ""
bench_wait_quiet "kubectl apply of ${N} objects, controller converging"
START="$(bench_now)"
START_EPOCH="$(date +%s)"
apply_objects "${BENCH_TMP}/objects"
SUBMIT="$(bench_elapsed "${START}")"
ga_log "kubectl apply of ${N} objects took ${SUBMIT}s"
wait_ready "initial" "${START}"
READY_POLLED="${READY_AT}"
LAST_TRANSITION="$(objects_json | jq -r '[.items[].status.conditions[]? | select(.type == "Ready")
  | .lastTransitionTime | fromdateiso8601] | max')"
READY_BY_CONDITIONS=$((LAST_TRANSITION - START_EPOCH))
RECONCILES_INITIAL="$(curl -fsS "http://127.0.0.1:${METRICS_PORT}/metrics" \
  | awk '$1 ~ /^garden_artifacts_reconciles_total/ {s += $2} END {print s + 0}')"

ga_log "sampling the controller's VmRSS for ${WINDOW}s"
RSS_MAX=0
for _ in $(seq 1 "${WINDOW}"); do
  rss="$(vm VmRSS)"
  ((rss > RSS_MAX)) && RSS_MAX="${rss}"
  sleep 1
done
HWM_INITIAL="$(vm VmHWM)"

# --- API writes per resync ----------------------------------------------------------------------
ga_log "setting spec.interval: 10s on all ${N}"
write_objects "${BENCH_TMP}/objects-10s" "10s"
apply_objects "${BENCH_TMP}/objects-10s"
wait_ready "interval 10s" "$(bench_now)"
# Let the status writes of the generation bump settle.
prev=-1
while true; do
  writes="$(metric garden_artifacts_status_writes_total)"
  [[ "${writes}" == "${prev}" ]] && break
  prev="${writes}"
  sleep 5
done
snapshot() { # OUT: name resourceVersion lines
  objects_json | jq -r '.items[] | "\(.metadata.name) \(.metadata.resourceVersion)"' | sort >"$1"
}
events() { kubectl get events -n bench -o json | jq '.items | length'; }
registry_requests() { # OUT
  curl -fsS "http://127.0.0.1:${METRICS_PORT}/metrics" \
    | awk '$1 ~ /^garden_artifacts_registry_requests_total/ {print $1, $2}' >"$1"
}
snapshot "${BENCH_TMP}/rv.before"
W0="$(metric garden_artifacts_status_writes_total)"
E0="$(events)"
R0="$(curl -fsS "http://127.0.0.1:${METRICS_PORT}/metrics" \
  | awk '$1 ~ /^garden_artifacts_reconciles_total/ {s += $2} END {print s + 0}')"
REG_MARK="$(bench_log_mark "${REG_LOG}")"
ga_log "resync window: ${WINDOW}s"
sleep "${WINDOW}"
snapshot "${BENCH_TMP}/rv.after"
W1="$(metric garden_artifacts_status_writes_total)"
E1="$(events)"
R1="$(curl -fsS "http://127.0.0.1:${METRICS_PORT}/metrics" \
  | awk '$1 ~ /^garden_artifacts_reconciles_total/ {s += $2} END {print s + 0}')"
bench_requests "${REG_LOG}" "${REG_MARK}" | bench_classify >"${BENCH_TMP}/window.kinds"
CHANGED="$(join "${BENCH_TMP}/rv.before" "${BENCH_TMP}/rv.after" | awk '$2 != $3' | wc -l)"
STATUS_WRITES=$((W1 - W0))
EVENTS=$((E1 - E0))
RESYNCS=$((R1 - R0))
REG_TOTAL="$(wc -l <"${BENCH_TMP}/window.kinds")"
REG_HEADS="$({ grep -cE '^HEAD manifest 200$' "${BENCH_TMP}/window.kinds" || true; })"
HWM="$(vm VmHWM)"
RSS_NOW="$(vm VmRSS)"
bench_stop_pid "${CONTROLLER_PID}"

printf '\n### controller-scale: N=%s GardenArtifacts, --concurrency %s, %s\n\n' "${N}" "${CONCURRENCY}" "$(bench_machine)"
printf '(No peer: no other tool reconciles GardenArtifacts; the targets are absolute.)\n\n'
printf '| measure | garden-artifacts controller | target | met |\n'
printf '|---|---:|---|---|\n'
printf '| all %s Ready, from the start of kubectl apply (polled every 2 s) | %.1f s | < 60 s | %s |\n' \
  "${N}" "${READY_POLLED}" "$(bench_meets "${READY_POLLED}" '<' 60)"
printf '| last Ready transition (conditions, 1 s resolution), from the start | %s s | < 60 s | %s |\n' \
  "${READY_BY_CONDITIONS}" "$(bench_meets "${READY_BY_CONDITIONS}" '<' 60)"
printf '| kubectl apply --server-side of %s objects (%s processes) | %.1f s | - | - |\n' \
  "${N}" "${PARALLEL}" "${SUBMIT}"
printf '| steady-state RSS after convergence (VmRSS, max of %s s) | %s MiB | < 64 MiB | %s |\n' \
  "${WINDOW}" "$(bench_mib "${RSS_MAX}")" "$(bench_meets "$(bench_mib "${RSS_MAX}")" '<' 64)"
printf '| peak RSS while converging (VmHWM) | %s MiB | - | - |\n' "$(bench_mib "${HWM_INITIAL}")"
printf '| RSS at the end / peak over the whole run | %s / %s MiB | - | - |\n' \
  "$(bench_mib "${RSS_NOW}")" "$(bench_mib "${HWM}")"
printf '| status writes in a %s s window of converged resyncs (interval 10s) | %s | 0 | %s |\n' \
  "${WINDOW}" "${STATUS_WRITES}" "$(bench_meets "${STATUS_WRITES}" '==' 0)"
printf '| objects whose resourceVersion changed in the window | %s | 0 | %s |\n' \
  "${CHANGED}" "$(bench_meets "${CHANGED}" '==' 0)"
printf '| Events created in the window | %s | 0 | %s |\n' "${EVENTS}" "$(bench_meets "${EVENTS}" '==' 0)"
printf '| reconciles in the window (resyncs) | %s | ~%s (N x %s s / 10 s) | - |\n' \
  "${RESYNCS}" "$((N * WINDOW / 10))" "${WINDOW}"
printf '| registry requests in the window | %s | = manifest HEADs (one per tag per resync) | %s |\n' \
  "${REG_TOTAL}" "$(bench_meets "${REG_TOTAL}" '==' "${REG_HEADS}")"
printf '\nRegistry requests in the window by method, kind and status:\n'
sort "${BENCH_TMP}/window.kinds" | uniq -c | awk '{printf "- %s %s %s: %d\n", $2, $3, $4, $1}'
printf '\nReconciles until the first convergence: %s (for %s objects; the first round of each object only adds the finalizer)\n' \
  "${RECONCILES_INITIAL}" "${N}"
bench_print_notes
