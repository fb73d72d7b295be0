#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Local development/test environment for garden-artifacts, all on 127.0.0.1:
#   - etcd 3.4 (Debian etcd-server)
#   - a real kube-apiserver v1.20.2 (built once per machine from Debian's source, cached)
#   - a CNCF Distribution registry (Debian docker-registry), with deletes enabled and an
#     access log, for the registry tests
#
# Usage: scripts/dev-env.sh up|down [--purge]|env|status
#   up      install what is missing, start what is not running (idempotent)
#   down    stop what up started (by pid files); --purge also deletes the state dir
#   env     print export lines: eval "$(scripts/dev-env.sh env)"
#   status  print what is running; exits 1 unless everything is up
#
# Environment (defaults in brackets):
#   GA_STATE_DIR        [~/.local/state/garden-artifacts/dev-env] pids, logs, certs, data
#   GA_CACHE_DIR        [~/.cache/garden-artifacts] kube-apiserver binary and Go 1.15
#   GA_ETCD_PORT        [23790] etcd client port
#   GA_ETCD_PEER_PORT   [23800] etcd peer port
#   GA_APISERVER_PORT   [16443] kube-apiserver secure port
#   GA_REGISTRY_PORT    [5000]  registry port
#   GA_SERVICE_CIDR     [10.0.0.0/24] --service-cluster-ip-range
# While the environment is up, the ports it was started with are recorded in the state dir
# and used by env/status/down unless overridden explicitly.
set -euo pipefail

GA_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="dev-env"
# shellcheck source=lib/common.sh
source "${GA_SCRIPTS_DIR}/lib/common.sh"
# shellcheck source=lib/kube-apiserver.sh
source "${GA_SCRIPTS_DIR}/lib/kube-apiserver.sh"

# ---------------------------------------------------------------------------------------
# Configuration: explicit environment > recorded (while running) > defaults.
GA_CONFIG_FILE="${GA_STATE_DIR}/config.env"
ga_load_config() {
  local var val line
  if [[ -f "${GA_CONFIG_FILE}" ]]; then
    while IFS= read -r line; do
      [[ "${line}" =~ ^(GA_[A-Z_]+)=([A-Za-z0-9./:_-]*)$ ]] || continue
      var="${BASH_REMATCH[1]}"
      val="${BASH_REMATCH[2]}"
      [[ -n "${!var:-}" ]] || printf -v "${var}" '%s' "${val}"
    done <"${GA_CONFIG_FILE}"
  fi
  GA_ETCD_PORT="${GA_ETCD_PORT:-23790}"
  GA_ETCD_PEER_PORT="${GA_ETCD_PEER_PORT:-23800}"
  GA_APISERVER_PORT="${GA_APISERVER_PORT:-16443}"
  GA_REGISTRY_PORT="${GA_REGISTRY_PORT:-5000}"
  GA_SERVICE_CIDR="${GA_SERVICE_CIDR:-10.0.0.0/24}"
}
ga_load_config

PID_DIR="${GA_STATE_DIR}/pids"
LOG_DIR="${GA_STATE_DIR}/logs"
PKI_DIR="${GA_STATE_DIR}/pki"
ETCD_DATA="${GA_STATE_DIR}/etcd"
REGISTRY_DIR="${GA_STATE_DIR}/registry"
KUBECONFIG_FILE="${GA_STATE_DIR}/kubeconfig"
REGISTRY_LOG="${LOG_DIR}/registry-access.log"
REGISTRY_APP_LOG="${LOG_DIR}/registry.log"
APISERVER_URL="https://127.0.0.1:${GA_APISERVER_PORT}"

# component -> program name (to recognise our own process behind a pid file)
declare -A PROG=([etcd]=etcd [kube-apiserver]=kube-apiserver [registry]=docker-registry)

ga_pidfile() { printf '%s/%s.pid\n' "${PID_DIR}" "$1"; }
ga_running() { ga_pid_alive "$(ga_pidfile "$1")" "${PROG[$1]}"; }

