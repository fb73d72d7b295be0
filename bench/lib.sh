# shellcheck shell=bash source-path=SCRIPTDIR
# Shared helpers for the benchmarks in bench/. Source it; it defines functions and runs nothing
# except sourcing scripts/lib/common.sh (ga_log, ga_die, ga_apt_install, ga_port_in_use, ...).
#
# Every benchmark:
#   - works in its own temp dir (BENCH_TMP, removed on exit unless BENCH_KEEP=1),
#   - starts its own Distribution registries on free loopback ports with the access log on and
#     stops exactly the processes it started (by pid),
#   - waits for a quiet machine (1-minute load average <= BENCH_MAX_LOAD) before each timed run,
#   - prints one Markdown table (and notes) on stdout; progress goes to stderr.
#
# Environment knobs (all optional):
#   GA_BIN             the garden-artifacts binary [${CARGO_TARGET_DIR:-~/.cache/garden-artifacts/target}/release/garden-artifacts]
#   BENCH_BUILD=1      run `cargo build --release` first even when the binary exists
#   BENCH_TMPDIR       where the temp dir goes [/tmp]
#   BENCH_KEEP=1       keep the temp dir (registry logs, outputs) for inspection
#   BENCH_MAX_LOAD     load average above which a timed run waits [1.0]
#   BENCH_LOAD_WAIT    seconds to wait for that at most before running anyway (noted) [900]

BENCH_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_REPO_ROOT="$(cd "${BENCH_LIB_DIR}/.." && pwd)"
GA_LOG_TAG="${GA_LOG_TAG:-bench}"
# shellcheck source=../scripts/lib/common.sh
source "${BENCH_REPO_ROOT}/scripts/lib/common.sh"

BENCH_TMP=""
BENCH_PIDS=()
BENCH_NOTES=()
# Commands run first on exit (e.g. stopping a dev environment the benchmark brought up).
BENCH_CLEANUP_HOOKS=()
BENCH_MAX_LOAD="${BENCH_MAX_LOAD:-1.0}"
BENCH_LOAD_WAIT="${BENCH_LOAD_WAIT:-900}"

# ---------------------------------------------------------------------------------------------
# Lifecycle

# bench_init NAME: temp dir and cleanup trap.
bench_init() {
  local name="$1"
  mkdir -p "${BENCH_TMPDIR:-/tmp}"
  BENCH_TMP="$(mktemp -d "${BENCH_TMPDIR:-/tmp}/ga-bench-${name}.XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  ga_log "work dir: ${BENCH_TMP}"
}

# Stops what this benchmark started (by pid only), then removes the temp dir.
bench_cleanup() {
  local pid hook
  for hook in "${BENCH_CLEANUP_HOOKS[@]}"; do
    eval "${hook}" || true
  done
  BENCH_CLEANUP_HOOKS=()
  for pid in "${BENCH_PIDS[@]}"; do
    kill -TERM "${pid}" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 1 50); do
      ga_proc_alive "${pid}" || break
      sleep 0.1
    done
    ga_proc_alive "${pid}" && kill -KILL "${pid}" 2>/dev/null
  done
  BENCH_PIDS=()
  if [[ -n "${BENCH_TMP}" && -d "${BENCH_TMP}" ]]; then
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
      ga_log "kept ${BENCH_TMP}"
    else
      rm -rf "${BENCH_TMP}"
    fi
  fi
}

# bench_stop_pid PID: stops one process this benchmark started.
bench_stop_pid() {
  local pid="$1" kept=() p
  kill -TERM "${pid}" 2>/dev/null || true
  for _ in $(seq 1 50); do
    ga_proc_alive "${pid}" || break
    sleep 0.1
  done
  ga_proc_alive "${pid}" && kill -KILL "${pid}" 2>/dev/null
  wait "${pid}" 2>/dev/null || true
  for p in "${BENCH_PIDS[@]}"; do
    [[ "${p}" == "${pid}" ]] || kept+=("${p}")
  done
  BENCH_PIDS=("${kept[@]}")
}

# bench_wait_pids PID...: waits for these background jobs (never a bare `wait`: that would wait
# for the registries too); dies when one failed.
bench_wait_pids() {
  local pid rc=0
  for pid in "$@"; do
    wait "${pid}" || rc=1
  done
  ((rc == 0)) || ga_die "a background job failed"
}

