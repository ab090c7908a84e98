#!/bin/bash
# A single-node Ceph cluster for the tests, WITHOUT systemd: one monitor, one manager and one bluestore OSD
# on a 10 GiB sparse file, all under DIR, pool size 1, memory sized for a small machine (the OSD's target
# 896 MiB). Installs Debian's packages if missing (ceph 16.2 in bookworm). Nothing outside DIR is touched:
# configuration, keyrings, sockets, logs and data are all there.
# Usage: ceph-start.sh DIR [PORT]     start; prints DIR/ceph.conf (the admin keyring is DIR/ceph.client.admin.keyring)
#        ceph-start.sh stop DIR       stop the daemons started under DIR (by their PID files) and remove DIR
set -euo pipefail

stop_pid() {
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
# Usage: ceph-start.sh add-osd DIR       one more bluestore OSD (10 GiB sparse file) in the cluster under DIR; waits for active+clean
add_osd() {
  local DIR=$1 CONF=$1/ceph.conf UUID ID
  local C="ceph -c $CONF --connect-timeout 30"
  UUID=$(cat /proc/sys/kernel/random/uuid)
  ID=$($C osd new "$UUID")
  mkdir -p "$DIR/osd/ceph-$ID"
  $C auth get-or-create "osd.$ID" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -o "$DIR/osd/ceph-$ID/keyring" >/dev/null
  ceph-osd -c "$CONF" -i "$ID" --mkfs --osd-uuid "$UUID" >"$DIR/log/mkfs.$ID.log" 2>&1 || { cat "$DIR/log/mkfs.$ID.log" >&2; exit 1; }
  ceph-osd -c "$CONF" -i "$ID"
  echo "$ID"
}
wait_clean() {
  local C="ceph -c $1/ceph.conf --connect-timeout 30"
  for _ in $(seq 600); do
    if $C pg stat 2>/dev/null | grep -qE '^[0-9]+ pgs: [0-9]+ active\+clean;'; then return 0; fi
    sleep 0.2
  done
  echo "ceph-start.sh: the cluster under $1 did not become active+clean" >&2
  $C -s >&2 || true
  exit 1
}
if [ "${1:-}" = add-osd ]; then
  add_osd "${2:?usage: ceph-start.sh add-osd DIR}" >/dev/null
  wait_clean "$2"
  exit 0
fi
if [ "${1:-}" = stop ]; then
  DIR=${2:?usage: ceph-start.sh stop DIR}
  [ -f "$DIR/ceph.conf" ] || { rm -rf "$DIR"; exit 0; }
  for p in "$DIR"/run/*.pid; do stop_pid "$p"; done
  rm -rf "$DIR"
  exit 0
fi

DIR=${1:?usage: ceph-start.sh DIR [PORT]}
PORT=${2:-6789}
# rbd-fuse: the tests read and write images as files through it (this kernel has no krbd).
if ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v ceph-mgr >/dev/null || ! command -v rbd >/dev/null || ! command -v rbd-fuse >/dev/null; then
  pkgs="ceph-mon ceph-osd ceph-mgr ceph-common rbd-fuse"
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $pkgs >/dev/null \
  || { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $pkgs >/dev/null; }
fi

mkdir -p "$DIR"/{run,log,mon,osd,mgr/ceph-x}
CONF=$DIR/ceph.conf
FSID=$(cat /proc/sys/kernel/random/uuid)
# msgr v1 on loopback only: one host, and a port the caller chose (runs beside each other do not meet).
cat > "$CONF" <<CONF
[global]
fsid = $FSID
mon_host = v1:127.0.0.1:$PORT
ms_bind_msgr2 = false
public_network = 127.0.0.0/8
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
run_dir = $DIR/run
admin_socket = $DIR/run/\$cluster-\$name.asok
log_file = $DIR/log/\$cluster-\$name.log
pid_file = $DIR/run/\$cluster-\$name.pid
mon_data = $DIR/mon/\$cluster-\$id
osd_data = $DIR/osd/\$cluster-\$id
mgr_data = $DIR/mgr/\$cluster-\$id
[client]
keyring = $DIR/ceph.client.admin.keyring
[osd]
osd_objectstore = bluestore
bluestore_block_path = $DIR/osd/block.\$id
bluestore_block_size = 10737418240
bluestore_block_create = true
osd_memory_target = 939524096
[mon]
mon_data_avail_warn = 1
mon_data_avail_crit = 0
CONF
ceph-authtool --create-keyring "$DIR/ceph.mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$DIR/ceph.client.admin.keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$DIR/ceph.mon.keyring" --import-keyring "$DIR/ceph.client.admin.keyring" >/dev/null
monmaptool --create --addv a "[v1:127.0.0.1:$PORT]" --fsid "$FSID" "$DIR/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/ceph.mon.keyring"
ceph-mon -c "$CONF" -i a
C="ceph -c $CONF --connect-timeout 30"
$C auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' > "$DIR/mgr/ceph-x/keyring"
ceph-mgr -c "$CONF" -i x
UUID=$(cat /proc/sys/kernel/random/uuid)
ID=$($C osd new "$UUID")
mkdir -p "$DIR/osd/ceph-$ID"
$C auth get-or-create "osd.$ID" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -o "$DIR/osd/ceph-$ID/keyring"
ceph-osd -c "$CONF" -i "$ID" --mkfs --osd-uuid "$UUID" >"$DIR/log/mkfs.log" 2>&1 || { cat "$DIR/log/mkfs.log" >&2; exit 1; }
ceph-osd -c "$CONF" -i "$ID"
$C osd pool create rbd 8 >/dev/null
$C osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null
rbd -c "$CONF" pool init rbd
# Up when the OSD is and every placement group is active.
for _ in $(seq 600); do
  if $C pg stat 2>/dev/null | grep -qE '^[0-9]+ pgs: [0-9]+ active\+clean;'; then echo "$CONF"; exit 0; fi
  sleep 0.2
done
echo "ceph-start.sh: the cluster under $DIR did not become active+clean" >&2
$C -s >&2 || true
exit 1
