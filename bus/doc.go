// Package bus is the session between the request router, which runs on the
// hub leader, and its peers: gateways (which hold client connections) and
// workers (the application's backends). Hubs, gateways and workers all
// import it; it imports nothing of Comet but wire.
//
// A peer holds one long-lived session to the router: a Link, which is a
// WebSocket at GET /v1/bus on the hub API (Dial, Upgrade; HubDialer finds
// the leader), or an in-process Pipe (comet standalone, tests). A hub that
// does not lead refuses the upgrade with 421 and a wire.Error whose Leader
// names the leader's API address (503 without Leader when it knows of no
// leader). When the router's hub stops leading, or shuts down, it closes
// every session, failing what is in flight; peers dial again and find the
// new leader.
//
// Gateway is the gateway's side of the session: client requests go out
// through it, messages for its connections come in, and it reports
// connection events.
//
// # Messages
//
// Each WebSocket text message holds one or more JSON objects, Msgs,
// separated by newlines (a writer sends what it has queued in one frame;
// an object never holds a newline); its "type" says which of the following
// it is. Fields not listed are absent. Ids are
// numbers chosen by the sender of a request or send, unique within one
// session and one direction; the answer carries the same id. timeout_ms is
// the time left, in milliseconds, when the message was sent: each hop
// computes its own deadline from it, so clocks need not agree.
//
//	peer -> router, first message of a session:
//	  {"type":"hello","kind":"gateway","name":"g1"}
//	  {"type":"hello","kind":"worker","name":"billing","routes":[{"route":"r","idempotent":true}],"events":true,"max":256}
//	router -> peer, the session is up:
//	  {"type":"welcome","name":"h1"}                       name: the hub
//	worker -> router, replaces routes and events:
//	  {"type":"update","routes":[{"route":"r"}],"events":true}
//	gateway -> router -> worker, a client's request:
//	  {"type":"request","id":7,"route":"r","data":...,"conn":"g1-ab12","user":"u","timeout_ms":9500}
//	worker -> router -> gateway, its answer (data, or an error):
//	  {"type":"response","id":7,"data":...}
//	  {"type":"response","id":7,"error":{"code":"not_found","message":"..."}}
//	  {"type":"response","id":7,"busy":true,"error":{...}}  refused unhandled: the router may try another worker
//	worker -> router -> gateway, a message for one connection:
//	  {"type":"send","id":3,"conn":"g1-ab12","data":...,"timeout_ms":10000}
//	gateway -> router -> worker, its result:
//	  {"type":"sent","id":3}
//	  {"type":"sent","id":3,"error":{"code":"not_found","message":"..."}}
//	gateway -> router -> workers that asked for events:
//	  {"type":"event","event":"connected|disconnected|subscribed|unsubscribed","conn":"g1-ab12","user":"u","channel":"c"}
//	router -> worker, events it could not queue for that worker since the last notice:
//	  {"type":"dropped","count":12}
//	router -> peer, before it closes a session it refuses:
//	  {"type":"error","error":{"code":"bad_request","message":"..."}}
//	gateway -> router, a client's publish (key: its idempotency id):
//	  {"type":"publish","id":12,"channel":"c","key":"k1","data":...}
//	router -> gateway, once it is committed, or refused:
//	  {"type":"ack","id":12,"channel":"c","offset":5,"epoch":"E","duplicate":true}
//	  {"type":"ack","id":12,"error":{"code":"unavailable","message":"..."}}
//	  {"type":"ack","id":12,"final":true,"error":{...}}   not to be sent again now
//	gateway -> router, and the answer, to tell a live router from a stalled one:
//	  {"type":"ping"}  {"type":"pong"}
//	router -> gateway whose hello had "caps":["presence"], and its answer
//	(the connections subscribed to the channel there, wire.PresenceEntry):
//	  {"type":"presence","id":4,"channel":"c"}
//	  {"type":"presence_result","id":4,"data":[{"conn":"g1-ab12","user":"u"}]}
//	gateway -> router, its counts for the admin view (wire.GatewayStats), at
//	the start of each session and then once a second; a router of an
//	earlier release ignores it:
//	  {"type":"stats","data":{"id":"g1","connections":4,"transports":{"websocket":4},...}}
//
// A router that takes publishes says so in its welcome:
// {"type":"welcome","name":"h1","caps":["publish"]}. Publish ids are a
// sequence of their own, unique within the gateway's process: a publish
// keeps its id when it is sent again on a later session. The router stores
// the publishes of a session in the order they arrive (each is queued for
// the leader's next Raft entry before the next is read), so a gateway that
// sends them in order, and sends the ones not yet acknowledged again in
// order on its next session, keeps each connection's order; their keys
// make a publish sent twice stored once. A publish refused as unavailable
// or timeout is sent again after a backoff, until its deadline, unless the
// ack is final.
//
// A worker's "max" is how many requests it handles at once; the router
// sends it no more. "user" is absent for an anonymous connection, and
// "channel" for the connection events that have none.
//
// Connection ids are "<gateway id>-<hex>", with no '-' in the hex part: the
// router finds a connection's gateway from the id, without a registry.
//
// # Caveats
//
// The router keeps no state beyond its sessions: nothing is replicated.
// Requests and sends in flight when leadership moves are failed
// (unavailable), and connection events sent meanwhile are lost.
package bus
