// Package api holds ferry's wire types (version v1) and the rules that make
// them valid. Everything that crosses a process boundary — REST bodies, the
// agent stream, etcd values — is one of these types, and every value from
// outside passes Validate before it is stored.
package api
