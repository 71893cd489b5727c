#!/bin/sh
# Boot the kernel matrix's image with one of its kernels under qemu (software
# emulation: no KVM here) and run guest-job.sh in it; the VM powers itself off.
# The image is opened with -snapshot: the cached image never changes.
# usage: run-vm.sh IMAGE_DIR KERNEL_VERSION JOB_DIR   (JOB_DIR holds env; results land there)
set -eu
image=$1 kver=$2 job=$3
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
cp "$here/guest-job.sh" "$job/job.sh"
exec timeout "${VM_TIMEOUT:-1500}" qemu-system-x86_64 -accel tcg,thread=multi -machine q35 \
	-cpu max -m "${VM_MEMORY:-2048}" -smp 2 \
	-kernel "$image/boot/vmlinuz-$kver" -initrd "$image/boot/initrd.img-$kver" \
	-append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 net.ifnames=0 panic=-1" \
	-drive file="$image/disk.img",format=raw,if=virtio,cache=unsafe -snapshot \
	-nic none \
	-virtfs local,path="$job",mount_tag=job,security_model=none,id=job \
	-virtfs local,path="$project",mount_tag=src,security_model=none,readonly=on,id=src \
	-display none -monitor none -serial file:"$job/serial.log" -no-reboot
