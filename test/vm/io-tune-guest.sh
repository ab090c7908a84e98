#!/bin/bash
# Runs INSIDE a libvirt node VM (test/e2e/libvirt-io-tune.test.ts defines it): measures the hot-plugged
# disk whose serial is $VPOOL_SERIAL with fio, once for each go-<n> the host writes to /vmrun, until go-done.
# fio runs in the guest, as a VM's own workload would: what it sees is QEMU's throttling of the disk.
set -u
RUN=/vmrun
n=0
disk() {
  for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = "$VPOOL_SERIAL" ] && { echo "/dev/${b##*/}"; return 0; }
  done
  return 1
}
touch $RUN/step-ready
while :; do
  until [ -e $RUN/go-$n ] || [ -e $RUN/go-done ]; do sleep 0.2; done
  [ -e $RUN/go-$n ] || exit 0
  dev=
  for _ in $(seq 1 300); do dev=$(disk) && break; sleep 0.2; done
  if [ -z "$dev" ]; then echo "step $n: no disk with serial $VPOOL_SERIAL" > $RUN/step-$n.error; touch $RUN/step-$n; n=$((n + 1)); continue; fi
  common=(--filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --runtime=6 --ramp_time=1 --time_based --output-format=json)
  fio --name=read "${common[@]}" --rw=randread --bs=4k > $RUN/read-$n.json 2> $RUN/step-$n.error
  fio --name=write "${common[@]}" --rw=write --bs=1M > $RUN/write-$n.json 2>> $RUN/step-$n.error
  touch $RUN/step-$n
  n=$((n + 1))
done
