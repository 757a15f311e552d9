#!/usr/bin/env bash
# Installs everything Stepwell needs on a fresh Debian 12 machine, as root:
# Debian packages, a .venv made from Python >= 3.12, and the Python packages.
# WITH_TEST_DEPS=1 adds what the test suite needs (PostgreSQL, Chromium).
# Idempotent: a second run checks, prints nothing and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# iproute2 and nftables: the network namespaces and host rules of network-on sandboxes.
DEBS=(libnl-3-200 libnl-route-3-200 redis-server iproute2 nftables)
[[ "${WITH_TEST_DEPS:-0}" == 1 ]] && DEBS+=(postgresql chromium chromium-driver)

missing=()
for pkg in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || { echo "missing Debian packages (${missing[*]}); run as root" >&2; exit 1; }
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

is_new_enough() {
    "$1" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null
}

# Prints the real path of a Python >= 3.12: from PATH first, then from pyenv
# (found even when pyenv is not on PATH, as in a non-interactive CI shell).
find_python() {
    local c
    for c in python3.12 python3.13 python3.14; do
        if command -v "$c" >/dev/null && is_new_enough "$c"; then
            "$c" -c 'import sys; print(sys.executable)'; return
        fi
    done
    local root
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for c in "$root"/versions/3.1[2-9]*/bin/python3; do
        [[ -x "$c" ]] && is_new_enough "$c" && { echo "$c"; return; }
    done
    echo "no Python >= 3.12 found on PATH or under pyenv ($root)" >&2
    exit 1
}

if [[ -e .venv && ! -x .venv/bin/python ]] || { [[ -x .venv/bin/python ]] && ! is_new_enough .venv/bin/python; }; then
    echo "removing a broken or too old .venv"
    rm -rf .venv
fi
if [[ ! -x .venv/bin/python ]]; then
    py=$(find_python)
    echo "creating .venv with $py"
    "$py" -m venv .venv
fi

stamp=.venv/.stepwell-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || "$(cat $stamp)" != "$want" ]]; then
    echo "installing Python packages"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    echo "$want" > $stamp
fi
