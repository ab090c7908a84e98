# vpool-csi: the driver and exactly the host tools it calls.
# Build: make image (podman; IMAGE=... to name it), or: podman build -t IMAGE .   (docker build works too)
# NODE_IMAGE builds; the runtime is BASE_IMAGE with only the node binary copied in (no npm, no yarn).
ARG NODE_IMAGE=node:20-bookworm-slim
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY src ./src
COPY scripts/proto-descriptor.mjs scripts/bundle-cli.mjs ./scripts/
# Production dependencies only, without what only compilers and people read (types, sources, maps,
# docs); and the node binary without its symbol table (binutils' strip: 99 MB -> 86 MB).
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*
RUN npm run --silent gen && npx tsc -p tsconfig.build.json && node scripts/proto-descriptor.mjs && node scripts/bundle-cli.mjs && npm prune --omit=dev --no-audit --no-fund \
 && find node_modules \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.ts' -o -name '*.map' -o -name '*.md' -o -name '*.markdown' \) -type f -delete \
 && rm -rf node_modules/@types \
 && strip -o /src/node "$(command -v node)" && /src/node --version

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vpool-csi" \
      org.opencontainers.image.description="CSI driver serving block volumes from a node's disks or a hypervisor's storage pool" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/vpool-csi/vpool-csi"
# util-linux/mount: losetup, blkid, wipefs, mount; e2fsprogs, xfsprogs: mkfs and growth; lvm2 and
# thin-provisioning-tools: the lvm pool; libvirt-clients and openssh-client: virsh over qemu+ssh;
# librbd1 (and librados2): an rbd pool's controller given a Ceph identity (loaded only then).
# No documentation, manuals or translations (what debian:bookworm-slim leaves out too). xfsprogs
# depends on python3 for xfs_scrub_all alone, which the driver never runs: it is removed (38 MB);
# the image test runs every tool the driver calls.
RUN printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\npath-exclude /usr/share/lintian/*\n' > /etc/dpkg/dpkg.cfg.d/vpool-slim \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      util-linux mount e2fsprogs xfsprogs lvm2 thin-provisioning-tools libvirt-clients openssh-client librbd1 \
 && dpkg --purge --force-depends $(dpkg-query -W -f '${Package}\n' 'python3*' 'libpython3*' | tr '\n' ' ') \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/* \
 && groupadd --system --gid 65532 vpool && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin vpool
COPY image/lvmlocal.conf /etc/lvm/lvmlocal.conf
COPY --from=build /src/node /usr/local/bin/node
WORKDIR /opt/vpool-csi
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/dist/cli ./dist/cli
COPY proto ./proto
COPY vpool-csi ./vpool-csi
RUN ln -s /opt/vpool-csi/vpool-csi /usr/local/bin/vpool-csi
# The node DaemonSet runs this image as root and privileged; everything else runs it as this user.
USER 65532:65532
ENTRYPOINT ["vpool-csi"]
CMD ["--help"]
