#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Controller scale: N GardenArtifacts (one inline `content` file, one tag and `interval: 60s`
# each) created on a real kube-apiserver with the controller running (release binary,
# --concurrency 16), for each N given; each N in an environment of its own (scripts/dev-env.sh
# with a separate GA_STATE_DIR and free ports: etcd, kube-apiserver, a Distribution registry
# with access log), torn down after it. Measures, per N:
#   - convergence: the time from the first create until all N are Ready, and from the last
#     create (the Ready conditions' lastTransitionTime against the creation timestamps, 1 s
#     resolution; the objects are created by bench/py/create_objects.py, THREADS connections),
#     with the controller's CPU seconds per round while converging;
#   - memory: the controller's VmRSS before any object and in the converged window (max),
#     and the difference per object;
#   - a converged resync window of BENCH_WINDOW seconds (default 90 = 1.5 intervals): rounds
#     per second against N / 60 (keeping up), the controller's CPU seconds per round, status
#     writes (garden_artifacts_status_writes_total), objects whose resourceVersion changed,
#     Events created, and the registry's requests in the window (target: one manifest HEAD per
#     tag per round and nothing else).
# With several N it ends with the figures side by side, and the CPU per round of the largest
# N against the smallest (target: within 1.3 x).
#
# usage: bench/controller-scale.sh [N...]     (default 1000; e.g. 1000 5000 10000 20000)
# env:   BENCH_CONCURRENCY [16], BENCH_CREATE_THREADS [8], BENCH_INTERVAL [60] (s),
#        BENCH_WINDOW [90] (s), BENCH_READY_TIMEOUT [900] (s), and those of bench/lib.sh
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="controller-scale"
# shellcheck source=lib.sh
source "${BENCH_DIR}/lib.sh"