# ---------------------------------------------------------------------------------------------
# Dependencies

# What every benchmark compares against or measures with.
bench_deps() {
  ga_apt_install skopeo docker-registry curl jq time python3 python3-pip
  if ! python3 -c 'import oras.client' >/dev/null 2>&1; then
    ga_log "pip install oras (the ORAS Python SDK)"
    python3 -m pip install -q oras >&2 \
      || python3 -m pip install -q --break-system-packages oras >&2 \
      || ga_die "pip install oras failed"
  fi
}

# Sets GA_BIN to the release binary, building it when missing (or when BENCH_BUILD=1).
bench_binary() {
  local target="${CARGO_TARGET_DIR:-${GA_CACHE_DIR}/target}"
  GA_BIN="${GA_BIN:-${target}/release/garden-artifacts}"
  if [[ "${BENCH_BUILD:-0}" == 1 || ! -x "${GA_BIN}" ]]; then
    command -v cargo >/dev/null 2>&1 || ga_die "cargo is needed to build ${GA_BIN}"
    ga_log "cargo build --release (target dir ${target})"
    (cd "${BENCH_REPO_ROOT}" && CARGO_TARGET_DIR="${target}" cargo build --release >&2) \
      || ga_die "cargo build --release failed"
    GA_BIN="${target}/release/garden-artifacts"
  fi
  [[ -x "${GA_BIN}" ]] || ga_die "no binary at ${GA_BIN}"
  ga_log "binary: ${GA_BIN} ($("${GA_BIN}" --version))"
}

# ---------------------------------------------------------------------------------------------
# Ports and registries

# A free loopback TCP port (the kernel's choice; the caller checks it got it).
bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# bench_registry_start NAME: a Distribution registry with its own storage under
# BENCH_TMP/reg-NAME, access log (one line per request) in access.log and the application log
# (info: one "response completed" line per request with its duration) in app.log.
bench_registry_start() {
  local name="$1" dir port pid attempt
  dir="${BENCH_TMP}/reg-${name}"
  mkdir -p "${dir}/data"
  for attempt in 1 2 3 4 5; do
    port="$(bench_free_port)"
    cat >"${dir}/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${dir}/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
  secret: garden-artifacts-bench
EOF
    : >"${dir}/access.log"
    : >"${dir}/app.log"
    docker-registry serve "${dir}/config.yml" >"${dir}/access.log" 2>"${dir}/app.log" </dev/null &
    pid=$!
    BENCH_PIDS+=("${pid}")
    for _ in $(seq 1 200); do
      if grep -q "listening on 127.0.0.1:${port}" "${dir}/app.log" 2>/dev/null \
        && curl -fsS -o /dev/null "http://127.0.0.1:${port}/v2/" 2>/dev/null; then
        printf '%s\n' "127.0.0.1:${port}" >"${dir}/addr"
        printf '%s\n' "${pid}" >"${dir}/pid"
        # The readiness probe is not part of any measurement.
        : >"${dir}/access.log"
        ga_log "registry ${name}: 127.0.0.1:${port} (pid ${pid}, storage ${dir}/data)"
        return 0
      fi
      ga_proc_alive "${pid}" || break
      sleep 0.05
    done
    bench_stop_pid "${pid}"
    ga_log "registry ${name}: attempt ${attempt} on port ${port} failed; retrying"
  done
  ga_die "registry ${name} did not start; see ${dir}/app.log"
}

bench_reg_addr() { cat "${BENCH_TMP}/reg-$1/addr"; }
bench_reg_pid() { cat "${BENCH_TMP}/reg-$1/pid"; }
bench_reg_log() { printf '%s\n' "${BENCH_TMP}/reg-$1/access.log"; }
bench_reg_applog() { printf '%s\n' "${BENCH_TMP}/reg-$1/app.log"; }
bench_reg_data() { printf '%s\n' "${BENCH_TMP}/reg-$1/data"; }

# bench_registry_stop NAME [--purge]: stops it; --purge also deletes its storage.
bench_registry_stop() {
  local name="$1"
  bench_stop_pid "$(bench_reg_pid "${name}")"
  if [[ "${2:-}" == --purge ]]; then
    rm -rf "$(bench_reg_data "${name}")"
  fi
}

# bench_log_mark FILE: the number of lines so far (count requests after it).
bench_log_mark() {
  wc -l <"$1" | tr -d ' '
}

