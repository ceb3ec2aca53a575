// Package store is ferry's typed view of etcd: one Collection per kind with
// get, list, compare-and-swap create/update/delete and watch, events written
// in the same transaction as the change they describe, per-node leases, and
// leader election. It also starts the embedded etcd server that is the
// default home of all cluster state.
package store
