// Package scheduler decides where instances go: it places new instances
// (a primary and a synchronous replica), checks that any one host can die
// and everything on it still fits elsewhere (N+1), counts how many more
// instances of a size fit, and plans the moves that rebalance a cluster.
//
// It is pure: every function works on a Snapshot and returns decisions with
// their reasons; nothing here reads a clock, a file or the network, so the
// same code runs inside the controller, behind `ferry cluster check` on a
// file, and in simulations of 10,000 hosts.
package scheduler
