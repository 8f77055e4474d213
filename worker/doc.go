// Package worker is the Go API for the application's backends. A Worker
// holds one session to the request router (on the hub leader; package
// bus), serves routes, sends to client connections, publishes, and watches
// events.
//
//	w, err := worker.New(worker.Config{Hubs: []string{"127.0.0.1:7101", "127.0.0.1:7102"}})
//	w.Handle("echo", func(ctx context.Context, req worker.Request) (any, error) {
//		return req.Data, nil
//	})
//	err = w.Start()
//	defer w.Close()
//
// A client's {"op":"request","route":"echo","data":...,"id":"r1"} reaches
// exactly one worker serving "echo" (the one with the fewest requests in
// flight), whichever gateway the client is on; the handler's answer goes
// back as {"op":"response","id":"r1","data":...}, its error as
// {"op":"error","id":"r1","code":...,"message":...}.
//
// Handlers run concurrently, at most Config.MaxInFlight at once (the
// router sends no more); their ctx ends at the request's deadline (the
// gateway's request timeout, carried along) or when the worker closes. A
// handler that panics is answered as an error (unavailable) and logged.
//
// The session survives failures: the worker dials the hubs again, with
// backoff, and finds the leader, after a hub failure, a leader change or a
// network cut. Requests being handled when a session breaks lose their
// answer (the client gets unavailable), except on routes registered
// Idempotent, which the router tries once on another worker.
//
// # Events
//
// Events turns on, and returns, one channel of every message committed to
// any channel from then on and of the gateways' connection events. When
// the application reads it slowly:
//
//   - channel messages are never dropped: the commit stream waits (the
//     hubs hold the recent past) and, after a hub failover, resumes from
//     its position with no gap and no duplicate. Should the hubs no longer
//     hold that position (a restart, or a reader far behind), an EventLost
//     says so and where the stream continues;
//   - connection events never hold the session up: past EventBuffer of
//     them waiting they are dropped, and an EventDropped in their place
//     says how many (events the router could not queue for this worker are
//     counted there too).
//
// # Caveats
//
// Connection events sent while the router moves to a new leader are lost
// without an EventDropped. Messages and connection events are not ordered
// with respect to each other.
package worker
