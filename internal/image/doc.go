// Package image builds, checks and copies the raw disk images ferry boots.
//
// An instance is a disk image plus a small spec. An image is a raw file whose
// whole content is one ext4 filesystem (no partition table; the guest sees it
// as /dev/vda) holding its own kernel and initramfs at /boot/vmlinuz and
// /boot/initrd.img. ferry reads those two files out of the image without
// mounting it ([ExtractBoot]) and starts QEMU with -kernel, -initrd and
// -append, so an image carries everything it needs to boot.
//
// [BuildDemo] writes the demo image used by tests and `ferry image
// build-demo`: busybox, the host's kernel, a small initramfs, and a guest that
// serves its name, boot count and a durable counter over HTTP.
// [Inspect] validates an image before import, [SparseCopy] clones one without
// allocating its holes, and [Grow] extends a copy to an instance's disk size.
//
// Everything here works on plain files: no loop devices, no mounts, no root
// beyond reading /boot. It relies on e2fsprogs (mkfs.ext4, debugfs), on xz
// to unpack Debian's kernels for a faster boot ([UnpackKernel]) and, for
// BuildDemo, on busybox-static and an installed kernel (linux-image-amd64).
// The functions are safe for concurrent use on different paths; cancelling
// ctx stops the external tools they run and returns ctx's error.
package image
