#!/bin/bash
# Adopted from shared/tools/podman-local-image.sh: podman on this kind of machine (no systemd,
# cgroup v1 hybrid, no CAP_SYS_RESOURCE). Installs podman, runc and debootstrap if missing, keeps its
# storage under $PODWORK, and makes a local stand-in for node:20-bookworm-slim: Debian bookworm
# (debootstrap, minbase) with this machine's Node.js 20 and npm in /usr/local, as the official
# image has them.
# Usage: podman.sh base           build localhost/debian:bookworm-slim and localhost/node:20-bookworm-slim (cached)
#        podman.sh <podman args>   run podman with this configuration
set -euo pipefail
PODWORK=${PODWORK:-/var/cache/vpool-podman}
mkdir -p "$PODWORK"
need=()
for c in podman runc debootstrap; do command -v $c >/dev/null || need+=($c); done
command -v slirp4netns >/dev/null || need+=(slirp4netns)
if [ ${#need[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}" >/dev/null \
  || { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi
# runc (crun cannot run in this cgroup hybrid), cgroupfs (no systemd), file events (no journald), and
# ulimits within what this root may set (no CAP_SYS_RESOURCE).
cat > "$PODWORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > "$PODWORK/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$PODWORK/storage"
runroot = "$PODWORK/run"
CONF
export CONTAINERS_CONF="$PODWORK/containers.conf" CONTAINERS_STORAGE_CONF="$PODWORK/storage.conf"

# The Debian mirror apt itself uses for bookworm (deb822 .sources or one-line .list), so debootstrap
# fetches from wherever this machine's apt does, and no host is named here.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      { types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/) types = $i
          if ($i ~ /^URIs:/) uris = $i
          if ($i ~ /^Suites:/) suites = $i
          if ($i ~ /^Enabled:[ \t]*no/) enabled = "no"
        }
        if (enabled == "yes" && types ~ /[ \t]deb([ \t]|$)/ && suites ~ /[ \t]bookworm([ \t]|$)/) {
          sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/); print u[1]
        } }' "$f"
  done
  # One-line sources, in the files that exist (a machine may have none: cat would fail, and pipefail with it).
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -nE 's/^deb[ \t]+(\[[^]]*\][ \t]+)?([^ \t]+)[ \t]+bookworm([ \t].*)?$/\2/p' "$f"
  done
}

if [ "${1:-}" = base ]; then
  # Two local stand-ins, as the registry images are: debian:bookworm-slim (the runtime base), and
  # node:20-bookworm-slim (the build stage) with this machine's Node.js 20 and npm in /usr/local.
  if ! podman image exists localhost/debian:bookworm-slim || ! podman image exists localhost/node:20-bookworm-slim; then
    if [ ! -f "$PODWORK/rootfs.complete" ]; then
      # Made aside, moved in whole, then marked: a bootstrap cut short never passes for a finished one.
      rm -rf "$PODWORK/rootfs.partial" "$PODWORK/rootfs"
      mirror=$(apt_mirror | sed -n 1p)
      [ -n "$mirror" ] || { echo "podman.sh: apt has no bookworm source (/etc/apt/sources.list*) to bootstrap from" >&2; exit 1; }
      debootstrap --variant=minbase bookworm "$PODWORK/rootfs.partial" "$mirror" >/dev/null
      mv "$PODWORK/rootfs.partial" "$PODWORK/rootfs"
      touch "$PODWORK/rootfs.complete"
    fi
    # What the slim image does not carry: downloaded packages, package lists, docs, manuals, translations.
    rm -rf "$PODWORK/rootfs/usr/local/bin/"node "$PODWORK/rootfs/usr/local/bin/"np[mx] "$PODWORK/rootfs/usr/local/lib/node_modules" \
      "$PODWORK/rootfs/var/cache/apt/archives/"*.deb "$PODWORK/rootfs/var/cache/apt/"*.bin "$PODWORK/rootfs/var/lib/apt/lists/"* \
      "$PODWORK/rootfs/usr/share/doc/"* "$PODWORK/rootfs/usr/share/man/"* "$PODWORK/rootfs/usr/share/info/"* "$PODWORK/rootfs/var/log/"*
    find "$PODWORK/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    # This machine's trust: its egress re-signs TLS with its own CA, which apt and npm in the build must accept.
    mkdir -p "$PODWORK/rootfs/usr/local/share/ca-certificates" "$PODWORK/rootfs/etc/ssl/certs"
    cp /usr/local/share/ca-certificates/*.crt "$PODWORK/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    cp /etc/ssl/certs/ca-certificates.crt "$PODWORK/rootfs/etc/ssl/certs/ca-certificates.crt"
    podman image rm -f localhost/debian:bookworm-slim localhost/node:20-bookworm-slim >/dev/null 2>&1 || true
    tar -C "$PODWORK/rootfs" -c . | podman import --change 'CMD ["bash"]' - localhost/debian:bookworm-slim >/dev/null
    node=$(command -v node); npmdir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
    nodefs="$PODWORK/node-rootfs"
    rm -rf "$nodefs" && cp -a "$PODWORK/rootfs" "$nodefs"
    mkdir -p "$nodefs/usr/local/bin" "$nodefs/usr/local/lib/node_modules"
    cp "$node" "$nodefs/usr/local/bin/node"
    cp -a "$npmdir" "$nodefs/usr/local/lib/node_modules/npm"
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$nodefs/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$nodefs/usr/local/bin/npx"
    tar -C "$nodefs" -c . | podman import --change 'CMD ["node"]' --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' - localhost/node:20-bookworm-slim >/dev/null
    rm -rf "$nodefs"
  fi
  exit 0
fi
exec podman "$@"
