// Command testworker is a Comet worker for the end-to-end tests: a real
// process serving routes through the worker package, which the tests start,
// kill and watch. It prints "ready" once attached to the router, and
// "got ROUTE CONNECTION" for every request it takes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/comethq/comet/worker"
)

func main() {
	hubs := flag.String("hubs", "", "hub API addresses, comma-separated")
	name := flag.String("name", "worker", "this worker's name, in answers")
	routes := flag.String("routes", "whoami,slow,send,fail", "routes to serve")
	flag.Parse()

	w, err := worker.New(worker.Config{Hubs: strings.Split(*hubs, ","), Secret: os.Getenv("COMET_SECRET"), Name: *name})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	say := func(format string, a ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Printf(format+"\n", a...)
	}
	got := func(req worker.Request) { say("got %s %s", req.Route, req.Connection) }
	who := func(req worker.Request) map[string]string {
		return map[string]string{"worker": *name, "conn": req.Connection, "user": req.User}
	}
	block := func(ctx context.Context, req worker.Request) (any, error) {
		got(req)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	handlers := map[string]worker.Handler{
		"whoami": func(ctx context.Context, req worker.Request) (any, error) { got(req); return who(req), nil },
		"slow":   block,
		"hang":   block,
		"fail": func(ctx context.Context, req worker.Request) (any, error) {
			got(req)
			return nil, errors.New("no such order")
		},
		// send: {"conn":"...","text":"..."}: a direct message to conn.
		"send": func(ctx context.Context, req worker.Request) (any, error) {
			got(req)
			var in struct{ Conn, Text string }
			if err := json.Unmarshal(req.Data, &in); err != nil {
				return nil, &worker.Error{Code: "bad_request", Message: err.Error()}
			}
			if err := w.SendToConnection(ctx, in.Conn, map[string]string{"text": in.Text, "from": *name}); err != nil {
				return nil, err
			}
			return "sent", nil
		},
	}
	for _, r := range strings.Split(*routes, ",") {
		switch {
		case r == "hang-idem":
			w.Handle(r, block, worker.Idempotent())
		case r == "answer-idem":
			w.Handle("hang-idem", handlers["whoami"], worker.Idempotent())
		case handlers[r] != nil:
			w.Handle(r, handlers[r])
		default:
			fmt.Fprintln(os.Stderr, "testworker: unknown route", r)
			os.Exit(2)
		}
	}
	if err := w.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = w.WaitConnected(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker: not attached:", err)
		os.Exit(1)
	}
	say("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	w.Close()
}
