#!/usr/bin/env bash
# Find or install the garden-artifacts binary for the composite actions in .github/actions/:
# on a runner, write `binary=PATH` to $GITHUB_OUTPUT; elsewhere (no GITHUB_OUTPUT) print PATH.
# Workflow commands (::error::) go to stdout, so the caller must not redirect it.
#
# Environment (the actions pass their inputs in):
#   GA_BINARY    an existing garden-artifacts executable: used as is, nothing is installed
#   GA_VERSION   a crates.io version: `cargo install --locked garden-artifacts --version V`,
#                cached under $RUNNER_TOOL_CACHE (kept between jobs on self-hosted runners)
#   neither      garden-artifacts on PATH when there is one; otherwise built from the action's
#                own source (`cargo install --locked --path` on the checkout GitHub made of the
#                action's repository at the ref in `uses:`), cached for the job in $RUNNER_TEMP
# Installing needs cargo (a Rust toolchain: GitHub's hosted runners have one).
set -euo pipefail

die() {
  printf '::error title=garden-artifacts install::%s\n' "$*"
  exit 1
}

ga_binary="${GA_BINARY:-}"
ga_version="${GA_VERSION:-}"
ga_action_path="${GA_ACTION_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
tmp_root="${RUNNER_TEMP:-${TMPDIR:-/tmp}}"

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

if [[ -n "${ga_binary}" ]]; then
  [[ -f "${ga_binary}" && -x "${ga_binary}" ]] \
    || die "binary '${ga_binary}' is not an executable file"
  bin="$(cd "$(dirname "${ga_binary}")" && pwd)/$(basename "${ga_binary}")"
elif [[ -n "${ga_version}" ]]; then
  [[ "${ga_version}" =~ ^[0-9A-Za-z.+-]+$ ]] || die "garden_artifacts_version '${ga_version}' is not a version"
  root="${RUNNER_TOOL_CACHE:-${tmp_root}}/garden-artifacts/${ga_version}"
  bin="${root}/bin/garden-artifacts"
  if [[ ! -x "${bin}" ]]; then
    printf 'Installing garden-artifacts %s from crates.io into %s\n' "${ga_version}" "${root}" >&2
    cargo_install "${root}" --version "${ga_version}" garden-artifacts
  fi
elif command -v garden-artifacts >/dev/null 2>&1; then
  bin="$(command -v garden-artifacts)"
else
  # .github/actions/<action> -> the repository root holding Cargo.toml.
  source_dir="$(cd "${ga_action_path}/../../.." 2>/dev/null && pwd)" || source_dir="${ga_action_path}/../../.."
  if ! grep -qs '^name = "garden-artifacts"' "${source_dir}/Cargo.toml"; then
    die "no garden-artifacts on PATH and no garden-artifacts source at ${source_dir}: give the action 'binary' or 'garden_artifacts_version'"
  fi
  root="${tmp_root}/garden-artifacts-from-source"
  bin="${root}/bin/garden-artifacts"
  if [[ ! -x "${bin}" ]]; then
    printf 'Building garden-artifacts from %s into %s (a few minutes)\n' "${source_dir}" "${root}" >&2
    cargo_install "${root}" --path "${source_dir}"
  fi
fi

version="$("${bin}" --version 2>/dev/null)" || die "'${bin} --version' failed: not a garden-artifacts binary?"
printf 'Using %s (%s)\n' "${bin}" "${version}" >&2
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
  printf 'binary=%s\n' "${bin}" >>"${GITHUB_OUTPUT}"
else
  printf '%s\n' "${bin}"
fi
