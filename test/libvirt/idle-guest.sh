#!/bin/bash
# Builds what a small TCG test domain boots: Debian's kernel (from the VM harness's cache,
# test/vm/vm-run.sh --setup-only) and a busybox initramfs that reports on its serial console, every
# time they change, the virtio disks it sees as name:serial:sectors:ro. Hot-plug is observed from
# inside the guest, not only in libvirt's XML.
# With `vpwriter=N` on the kernel command line, the guest is also a writer of dependent writes (the
# records of test/helpers/dependent-writer.ts): once N disks with a vp- serial are there (sorted by
# serial), write n goes to disk n mod N as its next 4 KiB record ("n\n", zeros), and is issued only
# once write n-1 is on its disk (dd conv=fsync: a flush the virtual disk completes). It stops before
# a disk's records run off its end, and says how far it got.
# With `vpstamp=SLOT:WORD`, the guest writes WORD into 4 KiB block SLOT of every vp- disk once, as it
# appears (conv=fsync: on the disk), and its reports add what blocks 0-3 of each vp- disk hold, read
# after dropping the guest's cache of that disk (so another guest's writes to a shared disk are seen):
# name:serial:sectors:ro:word0,word1,word2,word3. A slot is a whole 4 KiB block, not a sector, because
# the guest's block-device cache works in 4 KiB blocks: a 512-byte write reads the block, changes one
# sector and writes all eight back, which would undo another guest's word written to a neighbouring
# sector in between (seen in CI: a word never appeared).
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
writer() {
  want=$1
  while :; do
    set -- $(for b in /sys/block/vd*; do s=$(cat "$b/serial" 2>/dev/null); case "$s" in vp-*) echo "$s:${b##*/}:$(cat "$b/size")";; esac; done | sort)
    [ $# -ge "$want" ] && break
    sleep 0.2
  done
  i=0
  for p in "$@"; do
    dev=${p#*:}; eval "dev$i=/dev/${dev%%:*}; cnt$i=0; max$i=$((${p##*:} / 8))"
    i=$((i + 1))
    [ $i -ge "$want" ] && break
  done
  echo "GUEST WRITER ON: $*"
  n=1
  while :; do
    k=$((n % want))
    eval "d=\$dev$k; c=\$cnt$k; m=\$max$k"
    [ "$c" -ge "$m" ] && { echo "GUEST WRITER FULL AT $((n - 1))"; break; }
    printf '%s\n' "$n" | dd of="$d" bs=4096 seek="$c" count=1 conv=sync,notrunc,fsync 2>/dev/null || { echo "GUEST WRITER FAILED AT $n"; break; }
    eval "cnt$k=$((c + 1))"
    [ $((n % 20)) -eq 0 ] && echo "GUEST WROTE $n"
    n=$((n + 1))
  done
}
echo "GUEST READY"
w=$(sed -n 's/.*vpwriter=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$w" ] && writer "$w" &
stamp=$(sed -n 's/.*vpstamp=\([0-3]:[A-Za-z0-9-]*\).*/\1/p' /proc/cmdline)
stamped=" "
sectors() {
  blockdev --flushbufs "$1" 2>/dev/null; echo 1 > /proc/sys/vm/drop_caches
  for i in 0 1 2 3; do printf '%s' "$(dd if="$1" bs=4096 skip=$i count=1 2>/dev/null | head -c 40 | tr -cd 'A-Za-z0-9-')"; [ $i -lt 3 ] && printf ','; done
}
prev=""
while true; do
  cur=""
  for b in /sys/block/vd*; do
    [ -e "$b" ] || continue
    s=$(cat $b/serial 2>/dev/null); d=/dev/${b##*/}
    extra=""
    case "$s" in vp-*) if [ -n "$stamp" ]; then
      case "$stamped" in *" $s "*) ;; *)
        printf '%s\n' "${stamp#*:}" | dd of="$d" bs=4096 seek="${stamp%%:*}" count=1 conv=sync,notrunc,fsync 2>/dev/null && stamped="$stamped$s ";;
      esac
      extra=":$(sectors "$d")"
    fi;; esac
    cur="$cur ${b##*/}:$s:$(cat $b/size):$(cat $b/ro)$extra"
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
