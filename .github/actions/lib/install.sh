#!/usr/bin/env bash
# Find or install the garden-artifacts binary for the composite actions in .github/actions/:
# on a runner, write `binary=PATH` to $GITHUB_OUTPUT; elsewhere (no GITHUB_OUTPUT) print PATH.
# Workflow commands (::error::, ::warning::) go to stdout, so the caller must not redirect it.
#
# In this order (environment; the actions pass their inputs in):
#   GA_BINARY    an existing garden-artifacts executable: used as is, nothing is installed
#   GA_VERSION   that released version: the static binary for this runner's OS/arch from the
#                GitHub release v<GA_VERSION>, verified against the release's SHA256SUMS
#   PATH         garden-artifacts on PATH, when there is one
#   otherwise    the release of the action's own version (the version in the Cargo.toml of the
#                checkout GitHub made of the action at the ref in `uses:`), verified the same
#                way; only when that release has no binary for this OS/arch (or cannot be
#                reached) is the binary built from the action's source (`cargo install
#                --locked --path`, a few minutes, needs cargo)
# A binary whose SHA-256 differs from the published one is an error, never a reason to fall
# back: it means a corrupted or tampered download. Installed binaries are cached under
# $RUNNER_TOOL_CACHE (release) or $RUNNER_TEMP (built), so `upload` and `download-from-oci` in
# one job install once.
#
# Knobs: GA_ACTION_REPOSITORY (owner/name whose releases to use; default
# gardenlinux/garden-artifacts), GA_RELEASE_BASE_URL (default
# https://github.com/<repository>/releases/download; a mirror, or a local server in tests).
set -euo pipefail

die() {
  printf '::error title=garden-artifacts install::%s\n' "$*"
  exit 1
}

ga_binary="${GA_BINARY:-}"
ga_version="${GA_VERSION:-}"
ga_action_path="${GA_ACTION_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
tmp_root="${RUNNER_TEMP:-${TMPDIR:-/tmp}}"
repository="${GA_ACTION_REPOSITORY:-gardenlinux/garden-artifacts}"
release_base="${GA_RELEASE_BASE_URL:-https://github.com/${repository}/releases/download}"
release_base="${release_base%/}"

# .github/actions/<action> -> the repository root holding Cargo.toml.
source_dir="$(cd "${ga_action_path}/../../.." 2>/dev/null && pwd)" || source_dir="${ga_action_path}/../../.."

# The version in the action's own Cargo.toml ([package] section), empty when there is none.
source_version() {
  [[ -f "${source_dir}/Cargo.toml" ]] || return 0
  grep -qs '^name = "garden-artifacts"' "${source_dir}/Cargo.toml" || return 0
  awk '
    /^\[/ { in_package = ($0 == "[package]") }
    in_package && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
  ' "${source_dir}/Cargo.toml"
}

# The release asset's platform: linux-amd64, linux-arm64, darwin-arm64, ...
platform() {
  local os arch
  case "${RUNNER_OS:-$(uname -s)}" in
    Linux | linux) os=linux ;;
    macOS | Darwin) os=darwin ;;
    Windows | MINGW* | MSYS*) os=windows ;;
    *) os="$(uname -s | tr '[:upper:]' '[:lower:]')" ;;
  esac
  case "${RUNNER_ARCH:-$(uname -m)}" in
    X64 | x86_64 | amd64) arch=amd64 ;;
    ARM64 | aarch64 | arm64) arch=arm64 ;;
    *) arch="$(uname -m)" ;;
  esac
  printf '%s-%s\n' "${os}" "${arch}"
}

sha256_of() { # file
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{print $1}'
  else
    shasum -a 256 "$1" | awk '{print $1}'
  fi
}

# Downloads URL to FILE; returns 1 (with a reason on stderr) when it cannot.
fetch() { # url file
  command -v curl >/dev/null 2>&1 || { echo "curl is not installed" >&2; return 1; }
  curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1" >&2 && [[ -s "$2" ]]
}

