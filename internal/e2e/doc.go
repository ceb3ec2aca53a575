// Package e2e runs whole ferry clusters for end-to-end tests and
// benchmarks: a `ferry server` process on the LAN's root leg and one
// `ferry agent` process (QEMU driver) inside each simulated host of an
// internal/testcluster, with an API client and helpers to reach guests
// from the client namespace. It needs root and a built ferry binary.
package e2e
