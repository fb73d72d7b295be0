#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Build the garden-artifacts container image (Containerfile) with podman, without pulling
# anything: statically linked binaries (glibc, -C target-feature=+crt-static) in FROM scratch.
#
#   scripts/image.sh                       localhost/garden-artifacts:<crate version>, host arch,
#                                          binary built here (cargo build --release)
#   scripts/image.sh --arch amd64 --arch arm64 --bin-dir dist
#                                          a multi-arch manifest list from prebuilt binaries
#                                          dist/garden-artifacts-linux-<arch> (the release's)
#   scripts/image.sh --push ghcr.io/gardenlinux/garden-artifacts:0.1.0
#                                          ... and push it (all platforms) to that reference
#   scripts/image.sh --archive FILE        ... and save it as an OCI archive (podman save)
#
# Options:
#   --arch ARCH      amd64 or arm64; repeatable (default: the host's)
#   --bin-dir DIR    take DIR/garden-artifacts-linux-<arch> instead of building; needed for an
#                    arch other than the host's
#   --profile P      cargo profile of the binary built here: release (default) or dev
#   --tag REF        local name (default localhost/garden-artifacts:<crate version>)
#   --push REF       push the image (manifest list) to REF (podman manifest push --all)
#   --archive FILE   write the image as an OCI archive (single arch only)
#   --print-version  print the version the image gets (the crate's) and exit
#
# The image's version label and tag are the crate version (Cargo.toml); tests/release.rs
# checks that the chart's appVersion is the same number.
#
# Environment:
#   GA_PODMAN_ROOT   private podman storage (graph root + run root under it, vfs driver), e.g.
#                    for tests (podman wants the run root under 50 characters: keep it short);
#                    default: podman's own storage, with STORAGE_DRIVER if set
#   CARGO_TARGET_DIR the cargo target dir (default ${GA_CACHE_DIR}/target); the static build
#                    lands in its <rust target triple>/ subdirectory, apart from the debug build
#   SOURCE_DATE_EPOCH  timestamp of the image (default: the last commit's), so the same
#                    binary and commit give the same image digest
set -euo pipefail

GA_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="image"
# shellcheck source=lib/common.sh
source "${GA_SCRIPTS_DIR}/lib/common.sh"
ROOT="$(cd "${GA_SCRIPTS_DIR}/.." && pwd)"

usage() {
  sed -n '3,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# The [package] version of Cargo.toml.
crate_version() {
  awk '
    /^\[/ { in_package = ($0 == "[package]") }
    in_package && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
  ' "${ROOT}/Cargo.toml"
}

host_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) ga_die "unsupported host architecture $(uname -m) (amd64 and arm64 are)" ;;
  esac
}

rust_target() { # arch
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    *) ga_die "unsupported architecture '$1' (amd64 and arm64 are)" ;;
  esac
}

# A static binary for the host: glibc linked in, so it runs in FROM scratch.
build_static() { # profile -> prints the path
  local profile="$1" target dir strip
  target="$(rust_target "$(host_arch)")"
  # No debug info in the image: a dev build's would make it 5 times larger.
  strip="CARGO_PROFILE_$(printf '%s' "${profile}" | tr '[:lower:]-' '[:upper:]_')_STRIP"
  ga_log "cargo build --profile ${profile} --target ${target} (static, crt-static)"
  env RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" "${strip}=debuginfo" \
    cargo build --locked --quiet --profile "${profile}" --target "${target}" \
    --bin garden-artifacts --manifest-path "${ROOT}/Cargo.toml" >&2
  dir="${profile}"
  [[ "${profile}" == dev ]] && dir=debug
  printf '%s/%s/%s/garden-artifacts\n' "${CARGO_TARGET_DIR}" "${target}" "${dir}"
}

# Fails unless FILE is a statically linked executable: a dynamic one would not start in
# FROM scratch (there is no loader), and podman build would not notice.
check_static() { # file
  local file="$1" description
  [[ -x "${file}" ]] || ga_die "${file} is not an executable file"
  description="$(file -b "${file}")"
  case "${description}" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) ga_die "${file} is not statically linked: ${description}" ;;
  esac
}

