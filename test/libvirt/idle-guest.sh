#!/bin/bash
# Builds what a small TCG test domain boots: Debian's kernel (from the VM harness's cache,
# test/vm/vm-run.sh --setup-only) and a busybox initramfs that reports on its serial console, every
# time they change, the virtio disks it sees as name:serial:sectors:ro. Hot-plug is observed from
# inside the guest, not only in libvirt's XML.
# Usage: idle-guest.sh OUTDIR     → OUTDIR/vmlinux, OUTDIR/idle-initrd.cpio
set -euo pipefail
OUT=$1
HERE=$(dirname "$(readlink -f "$0")")
VM_CACHE=${VM_CACHE:-/var/cache/vm-lvm-test}
bash "$HERE/../vm/vm-run.sh" --setup-only >&2
KV=$(cat "$VM_CACHE/kver")
mkdir -p "$OUT"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/bin" "$W/mods"; cp /bin/busybox "$W/bin/"
cat > "$W/init" <<'GUESTINIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev; mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /modlist); do insmod /mods/$m 2>/dev/null; done
echo "GUEST READY"
prev=""
while true; do
  cur=""
  for b in /sys/block/vd*; do
    [ -e "$b" ] || continue
    cur="$cur ${b##*/}:$(cat $b/serial 2>/dev/null):$(cat $b/size):$(cat $b/ro)"
  done
  [ "$cur" != "$prev" ] && { echo "GUEST DISKS:$cur"; prev="$cur"; }
  sleep 0.2
done
GUESTINIT
chmod +x "$W/init"; : > "$W/modlist"
modprobe -d "$VM_CACHE/k" -S "$KV" --show-depends -a virtio_pci virtio_blk | awk '$1=="insmod"{print $2}' |
  while read -r m; do b=$(basename "$m"); grep -qx "$b" "$W/modlist" || { cp "$m" "$W/mods/"; echo "$b" >> "$W/modlist"; }; done
(cd "$W" && find . | cpio -o -H newc --quiet) > "$OUT/idle-initrd.cpio"
cp "$VM_CACHE/vmlinux" "$OUT/vmlinux"
