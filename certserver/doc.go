// Package certserver holds the HTTP servers of the certserver sidecar, built
// on fasthttp:
//
//   - CertEndpoint, the certificate endpoint nginx's ssl_certificate_by_lua
//     hook calls on every certificate cache miss: GET /v1/certs/{sni} answers
//     the PEM chain and key from the store, with a Cache-Control max-age
//     (CacheMaxAge) telling nginx how long to keep them, and GET
//     /v1/changes the names whose certificates changed since nginx last
//     asked (the store's store.ChangeFeed), so that it drops them at once,
//     with those no certificate serves any more marked "gone" when asked
//     (marks=1), so that it does not wait for their renewal;
//   - ChallengeEndpoint, the answers to the CA's HTTP-01 validation
//     requests, GET /.well-known/acme-challenge/{token}, which nginx's port
//     80 proxies to it; the renewer writes the tokens into the store;
//   - AdminAPI, the token-guarded JSON API operators and the certserver CLI
//     use (package api holds its documents, package client its Go client).
//
// All of them serve on loopback addresses only unless told otherwise:
// private keys and the admin token travel over the certificate endpoint
// and the admin API. The certificate endpoint can also serve on a unix
// socket, which is what nginx normally uses.
//
// Each server is built by a constructor that takes a Config (zero fields
// mean their documented defaults), the store and a logger; Listen binds,
// Serve answers until its context ends and then shuts down gracefully. The
// package reads and writes certificates through store.Store only; it never
// waits on ACME and does not import the renewer. What it asks of the
// renewer is declared here as small interfaces (OnDemand, Scheduler) that
// the command wires up.
package certserver