main() {
  local arches=() bin_dir="" profile="release" tag="" push="" archive=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --arch) arches+=("${2:?--arch needs a value}"); shift 2 ;;
      --bin-dir) bin_dir="${2:?--bin-dir needs a value}"; shift 2 ;;
      --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
      --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
      --push) push="${2:?--push needs a value}"; shift 2 ;;
      --archive) archive="${2:?--archive needs a value}"; shift 2 ;;
      --print-version) crate_version; return 0 ;;
      -h | --help) usage ;;
      *) printf 'unknown argument: %s\n\n' "$1" >&2; usage ;;
    esac
  done
  [[ ${#arches[@]} -gt 0 ]] || arches=("$(host_arch)")
  if [[ -n "${archive}" && ${#arches[@]} -ne 1 ]]; then
    ga_die "--archive saves one platform; give a single --arch"
  fi
  command -v podman >/dev/null 2>&1 || ga_die "podman is not installed (apt-get install podman)"
  command -v file >/dev/null 2>&1 || ga_die "file is not installed (apt-get install file)"

  local version revision
  version="$(crate_version)"
  [[ -n "${version}" ]] || ga_die "no [package] version in ${ROOT}/Cargo.toml"
  revision="$(git -C "${ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)"
  tag="${tag:-localhost/garden-artifacts:${version}}"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${GA_CACHE_DIR}/target}"
  local epoch="${SOURCE_DATE_EPOCH:-$(git -C "${ROOT}" log -1 --format=%ct 2>/dev/null || date +%s)}"

  local podman=(podman)
  if [[ -n "${GA_PODMAN_ROOT:-}" ]]; then
    podman+=(--root "${GA_PODMAN_ROOT}/root" --runroot "${GA_PODMAN_ROOT}/run" --storage-driver vfs)
  fi

  # The build context: Containerfile, rootfs/ and bin/linux-<arch>/.
  local context arch bin
  context="$(mktemp -d "${TMPDIR:-/tmp}/garden-artifacts-image.XXXXXX")"
  # shellcheck disable=SC2064 # expand now: the variable is local
  trap "rm -rf -- '${context}'" EXIT
  cp "${ROOT}/Containerfile" "${context}/Containerfile"
  mkdir -p "${context}/rootfs/etc/ssl/certs" "${context}/rootfs/tmp"
  chmod 1777 "${context}/rootfs/tmp"
  local bundle=/etc/ssl/certs/ca-certificates.crt
  [[ -s "${bundle}" ]] || ga_die "no CA bundle at ${bundle} (apt-get install ca-certificates)"
  install -m 0644 "${bundle}" "${context}/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"${context}/rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"${context}/rootfs/etc/group"
  chmod 0644 "${context}/rootfs/etc/passwd" "${context}/rootfs/etc/group"
  for arch in "${arches[@]}"; do
    rust_target "${arch}" >/dev/null
    if [[ -n "${bin_dir}" ]]; then
      bin="${bin_dir}/garden-artifacts-linux-${arch}"
    elif [[ "${arch}" == "$(host_arch)" ]]; then
      bin="$(build_static "${profile}")"
    else
      ga_die "no binary for ${arch}: build one (see .github/workflows/release.yaml) and pass --bin-dir"
    fi
    check_static "${bin}"
    mkdir -p "${context}/bin/linux-${arch}"
    install -m 0755 "${bin}" "${context}/bin/linux-${arch}/garden-artifacts"
  done

  local build_args=(
    --build-arg "VERSION=${version}" --build-arg "REVISION=${revision}"
    --timestamp "${epoch}" -f "${context}/Containerfile"
  )
  if [[ ${#arches[@]} -eq 1 ]]; then
    ga_log "podman build ${tag} (linux/${arches[0]})"
    "${podman[@]}" build --quiet --platform "linux/${arches[0]}" \
      --build-arg "TARGETARCH=${arches[0]}" "${build_args[@]}" -t "${tag}" "${context}" >&2
  else
    "${podman[@]}" manifest rm "${tag}" >/dev/null 2>&1 || true
    "${podman[@]}" manifest create "${tag}" >/dev/null
    for arch in "${arches[@]}"; do
      ga_log "podman build ${tag} (linux/${arch}, into the manifest list)"
      "${podman[@]}" build --quiet --platform "linux/${arch}" \
        --build-arg "TARGETARCH=${arch}" "${build_args[@]}" --manifest "${tag}" "${context}" >&2
    done
  fi

  if [[ -n "${archive}" ]]; then
    rm -f -- "${archive}"
    "${podman[@]}" save --quiet --format oci-archive -o "${archive}" "${tag}"
    ga_log "saved ${tag} to ${archive}"
  fi
  if [[ -n "${push}" ]]; then
    ga_log "pushing ${tag} to ${push}"
    if [[ ${#arches[@]} -eq 1 ]]; then
      "${podman[@]}" push "${tag}" "docker://${push}"
    else
      "${podman[@]}" manifest push --all "${tag}" "docker://${push}"
    fi
  fi
  printf '%s\n' "${tag}"
}

main "$@"
