package netid

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// maxIfName is the longest Linux interface name (IFNAMSIZ - 1).
const maxIfName = 15

// tapPrefix starts every name TapName returns.
const tapPrefix = "fy"

// tapHashHex is how many hex digits of the hash TapName keeps: 12 digits
// (48 bits) make a collision between two instances on one host negligible
// (about 1 in 10^8 with 2,000 instances) and keep the name at 14 characters.
const tapHashHex = 12

// TapName returns the name of the tap device of an instance: "fy" followed
// by the first 12 hex digits of the SHA-256 of the instance name, e.g.
// "fy2c26b46b68ff". It is deterministic (an agent that restarts finds the
// taps it made), at most 15 characters (IFNAMSIZ), contains no "-" (so it
// can never match the link names internal/testcluster makes), and differs for
// different names except with negligible probability. The instance name is
// unique within a cluster and kept for the instance's life, so it is the
// only input; a deleted and recreated instance of the same name reuses the
// name, which EnsureTap handles as it is idempotent.
func TapName(instance string) string {
	sum := sha256.Sum256([]byte(instance))
	return tapPrefix + hex.EncodeToString(sum[:])[:tapHashHex]
}

// checkIfName reports whether name is a valid Linux interface name.
func checkIfName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("interface name is empty")
	case len(name) > maxIfName:
		return fmt.Errorf("interface name %q is longer than %d characters", name, maxIfName)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("interface name %q contains '/', ':' or white space", name)
	}
	return nil
}
