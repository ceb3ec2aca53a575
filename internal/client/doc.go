// Package client is a Go client for the user routes of ferry's HTTP API
// (docs/routes.md): instances (with their console and log), nodes, join
// tokens, images (with uploads), networks and events.
//
// A [Client] talks HTTPS only (TLS 1.3), authenticates with a bearer token
// and turns every non-2xx answer into an [*APIError]. Every method takes a
// context first; cancelling it aborts the request, and for
// [Client.WatchEvents] and [Client.Console] ends the stream. A Client is
// safe for concurrent use by multiple goroutines.
package client
