// Package client is the Go client of Comet's client protocol
// (docs/protocol.md): it connects to gateways over WebSocket, subscribes to
// channels, publishes and sends requests, and keeps doing so across bad
// networks.
//
// A Client owns one connection at a time. It connects in the background to
// one of Config.URLs (a random one first, the next one after a failure),
// reconnects with exponential backoff and full jitter, and after every
// reconnect:
//
//   - resubscribes every channel with from = the last offset delivered + 1
//     and the epoch that offset belongs to, so that the gateway replays what
//     was missed;
//   - resends every publish not yet acknowledged, with the same id, so that
//     the hubs store it once (the idempotency key of CONTRACT.md).
//
// It guarantees that a handler sees each offset of a channel at most once
// and in increasing order within an epoch: a message at or below the last
// offset delivered is dropped, whatever the gateway sends. When the gateway
// answers a resubscribe with "recovered": false (the messages missed are
// gone, or the channel's history was reset and its epoch changed), the
// subscription's OnSubscribed callback is told, and delivery goes on from
// the oldest message still held.
//
// Positions (last offset and epoch per channel) are kept in an OffsetStore:
// in memory by default, or in a JSON file (NewFileStore) to resume after a
// restart.
//
// # Publishing
//
// Publish and PublishWithID wait for the ack; PublishAsync returns a
// PublishFuture at once, so that one goroutine keeps many publishes in
// flight. At most Config.MaxPublishesInFlight (default 256) wait for their
// acks at once; past that PublishAsync waits for room (or fails with
// ErrWindowFull with NoWait). Publishes are sent in the order of the calls;
// after a reconnect those not acknowledged are sent again with their ids,
// in that order, before any new one. Ack.Duplicate says that a publish was
// a retry of an id already stored. PublishAsyncComplete waits for the
// publishes in flight. See docs/go-client.md.
//
// # Authentication and direct messages
//
// With Config.Token, the client authenticates with a JWT from the
// application: it sends {"op":"connect","token":...} as the first frame of
// every connection, and nothing else until the gateway answers
// "connected" (User then returns the token's user). Token is called before
// every connection, and again before the token expires (at 80% of the
// lifetime left by its exp claim): the fresh token is sent on the live
// connection, which goes on undisturbed. A token the gateway refuses, or
// one that expires, ends the connection with close code 4006: OnState gets
// an error that wraps ErrAuth and the gateway's *Error ("invalid token",
// "token expired", "token required"), and the client reconnects after the
// backoff with a new token. An error from Token is told through OnState
// too, and retried after the backoff.
//
//	c, err := client.New(client.Config{
//		URLs:  []string{"wss://gw.example.com/ws"},
//		Token: func(ctx context.Context) (string, error) { return myAuth.Token(ctx) },
//		OnState: func(s client.State, err error) {
//			if errors.Is(err, client.ErrAuth) {
//				log.Printf("comet refused the token: %v", err)
//			}
//		},
//		OnMessage: func(data json.RawMessage) { log.Printf("direct message: %s", data) },
//	})
//
// Direct messages, sent by a worker to this connection alone (no channel,
// no offset), go to Config.OnMessage. They are not resumed: those sent
// while the client is disconnected are lost.
//
// # TLS
//
// wss:// URLs verify the gateway's certificate against the system's roots.
// For a gateway whose certificate a private CA signed, give the CA in
// Config.TLSConfig:
//
//	pool := x509.NewCertPool()
//	pool.AppendCertsFromPEM(caPEM) // the CA's certificate, PEM
//	c, err := client.New(client.Config{
//		URLs:      []string{"wss://gw.internal:8443/ws"},
//		TLSConfig: &tls.Config{RootCAs: pool},
//	})
//
// # Caveats
//
//   - Handlers, OnSubscribed, OnState and OnMessage run on the client's one
//     reading goroutine, in order. A slow handler slows reading; that is the
//     backpressure: the gateway then disconnects the client as a slow
//     consumer, and the client resumes. A handler must not wait for the
//     client (Publish, Request, Subscribe, Unsubscribe or Close from inside a
//     handler would wait for a reply that the blocked goroutine cannot
//     read): start a goroutine for that. Token must not wait for the
//     client either: it runs before a connection exists.
//   - A position is saved after the handler returns: after a crash, the last
//     messages may be delivered again (at least once across restarts,
//     exactly once on one Client).
//   - Request is not retried: a request whose connection drops before the
//     response fails with code "unavailable", and may or may not have been
//     served.
package client
