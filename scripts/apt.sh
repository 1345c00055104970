# Sourced by the setup scripts: `apt_install PKG...` installs Debian packages (apt-get update
# once first), as root or through sudo; honours SKIP_APT=1.
# shellcheck shell=bash

apt_updated=0
apt_install() {
    if [[ "${SKIP_APT:-0}" == "1" ]]; then
        log "SKIP_APT=1: not installing $*; install them yourself"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found: install $* with your package manager"
        return 1
    fi
    local sudo=""
    if [[ "$(id -u)" != "0" ]]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            log "not root and no sudo: cannot install $*"
            return 1
        fi
    fi
    if [[ "$apt_updated" == "0" ]]; then
        $sudo apt-get update
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$@"
}