# bench_requests ACCESS_LOG [AFTER_LINE]: one "METHOD STATUS URI" line per request logged after
# line AFTER_LINE (default 0).
bench_requests() {
  local log="$1" after="${2:-0}"
  tail -n "+$((after + 1))" "${log}" \
    | sed -n -E 's/.*"([A-Z]+) ([^ ]+) HTTP\/[0-9.]+" ([0-9]{3}) .*/\1 \3 \2/p'
}

# Classifies request lines (from bench_requests, on stdin) into kinds, one per line:
#   "METHOD kind STATUS", kind one of manifest, blob, upload, mount, tags, referrers, base.
bench_classify() {
  awk '{
    m = $1; s = $2; u = $3; k = "other"
    if (u ~ /^\/v2\/?$/) k = "base"
    else if (u ~ /\/manifests\//) k = "manifest"
    else if (u ~ /\/blobs\/uploads\/\?.*mount=/) k = "mount"
    else if (u ~ /\/blobs\/uploads\//) k = "upload"
    else if (u ~ /\/blobs\//) k = "blob"
    else if (u ~ /\/tags\/list/) k = "tags"
    else if (u ~ /\/referrers\//) k = "referrers"
    print m, k, s
  }'
}

# Counts on stdin (request lines) by METHOD only: "HEAD=2000 PUT=6 ..." sorted by method.
bench_count_methods() {
  awk '{n[$1]++} END {for (m in n) printf "%s=%d\n", m, n[m]}' | sort | paste -sd' ' -
}

# Counts on stdin (request lines) by METHOD kind STATUS: "PUT upload 201: 2000" lines.
bench_breakdown() {
  bench_classify | sort | uniq -c | awk '{printf "%s %s %s: %d\n", $2, $3, $4, $1}'
}

# ---------------------------------------------------------------------------------------------
# Machine state and timing

bench_loadavg() { cut -d' ' -f1 /proc/loadavg; }

# Waits until the 1-minute load average is <= BENCH_MAX_LOAD (other people compile on this
# machine); after BENCH_LOAD_WAIT seconds it runs anyway. Records one note per run: the uptime
# line at the start, how long it waited, and whether the load was still too high.
bench_wait_quiet() {
  local label="$1" waited=0 load note
  load="$(bench_loadavg)"
  while awk -v l="${load}" -v m="${BENCH_MAX_LOAD}" 'BEGIN {exit !(l > m)}'; do
    if ((waited >= BENCH_LOAD_WAIT)); then
      ga_log "${label}: load still ${load} after ${waited}s; running anyway (noted)"
      break
    fi
    ((waited == 0)) && ga_log "${label}: load average ${load} > ${BENCH_MAX_LOAD}; waiting"
    sleep 10
    waited=$((waited + 10))
    load="$(bench_loadavg)"
  done
  BENCH_UPTIME="$(uptime | sed -E 's/^ *//')"
  note="${label}: uptime at start: ${BENCH_UPTIME}"
  ((waited > 0)) && note+="; waited ${waited}s"
  if awk -v l="${load}" -v m="${BENCH_MAX_LOAD}" 'BEGIN {exit !(l > m)}'; then
    note+="; LOAD ABOVE ${BENCH_MAX_LOAD}"
  fi
  BENCH_NOTES+=("${note}")
  ga_log "${note}"
}

bench_now() { date +%s.%N; }

# bench_proc_cpu PID: CPU seconds (user + system) the process has used so far.
bench_proc_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$1/stat"
}

# bench_elapsed START [END]: seconds with 3 decimals.
bench_elapsed() {
  local end="${2:-$(bench_now)}"
  awk -v s="$1" -v e="${end}" 'BEGIN {printf "%.3f", e - s}'
}

# bench_timed LABEL CMD...: runs CMD under /usr/bin/time -v, stdout/stderr to
# BENCH_TMP/LABEL.out/.err. Sets BENCH_WALL (s), BENCH_RSS_KB (peak RSS of the largest
# process: GNU time reports the child's ru_maxrss) and BENCH_RC. Dies when CMD fails, unless
# BENCH_ALLOW_FAIL=1 (the caller then judges BENCH_RC and the output).
bench_timed() {
  local label="$1" start end rc=0
  shift
  start="$(bench_now)"
  /usr/bin/time -v -o "${BENCH_TMP}/${label}.time" "$@" \
    >"${BENCH_TMP}/${label}.out" 2>"${BENCH_TMP}/${label}.err" || rc=$?
  end="$(bench_now)"
  BENCH_WALL="$(bench_elapsed "${start}" "${end}")"
  BENCH_RSS_KB="$(sed -n -E 's/^[[:space:]]*Maximum resident set size \(kbytes\): ([0-9]+)/\1/p' \
    "${BENCH_TMP}/${label}.time")"
  # shellcheck disable=SC2034 # read by the benchmark scripts
  BENCH_CPU="$(awk -F': ' '/^[[:space:]]*(User|System) time \(seconds\)/ {s += $2} END {printf "%.2f", s}' \
    "${BENCH_TMP}/${label}.time")"
  # shellcheck disable=SC2034 # read by the benchmark scripts
  BENCH_RC="${rc}"
  if ((rc != 0)); then
    ga_log "${label} exited ${rc}; stderr:"
    tail -n 30 "${BENCH_TMP}/${label}.err" >&2
    [[ "${BENCH_ALLOW_FAIL:-0}" == 1 ]] || ga_die "${label} failed"
  fi
  ga_log "${label}: ${BENCH_WALL}s, peak RSS $(bench_mib "${BENCH_RSS_KB}") MiB"
}

# kB -> MiB with one decimal.
bench_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# bench_ratio A B [DECIMALS]: A / B.
bench_ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {if (b == 0) print "n/a"; else printf "%.*f", d, a / b}'; }

# bench_median NUMBERS...: the median (lower middle for an even count).
bench_median() {
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}

# bench_max NUMBERS...
bench_max() {
  printf '%s\n' "$@" | sort -g | tail -n 1
}

# bench_meets VALUE OP LIMIT: "yes" or "NO" (OP one of <= < >= >, ==).
bench_meets() {
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
    ok = (op == "<=") ? v <= l : (op == "<") ? v < l : (op == ">=") ? v >= l : (op == ">") ? v > l : v == l
    print (ok ? "yes" : "NO")
  }'
}

# One line about the machine, for the table header.
bench_machine() {
  printf 'nproc %s, memory %s, kernel %s, registry storage %s (%s)' "$(nproc)" \
    "$(free -h | awk '/^Mem:/ {print $2}')" "$(uname -r)" \
    "${BENCH_TMPDIR:-/tmp}" "$(stat -f -c %T "${BENCH_TMPDIR:-/tmp}")"
}

# Prints the notes collected by bench_wait_quiet and others.
bench_print_notes() {
  local note
  ((${#BENCH_NOTES[@]} == 0)) && return 0
  printf '\nNotes:\n'
  for note in "${BENCH_NOTES[@]}"; do
    printf -- '- %s\n' "${note}"
  done
}

# ---------------------------------------------------------------------------------------------
# Content

# bench_random_file PATH MIB: MIB MiB of random bytes (fast: AES-CTR keystream, not urandom).
bench_random_file() {
  local path="$1" mib="$2"
  local bytes=$((mib * 1024 * 1024)) key
  if command -v openssl >/dev/null 2>&1; then
    key="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    # openssl dies of SIGPIPE when head has enough: that is the expected end.
    { openssl enc -aes-128-ctr -pass "pass:${key}" -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } \
      | head -c "${bytes}" >"${path}"
  else
    head -c "${bytes}" /dev/urandom >"${path}"
  fi
  [[ "$(stat -c %s "${path}")" == "${bytes}" ]] || ga_die "could not write ${mib} MiB to ${path}"
}

bench_sha256() { printf 'sha256:%s\n' "$(sha256sum "$1" | cut -d' ' -f1)"; }

# bench_curl_blob REGISTRY REPO FILE: uploads FILE as a blob, monolithically (POST, then one
# streamed PUT), the fewest requests the API allows. Prints nothing; dies on failure.
bench_curl_blob() {
  local registry="$1" repo="$2" file="$3" digest location code
  digest="${4:-$(bench_sha256 "${file}")}"
  location="$(curl -fsS -X POST -D - -o /dev/null "http://${registry}/v2/${repo}/blobs/uploads/" \
    | awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')"
  [[ -n "${location}" ]] || ga_die "POST /v2/${repo}/blobs/uploads/ gave no Location"
  [[ "${location}" == http* ]] || location="http://${registry}${location}"
  case "${location}" in
    *\?*) location="${location}&digest=${digest}" ;;
    *) location="${location}?digest=${digest}" ;;
  esac
  code="$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Expect:' \
    -H 'Content-Type: application/octet-stream' -T "${file}" "${location}")"
  [[ "${code}" == 201 ]] || ga_die "PUT of ${file} into ${registry}/${repo} answered ${code}"
}

# bench_curl_manifest REGISTRY REPO REF FILE [MEDIATYPE]: PUT a manifest.
bench_curl_manifest() {
  local registry="$1" repo="$2" ref="$3" file="$4" code
  local media_type="${5:-application/vnd.oci.image.manifest.v1+json}"
  code="$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: ${media_type}" \
    --data-binary "@${file}" "http://${registry}/v2/${repo}/manifests/${ref}")"
  [[ "${code}" == 201 ]] || ga_die "PUT manifest ${registry}/${repo}:${ref} answered ${code}"
}

# bench_manifest_digest REGISTRY REPO REF: the digest the registry reports ("" when absent).
bench_manifest_digest() {
  curl -sS -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$1/v2/$2/manifests/$3" | awk 'tolower($1) == "docker-content-digest:" {print $2}' | tr -d '\r'
}

# bench_layer_manifest OUT CONFIG_FILE ARTIFACT_TYPE FILE...: an OCI image manifest over the files
# (media type application/octet-stream, title = basename), config = CONFIG_FILE as OCI empty.
bench_layer_manifest() {
  local out="$1" config="$2" artifact_type="$3" f layers="[]"
  shift 3
  for f in "$@"; do
    layers="$(jq -c --arg d "$(bench_sha256 "${f}")" --argjson s "$(stat -c %s "${f}")" \
      --arg t "$(basename "${f}")" \
      '. + [{mediaType: "application/octet-stream", digest: $d, size: $s,
             annotations: {"org.opencontainers.image.title": $t}}]' <<<"${layers}")"
  done
  jq -cn --arg cd "$(bench_sha256 "${config}")" --argjson cs "$(stat -c %s "${config}")" \
    --arg at "${artifact_type}" --argjson layers "${layers}" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      artifactType: $at,
      config: {mediaType: "application/vnd.oci.empty.v1+json", digest: $cd, size: $cs},
      layers: $layers}' >"${out}"
}

