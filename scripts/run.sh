#!/usr/bin/env bash
# The main job on this machine, from nothing: a Distribution registry, etcd and a real
# kube-apiserver on loopback (scripts/dev-env.sh), the CRD, the controller, the example's
# container images built with podman and pushed, and the examples reconciled into the registry.
#
#   scripts/run.sh          start everything, apply examples/, wait until Ready, show the result
#   scripts/run.sh stop     stop the controller and the environment
#
# Afterwards: eval "$(scripts/dev-env.sh env)"; kubectl get gardenartifacts -A
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GA_SCRIPTS_DIR="$(pwd)/scripts"
GA_LOG_TAG="run"
# shellcheck source=lib/common.sh
source "${GA_SCRIPTS_DIR}/lib/common.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${GA_CACHE_DIR:-$HOME/.cache/garden-artifacts}/target}"
METRICS_ADDR="127.0.0.1:${GA_METRICS_PORT:-18080}"

controller_pid_file() { printf '%s/controller.pid\n' "${GA_STATE_DIR}"; }

stop_controller() {
  local pid_file pid
  pid_file="$(controller_pid_file)"
  [[ -f "${pid_file}" ]] || return 0
  pid="$(cat "${pid_file}")"
  if kill -0 "${pid}" 2>/dev/null; then
    kill "${pid}"
    for _ in $(seq 50); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "${pid_file}"
}

up() {
  scripts/dev-env.sh up
  eval "$(scripts/dev-env.sh env)"

  ga_log "building garden-artifacts"
  cargo build --locked --quiet --bin garden-artifacts
  local bin="${CARGO_TARGET_DIR}/debug/garden-artifacts"

  kubectl apply -f crds/ >/dev/null
  kubectl wait --for=condition=Established crd/gardenartifacts.oci.gardenlinux.io \
    crd/gardenmirrors.oci.gardenlinux.io crd/gardencomponents.oci.gardenlinux.io \
    --timeout=30s >/dev/null
  for ns in releases mirrors; do
    kubectl create namespace "${ns}" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  done

  stop_controller
  local log="${GA_STATE_DIR}/logs/controller.log"
  ga_log "starting the controller (log: ${log}, metrics: http://${METRICS_ADDR}/metrics)"
  nohup "${bin}" controller --metrics-addr "${METRICS_ADDR}" --log-format json >"${log}" 2>&1 &
  echo $! >"$(controller_pid_file)"

  # The release example publishes two container images, and the controller builds nothing:
  # podman builds them and garden-artifacts pushes them to the registry first.
  ga_log "building the example's container images (examples/containers/build.sh)"
  GARDEN_ARTIFACTS="${bin}" examples/containers/build.sh --push "${REGISTRY}"

  kubectl apply -f examples/ -f examples/controller-only/
  if ! kubectl wait --for=condition=Ready gardenartifact --all --all-namespaces --timeout=120s >/dev/null; then
    kubectl get gardenartifacts -A -o yaml >&2
    tail -n 30 "${log}" >&2
    ga_die "the examples did not become Ready"
  fi
  # The mirror of the newest release, once what it mirrors is there.
  kubectl apply -f examples/mirrors/
  if ! kubectl wait --for=condition=Ready gardenmirror --all --all-namespaces --timeout=120s >/dev/null; then
    kubectl get gardenmirrors -A -o yaml >&2
    tail -n 30 "${log}" >&2
    ga_die "the example mirror did not become Ready"
  fi
  # The release as an OCM component version (in examples/gardenlinux-release.yaml), pinned to
  # what the examples published.
  if ! kubectl wait --for=condition=Ready gardencomponent --all --all-namespaces --timeout=120s >/dev/null; then
    kubectl get gardencomponents -A -o yaml >&2
    tail -n 30 "${log}" >&2
    ga_die "the example component did not become Ready"
  fi
  echo
  kubectl get gardenartifacts --all-namespaces
  echo
  kubectl get gardenmirrors --all-namespaces
  echo
  kubectl get gardencomponents --all-namespaces
  echo
  for repo in builds/gardenlinux/container gardenlinux/gardenlinux mirror/gardenlinux \
    mirror/gardenlinux-releases; do
    printf 'registry %s/%s tags: ' "${REGISTRY}" "${repo}"
    # No jq: the main job must run on a machine that has only what dev-env.sh installs.
    curl -fsS "http://${REGISTRY}/v2/${repo}/tags/list" | sed -E 's/.*"tags":(\[[^]]*\]).*/\1/'
  done
  echo
  echo "Use it:   eval \"\$(scripts/dev-env.sh env)\"; kubectl get gardenartifacts,gardenmirrors,gardencomponents -A"
  echo "Stop it:  scripts/run.sh stop"
}

stop() {
  if scripts/dev-env.sh env >/dev/null 2>&1; then
    eval "$(scripts/dev-env.sh env)"
    stop_controller
  fi
  scripts/dev-env.sh down
}

case "${1:-up}" in
  up) up ;;
  stop|down) stop ;;
  *) ga_die "usage: scripts/run.sh [up|stop]" ;;
esac