# Installs the released binary of VERSION into the tool cache and sets `bin` to its path.
# Returns 1 when the release (or its binary for this platform) cannot be had; dies on a SHA-256
# mismatch. (Not to be called in $(...): die must end the script, not a subshell.)
install_release() { # version
  local version="$1" asset root work expected actual
  asset="garden-artifacts-$(platform)"
  root="${RUNNER_TOOL_CACHE:-${tmp_root}}/garden-artifacts/${version}/$(platform)"
  if [[ -x "${root}/garden-artifacts" ]]; then
    bin="${root}/garden-artifacts"
    return 0
  fi
  work="$(mktemp -d "${tmp_root}/garden-artifacts-download.XXXXXX")"
  printf 'Downloading %s/v%s/%s\n' "${release_base}" "${version}" "${asset}" >&2
  if ! fetch "${release_base}/v${version}/SHA256SUMS" "${work}/SHA256SUMS" \
    || ! fetch "${release_base}/v${version}/${asset}" "${work}/${asset}"; then
    rm -rf -- "${work}"
    return 1
  fi
  expected="$(awk -v asset="${asset}" '$2 == asset || $2 == "*" asset { print $1; exit }' "${work}/SHA256SUMS")"
  if [[ ! "${expected}" =~ ^[0-9a-f]{64}$ ]]; then
    rm -rf -- "${work}"
    die "the SHA256SUMS of release v${version} lists no ${asset}: refusing an unverifiable binary"
  fi
  actual="$(sha256_of "${work}/${asset}")"
  if [[ "${actual}" != "${expected}" ]]; then
    rm -rf -- "${work}"
    die "${asset} of release v${version} has SHA-256 ${actual}, but SHA256SUMS says ${expected}: refusing it"
  fi
  printf 'Verified %s: sha256 %s\n' "${asset}" "${actual}" >&2
  mkdir -p "${root}"
  chmod 0755 "${work}/${asset}"
  mv -f -- "${work}/${asset}" "${root}/garden-artifacts"
  rm -rf -- "${work}"
  bin="${root}/garden-artifacts"
}

cargo_install() { # root args...
  local root="$1"
  shift
  command -v cargo >/dev/null 2>&1 \
    || die "cargo is not on PATH: install a Rust toolchain first (e.g. dtolnay/rust-toolchain), or give the action a 'binary'"
  mkdir -p "${root}"
  # cargo's progress goes to stderr, so it shows in the log and stays off stdout.
  cargo install --locked --root "${root}" "$@" >&2 \
    || die "cargo install $* failed (see above)"
}

# The fallback: the action's own source, so the binary matches the action. Sets `bin`.
install_from_source() {
  local root
  if [[ -z "$(source_version)" ]]; then
    die "no garden-artifacts release could be installed and there is no garden-artifacts source at ${source_dir}: give the action 'binary' or 'garden_artifacts_version'"
  fi
  root="${tmp_root}/garden-artifacts-from-source"
  if [[ ! -x "${root}/bin/garden-artifacts" ]]; then
    printf 'Building garden-artifacts from %s into %s (a few minutes)\n' "${source_dir}" "${root}" >&2
    cargo_install "${root}" --path "${source_dir}"
  fi
  bin="${root}/bin/garden-artifacts"
}

bin=""
want_version=""
if [[ -n "${ga_binary}" ]]; then
  [[ -f "${ga_binary}" && -x "${ga_binary}" ]] \
    || die "binary '${ga_binary}' is not an executable file"
  bin="$(cd "$(dirname "${ga_binary}")" && pwd)/$(basename "${ga_binary}")"
elif [[ -n "${ga_version}" ]]; then
  ga_version="${ga_version#v}"
  [[ "${ga_version}" =~ ^[0-9A-Za-z.+-]+$ ]] || die "garden_artifacts_version '${ga_version}' is not a version"
  want_version="${ga_version}"
  if ! install_release "${ga_version}"; then
    if [[ "$(source_version)" == "${ga_version}" ]]; then
      printf '::warning title=garden-artifacts install::release v%s has no binary for %s here; building it from source\n' \
        "${ga_version}" "$(platform)"
      install_from_source
    else
      die "release v${ga_version} of ${repository} has no binary for $(platform) (or could not be downloaded), see above"
    fi
  fi
elif command -v garden-artifacts >/dev/null 2>&1; then
  bin="$(command -v garden-artifacts)"
else
  own="$(source_version)"
  if [[ -n "${own}" ]] && install_release "${own}"; then
    want_version="${own}"
  else
    printf '::warning title=garden-artifacts install::no release binary of v%s for %s; building it from source\n' \
      "${own:-?}" "$(platform)"
    install_from_source
  fi
fi

version="$("${bin}" --version 2>/dev/null)" || die "'${bin} --version' failed: not a garden-artifacts binary?"
if [[ -n "${want_version}" && "${version}" != "garden-artifacts ${want_version}" ]]; then
  die "${bin} says '${version}', expected garden-artifacts ${want_version}"
fi
printf 'Using %s (%s)\n' "${bin}" "${version}" >&2
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
  printf 'binary=%s\n' "${bin}" >>"${GITHUB_OUTPUT}"
else
  printf '%s\n' "${bin}"
fi
