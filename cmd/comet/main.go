// Command comet is Comet's one binary: hubs, gateways and the tools around
// them. Run `comet help` for the list of commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `comet: a durable real-time messaging server

Usage:
  comet hub --id h1 --data DIR --raft ADDR --api ADDR --peers h1=ADDR,h2=ADDR,...
                         run one hub of the Raft group that stores the channels
  comet cluster status --api ADDR
                         show the hub cluster: members, states, indexes
  comet cluster remove --api ADDR ID
                         remove a hub from the cluster
  comet bench publish --api ADDR,...
                         load-test publishing through the hub API
  comet version          print the version

Every flag can also be set through an environment variable: --raft is
COMET_RAFT, --max-message-bytes is COMET_MAX_MESSAGE_BYTES, and so on. A flag
on the command line wins over the environment.

Run 'comet COMMAND --help' for the flags of a command.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: `comet` alone will run the standalone server (hub and gateway in one process) once the gateway lands; for now run `comet hub` (see `comet help`)", errUsage)
	}
	switch args[0] {
	case "hub":
		return runHub(args[1:], stderr)
	case "cluster":
		return runCluster(args[1:], stdout, stderr)
	case "bench":
		return runBench(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "comet", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "standalone", "gateway", "pub", "sub":
		return fmt.Errorf("%w: `comet %s` is not built yet: it arrives with the gateway; see `comet help`", errUsage, args[0])
	default:
		return fmt.Errorf("%w: unknown command %q; see `comet help`", errUsage, args[0])
	}
}
