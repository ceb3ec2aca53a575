// Package pki is ferry's public-key infrastructure: the cluster certificate
// authority, the certificates it issues to servers and nodes, the TLS
// configurations built on them, and the join and API tokens.
//
// # Trust model
//
// One CA per cluster signs everything. Servers present a server certificate
// (leaf, then CA) and accept two kinds of clients on the same port: users,
// who bring a bearer token and no certificate, and agents, who bring a node
// certificate whose common name is their node name (see [ServerTLSConfig]
// and [NodeFromCert]). Node certificates are valid for both client and
// server authentication, so agents use the same certificate to talk to each
// other over the replication link (see [AgentTLSConfig]).
//
// # Joining
//
// A new agent has no CA yet. The operator gives it a join token (see
// [NewJoinToken]) that carries the CA fingerprint, a token ID and a secret.
// The agent dials a server with [PinnedCATLSConfig], which trusts exactly
// the CA whose fingerprint is in the token, generates its key and CSR with
// [NewNodeKeyAndCSR], and sends the CSR with the secret. The server checks
// the secret against the stored hash ([CheckSecret]) and signs the CSR with
// [CA.SignNodeCSR]; the agent stores the certificate, its key and the CA
// certificate and from then on uses [AgentTLSConfig].
//
// # Scope
//
// The package does no I/O besides reading randomness: it returns PEM bytes
// and hashes for the store and the server to persist. Functions that depend
// on the time take it as an argument; TLS configurations follow their
// Config.Time field. There is no package-level mutable state, and a [CA] is
// immutable after construction, so it is safe for concurrent use.
package pki
