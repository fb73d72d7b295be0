# shellcheck shell=bash
# ferro-oci-server, a second real OCI registry for the interop tests: unlike Debian's
# docker-registry (Distribution 2.8) it serves the OCI 1.1 referrers API
# (GET /v2/<name>/referrers/<digest>) and answers a manifest PUT with a subject with
# `OCI-Subject`. What it does and does not do: tests/REGISTRIES.md.
#
# Built from crates.io with `cargo install --locked` (75 s on 2 idle cores, longer when they
# are busy), once per machine, into the cache; in its own CARGO_TARGET_DIR, so it never waits
# for the project's build lock (and the project's `cargo test` never waits for it). The build
# tree is deleted afterwards; only the binary (4 MB) stays.
#
# Public entry point:
#   ensure_ferro   prints the path of the cached ferro-oci-server binary on stdout, building it
#                  first when it is not there yet. Idempotent; safe to run from several
#                  processes at once (flock). Progress goes to stderr.
#
# Knobs (environment):
#   GA_CACHE_DIR   cache root (default ~/.cache/garden-artifacts); the binary lands in
#                  ${GA_CACHE_DIR}/ferro-oci-server/bin/ferro-oci-server
#   CARGO          cargo to use (default: cargo on PATH, then ~/.cargo/bin/cargo)
#
# Running it (always set the listen address: its default is 0.0.0.0:8080):
#   FERRO_OCI_LISTEN=127.0.0.1:PORT FERRO_OCI_STORAGE_DIR=DIR ferro-oci-server

if ! declare -F ga_log >/dev/null 2>&1; then
  # shellcheck source=common.sh
  source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
fi

GA_FERRO_CRATE="ferro-oci-server"
GA_FERRO_VERSION="1.0.0"

ga__ferro_root() {
  printf '%s\n' "${GA_CACHE_DIR:-${HOME}/.cache/garden-artifacts}/ferro-oci-server"
}

# True when the cached binary is there and was installed at the pinned version. The version
# is recorded in a stamp file next to it (the binary has no --version flag: it just serves).
ga__ferro_cached() { # root
  [[ -x "$1/bin/ferro-oci-server" ]] \
    && [[ "$(cat "$1/.version" 2>/dev/null || true)" == "${GA_FERRO_VERSION}" ]]
}

ga__ferro_cargo() {
  local cargo="${CARGO:-}"
  if [[ -z "${cargo}" ]]; then
    cargo="$(command -v cargo 2>/dev/null || true)"
  fi
  if [[ -z "${cargo}" && -x "${HOME}/.cargo/bin/cargo" ]]; then
    cargo="${HOME}/.cargo/bin/cargo"
  fi
  [[ -n "${cargo}" ]] || ga_die "ferro-oci-server: cargo not found (install a Rust toolchain, or set CARGO)"
  printf '%s\n' "${cargo}"
}

ensure_ferro() {
  local root bin
  root="$(ga__ferro_root)"
  bin="${root}/bin/ferro-oci-server"
  if ga__ferro_cached "${root}"; then
    printf '%s\n' "${bin}"
    return 0
  fi
  mkdir -p "${root}" || return 1
  # One build at a time per machine (parallel tests and scripts may all ask for it). The lock
  # is held by a file descriptor in a subshell so that it never leaks into the caller.
  (
    exec 8>"${root}/.lock"
    flock 8
    if ga__ferro_cached "${root}"; then
      exit 0
    fi
    cargo="$(ga__ferro_cargo)" || exit 1
    log="${root}/build.log"
    ga_log "ferro-oci-server: cargo install ${GA_FERRO_CRATE}@${GA_FERRO_VERSION} (1-2 minutes on 2 cores; log: ${log})"
    start=${SECONDS}
    # RUSTFLAGS / CARGO_BUILD_* of the caller would change the build; keep it plain.
    if ! env -u RUSTFLAGS -u CARGO_BUILD_TARGET -u CARGO_ENCODED_RUSTFLAGS \
      CARGO_TARGET_DIR="${root}/target" \
      "${cargo}" install --locked --force --root "${root}" \
      --version "${GA_FERRO_VERSION}" "${GA_FERRO_CRATE}" >"${log}" 2>&1; then
      tail -n 30 "${log}" >&2
      ga_die "ferro-oci-server: cargo install failed; see ${log}"
    fi
    [[ -x "${bin}" ]] || ga_die "ferro-oci-server: cargo install succeeded but ${bin} is missing"
    printf '%s\n' "${GA_FERRO_VERSION}" >"${root}/.version"
    # The build tree is only needed to build; the binary is all we keep.
    rm -rf "${root}/target"
    ga_log "ferro-oci-server: ${GA_FERRO_VERSION} built in $((SECONDS - start))s, cached at ${bin}"
  ) || return 1
  ga__ferro_cached "${root}" || ga_die "ferro-oci-server: ${bin} is missing after the build"
  printf '%s\n' "${bin}"
}
