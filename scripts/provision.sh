#!/bin/sh
# Installs, on demand and idempotently, the external tools Breakglass needs, into the
# git-ignored project tools dir .tools/bin (symlinks into a per-user, per-version cache, so a
# fresh clone on a machine that built them once links them in well under a second).
#
#   sh scripts/provision.sh [all | TOOL ...]
#     TOOL: temporal tctl helm sshd socat shellcheck chromium qemu guest
#
# qemu is Debian's QEMU (system emulator, storage daemon, qemu-img); guest is the lab devvm's
# image (lab/guest/build-image.sh), built from Debian packages and cached by the content hash of
# its inputs, linked as .tools/guest.
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
# apt_install WHAT PACKAGE...: apt-get update (once per run) and install, or stop naming WHAT.
apt_install() {
  what=$1; shift
  command -v apt-get >/dev/null 2>&1 || die "$what is missing and apt-get is unavailable: install Debian package(s) $*"
  [ "$(id -u)" = 0 ] || die "$what is missing; installing Debian package(s) $* needs root"
  say "installing Debian package(s) $*"
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# apt_tool NAME PACKAGE BINARY: the package when BINARY is missing, then BINARY linked as NAME.
apt_tool() {
  name=$1 package=$2 binary=$3
  if [ ! -x "$binary" ]; then
    apt_install "$name ($binary)" "$package"
    [ -x "$binary" ] || die "package $package installed but $binary is still missing"
  fi
  link "$binary" "$name"
}

# apt_packages PACKAGE...: installs the packages that are not installed yet.
apt_packages() {
  missing=''
  for package in "$@"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $package"
  done
  # shellcheck disable=SC2086 # one word per package
  [ -z "$missing" ] || apt_install "a Debian package" $missing
}

QEMU_PACKAGES='qemu-system-x86 qemu-utils'
GUEST_BUILD_PACKAGES='linux-image-amd64 mmdebstrap e2fsprogs cpio busybox-static kmod xz-utils openssh-client'

qemu_tools() {
  apt_packages $QEMU_PACKAGES
  for binary in qemu-system-x86_64 qemu-storage-daemon qemu-img; do
    [ -x "/usr/bin/$binary" ] || die "QEMU: /usr/bin/$binary is missing after installing $QEMU_PACKAGES"
    link "/usr/bin/$binary" "$binary"
  done
}

# The guest image, cached by the hash of everything that goes into it: the build script, the
# files it copies, the devvm installer and the kernel it boots.
guest_image() {
  apt_packages $GUEST_BUILD_PACKAGES
  kernel=$(cd /lib/modules && ls -d [0-9]*-amd64 2>/dev/null | sort -V | tail -n 1)
  hash=$(
    cd "$root" && {
      find lab/guest host/devvm host/lib -type f | LC_ALL=C sort | xargs sha256sum
      printf 'kernel %s\n' "$kernel"
    } | sha256sum | cut -c1-16
  )
  dir="$cache/guest-$hash"
  if [ ! -f "$dir/image.env" ]; then
    say "building the lab devvm's guest image from Debian packages (first time only, about a minute)"
    rm -rf "$dir.partial"
    sh "$root/lab/guest/build-image.sh" "$dir.partial" || die "could not build the guest image"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    # Earlier builds (other inputs) are ~250 MiB each and nothing links them any more here.
    for old in "$cache"/guest-*; do
      [ "$old" = "$dir" ] || rm -rf "$old"
    done
  fi
  ln -sfn "$dir" "$root/.tools/guest"
  accel_probe "$dir"
}

# KVM when it works, TCG otherwise. /dev/kvm can exist and still hang at boot (it does on some
# sandboxes), so the probe boots the guest kernel to its expected panic (no root disk) under
# a deadline; the answer is kept per machine and boot, in .tools/accel.
accel_probe() {
  probe="$cache/accel-$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)"
  if [ ! -f "$probe" ]; then
    accel=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
      say "probing KVM (up to 15 s, once per boot)"
      if (timeout -s KILL 15 qemu-system-x86_64 -accel kvm -m 128 -display none -nodefaults -serial stdio \
        -no-reboot -kernel "$1/vmlinux" -append 'console=ttyS0 panic=-1' | grep -q 'Kernel panic') 2>/dev/null; then
        accel=kvm
      fi
    fi
    echo "$accel" >"$probe"
  fi
  cp "$probe" "$root/.tools/accel"
}

provision() {
  case $1 in
    qemu) qemu_tools ;;
    guest) qemu_tools; guest_image ;;
    temporal) go_tool temporal "$TEMPORAL_VERSION" github.com/temporalio/cli ./cmd/temporal ;;
    tctl) go_tool tctl "$TCTL_VERSION" github.com/temporalio/tctl ./cmd/tctl ;;
    helm) go_tool helm "$HELM_VERSION" helm.sh/helm/v3 ./cmd/helm ;;
    sshd) apt_tool sshd openssh-server /usr/sbin/sshd ;;
    socat) apt_tool socat socat /usr/bin/socat ;;
    shellcheck) apt_tool shellcheck shellcheck /usr/bin/shellcheck ;;
    chromium) apt_tool chromium chromium /usr/bin/chromium ;;
    *) die "unknown tool '$1' (known: temporal tctl helm sshd socat shellcheck chromium qemu guest)" ;;
  esac
}

[ $# -gt 0 ] || set -- all
for tool in "$@"; do
  if [ "$tool" = all ]; then
    for t in sshd socat shellcheck chromium qemu guest temporal tctl helm; do provision "$t"; done
  else
    provision "$tool"
  fi
done
say "tools ready in $bin"
