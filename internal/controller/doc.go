// Package controller holds the control loops that only the leader server
// runs: placing new instances on nodes and recording node liveness
// transitions. Each loop reads the cluster from the store, decides, and
// writes its decision in one etcd transaction guarded by the resource
// version it read, so a loop that lost the leadership mid-way cannot
// overwrite a newer decision.
package controller
