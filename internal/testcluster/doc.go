// Package testcluster builds a cluster of "hosts" out of Linux network
// namespaces on one machine, for end-to-end and chaos tests and for
// `ferry dev`, and breaks it on request: kill -9 a host, pull its cable,
// partition it from one address.
//
// # Topology
//
// [Start] creates, with names derived from [Config.Prefix] (P below):
//
//	P-lan       a namespace with the bridge "lan0": the LAN switch
//	P-h1..P-hN  one namespace per host: veth "eth0" (its other end, "h1"..,
//	            is a port of lan0) enslaved to the host bridge "ferrybr0",
//	            which holds the host's address; the agent attaches instance
//	            taps to that bridge, as on a real host
//	P-client    optional: a namespace with "eth0" on the LAN, standing for a
//	            user's machine
//	P-r         optional "root leg": a veth from the namespace of the process
//	            that built the cluster into lan0, so a test or `ferry dev`
//	            (and a user with curl) can reach hosts and VMs directly
//	P-g-NAME    optional guests ([Cluster.AddGuest]): a namespace standing in
//	            for a VM, plugged into a host's bridge
//
// # Addressing
//
// The cluster's Subnet (default 10.77.0.0/24, at most a /24 so the plan
// fits) is split as follows, counting from the network address:
//
//	.1          the root leg (when RootLeg), and the gateway of [Cluster.Network]
//	.2          the client (when WithClient)
//	.3 - .10    unused, kept for infrastructure
//	.11 - .99   hosts h1, h2, ... (at most 89)
//	.100 - end  instances: [Cluster.Network] reserves .2-.99, so ferry's IPAM
//	            hands out .100 upward
//
// Nothing routes beyond the subnet: no namespace has a default route, and
// the root leg has IPv4 forwarding turned off (and IPv6 off), so a packet
// from the LAN can never be forwarded by the machine to any other network.
// The gateway .1 therefore reaches only the root namespace itself, and only
// when RootLeg is set; without it .1 is merely kept free. Every address the
// cluster uses lies inside namespaces it created, and [Cluster.DialContext]
// refuses any destination outside the subnet (loopback aside).
//
// With RootLeg and no Subnet given, Start picks the first 10.77.N.0/24 that
// no route in the root namespace overlaps, so parallel test processes with
// root legs do not collide; an explicit Subnet that overlaps an existing
// route is an error.
//
// # Processes
//
// Processes run in a namespace through `ip netns exec` ([Host.Command],
// [Cluster.Command]). [Cluster.Close] and the fault methods find every
// process in a namespace by comparing /proc/PID/ns/net, as `ip netns pids`
// does, so they also catch processes the cluster did not start.
//
// # Leftovers
//
// [Cluster.Close] removes everything, even after a half-finished Start. A
// process killed before Close (kill -9, a `go test` timeout) leaves its
// namespaces and their processes behind. The default prefix is "fy", the
// creating process's PID in base 36, "-", and a per-process sequence
// number, e.g. "fy1k3x-0", so [CleanupStale] can recognise leftovers whose
// creator is dead and remove them; [New] does that once per test process.
// [Cleanup] removes everything of one prefix.
//
// The core of the package does not depend on package testing; [New] is the
// thin helper for tests.
package testcluster
