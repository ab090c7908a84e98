# vpool-csi: `make run` and `make test` do everything on a fresh Debian machine (as root).
SHELL := /bin/bash
.DEFAULT_GOAL := build

# Host tools the driver and its tests call, and the Debian packages that carry them.
TOOLS := losetup:mount blkid:util-linux wipefs:util-linux lvm:lvm2 mkfs.ext4:e2fsprogs resize2fs:e2fsprogs e2fsck:e2fsprogs \
         mkfs.xfs:xfsprogs xfs_growfs:xfsprogs cp:coreutils truncate:coreutils virsh:libvirt-clients qemu-img:qemu-utils
VAR := $(CURDIR)/var
ENDPOINT := unix://$(VAR)/csi.sock

.PHONY: deps system-deps build run test bench bench-vm clean

system-deps:
	@missing=""; for t in $(TOOLS); do command -v $${t%%:*} >/dev/null || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: system-deps node_modules/.package-lock.json

build: deps
	rm -rf gen dist
	npm run --silent gen
	npm run --silent build

run: build
	@mkdir -p $(VAR)/pool $(VAR)/mnt
	@echo "vpool-csi: serving the file pool $(VAR)/pool on $(ENDPOINT)"
	@echo "try, in another shell:"
	@echo "  ./vpool-csi client --endpoint $(ENDPOINT) create-volume --name demo --size 1Gi"
	@echo "  ./vpool-csi client --endpoint $(ENDPOINT) -o table list-volumes"
	exec ./vpool-csi serve --endpoint $(ENDPOINT) --pool-dir $(VAR)/pool --allowed-root $(VAR)/mnt --node-id $$(hostname)

test: build
	npm test

bench: build
	node dist/bench/lifecycle.js
	node dist/bench/lvm.js

# The lvm node path needs device-mapper: measured inside the QEMU VM (test/vm/vm-run.sh).
bench-vm: build
	bash test/vm/vm-run.sh --smp 2 --disk 4G --disk 4G -- node dist/bench/lvm-vm.js

clean:
	rm -rf dist gen var
