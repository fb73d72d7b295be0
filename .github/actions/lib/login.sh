#!/usr/bin/env bash
# "Log in" for the composite actions in .github/actions/: write a docker config.json that holds
# basic auth for the registry of GA_REGISTRY_URL, in a fresh private folder under $RUNNER_TEMP,
# and report that folder as `docker_config=DIR` on $GITHUB_OUTPUT (without GITHUB_OUTPUT: as
# the last line of stdout). The next step points DOCKER_CONFIG at it; the last step of the
# action deletes it. Workflow commands (::add-mask::, ::error::) go to stdout, so the caller
# must not redirect it.
#
# Environment:
#   GA_REGISTRY_URL   e.g. ghcr.io/gardenlinux/gardenlinux (the host is the part before the
#                     first '/'; a leading https:// is ignored)
#   GA_USERNAME       username; falls back to REGISTRY_USERNAME
#   GA_PASSWORD       password or token; falls back to REGISTRY_PASSWORD. Only ever read from
#                     the environment, masked in the log, never echoed or put on a command line.
# Without a username and a password nothing is written and `docker_config=` is empty: the
# binary then uses what is already there (REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or
# ~/.docker/config.json, e.g. from docker/login-action), or goes anonymous.
#
# The new config starts as a copy of that existing one (so credentials for other registries,
# e.g. of a subject elsewhere, keep working), then sets auths[HOST] and drops a credHelpers
# entry for HOST, which would otherwise win over it.
set -euo pipefail

die() {
  printf '::error title=garden-artifacts login::%s\n' "$*"
  exit 1
}

username="${GA_USERNAME:-${REGISTRY_USERNAME:-}}"
password="${GA_PASSWORD:-${REGISTRY_PASSWORD:-}}"
# A secret pasted with a line break at the end: drop it, as `docker login --password-stdin` does.
while [[ "${password}" == *$'\n' || "${password}" == *$'\r' ]]; do
  password="${password%$'\n'}"
  password="${password%$'\r'}"
done

# Mask first, before anything else can print: each line of a (multi-line) secret.
if [[ -n "${password}" ]]; then
  while IFS= read -r line; do
    if [[ -n "${line}" ]]; then
      printf '::add-mask::%s\n' "${line}"
    fi
  done <<<"${password}"
fi

url="${GA_REGISTRY_URL:-}"
url="${url#https://}"
url="${url#http://}"
host="${url%%/*}"
[[ -n "${host}" ]] || die "registry_url is empty"

output() {
  if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
    printf 'docker_config=%s\n' "$1" >>"${GITHUB_OUTPUT}"
  else
    printf '%s\n' "$1"
  fi
}

if [[ -z "${username}" && -z "${password}" ]]; then
  printf 'No credentials given: using the existing docker config, if any, for %s\n' "${host}" >&2
  output ""
  exit 0
fi
[[ -n "${username}" ]] || die "a password was given but no username (input 'username' or env REGISTRY_USERNAME)"
[[ -n "${password}" ]] || die "a username was given but no password (input 'password' or env REGISTRY_PASSWORD)"
[[ "${username}" != *:* ]] || die "the username must not contain ':' (basic auth)"

command -v python3 >/dev/null 2>&1 || die "python3 is needed to write the docker config"

umask 077
dir="$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/garden-artifacts-auth.XXXXXX")"
existing="${DOCKER_CONFIG:-${HOME}/.docker}/config.json"

# The secret reaches python through the environment (GA_AUTH_*), never argv.
GA_AUTH_USER="${username}" GA_AUTH_PASSWORD="${password}" GA_AUTH_HOST="${host}" \
  GA_AUTH_EXISTING="${existing}" GA_AUTH_EXTRA="${REGISTRY_AUTH_FILE:-}" \
  GA_AUTH_OUT="${dir}/config.json" python3 - <<'PY' || die "could not write the docker config"
import base64, json, os, sys

def load(path):
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError) as e:
        print(f"ignoring unreadable {path}: {e}", file=sys.stderr)
        return {}

host = os.environ["GA_AUTH_HOST"]
config = load(os.environ["GA_AUTH_EXISTING"])
# REGISTRY_AUTH_FILE (podman/skopeo) is read before the docker config by garden-artifacts;
# the step that uses this config unsets it, so carry its auths over.
extra = load(os.environ["GA_AUTH_EXTRA"]).get("auths") or {}
auths = dict(config.get("auths") or {})
auths.update(extra)
for key in [k for k in auths if k.removeprefix("https://").removeprefix("http://").split("/")[0] == host]:
    del auths[key]
token = base64.b64encode(
    f'{os.environ["GA_AUTH_USER"]}:{os.environ["GA_AUTH_PASSWORD"]}'.encode()
).decode()
print(f"::add-mask::{token}")
auths[host] = {"auth": token}
config["auths"] = auths
helpers = dict(config.get("credHelpers") or {})
helpers.pop(host, None)
if helpers:
    config["credHelpers"] = helpers
else:
    config.pop("credHelpers", None)
fd = os.open(os.environ["GA_AUTH_OUT"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
PY

printf 'Credentials for %s written to %s/config.json\n' "${host}" "${dir}" >&2
output "${dir}"
