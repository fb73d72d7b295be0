#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds the container images of the example release (Containerfile: linux/amd64 and
# linux/arm64) with podman into an OCI image layout, and pushes them with garden-artifacts to
# the build repository the example's GardenArtifacts publish them from:
#   HOST:PORT/builds/gardenlinux/container:amd64-1877.5 and :arm64-1877.5
# The controller builds nothing: run this before applying examples/ (scripts/run.sh does).
#
#   examples/containers/build.sh --push HOST:PORT    build and push (e.g. --push 127.0.0.1:5000)
#   examples/containers/build.sh --layout DIR        build into the layout DIR only (tags
#                                                    amd64-1877.5, arm64-1877.5); with --push,
#                                                    push from there
#
# The same sources and podman give the same digests (fixed timestamp, no builder-version
# label), so a second run pushes nothing new and the published tags stay where they are.
#
# Environment:
#   GARDEN_ARTIFACTS   the garden-artifacts binary that pushes (default: the one on PATH)
#   SOURCE_DATE_EPOCH  the images' timestamp (default: 1747785600, the day of 1877.5)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GA_LOG_TAG="example-containers"
# shellcheck source=../../scripts/lib/common.sh
source "${HERE}/../../scripts/lib/common.sh"

VERSION="1877.5"
ARCHES=(amd64 arm64)
BUILD_REPOSITORY="builds/gardenlinux/container"

usage() {
  sed -n '3,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

main() {
  local registry="" layout=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --push) registry="${2:?--push needs HOST:PORT}"; shift 2 ;;
      --layout) layout="${2:?--layout needs a folder}"; shift 2 ;;
      -h | --help) usage ;;
      *) printf 'unknown argument: %s\n\n' "$1" >&2; usage ;;
    esac
  done
  [[ -n "${registry}" || -n "${layout}" ]] || usage
  command -v podman >/dev/null 2>&1 \
    || ga_die "podman is not installed; it builds the example's container images (apt-get install podman, or scripts/dev-env.sh up)"
  local cli="${GARDEN_ARTIFACTS:-garden-artifacts}"
  if [[ -n "${registry}" ]]; then
    command -v "${cli}" >/dev/null 2>&1 \
      || ga_die "${cli} not found; it pushes the images (set GARDEN_ARTIFACTS to the binary, e.g. target/debug/garden-artifacts)"
  fi

  # Private podman storage on vfs: no overlay mounts, nothing left in the user's storage.
  # podman wants the run root under 50 characters, so a short folder in /tmp.
  local work
  work="$(mktemp -d /tmp/ga-ex.XXXXXX)"
  # shellcheck disable=SC2064 # expand now: the variable is local
  trap "rm -rf -- '${work}'" EXIT
  # It needs no credentials either: an empty auth file, so no docker config is read (podman
  # stops at a DOCKER_CONFIG folder without config.json).
  printf '{"auths":{}}\n' >"${work}/auth.json"
  local podman=(env REGISTRY_AUTH_FILE="${work}/auth.json"
    podman --root "${work}/root" --runroot "${work}/run" --storage-driver vfs)
  layout="${layout:-${work}/layout}"

  local epoch="${SOURCE_DATE_EPOCH:-1747785600}" arch image
  for arch in "${ARCHES[@]}"; do
    image="localhost/gardenlinux-example-container:${arch}"
    ga_log "podman build linux/${arch} -> oci:${layout}:${arch}-${VERSION}"
    "${podman[@]}" build --quiet --pull=never --identity-label=false --timestamp "${epoch}" \
      --platform "linux/${arch}" --build-arg "TARGETARCH=${arch}" \
      -f "${HERE}/Containerfile" -t "${image}" "${HERE}" >/dev/null
    "${podman[@]}" push --quiet --format oci "${image}" "oci:${layout}:${arch}-${VERSION}"
  done

  if [[ -n "${registry}" ]]; then
    for arch in "${ARCHES[@]}"; do
      "${cli}" copy "oci:${layout}:${arch}-${VERSION}" \
        "${registry}/${BUILD_REPOSITORY}:${arch}-${VERSION}" >&2
    done
  fi
}

main "$@"
