#!/bin/bash
# Adopted from shared/tools/libvirt-start.sh; this copy is the project's to maintain.
# Starts the tests' own libvirtd (monolithic, Debian 12's libvirt 9.0) and virtlogd WITHOUT systemd, as
# root. Installs the Debian packages if missing. The host's libvirt is left alone: both daemons run in a
# mount namespace of their own where /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and
# /var/log/libvirt are directories under $ROOT (so the qemu.conf the tests need is not the host's, and
# a host libvirtd, if any, keeps running untouched). Clients reach it at its own socket:
#   qemu+unix:///system?socket=$ROOT/run/libvirt-sock   (test/helpers/libvirt.ts: URI)
# Idempotent: a daemon of ours that answers is reused.
# Usage: libvirt-start.sh            start if not running
#        libvirt-start.sh stop       stop the daemons this script started (by their PIDs)
set -euo pipefail
ROOT=/run/vpool-test-libvirt
PIDFILE=$ROOT/libvirtd.pid
LOGPID=$ROOT/virtlogd.pid
URI="qemu+unix:///system?socket=$ROOT/run/libvirt-sock"

stop_pid() {
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # A daemon that is hung does not end on SIGTERM (its main loop handles it).
    if kill -9 "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$1"
}
if [ "${1:-}" = stop ]; then
  stop_pid $PIDFILE
  stop_pid $LOGPID
  exit 0
fi

# The rbd storage backend (a module libvirtd loads at start): the tests' Ceph pools (test/ceph/ceph-start.sh).
# QEMU opens an attached rbd image through librbd: its block-rbd module is Debian's qemu-block-extra.
RBD_BACKEND=/usr/lib/x86_64-linux-gnu/libvirt/storage-backend/libvirt_storage_backend_rbd.so
QEMU_RBD=/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so
if ! command -v libvirtd >/dev/null || ! command -v virsh >/dev/null || ! command -v qemu-img >/dev/null || ! command -v unshare >/dev/null || [ ! -f $RBD_BACKEND ] || [ ! -f $QEMU_RBD ]; then
  # --no-install-recommends: not libvirt-daemon-system (systemd units, a default network)
  pkgs="libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-storage-rbd libvirt-clients qemu-system-x86 qemu-utils qemu-block-extra util-linux"
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $pkgs >/dev/null \
  || { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $pkgs >/dev/null; }
fi

if virsh -c "$URI" version >/dev/null 2>&1; then exit 0; fi

# What libvirt-daemon-system would provide: the qemu driver refuses to start without its compiled-in user.
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/libvirt \
  -g libvirt-qemu -G kvm -s /usr/sbin/nologin libvirt-qemu

# A daemon of ours that no longer answers: ended by its PID, never by name.
stop_pid $PIDFILE
stop_pid $LOGPID
mkdir -p $ROOT/etc $ROOT/run $ROOT/lib $ROOT/cache $ROOT/log
# The mount points (empty directories where the packages did not make them).
mkdir -p /etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt
if [ ! -f $ROOT/etc/qemu.conf ]; then
  cp -a /etc/libvirt/. $ROOT/etc/ 2>/dev/null || true
  # QEMU as root without cgroups, namespaces or labels: no systemd and no cgroup delegation here.
  cat > $ROOT/etc/qemu.conf <<'CONF'
# vpool-csi test harness (test/libvirt/libvirt-start.sh): the tests' own libvirtd only
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
CONF
  cat > $ROOT/etc/libvirtd.conf <<'CONF'
# vpool-csi test harness: the tests' own libvirtd only
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
fi

# The namespace: host mounts still propagate into it (slave), its binds stay in it. virtlogd first: the
# qemu driver asks it for QEMU's log, at /run/libvirt/virtlogd-sock, which is ours inside.
unshare --mount --propagation slave bash -euc '
  mount --bind "$0/etc" /etc/libvirt
  mount --bind "$0/run" /run/libvirt
  mount --bind "$0/lib" /var/lib/libvirt
  mount --bind "$0/cache" /var/cache/libvirt
  mount --bind "$0/log" /var/log/libvirt
  virtlogd --daemon --pid-file "$0/virtlogd.pid"
  for _ in $(seq 100); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.05; done
  exec libvirtd --daemon --config /etc/libvirt/libvirtd.conf --pid-file "$0/libvirtd.pid"
' $ROOT

for _ in $(seq 600); do virsh -c "$URI" version >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "libvirtd did not come up; see $ROOT/log/libvirtd.log" >&2
tail -20 $ROOT/log/libvirtd.log >&2 || true
exit 1
