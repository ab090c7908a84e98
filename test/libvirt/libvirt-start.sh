#!/bin/bash
# Adopted from shared/tools/libvirt-start.sh; this copy is the project's to maintain.
# Starts libvirtd (monolithic, Debian 12's libvirt 9.0) and virtlogd WITHOUT systemd, as root, for the
# libvirt tests. Installs the Debian packages if missing. Idempotent: a running daemon is reused.
# Usage: libvirt-start.sh            start if not running
#        libvirt-start.sh stop       stop the daemons this script started
set -euo pipefail
PIDFILE=/run/vpool-test-libvirtd.pid
LOGPID=/run/vpool-test-virtlogd.pid
URI=qemu:///system

if [ "${1:-}" = stop ]; then
  [ -f $PIDFILE ] && kill "$(cat $PIDFILE)" 2>/dev/null; rm -f $PIDFILE
  [ -f $LOGPID ] && kill "$(cat $LOGPID)" 2>/dev/null; rm -f $LOGPID
  exit 0
fi

if ! command -v libvirtd >/dev/null || ! command -v virsh >/dev/null || ! command -v qemu-img >/dev/null; then
  # --no-install-recommends: not libvirt-daemon-system (systemd units, a default network)
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils >/dev/null \
  || { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils >/dev/null; }
fi

# What libvirt-daemon-system would provide: the qemu driver refuses to start without its compiled-in user.
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/libvirt \
  -g libvirt-qemu -G kvm -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt /var/lib/libvirt /run/libvirt /var/cache/libvirt
if [ ! -f /etc/libvirt/qemu.conf ] || ! grep -q '^# vpool-csi test' /etc/libvirt/qemu.conf; then
  # QEMU as root without cgroups, namespaces or labels: no systemd and no cgroup delegation here.
  cat > /etc/libvirt/qemu.conf <<'CONF'
# vpool-csi test harness (test/libvirt/libvirt-start.sh)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
CONF
  # a running daemon must re-read it
  if virsh -c $URI version >/dev/null 2>&1; then pkill -x libvirtd || true; sleep 0.5; fi
fi

# virtlogd collects QEMU's output; without it 'virsh start' fails. Checked apart from libvirtd, and by
# talking to it rather than by its socket file: a daemon that died (or a reboot that kept /run) leaves
# the socket behind, and connecting to it is refused.
virtlogd_up() { virt-admin -q -c virtlogd:///system version >/dev/null 2>&1; }
if ! virtlogd_up; then
  rm -f /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock
  virtlogd --daemon --pid-file $LOGPID
  for _ in $(seq 100); do virtlogd_up && break; sleep 0.05; done
  virtlogd_up || { echo "virtlogd did not come up" >&2; exit 1; }
fi

if virsh -c $URI version >/dev/null 2>&1; then exit 0; fi
libvirtd --daemon --pid-file $PIDFILE
for _ in $(seq 600); do virsh -c $URI version >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "libvirtd did not come up; see /var/log/libvirt/libvirtd.log" >&2
tail -20 /var/log/libvirt/libvirtd.log >&2 || true
exit 1
