#!/bin/sh
# Builds the lab devvm's guest image from Debian packages, on the machine that runs it:
#
#   sh lab/guest/build-image.sh OUT_DIR
#
# OUT_DIR receives (and a second run with the same inputs leaves untouched):
#   vmlinux           the Debian kernel (linux-image-amd64, as installed on this machine),
#                     decompressed: QEMU boots it directly (PVH), which saves the seconds an
#                     XZ decompression takes under TCG
#   initrd.img        a small busybox initramfs that loads the virtio-scsi, ext4, virtio-net,
#                     virtio-console and fw_cfg modules and switches to the root disk
#   rootfs.raw        an ext4 root filesystem (Debian bookworm minbase + systemd, udev,
#                     D-Bus, OpenSSH, qemu-guest-agent, sudo, procps, iproute2), the breakglass account
#                     installed by host/devvm/install.sh, a unit that eats memory (oom scenario)
#   ssh_host_ed25519_key.pub   the guest sshd's host key (generated once, pinned by the lab)
#   breakglass_ed25519[.pub]   the client key the guest's breakglass account accepts
#   image.env         KERNEL_VERSION, GUEST_USER
#
# Needs root (mmdebstrap chroots) and Debian's package archive; scripts/provision.sh installs
# the tools and calls this only when the content hash of its inputs has no cached build.
set -eu
LC_ALL=C
export LC_ALL

out=${1:?usage: build-image.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
say() { printf 'guest-image: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "building the guest image needs root (mmdebstrap chroots into the new root)"
kver=$(cd /lib/modules && ls -d [0-9]*-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$kver" ] && [ -f "/boot/vmlinuz-$kver" ] || die "no Debian kernel installed (apt-get install linux-image-amd64)"

work=$(mktemp -d "${TMPDIR:-/tmp}/bg-guest-build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/root

# ---------------------------------------------------------------------- the root filesystem
say "bootstrapping Debian bookworm (minbase + systemd, sshd, guest agent) into $root"
mmdebstrap --quiet --variant=minbase --mode=root \
  --include=systemd,systemd-sysv,udev,dbus,openssh-server,qemu-guest-agent,sudo,procps,iproute2,kmod,less \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm "$root" >"$work/mmdebstrap.log" 2>&1 || { tail -n 30 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }

cp -R "$here/rootfs/." "$root/"
cp "$root/usr/bin/tail" "$root/usr/local/sbin/code-indexer"   # the oom scenario's memory eater
echo devvm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 devvm\n' >"$root/etc/hosts"
printf '/dev/sda / ext4 defaults,errors=remount-ro 0 1\n' >"$root/etc/fstab"
: >"$root/etc/machine-id"

# Host key: generated once per build, so the lab pins it like any real host's.
rm -f "$root"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C devvm -f "$root/etc/ssh/ssh_host_ed25519_key"
cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$work/ssh_host_ed25519_key.pub"

# The breakglass account, exactly as host/devvm/install.sh installs it on a real devvm; QEMU's
# user networking makes every client connection come from 10.0.2.2.
ssh-keygen -q -t ed25519 -N '' -C breakglass-lab -f "$work/breakglass_ed25519"
sh "$repo/host/devvm/install.sh" --root "$root" --public-key "$work/breakglass_ed25519.pub" --from 10.0.2.2 >"$work/install.log" 2>&1 \
  || { cat "$work/install.log" >&2; die "host/devvm/install.sh failed"; }
# --root writes the account as file lines; the chroot has the real tools to fix ownership.
chroot "$root" chown -R breakglass:breakglass /home/breakglass

# Boot faster under TCG: nothing here needs these.
for unit in getty@tty1.service getty-static.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-timesyncd.service \
  systemd-random-seed.service systemd-pstore.service modprobe@dm_mod.service \
  modprobe@efi_pstore.service modprobe@configfs.service modprobe@fuse.service modprobe@drm.service \
  modprobe@loop.service dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount \
  sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
  proc-sys-fs-binfmt_misc.automount systemd-binfmt.service; do
  chroot "$root" systemctl mask "$unit" >/dev/null 2>&1 || true
done
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
rm -rf "$root/var/cache/apt" "$root/var/lib/apt/lists"/* 2>/dev/null || true

say "writing the ext4 root filesystem"
truncate -s 1G "$work/rootfs.raw"
mke2fs -q -t ext4 -L devvm -d "$root" "$work/rootfs.raw" || die "mke2fs failed"

# ---------------------------------------------------------------------------- the initramfs
say "building the initramfs for kernel $kver"
ird=$work/initrd
mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot"
cp /bin/busybox "$ird/bin/busybox"
for applet in sh mount umount insmod switch_root sleep echo cat mkdir; do ln -s busybox "$ird/bin/$applet"; done
: >"$ird/modules.order"
for module in virtio_pci virtio_scsi sd_mod crc32c_generic ext4 virtio_net virtio_console qemu_fw_cfg; do
  modprobe -S "$kver" --show-depends "$module" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$ird/lib/modules/"
  basename "$ko" >>"$ird/modules.order"
done
cp "$here/initramfs-init" "$ird/init"
chmod 755 "$ird/init"
(cd "$ird" && find . | sort | cpio -o -H newc --quiet) | gzip -1 >"$work/initrd.img"

# The bzImage carries the kernel as one XZ stream; unpacked, QEMU boots its PVH entry point.
offset=$(grep -obUaP '\xfd7zXZ\x00' "/boot/vmlinuz-$kver" | head -n 1 | cut -d: -f1)
[ -n "$offset" ] || die "no XZ stream in /boot/vmlinuz-$kver"
tail -c +"$((offset + 1))" "/boot/vmlinuz-$kver" | xz -dc --single-stream >"$work/vmlinux" || die "could not unpack the kernel"

mkdir -p "$out"
cp "$work/vmlinux" "$out/vmlinux"
for f in initrd.img rootfs.raw ssh_host_ed25519_key.pub breakglass_ed25519 breakglass_ed25519.pub; do
  cp --sparse=always "$work/$f" "$out/$f"
done
printf 'KERNEL_VERSION=%s\nGUEST_USER=breakglass\n' "$kver" >"$out/image.env"
say "guest image ready in $out"
