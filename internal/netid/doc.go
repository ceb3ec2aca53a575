// Package netid gives instances their network identity: an IPv4 address from
// cluster IPAM, a MAC address, and the host plumbing (bridge and tap device)
// that connects a VM to its host's LAN.
//
// The IPAM and MAC functions ([Network], [NextFree], [CheckRequested],
// [NewMAC], [ParseMAC]) are pure: they do no I/O and take the set of
// addresses already in use as an argument, so the control plane can run them
// inside a store transaction and tests can run them without root.
//
// The host functions ([EnsureBridge], [EnsureTap], [DeleteTap],
// [SendGratuitousARP]) talk to the kernel over netlink and need root
// (CAP_NET_ADMIN). They act in the network namespace of the calling OS
// thread: a caller that switches namespaces must hold
// [runtime.LockOSThread] around them. Each is idempotent, so an agent can
// call them on every reconcile.
package netid