SIZES=("$@")
((${#SIZES[@]} > 0)) || SIZES=(1000)
CONCURRENCY="${BENCH_CONCURRENCY:-16}"
THREADS="${BENCH_CREATE_THREADS:-8}"
INTERVAL="${BENCH_INTERVAL:-60}"
WINDOW="${BENCH_WINDOW:-90}"
READY_TIMEOUT="${BENCH_READY_TIMEOUT:-900}"
for n in "${SIZES[@]}"; do
  [[ "${n}" =~ ^[0-9]+$ && "${n}" -ge 1 && "${n}" -le 99999 ]] \
    || ga_die "N must be a number from 1 to 99999, not ${n}"
done

bench_init controller-scale
bench_deps
bench_binary
DEV_ENV="${BENCH_REPO_ROOT}/scripts/dev-env.sh"
HZ="$(getconf CLK_TCK)"

# --- helpers over the controller and the API ---------------------------------------------------
metrics() { curl -fsS "http://127.0.0.1:${METRICS_PORT}/metrics"; }
metric_sum() { # name: the sum of a metric over its label sets
  metrics | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}'
}
vm() { # field of /proc/PID/status, in kB
  awk -v f="$1:" '$1 == f {print $2}' "/proc/${CONTROLLER_PID}/status"
}
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/${CONTROLLER_PID}/stat"; }
per_round() { # TICKS ROUNDS: CPU milliseconds per round
  awk -v t="$1" -v r="$2" -v hz="${HZ}" 'BEGIN {if (r == 0) print "n/a"; else printf "%.3f", 1000 * t / hz / r}'
}
# One line per object: name resourceVersion creation-epoch ready-transition-epoch (or -),
# generation observedGeneration; the API server's list, without kubectl's table work.
listing() {
  kubectl get ga -n bench -o json | jq -r '.items[] | [.metadata.name, .metadata.resourceVersion,
      (.metadata.creationTimestamp | fromdateiso8601),
      ((.status.conditions // [] | map(select(.type == "Ready" and .status == "True"))
        | .[0].lastTransitionTime | if . then fromdateiso8601 else "-" end)),
      .metadata.generation, (.status.observedGeneration // 0)] | @tsv'
}
count_ready() { awk -F'\t' '$4 != "-" && $5 == $6' "$1" | wc -l; }

# run N: one environment, one controller, N objects; appends its figures to SUMMARY.
run() {
  local n="$1" ports=() p
  while ((${#ports[@]} < 5)); do
    p="$(bench_free_port)"
    [[ " ${ports[*]} " == *" ${p} "* ]] || ports+=("${p}")
  done
  export GA_STATE_DIR="${BENCH_TMP}/dev-env-${n}"
  export GA_ETCD_PORT="${ports[0]}" GA_ETCD_PEER_PORT="${ports[1]}"
  export GA_APISERVER_PORT="${ports[2]}" GA_REGISTRY_PORT="${ports[3]}"
  METRICS_PORT="${ports[4]}"
  BENCH_CLEANUP_HOOKS+=("GA_STATE_DIR='${GA_STATE_DIR}' \"${DEV_ENV}\" down >/dev/null 2>&1")
  ga_log "N=${n}: dev-env up (state ${GA_STATE_DIR})"
  "${DEV_ENV}" up >&2 || ga_die "dev-env up failed"
  eval "$("${DEV_ENV}" env)"
  export KUBECONFIG
  local reg="127.0.0.1:${GA_REGISTRY_PORT}" reg_log="${GA_REGISTRY_LOG}"
  kubectl apply -f "${BENCH_REPO_ROOT}/crds/" >&2
  kubectl wait --for condition=established --timeout=60s crd/gardenartifacts.oci.gardenlinux.io >&2
  kubectl create namespace bench >&2

  ga_log "N=${n}: starting the controller (metrics on 127.0.0.1:${METRICS_PORT})"
  "${GA_BIN}" controller --metrics-addr "127.0.0.1:${METRICS_PORT}" --log-format json --leader-elect=false \
    --concurrency "${CONCURRENCY}" >"${BENCH_TMP}/controller-${n}.log" 2>&1 </dev/null &
  CONTROLLER_PID=$!
  BENCH_PIDS+=("${CONTROLLER_PID}")
  ga_wait_for 300 curl -fsS "http://127.0.0.1:${METRICS_PORT}/readyz" \
    || ga_die "the controller is not ready; see ${BENCH_TMP}/controller-${n}.log"
  sleep 3
  local rss_empty ticks0 start_epoch created
  rss_empty="$(vm VmRSS)"

  # --- convergence ---------------------------------------------------------------------------
  bench_wait_quiet "N=${n}: creating the objects, controller converging"
  ticks0="$(cpu_ticks)"
  start_epoch="$(date +%s)"
  created="$(python3 "${BENCH_DIR}/py/create_objects.py" "${GA_KUBE_APISERVER_URL}" \
    "${GA_KUBE_CA_FILE}" "${GA_KUBE_TOKEN_FILE}" bench "${reg}" "${n}" "${INTERVAL}s" "${THREADS}")" \
    || ga_die "creating the objects failed"
  ga_log "N=${n}: created in ${created}s"
  # Cheap first: a new object's status is written once (resyncs write none); then the API's
  # word.
  local deadline=$((start_epoch + READY_TIMEOUT)) ready=0
  while (($(metric_sum garden_artifacts_status_writes_total) < n)) && (($(date +%s) < deadline)); do
    ga_proc_alive "${CONTROLLER_PID}" || ga_die "the controller exited; see ${BENCH_TMP}/controller-${n}.log"
    sleep 1
  done
  while true; do
    listing >"${BENCH_TMP}/list-${n}"
    ready="$(count_ready "${BENCH_TMP}/list-${n}")"
    ((ready == n)) && break
    (($(date +%s) < deadline)) || ga_die "N=${n}: only ${ready} of ${n} Ready after ${READY_TIMEOUT}s"
    sleep 5
  done
  local ticks_ready rounds_ready first_created last_created last_ready
  ticks_ready="$(cpu_ticks)"
  rounds_ready="$(metric_sum garden_artifacts_reconciles_total)"
  read -r first_created last_created last_ready < <(awk -F'\t' '
    NR == 1 {f = $3; l = $3; r = $4}
    {if ($3 < f) f = $3; if ($3 > l) l = $3; if ($4 > r) r = $4}
    END {print f, l, r}' "${BENCH_TMP}/list-${n}")
  local ready_from_first=$((last_ready - first_created)) ready_from_last=$((last_ready - last_created))
  ga_log "N=${n}: all Ready ${ready_from_first}s after the first create, ${ready_from_last}s after the last"

  # --- the converged window ------------------------------------------------------------------
  local prev=-1 writes
  while true; do
    writes="$(metric_sum garden_artifacts_status_writes_total)"
    [[ "${writes}" == "${prev}" ]] && break
    prev="${writes}"
    sleep 5
  done
  local w0 e0 r0 t0 mark rss_max=0 rss
  awk -F'\t' '{print $1, $2}' "${BENCH_TMP}/list-${n}" | sort >"${BENCH_TMP}/rv-${n}.before"
  w0="$(metric_sum garden_artifacts_status_writes_total)"
  e0="$(kubectl get events -n bench -o name | wc -l)"
  r0="$(metric_sum garden_artifacts_reconciles_total)"
  t0="$(cpu_ticks)"
  mark="$(bench_log_mark "${reg_log}")"
  local window_start window_end mark_end
  window_start="$(date +%s)"
  ga_log "N=${n}: converged window of ${WINDOW}s (interval ${INTERVAL}s)"
  for _ in $(seq 1 "${WINDOW}"); do
    rss="$(vm VmRSS)"
    ((rss > rss_max)) && rss_max="${rss}"
    sleep 1
  done
  local t1 r1 w1 e1
  t1="$(cpu_ticks)"
  r1="$(metric_sum garden_artifacts_reconciles_total)"
  mark_end="$(bench_log_mark "${reg_log}")"
  window_end="$(date +%s)"
  w1="$(metric_sum garden_artifacts_status_writes_total)"
  listing | awk -F'\t' '{print $1, $2}' | sort >"${BENCH_TMP}/rv-${n}.after"
  e1="$(kubectl get events -n bench -o name | wc -l)"
  sed -n "$((mark + 1)),${mark_end}p" "${reg_log}" >"${BENCH_TMP}/window-${n}.log"
  bench_requests "${BENCH_TMP}/window-${n}.log" | bench_classify >"${BENCH_TMP}/window-${n}.kinds"
  # The longest any tag went without its HEAD in the window (from the window's start to its
  # first, between two, from its last to the window's end), and how many tags were looked at.
  local longest tags_seen
  read -r longest tags_seen < <(python3 - "${BENCH_TMP}/window-${n}.log" "${window_start}" "${window_end}" <<'PY'
import re, sys, datetime, collections
log, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = collections.defaultdict(list)
pattern = re.compile(r'\[([^\]]+)\] "HEAD /v2/[^ ]*/manifests/([^ ]+) HTTP/[0-9.]+" 200')
for line in open(log):
    m = pattern.search(line)
    if m:
        at = datetime.datetime.strptime(m.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
        seen[m.group(2)].append(at)
longest = 0
for times in seen.values():
    times = [start] + sorted(times) + [end]
    longest = max(longest, max(b - a for a, b in zip(times, times[1:])))
print(int(longest), len(seen))
PY
  )
  local changed rounds heads total hwm
  changed="$(join "${BENCH_TMP}/rv-${n}.before" "${BENCH_TMP}/rv-${n}.after" | awk '$2 != $3' | wc -l)"
  rounds=$((r1 - r0))
  heads="$({ grep -cE '^HEAD manifest 200$' "${BENCH_TMP}/window-${n}.kinds" || true; })"
  total="$(wc -l <"${BENCH_TMP}/window-${n}.kinds")"
  hwm="$(vm VmHWM)"
  bench_stop_pid "${CONTROLLER_PID}"
  "${DEV_ENV}" down >&2 || true

  local rate need cpu_converge cpu_resync per_object
  rate="$(awk -v r="${rounds}" -v w="${WINDOW}" 'BEGIN {printf "%.1f", r / w}')"
  need="$(awk -v n="${n}" -v i="${INTERVAL}" 'BEGIN {printf "%.1f", n / i}')"
  cpu_converge="$(per_round $((ticks_ready - ticks0)) "${rounds_ready}")"
  cpu_resync="$(per_round $((t1 - t0)) "${rounds}")"
  per_object="$(awk -v a="${rss_max}" -v b="${rss_empty}" -v n="${n}" 'BEGIN {printf "%.2f", (a - b) / n}')"

  printf '\n### controller-scale: N=%s GardenArtifacts, interval %ss, --concurrency %s, %s\n\n' \
    "${n}" "${INTERVAL}" "${CONCURRENCY}" "$(bench_machine)"
  printf '| measure | garden-artifacts controller | target | met |\n|---|---:|---|---|\n'
  printf '| objects created (%s connections) | %.1f s | - | - |\n' "${THREADS}" "${created}"
  printf '| all Ready, from the first create | %s s | - | - |\n' "${ready_from_first}"
  printf '| all Ready, from the last create | %s s | <= 60 s | %s |\n' "${ready_from_last}" \
    "$(bench_meets "${ready_from_last}" '<=' 60)"
  printf '| rounds until all Ready (first rounds, and resyncs of those Ready early) | %s | - | - |\n' "${rounds_ready}"
  printf '| controller CPU per round while converging | %s ms | - | - |\n' "${cpu_converge}"
  printf '| controller CPU per round of converged resyncs | %s ms | - | - |\n' "${cpu_resync}"
  printf '| RSS with no object / steady (max over the window) | %s / %s MiB | steady <= 96 MiB | %s |\n' \
    "$(bench_mib "${rss_empty}")" "$(bench_mib "${rss_max}")" "$(bench_meets "$(bench_mib "${rss_max}")" '<=' 96)"
  printf '| RSS per object (steady - empty) / N | %s KiB | - | - |\n' "${per_object}"
  printf '| peak RSS (VmHWM) | %s MiB | - | - |\n' "$(bench_mib "${hwm}")"
  printf '| resync rounds per second in a %s s window | %s | >= N / %s = %s | %s |\n' "${WINDOW}" \
    "${rate}" "${INTERVAL}" "${need}" "$(bench_meets "${rate}" '>=' "$(awk -v x="${need}" 'BEGIN {print x * 0.95}')")"
  printf '| tags looked at in the window / longest a tag went unchecked | %s / %s s | %s / <= 1.1 x %s + 5 s | %s |\n' \
    "${tags_seen}" "${longest}" "${n}" "${INTERVAL}" \
    "$([[ "${tags_seen}" == "${n}" ]] && awk -v l="${longest}" -v i="${INTERVAL}" 'BEGIN {exit !(l <= 1.1 * i + 5)}' && echo yes || echo NO)"
  printf '| status writes in the window | %s | 0 | %s |\n' "$((w1 - w0))" "$(bench_meets $((w1 - w0)) '==' 0)"
  printf '| objects whose resourceVersion changed in the window | %s | 0 | %s |\n' "${changed}" \
    "$(bench_meets "${changed}" '==' 0)"
  printf '| Events created in the window | %s | 0 | %s |\n' "$((e1 - e0))" "$(bench_meets $((e1 - e0)) '==' 0)"
  # A round is counted when it ends, its HEAD when the registry answers: at each edge of the
  # window up to CONCURRENCY rounds can be on either side.
  printf '| registry requests in the window / manifest HEADs / rounds | %s / %s / %s | all HEADs, one per round (one tag each; rounds in flight at the edges aside) | %s |\n' \
    "${total}" "${heads}" "${rounds}" \
    "$([[ "${total}" == "${heads}" ]] && awk -v h="${heads}" -v r="${rounds}" -v c="${CONCURRENCY}" \
      'BEGIN {d = h - r; if (d < 0) d = -d; exit !(d <= c)}' && echo yes || echo NO)"
  printf '\nRegistry requests in the window by method, kind and status:\n'
  sort "${BENCH_TMP}/window-${n}.kinds" | uniq -c | awk '{printf "- %s %s %s: %d\n", $2, $3, $4, $1}'
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${n}" "${created}" "${ready_from_last}" \
    "${rounds_ready}" "${cpu_converge}" "${cpu_resync}" "$(bench_mib "${rss_max}")" "${per_object}" \
    "${rate}" "${need}" "$((w1 - w0))" "${longest}" >>"${BENCH_TMP}/summary"
}

for n in "${SIZES[@]}"; do
  run "${n}"
done

if ((${#SIZES[@]} > 1)); then
  printf '\n### controller-scale side by side\n\n'
  printf '| N | created in | all Ready after the last create | rounds to converge | CPU/round converging | CPU/round resync | steady RSS | RSS/object | resyncs/s (need) | longest unchecked | status writes in window |\n'
  printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
  awk -F'\t' '{printf "| %s | %.1f s | %s s | %s | %s ms | %s ms | %s MiB | %s KiB | %s (%s) | %s s | %s |\n",
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $11}' "${BENCH_TMP}/summary"
  read -r small_n small_cpu < <(sort -n "${BENCH_TMP}/summary" | head -n 1 | cut -f1,6)
  read -r large_n large_cpu < <(sort -n "${BENCH_TMP}/summary" | tail -n 1 | cut -f1,6)
  ratio="$(bench_ratio "${large_cpu}" "${small_cpu}")"
  printf '\nCPU per resync round at N=%s against N=%s: %s x (target <= 1.3 x: %s)\n' \
    "${large_n}" "${small_n}" "${ratio}" "$(bench_meets "${ratio}" '<=' 1.3)"
fi
bench_print_notes
