// Package qemuproc runs one QEMU microvm process per VM, banger's second VMM
// for hosts where Firecracker cannot run (no Firecracker binary, or no usable
// /dev/kvm so the guest runs under TCG software emulation). It builds the
// QEMU command line, starts the process in its own process group, waits for
// its QMP monitor, stops it in bounded escalating steps, and re-attaches to a
// running QEMU after a daemon restart. It also holds a small QMP client. It
// never imports the daemon or the store.
//
// # Files in the per-VM runtime directory
//
// Dir/qmp.sock is the QMP monitor, Dir/agent.sock the guest agent's port,
// Dir/console.log the guest's serial console and Dir/qemu.log QEMU's own
// stdout and stderr. The two sockets are removed once QEMU has exited.
//
// # Confinement
//
// QEMU always runs under its seccomp sandbox (Sandbox) and opens nothing of
// the VM by path: Start makes the two listening sockets itself and hands
// QEMU descriptors for them, for the console log and qemu.log (opened for
// appending, so that a rotation that truncates them in place is followed),
// for the kernel and initrd (read through /proc/self/fd; a sealed memfd copy
// when QEMU's user could not read the file), for each drive (an fdset with a
// read-only and a read-write descriptor, since QEMU reopens a drive) and for
// the tap. So Config.Credential can run QEMU as a user that has no access to
// Dir or to the disks' directories. The -name marker (NameMarker) names Dir
// on QEMU's command line for Adopt and for sweeps of stray processes.
//
// # Machine
//
// The machine is `-M microvm,acpi=on` with virtio-mmio devices. ACPI stays
// on on purpose: with acpi=off QEMU describes the virtio-mmio devices only as
// virtio_mmio.device= kernel parameters, and Debian's kernel is built without
// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so its virtio_mmio module ignores them
// ("unknown parameter 'device' ignored") and the guest sees no disk. With
// ACPI the devices are found through the DSDT, and system_powerdown reaches
// the guest as an ACPI power-button press. The first drive is probed first
// and becomes /dev/vda.
//
// # The TSC fix under TCG
//
// Under TCG the kernel of a microvm guest can hang while calibrating its TSC
// at boot. The guest's RDTSC returns the host's TSC there, so Start appends tsc_early_khz=<host TSC kHz> to the kernel
// command line. The frequency is measured once per process on amd64 hosts
// whose CPU flags say constant_tsc: RDTSC is sampled against
// CLOCK_MONOTONIC_RAW over about 20 ms. Otherwise it is the "cpu MHz" of the
// first CPU in /proc/cpuinfo times 1000, rounded (exact in a VM, only an
// approximation on bare metal with frequency scaling). Config.TSCkHz
// overrides both; a command line that already sets tsc_early_khz is left
// alone. Under KVM nothing is added.
//
// # Agent transport
//
// vhost-vsock needs the host's vhost_vsock module, which is often missing, so
// the guest agent travels over a virtio-serial port instead: QEMU listens on
// Dir/agent.sock (a chardev socket server, one client at a time) and the
// guest sees a port named banger.agent (/sys/class/virtio-ports/vportNpM/name,
// device /dev/vportNpM; there is no /dev/virtio-ports link without udev).
// The host connects to Process.AgentSocket and speaks the agent protocol over
// the stream.
package qemuproc
