// Package agent is ferry's per-host agent: it joins the cluster once, then
// keeps its host's VMs as the control plane assigns them.
//
// An [Agent] holds the node's identity (key, certificate and the cluster CA,
// kept in its state directory), sends heartbeats on a connection of their
// own, follows the server's assignment stream and reconciles every assigned
// instance through a [vmm.Driver], one worker per instance, reporting what it
// observed back to the server. VM handles are persisted, so a restarted agent
// re-attaches to the VMs it left running instead of rebooting them.
//
// The agent talks only to ferry servers, over mutual TLS with the node
// certificate it received when it joined; it never talks to etcd.
package agent
