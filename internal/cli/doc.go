// Package cli builds ferry's command tree for the user verbs (version,
// instance, node, image, network, console, logs, events) with cobra, and
// reads and writes the kubectl-like config file that says which server to
// talk to.
//
// [NewRoot] returns a fresh tree on every call and keeps no package-level
// state: flags are bound to fields of structs owned by that tree, so tests
// and cmd/ferry can build as many as they like. cmd/ferry adds the server,
// agent and dev commands to the returned root with AddCommand.
package cli
