// Package storetest starts etcd servers and connects stores for tests: an
// embedded etcd in the test process, Debian's etcd binary as an external
// cluster, and a Store under a prefix of its own so tests can share one etcd.
package storetest
