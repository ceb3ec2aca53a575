// Package server is ferry's control plane process: the REST API for users,
// the join and mTLS endpoints for agents, node leases refreshed by agent
// heartbeats, and, on the one server that holds the etcd leadership, the
// controllers. All state lives in etcd; a server keeps nothing it cannot
// lose.
package server