# bench_make_fanout DIR N REGISTRY REPO: N GardenArtifact manifests in DIR (one file each,
# art-NNNN.yaml), each with two 4 KiB random layers (files under DIR/data, `path:` sources) and
# two tags (NNNN and NNNN-latest) in REGISTRY/REPO. Also writes DIR/oras.json, the same
# artefacts (repository, files, tags) for bench/py/oras_fanout.py, which takes the registry
# as an argument.
bench_make_fanout() {
  local dir="$1" n="$2" registry="$3" repo="$4"
  mkdir -p "${dir}/data"
  python3 - "${dir}" "${n}" "${registry}" "${repo}" <<'PY'
import json, os, sys
d, n, registry, repo = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
entries = []
for i in range(1, n + 1):
    name = f"art-{i:04d}"
    files = []
    for part in ("a", "b"):
        fname = f"{name}-{part}.bin"
        with open(os.path.join(d, "data", fname), "wb") as f:
            f.write(os.urandom(4096))
        files.append(fname)
    tags = [f"{i:04d}", f"{i:04d}-latest"]
    with open(os.path.join(d, f"{name}.yaml"), "w") as f:
        f.write(
            "apiVersion: oci.gardenlinux.io/v1alpha1\n"
            "kind: GardenArtifact\n"
            f"metadata:\n  name: {name}\n  namespace: bench\n"
            "spec:\n"
            f"  repository: {registry}/{repo}\n"
            f"  tags: [\"{tags[0]}\", \"{tags[1]}\"]\n"
            "  source:\n    files:\n"
            + "".join(
                f"      - name: {fn}\n        mediaType: application/octet-stream\n"
                f"        path: data/{fn}\n"
                for fn in files
            )
        )
    entries.append({"name": name, "files": [os.path.join("data", fn) for fn in files], "tags": tags})
with open(os.path.join(d, "oras.json"), "w") as f:
    json.dump({"repo": repo, "artefacts": entries}, f)
PY
}
