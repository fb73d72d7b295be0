# shellcheck shell=bash
# Shared helpers for the garden-artifacts developer scripts.
# Source this file; it defines functions and default paths, and runs nothing else.

# Where things live. All of them are outside the repository.
GA_CACHE_DIR="${GA_CACHE_DIR:-${HOME}/.cache/garden-artifacts}"
GA_STATE_DIR="${GA_STATE_DIR:-${HOME}/.local/state/garden-artifacts/dev-env}"

# Short progress lines on stderr.
ga_log() {
  printf '[%s] %s\n' "${GA_LOG_TAG:-ga}" "$*" >&2
}

ga_die() {
  printf '[%s] ERROR: %s\n' "${GA_LOG_TAG:-ga}" "$*" >&2
  exit 1
}

# Run a command as root (directly when we are root, through sudo otherwise).
ga_as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    ga_die "need root (or sudo) to run: $*"
  fi
}

# True when a Debian package is installed.
ga_pkg_installed() {
  local status
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  [[ "${status}" == "install ok installed" ]]
}

# Install the given Debian packages that are missing; quick no-op when all are present.
# apt-get update runs at most once per process, and only when something is missing.
GA_APT_UPDATED="${GA_APT_UPDATED:-0}"
ga_apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    ga_pkg_installed "${pkg}" || missing+=("${pkg}")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return 0
  fi
  local log="${GA_APT_LOG:-/tmp/garden-artifacts-apt.log}"
  if [[ "${GA_APT_UPDATED}" != 1 ]]; then
    ga_log "apt-get update (log: ${log})"
    ga_as_root env DEBIAN_FRONTEND=noninteractive apt-get update >>"${log}" 2>&1 \
      || ga_die "apt-get update failed; see ${log}"
    GA_APT_UPDATED=1
  fi
  ga_log "apt-get install ${missing[*]}"
  ga_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >>"${log}" 2>&1 \
    || ga_die "apt-get install ${missing[*]} failed; see ${log}"
}

# Print the Debian archive URI this machine's apt already uses (e.g. http://HOST/debian),
# read from /etc/apt/sources.list and /etc/apt/sources.list.d/ (one-line and deb822 formats).
# GA_DEBIAN_MIRROR overrides it. Never guesses a host name.
ga_debian_mirror() {
  if [[ -n "${GA_DEBIAN_MIRROR:-}" ]]; then
    printf '%s\n' "${GA_DEBIAN_MIRROR%/}"
    return 0
  fi
  local files=() f uri
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "${f}" ]] && files+=("${f}")
  done
  [[ ${#files[@]} -gt 0 ]] || ga_die "no apt sources found under /etc/apt"
  # Candidate URIs: one-line "deb [opts] URI suite ..." entries and deb822 "URIs:" fields.
  # The Debian archive is the URI whose path ends in /debian (not /debian-security etc.).
  uri="$(
    for f in "${files[@]}"; do
      sed -n -E \
        -e 's/^[[:space:]]*deb(-src)?[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\3/p' \
        -e 's/^[[:space:]]*URIs:[[:space:]]*//p' "${f}" | tr ' ' '\n'
    done | grep -E '^(https?|mirror\+https?)://[^[:space:]]+/debian/?$' | head -n 1 || true
  )"
  [[ -n "${uri}" ]] || ga_die "could not find a Debian archive (…/debian) in the apt sources; set GA_DEBIAN_MIRROR"
  printf '%s\n' "${uri%/}"
}

# True when PID is a live process (not a zombie waiting to be reaped).
ga_proc_alive() { # pid
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n "${state}" && "${state}" != Z && "${state}" != X ]]
}

# PID file helpers. A component is "running" when its pid file names a live process whose
# command line contains the expected program name (guards against pid reuse).
ga_pid_alive() { # pidfile progname
  local pidfile="$1" prog="$2" pid
  [[ -f "${pidfile}" ]] || return 1
  pid="$(cat "${pidfile}" 2>/dev/null || true)"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  ga_proc_alive "${pid}" || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q -- "${prog}"
}

ga_pid_of() { # pidfile
  cat "$1" 2>/dev/null || true
}

# Stop the process named by a pid file (TERM, then KILL after a grace period).
ga_stop_pidfile() { # pidfile progname label
  local pidfile="$1" prog="$2" label="$3" pid i
  if ! ga_pid_alive "${pidfile}" "${prog}"; then
    rm -f "${pidfile}"
    ga_log "${label}: not running"
    return 0
  fi
  pid="$(ga_pid_of "${pidfile}")"
  kill -TERM "${pid}" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    ga_proc_alive "${pid}" || break
    sleep 0.1
  done
  if ga_proc_alive "${pid}"; then
    ga_log "${label}: still alive after 10s, sending KILL"
    kill -KILL "${pid}" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "${pidfile}"
  ga_log "${label}: stopped (pid ${pid})"
}

# True when something listens on 127.0.0.1:PORT (TCP).
ga_port_in_use() { # port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Wait until a command succeeds, up to N tenths of a second.
ga_wait_for() { # tenths cmd...
  local tenths="$1" i
  shift
  for ((i = 0; i < tenths; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}
