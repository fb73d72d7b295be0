# shellcheck shell=bash
# Build (once per machine) and cache a real kube-apiserver v1.20.2 from Debian's Kubernetes
# 1.20 source, compiled with Go 1.15 from Debian bullseye (k8s 1.20 crashes at run time when
# built with Go 1.18+). Everything comes from the Debian archive the machine's apt already
# uses; the machine's own apt configuration is not changed (private sources lists, lists and
# caches under the cache dir).
#
# Needs scripts/lib/common.sh sourced first.
#
# Public entry point:
#   ga_kube_apiserver_ensure   sets GA_KUBE_APISERVER_BIN to the cached binary, building it
#                              if it is not there yet (about 6 minutes on 2 cores).
#
# Knobs (environment):
#   GA_CACHE_DIR          cache root (default ~/.cache/garden-artifacts)
#   GA_K8S_DEB_VERSION    Debian source version (default 1.20.5+really1.20.2-1.1+deb12u1)
#   GA_KEEP_BUILD=1       keep the unpacked source and Go build cache after a build
#   GA_DEBIAN_MIRROR      Debian archive URI (default: read from /etc/apt sources)

GA_K8S_VERSION="v1.20.2"
GA_K8S_GIT_COMMIT="faecb196815e248d3ecfb03c680a4507229c2a56" # upstream tag v1.20.2
GA_K8S_DEB_VERSION="${GA_K8S_DEB_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
GA_GO_DIR="${GA_CACHE_DIR}/go-1.15"
GA_GOROOT="${GA_GO_DIR}/usr/lib/go-1.15"
GA_KUBE_APISERVER_BIN="${GA_CACHE_DIR}/kube-apiserver-${GA_K8S_VERSION}"
GA_BUILD_LOG="${GA_CACHE_DIR}/logs/kube-apiserver-build.log"

# True when the cached binary exists and runs.
ga_kube_apiserver_cached() {
  [[ -x "${GA_KUBE_APISERVER_BIN}" ]] \
    && "${GA_KUBE_APISERVER_BIN}" --version 2>/dev/null | grep -q "${GA_K8S_VERSION}"
}

# apt-get with a private sources list, lists dir and cache: nothing of the system's apt
# state is read for sources or written. $1 = private apt dir (holds sources.list).
ga__apt_private() {
  local dir="$1"
  shift
  mkdir -p "${dir}/lists/partial" "${dir}/cache/archives/partial"
  ga_as_root apt-get \
    -o Dir::Etc::sourcelist="${dir}/sources.list" \
    -o Dir::Etc::sourceparts=- \
    -o Dir::State::Lists="${dir}/lists" \
    -o Dir::Cache="${dir}/cache" \
    -o Acquire::Languages=none \
    -o APT::Sandbox::User=root \
    "$@"
}

