# vpool-csi: the driver and exactly the host tools it calls.
# Build: podman build -t vpool-csi .   (or docker build); BASE_IMAGE may point at a local copy.
ARG BASE_IMAGE=node:20-bookworm-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY src ./src
RUN npm run --silent gen && npx tsc -p tsconfig.build.json && npm prune --omit=dev --no-audit --no-fund

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vpool-csi" \
      org.opencontainers.image.description="CSI driver serving block volumes from a node's disks or a hypervisor's storage pool" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/vpool-csi/vpool-csi"
# util-linux/mount: losetup, blkid, wipefs, mount; e2fsprogs, xfsprogs: mkfs and growth; lvm2 and
# thin-provisioning-tools: the lvm pool; libvirt-clients and openssh-client: virsh over qemu+ssh.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      util-linux mount e2fsprogs xfsprogs lvm2 thin-provisioning-tools libvirt-clients openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 vpool && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin vpool
COPY image/lvmlocal.conf /etc/lvm/lvmlocal.conf
WORKDIR /opt/vpool-csi
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY proto ./proto
COPY vpool-csi ./vpool-csi
RUN ln -s /opt/vpool-csi/vpool-csi /usr/local/bin/vpool-csi
# The node DaemonSet runs this image as root and privileged; everything else runs it as this user.
USER 65532:65532
ENTRYPOINT ["vpool-csi"]
CMD ["--help"]
