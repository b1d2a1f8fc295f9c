#!/bin/sh
# Installs, on demand and idempotently, the external tools Breakglass needs, into the
# git-ignored project tools dir .tools/bin (symlinks into a per-user, per-version cache, so a
# fresh clone on a machine that built them once links them in well under a second).
#
#   sh scripts/provision.sh [all | TOOL ...]      TOOL: temporal tctl helm sshd socat shellcheck chromium
#
# Go tools are built with `go install` from the Go module proxy (no prebuilt downloads are
# reachable here); Debian packages with apt-get when missing. Exit status is non-zero, with
# a message naming the tool, when something cannot be installed.
set -eu

TEMPORAL_VERSION=1.5.1   # DESIGN.md pins it: later tags carry `replace` directives
TCTL_VERSION=1.18.0   # the only 1.18.x tag the module proxy here serves
HELM_VERSION=3.22.0

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/breakglass-tools"
mkdir -p "$bin" "$cache"

say() { printf 'provision: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# One provisioning run at a time per user: parallel `go install`s of the same tool would
# race on the cache, and parallel apt-get runs on dpkg's lock.
if [ "${BREAKGLASS_PROVISION_LOCKED:-}" != 1 ] && command -v flock >/dev/null 2>&1; then
  BREAKGLASS_PROVISION_LOCKED=1 exec flock "$cache/.lock" "$0" "$@"
fi

link() { ln -sf "$1" "$bin/$2"; }

# go_tool NAME VERSION MODULE PACKAGE_DIR
# Downloads the module at its tag and builds it inside the module cache rather than using
# `go install pkg@version`: the latter also asks the proxy for the module's version list
# (to check deprecation), which the proxy here refuses for tctl.
go_tool() {
  name=$1 version=$2 module=$3 package=$4
  dir="$cache/$name-$version"
  if [ -x "$dir/$name" ]; then
    link "$dir/$name" "$name"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "$name $version is missing and Go is not installed to build it"
  say "building $name v$version from the Go module proxy (first time only; the temporal CLI takes a few minutes)"
  log="$cache/$name-$version.log"
  # GOTOOLCHAIN=auto lets the go command fetch a newer toolchain when a module asks for one.
  export GOTOOLCHAIN=auto GOFLAGS=-mod=mod
  src=$(go mod download -json "$module@v$version" 2>"$log" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$src" ] && [ -d "$src" ] || { cat "$log" >&2; die "could not download $module v$version"; }
  mkdir -p "$dir"
  if ! (cd "$src" && go build -trimpath -o "$dir/$name.partial" "$package") >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "could not build $name v$version (log: $log)"
  fi
  mv "$dir/$name.partial" "$dir/$name"
  link "$dir/$name" "$name"
}

apt_updated=0
# apt_tool NAME PACKAGE BINARY
apt_tool() {
  name=$1 package=$2 binary=$3
  if [ ! -x "$binary" ]; then
    command -v apt-get >/dev/null 2>&1 || die "$name ($binary) is missing and apt-get is unavailable: install Debian package '$package'"
    [ "$(id -u)" = 0 ] || die "$name ($binary) is missing; installing Debian package '$package' needs root"
    say "installing Debian package $package"
    if [ "$apt_updated" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
      apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null \
      || die "apt-get install $package failed"
    [ -x "$binary" ] || die "package $package installed but $binary is still missing"
  fi
  link "$binary" "$name"
}

provision() {
  case $1 in
    temporal) go_tool temporal "$TEMPORAL_VERSION" github.com/temporalio/cli ./cmd/temporal ;;
    tctl) go_tool tctl "$TCTL_VERSION" github.com/temporalio/tctl ./cmd/tctl ;;
    helm) go_tool helm "$HELM_VERSION" helm.sh/helm/v3 ./cmd/helm ;;
    sshd) apt_tool sshd openssh-server /usr/sbin/sshd ;;
    socat) apt_tool socat socat /usr/bin/socat ;;
    shellcheck) apt_tool shellcheck shellcheck /usr/bin/shellcheck ;;
    chromium) apt_tool chromium chromium /usr/bin/chromium ;;
    *) die "unknown tool '$1' (known: temporal tctl helm sshd socat shellcheck chromium)" ;;
  esac
}

[ $# -gt 0 ] || set -- all
for tool in "$@"; do
  if [ "$tool" = all ]; then
    for t in sshd socat shellcheck chromium temporal tctl helm; do provision "$t"; done
  else
    provision "$tool"
  fi
done
say "tools ready in $bin"