# Start a command detached (own session), stdout/stderr to files, pid to the pid file.
ga_start_bg() { # component stdout-file stderr-file cmd...
  local comp="$1" out="$2" err="$3" pidfile
  shift 3
  pidfile="$(ga_pidfile "${comp}")"
  # keep one previous log of each kind
  [[ -s "${out}" ]] && mv -f "${out}" "${out}.prev"
  [[ "${err}" != "${out}" && -s "${err}" ]] && mv -f "${err}" "${err}.prev"
  if [[ "${err}" == "${out}" ]]; then
    setsid "$@" >"${out}" 2>&1 </dev/null &
  else
    setsid "$@" >"${out}" 2>"${err}" </dev/null &
  fi
  echo "$!" >"${pidfile}"
  sleep 0.2
  ga_running "${comp}" || ga_die "${comp} exited right after start; see ${err}"
}

ga_check_port_free() { # port component
  if ga_port_in_use "$1"; then
    ga_die "127.0.0.1:$1 is in use by a process not started by this script; cannot start $2 (stop it, e.g. a system service installed with the package, or choose another port: GA_ETCD_PORT, GA_ETCD_PEER_PORT, GA_APISERVER_PORT, GA_REGISTRY_PORT)"
  fi
}

# ---------------------------------------------------------------------------------------
ga_install_deps() {
  # podman: scripts/run.sh builds the example's container images (examples/containers/).
  ga_apt_install etcd-server docker-registry skopeo rsync openssl curl apache2-utils \
    ca-certificates util-linux podman
  if ! command -v kubectl >/dev/null 2>&1; then
    ga_apt_install kubernetes-client
  fi
  ga_kube_apiserver_ensure
}

