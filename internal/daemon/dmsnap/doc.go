// Package dmsnap gives a VM a writable root disk without copying the image:
// it attaches the image's rootfs read-only and a per-VM sparse copy-on-write
// file to loop devices and joins them with a device-mapper snapshot whose
// exceptions persist in that file, and it removes such snapshots again.
//
// Loop devices are driven with ioctls on /dev/loop-control and /dev/loopN,
// device-mapper with ioctls on /dev/mapper/control (no dmsetup, no udev:
// the /dev/mapper/NAME node is made by this package).
//
// Locking rule: every change to loop devices or device-mapper devices happens
// under one process-wide lock and, when Manager.LockDir is set, an flock on
// LockDir/dmsnap.lock, taken in that order. Finding a free loop device and
// binding it, or creating a dm device and loading its table, race when done
// in parallel; the lock makes them one step at a time for every banger
// process that shares the lock directory.
//
// Loop devices are bound with autoclear, so once the snapshot holds them they
// detach by themselves when the snapshot goes, even after a crash of the
// process that made it.
package dmsnap
