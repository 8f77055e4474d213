// Command comet is Comet's one binary: hubs, gateways and the tools around
// them. Run `comet help` for the list of commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/comethq/comet/internal/buildinfo"
)

const usage = `comet: a durable real-time messaging server

Usage:
  comet                  same as comet standalone
  comet standalone [--listen 127.0.0.1:8080] [--data ./comet-data]
                         one process: a single-node hub and a gateway
  comet gateway --listen ADDR --hubs API,API,...
                         serve clients (WebSocket /ws, SockJS /sockjs) from a hub cluster
  comet pub [--url ws://127.0.0.1:8080/ws] [--id KEY] CHANNEL DATA
                         publish one message and print its offset
  comet sub [--url ...] [--from N] [--epoch E] [--count N] [--state FILE] CHANNEL...
                         print a channel's messages, one JSON line each
  comet hub --id h1 --data DIR --raft ADDR --api ADDR --peers h1=ADDR,h2=ADDR,...
                         run one hub of the Raft group that stores the channels
  comet cluster status --api ADDR
                         show the hub cluster: members, states, indexes
  comet cluster remove --api ADDR ID
                         remove a hub from the cluster
  comet bench publish --api ADDR,...
                         load-test publishing through the hub API
  comet bench fanout --url ws://ADDR/ws [--subscribers 1000] [--rate 1000]
                         load-test a gateway's fan-out: deliveries/s and latency
  comet bench catchup --url ws://ADDR/ws [--missed 10000,100000]
                         time how long a resuming client takes to catch up
  comet bench request --url ws://ADDR/ws --hubs API,... [--workers 1] [--clients 16]
                         load-test requests: client -> gateway -> worker -> back
  comet token --sub USER --token-hmac-secret S [--ttl 1h]
                         print a client token (JWT) for development and tests
  comet version          print the version and the commit (also comet --version)

Every flag can also be set through an environment variable: --raft is
COMET_RAFT, --max-message-bytes is COMET_MAX_MESSAGE_BYTES, and so on. A flag
on the command line wins over the environment. The flags of comet pub that
describe one message (--id, its idempotency key) are read from the command
line only: COMET_ID is the --id of hubs and gateways.

Run 'comet COMMAND --help' for the flags of a command.
`

// errUsage marks an error in how comet was called: exit status 2.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "comet: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "comet: %v\n", err)
		return 1
	}
}

func isHelp(arg string) bool { return arg == "-h" || arg == "--help" || arg == "-help" }

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (strings.HasPrefix(args[0], "-") && !isHelp(args[0]) && args[0] != "--version") {
		return runStandalone(args, stderr) // `comet [flags]` is `comet standalone [flags]`
	}
	switch args[0] {
	case "standalone":
		return runStandalone(args[1:], stderr)
	case "gateway":
		return runGateway(args[1:], stderr)
	case "pub":
		return runPub(args[1:], stdout, stderr)
	case "sub":
		return runSub(args[1:], stdout, stderr)
	case "hub":
		return runHub(args[1:], stderr)
	case "cluster":
		return runCluster(args[1:], stdout, stderr)
	case "bench":
		return runBench(args[1:], stdout, stderr)
	case "token":
		return runToken(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "comet", buildinfo.Get())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("%w: unknown command %q; see `comet help`", errUsage, args[0])
	}
}