ga_ensure_pki() {
  mkdir -p "${PKI_DIR}"
  chmod 700 "${PKI_DIR}"
  local log="${LOG_DIR}/pki.log"
  if [[ ! -s "${PKI_DIR}/ca.crt" || ! -s "${PKI_DIR}/ca.key" ]]; then
    ga_log "generating CA"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
      -keyout "${PKI_DIR}/ca.key" -out "${PKI_DIR}/ca.crt" \
      -subj "/CN=garden-artifacts-dev-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" >>"${log}" 2>&1
    rm -f "${PKI_DIR}/apiserver.crt"
  fi
  if [[ ! -s "${PKI_DIR}/apiserver.crt" || ! -s "${PKI_DIR}/apiserver.key" ]]; then
    ga_log "generating kube-apiserver serving certificate (localhost, 127.0.0.1)"
    openssl req -newkey rsa:2048 -nodes -sha256 \
      -keyout "${PKI_DIR}/apiserver.key" -out "${PKI_DIR}/apiserver.csr" \
      -subj "/CN=kube-apiserver" >>"${log}" 2>&1
    cat >"${PKI_DIR}/apiserver.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1
EOF
    openssl x509 -req -in "${PKI_DIR}/apiserver.csr" -CA "${PKI_DIR}/ca.crt" \
      -CAkey "${PKI_DIR}/ca.key" -CAcreateserial -days 3650 -sha256 \
      -extfile "${PKI_DIR}/apiserver.ext" -out "${PKI_DIR}/apiserver.crt" >>"${log}" 2>&1
    rm -f "${PKI_DIR}/apiserver.csr"
  fi
  if [[ ! -s "${PKI_DIR}/sa.key" || ! -s "${PKI_DIR}/sa.pub" ]]; then
    ga_log "generating service-account signing key"
    openssl genrsa -out "${PKI_DIR}/sa.key" 2048 >>"${log}" 2>&1
    openssl rsa -in "${PKI_DIR}/sa.key" -pubout -out "${PKI_DIR}/sa.pub" >>"${log}" 2>&1
  fi
  if [[ ! -s "${PKI_DIR}/admin.token" ]]; then
    openssl rand -hex 32 >"${PKI_DIR}/admin.token"
  fi
  # static token file: token,user,uid,"groups"
  printf '%s,garden-artifacts-admin,garden-artifacts-admin,"system:masters"\n' \
    "$(cat "${PKI_DIR}/admin.token")" >"${PKI_DIR}/token.csv"
  chmod 600 "${PKI_DIR}"/*
}

ga_write_kubeconfig() {
  local ca token tmp
  ca="$(base64 -w0 <"${PKI_DIR}/ca.crt")"
  token="$(cat "${PKI_DIR}/admin.token")"
  tmp="${KUBECONFIG_FILE}.tmp"
  : >"${tmp}"
  chmod 600 "${tmp}"
  cat >"${tmp}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: garden-artifacts-dev
  cluster:
    server: ${APISERVER_URL}
    certificate-authority-data: ${ca}
users:
- name: garden-artifacts-admin
  user:
    token: ${token}
contexts:
- name: garden-artifacts-dev
  context:
    cluster: garden-artifacts-dev
    user: garden-artifacts-admin
    namespace: default
current-context: garden-artifacts-dev
EOF
  mv -f "${tmp}" "${KUBECONFIG_FILE}"
}

# ---------------------------------------------------------------------------------------
ga_etcd_healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:${GA_ETCD_PORT}/health" 2>/dev/null | grep -q '"health":"true"'
}

ga_start_etcd() {
  if ga_running etcd; then
    ga_log "etcd: already running (pid $(ga_pid_of "$(ga_pidfile etcd)"))"
    return 0
  fi
  ga_check_port_free "${GA_ETCD_PORT}" etcd
  ga_check_port_free "${GA_ETCD_PEER_PORT}" "etcd (peer)"
  mkdir -p "${ETCD_DATA}"
  chmod 700 "${ETCD_DATA}"
  local arch
  arch="$(dpkg --print-architecture)"
  ga_log "etcd: starting on 127.0.0.1:${GA_ETCD_PORT}"
  ga_start_bg etcd "${LOG_DIR}/etcd.log" "${LOG_DIR}/etcd.log" \
    env ETCD_UNSUPPORTED_ARCH="$([[ "${arch}" == amd64 ]] || echo "${arch}")" \
    etcd --name garden-artifacts-dev \
    --data-dir "${ETCD_DATA}" \
    --listen-client-urls "http://127.0.0.1:${GA_ETCD_PORT}" \
    --advertise-client-urls "http://127.0.0.1:${GA_ETCD_PORT}" \
    --listen-peer-urls "http://127.0.0.1:${GA_ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${GA_ETCD_PEER_PORT}" \
    --initial-cluster "garden-artifacts-dev=http://127.0.0.1:${GA_ETCD_PEER_PORT}" \
    --initial-cluster-state new
  ga_wait_for 300 ga_etcd_healthy || ga_die "etcd did not become healthy in 30s; see ${LOG_DIR}/etcd.log"
}

ga_apiserver_ready() {
  curl -fsS --max-time 2 --cacert "${PKI_DIR}/ca.crt" \
    -H "Authorization: Bearer $(cat "${PKI_DIR}/admin.token")" \
    "${APISERVER_URL}/readyz" 2>/dev/null | grep -q '^ok'
}

ga_start_apiserver() {
  if ga_running kube-apiserver; then
    ga_log "kube-apiserver: already running (pid $(ga_pid_of "$(ga_pidfile kube-apiserver)"))"
  else
    ga_check_port_free "${GA_APISERVER_PORT}" kube-apiserver
    mkdir -p "${GA_STATE_DIR}/apiserver-certs"
    ga_log "kube-apiserver: starting on 127.0.0.1:${GA_APISERVER_PORT}"
    ga_start_bg kube-apiserver "${LOG_DIR}/kube-apiserver.log" "${LOG_DIR}/kube-apiserver.log" \
      "${GA_KUBE_APISERVER_BIN}" \
      --etcd-servers="http://127.0.0.1:${GA_ETCD_PORT}" \
      --secure-port="${GA_APISERVER_PORT}" \
      --bind-address=127.0.0.1 \
      --advertise-address=127.0.0.1 \
      --endpoint-reconciler-type=none \
      --insecure-port=0 \
      --cert-dir="${GA_STATE_DIR}/apiserver-certs" \
      --tls-cert-file="${PKI_DIR}/apiserver.crt" \
      --tls-private-key-file="${PKI_DIR}/apiserver.key" \
      --client-ca-file="${PKI_DIR}/ca.crt" \
      --token-auth-file="${PKI_DIR}/token.csv" \
      --authorization-mode=RBAC \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="${PKI_DIR}/sa.pub" \
      --service-account-signing-key-file="${PKI_DIR}/sa.key" \
      --service-cluster-ip-range="${GA_SERVICE_CIDR}" \
      --disable-admission-plugins=ServiceAccount \
      --profiling=false
  fi
  ga_wait_for 600 ga_apiserver_ready \
    || ga_die "kube-apiserver not ready after 60s; see ${LOG_DIR}/kube-apiserver.log"
}

ga_registry_ready() {
  curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:${GA_REGISTRY_PORT}/v2/" 2>/dev/null
}

ga_start_registry() {
  if ga_running registry; then
    ga_log "registry: already running (pid $(ga_pid_of "$(ga_pidfile registry)"))"
    return 0
  fi
  ga_check_port_free "${GA_REGISTRY_PORT}" registry
  mkdir -p "${REGISTRY_DIR}/data"
  cat >"${REGISTRY_DIR}/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${REGISTRY_DIR}/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${GA_REGISTRY_PORT}
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  ga_log "registry: starting on 127.0.0.1:${GA_REGISTRY_PORT}"
  # Distribution writes its access log (one line per request) to stdout, the rest to stderr.
  ga_start_bg registry "${REGISTRY_LOG}" "${REGISTRY_APP_LOG}" \
    docker-registry serve "${REGISTRY_DIR}/config.yml"
  ga_wait_for 300 ga_registry_ready || ga_die "registry did not answer in 30s; see ${REGISTRY_APP_LOG}"
}

# Fail before starting anything when a port we need is taken by someone else.
ga_preflight_ports() {
  if ! ga_running etcd; then
    ga_check_port_free "${GA_ETCD_PORT}" etcd
    ga_check_port_free "${GA_ETCD_PEER_PORT}" "etcd (peer)"
  fi
  ga_running kube-apiserver || ga_check_port_free "${GA_APISERVER_PORT}" kube-apiserver
  ga_running registry || ga_check_port_free "${GA_REGISTRY_PORT}" registry
}

ga_check_kubectl() {
  local log="${LOG_DIR}/kubectl-check.log"
  {
    echo "== $(date -Is) kubectl version"
    kubectl --kubeconfig "${KUBECONFIG_FILE}" version
    echo "== kubectl get ns"
    kubectl --kubeconfig "${KUBECONFIG_FILE}" get ns
  } >"${log}" 2>&1 || ga_die "kubectl check failed; see ${log}"
  ga_log "kubectl: ok ($(grep -o 'Server Version: [^ ]*' "${log}" | head -n 1 || true))"
}

ga_record_config() {
  cat >"${GA_CONFIG_FILE}" <<EOF
GA_ETCD_PORT=${GA_ETCD_PORT}
GA_ETCD_PEER_PORT=${GA_ETCD_PEER_PORT}
GA_APISERVER_PORT=${GA_APISERVER_PORT}
GA_REGISTRY_PORT=${GA_REGISTRY_PORT}
GA_SERVICE_CIDR=${GA_SERVICE_CIDR}
EOF
}

# ---------------------------------------------------------------------------------------
cmd_up() {
  local started
  started="$(date +%s)"
  mkdir -p "${GA_STATE_DIR}" "${PID_DIR}" "${LOG_DIR}"
  ga_install_deps
  ga_preflight_ports
  ga_record_config
  ga_ensure_pki
  ga_write_kubeconfig
  ga_start_etcd
  ga_start_apiserver
  ga_start_registry
  ga_check_kubectl
  ga_log "up in $(($(date +%s) - started))s: kube-apiserver ${APISERVER_URL}, registry 127.0.0.1:${GA_REGISTRY_PORT}"
  ga_log "use it with: eval \"\$(${BASH_SOURCE[0]} env)\""
}

cmd_down() {
  local purge=0
  [[ "${1:-}" == "--purge" ]] && purge=1
  ga_stop_pidfile "$(ga_pidfile kube-apiserver)" "${PROG[kube-apiserver]}" kube-apiserver
  ga_stop_pidfile "$(ga_pidfile registry)" "${PROG[registry]}" registry
  ga_stop_pidfile "$(ga_pidfile etcd)" "${PROG[etcd]}" etcd
  rm -f "${GA_CONFIG_FILE}"
  if [[ "${purge}" == 1 ]]; then
    ga_log "purging ${GA_STATE_DIR}"
    rm -rf "${GA_STATE_DIR}"
  fi
}

cmd_env() {
  printf 'export %s=%q\n' \
    KUBECONFIG "${KUBECONFIG_FILE}" \
    REGISTRY "127.0.0.1:${GA_REGISTRY_PORT}" \
    GA_REGISTRY_LOG "${REGISTRY_LOG}" \
    GA_REGISTRY_APP_LOG "${REGISTRY_APP_LOG}" \
    GA_REGISTRY_DATA "${REGISTRY_DIR}/data" \
    GA_STATE_DIR "${GA_STATE_DIR}" \
    GA_CACHE_DIR "${GA_CACHE_DIR}" \
    GA_KUBE_APISERVER_URL "${APISERVER_URL}" \
    GA_KUBE_APISERVER_BIN "${GA_KUBE_APISERVER_BIN}" \
    GA_KUBE_CA_FILE "${PKI_DIR}/ca.crt" \
    GA_KUBE_TOKEN_FILE "${PKI_DIR}/admin.token" \
    GA_ETCD_ENDPOINT "http://127.0.0.1:${GA_ETCD_PORT}"
}

cmd_status() {
  local all=0 comp pidfile health addr
  for comp in etcd kube-apiserver registry; do
    pidfile="$(ga_pidfile "${comp}")"
    case "${comp}" in
      etcd)
        addr="http://127.0.0.1:${GA_ETCD_PORT}"
        health="$(ga_etcd_healthy && echo healthy || echo unhealthy)"
        ;;
      kube-apiserver)
        addr="${APISERVER_URL}"
        health="$([[ -s "${PKI_DIR}/admin.token" ]] && ga_apiserver_ready && echo ready || echo 'not ready')"
        ;;
      registry)
        addr="http://127.0.0.1:${GA_REGISTRY_PORT}"
        health="$(ga_registry_ready && echo answering || echo 'not answering')"
        ;;
    esac
    if ga_running "${comp}"; then
      printf '%-15s running  pid %-8s %-32s %s\n' "${comp}" "$(ga_pid_of "${pidfile}")" "${addr}" "${health}"
      [[ "${health}" == healthy || "${health}" == ready || "${health}" == answering ]] || all=1
    else
      printf '%-15s stopped  %-12s %-32s\n' "${comp}" "" "${addr}"
      all=1
    fi
  done
  printf 'state dir: %s\nkubeconfig: %s\nkube-apiserver binary: %s (%s)\n' \
    "${GA_STATE_DIR}" "${KUBECONFIG_FILE}" "${GA_KUBE_APISERVER_BIN}" \
    "$([[ -x "${GA_KUBE_APISERVER_BIN}" ]] && echo cached || echo 'not built yet')"
  return "${all}"
}

usage() {
  sed -n '3,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "${cmd}" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    env) cmd_env "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

# main and exit on one line: bash has read all of it before running, so editing this file
# while it runs cannot make bash read a half-changed file.
main "$@"; exit "$?"
