#!/usr/bin/env bash
# Runs shellcheck on every shell script of the repository: the tracked files named *.sh and those whose
# first line is a bash or sh shebang (scripts/helm, .ci/run, ...). tests/release.rs runs it in
# the test suite, the hosted CI in a job of its own.
#
#   scripts/shellcheck.sh            all of them
#   scripts/shellcheck.sh --list     only print their paths
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v shellcheck >/dev/null 2>&1 \
  || { echo "shellcheck is not installed (apt-get install shellcheck)" >&2; exit 1; }

scripts=()
while IFS= read -r -d '' file; do
  [[ -f "${file}" ]] || continue
  case "${file}" in
    *.sh) scripts+=("${file}") ;;
    *)
      if head -n 1 -- "${file}" | grep -Eq '^#!.*[/ ](ba)?sh([[:space:]]|$)'; then
        scripts+=("${file}")
      fi
      ;;
  esac
done < <(git ls-files -z --cached --others --exclude-standard | sort -z -u)
[[ ${#scripts[@]} -gt 0 ]] || { echo "no shell script found (not a git checkout?)" >&2; exit 1; }

if [[ "${1:-}" == --list ]]; then
  printf '%s\n' "${scripts[@]}"
  exit 0
fi
# -x: follow `source` lines (scripts/.shellcheckrc names where they lead).
shellcheck -x "${scripts[@]}"
printf 'shellcheck: %d scripts clean\n' "${#scripts[@]}"