# Go 1.15 toolchain from bullseye, unpacked with dpkg -x into the cache.
ga__ensure_go115() {
  if [[ -x "${GA_GOROOT}/bin/go" ]] && GOROOT="${GA_GOROOT}" "${GA_GOROOT}/bin/go" version 2>/dev/null | grep -q 'go1\.15'; then
    return 0
  fi
  local mirror aptdir dl
  mirror="$(ga_debian_mirror)"
  aptdir="${GA_CACHE_DIR}/apt/bullseye"
  mkdir -p "${aptdir}"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bullseye main\n' \
    "${mirror}" >"${aptdir}/sources.list"
  ga_log "fetching Go 1.15 (golang-1.15-go, golang-1.15-src) from bullseye at ${mirror}"
  ga__apt_private "${aptdir}" update >>"${GA_BUILD_LOG}" 2>&1 \
    || ga_die "apt-get update (bullseye, private) failed; see ${GA_BUILD_LOG}"
  dl="$(mktemp -d "${GA_CACHE_DIR}/tmp.go-debs.XXXXXX")"
  (cd "${dl}" && ga__apt_private "${aptdir}" download golang-1.15-go golang-1.15-src) >>"${GA_BUILD_LOG}" 2>&1 \
    || ga_die "apt-get download golang-1.15-go golang-1.15-src failed; see ${GA_BUILD_LOG}"
  rm -rf "${GA_GO_DIR}.new"
  mkdir -p "${GA_GO_DIR}.new"
  local deb
  for deb in "${dl}"/*.deb; do
    dpkg -x "${deb}" "${GA_GO_DIR}.new"
  done
  rm -rf "${dl}" "${GA_GO_DIR}"
  mv "${GA_GO_DIR}.new" "${GA_GO_DIR}"
  GOROOT="${GA_GOROOT}" "${GA_GOROOT}/bin/go" version >>"${GA_BUILD_LOG}" 2>&1 \
    || ga_die "unpacked Go 1.15 does not run; see ${GA_BUILD_LOG}"
  ga_log "Go 1.15 ready: ${GA_GOROOT}"
}

# Download and unpack Debian's kubernetes source package into $1 (a fresh directory);
# prints the path of the unpacked tree.
ga__fetch_k8s_source() {
  local workdir="$1" mirror aptdir
  mirror="$(ga_debian_mirror)"
  aptdir="${GA_CACHE_DIR}/apt/bookworm-src"
  mkdir -p "${aptdir}"
  printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bookworm main\n' \
    "${mirror}" >"${aptdir}/sources.list"
  ga_log "fetching Debian source kubernetes=${GA_K8S_DEB_VERSION} (~34 MB)"
  ga__apt_private "${aptdir}" update >>"${GA_BUILD_LOG}" 2>&1 \
    || ga_die "apt-get update (bookworm deb-src, private) failed; see ${GA_BUILD_LOG}"
  (cd "${workdir}" && ga__apt_private "${aptdir}" source --download-only \
    "kubernetes=${GA_K8S_DEB_VERSION}") >>"${GA_BUILD_LOG}" 2>&1 \
    || ga_die "apt-get source kubernetes=${GA_K8S_DEB_VERSION} failed; see ${GA_BUILD_LOG}"
  local dsc
  dsc="$(find "${workdir}" -maxdepth 1 -name 'kubernetes_*.dsc' | head -n 1)"
  [[ -n "${dsc}" ]] || ga_die "no kubernetes .dsc downloaded; see ${GA_BUILD_LOG}"
  # apt already checked the files against the signed Sources index.
  (cd "${workdir}" && dpkg-source --no-check -x "${dsc}" src) >>"${GA_BUILD_LOG}" 2>&1 \
    || ga_die "dpkg-source -x failed; see ${GA_BUILD_LOG}"
  printf '%s\n' "${workdir}/src"
}

ga__build_kube_apiserver() {
  local workdir src started
  started="$(date +%s)"
  ga__ensure_go115
  workdir="$(mktemp -d "${GA_CACHE_DIR}/build.XXXXXX")"
  src="$(ga__fetch_k8s_source "${workdir}")"
  cat >"${workdir}/version.env" <<EOF
KUBE_GIT_COMMIT='${GA_K8S_GIT_COMMIT}'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='${GA_K8S_VERSION}'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
EOF
  ga_log "building kube-apiserver ${GA_K8S_VERSION} with Go 1.15 (about 6 min on 2 cores; log: ${GA_BUILD_LOG})"
  (
    cd "${src}"
    unset GO111MODULE GOBIN GOPATH GOTOOLCHAIN CGO_ENABLED
    export GOROOT="${GA_GOROOT}"
    export PATH="${GA_GOROOT}/bin:${PATH}"
    export GOFLAGS="" GOPROXY=off GOENV=off GOCACHE="${workdir}/gocache"
    export KUBE_GIT_VERSION_FILE="${workdir}/version.env"
    go version
    make WHAT=cmd/kube-apiserver
  ) >>"${GA_BUILD_LOG}" 2>&1 || ga_die "kube-apiserver build failed; see ${GA_BUILD_LOG} (tree kept in ${workdir})"
  local out="${src}/_output/local/bin/linux/amd64/kube-apiserver"
  [[ -x "${out}" ]] || out="${src}/_output/bin/kube-apiserver"
  [[ -x "${out}" ]] || ga_die "build finished but no kube-apiserver binary found under ${src}/_output"
  cp "${out}" "${GA_KUBE_APISERVER_BIN}.tmp"
  chmod 0755 "${GA_KUBE_APISERVER_BIN}.tmp"
  mv "${GA_KUBE_APISERVER_BIN}.tmp" "${GA_KUBE_APISERVER_BIN}"
  if [[ "${GA_KEEP_BUILD:-0}" == 1 ]]; then
    ga_log "keeping build tree ${workdir}"
  else
    chmod -R u+w "${workdir}" 2>/dev/null || true
    rm -rf "${workdir}"
  fi
  # The private apt lists are only needed for a build; drop them (tens of MB).
  rm -rf "${GA_CACHE_DIR}/apt"
  ga_log "kube-apiserver built in $(($(date +%s) - started))s: ${GA_KUBE_APISERVER_BIN}"
}

ga_kube_apiserver_ensure() {
  if ga_kube_apiserver_cached; then
    return 0
  fi
  mkdir -p "${GA_CACHE_DIR}/logs"
  # Tools the build needs (all from the machine's own Debian archive).
  ga_apt_install ca-certificates debian-archive-keyring dpkg-dev make gcc libc6-dev rsync \
    xz-utils util-linux
  # One build at a time per machine, even when two scripts start together.
  local lock="${GA_CACHE_DIR}/.kube-apiserver-build.lock"
  exec 9>"${lock}"
  if ! flock -n 9; then
    ga_log "another kube-apiserver build is running; waiting for it"
    flock 9
  fi
  if ! ga_kube_apiserver_cached; then
    : >"${GA_BUILD_LOG}"
    ga__build_kube_apiserver
  fi
  flock -u 9
  exec 9>&-
  ga_kube_apiserver_cached || ga_die "cached kube-apiserver at ${GA_KUBE_APISERVER_BIN} does not run"
}
