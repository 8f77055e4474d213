package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"
)

// newFlagSet returns a flag set whose errors are returned, not fatal.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags (each also read from the environment variable shown):\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(stderr, "  --%s  [%s]\n      %s%s\n", f.Name, flagEnv(f), f.Usage, def)
		})
	}
	return fs
}

// envName is the environment variable of a flag: --max-inflight is
// COMET_MAX_INFLIGHT.
func envName(flagName string) string {
	return "COMET_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ownEnv is a flag that reads an environment variable of its own instead
// of COMET_<NAME>: one whose COMET_<NAME> is another command's flag
// (COMET_ID is the --id of hubs and gateways, often exported in the shell
// that starts them; as the idempotency key of `comet pub` it would make
// every publish after the first a duplicate).
type ownEnv struct {
	flag.Value
	env string
}

// IsBoolFlag keeps a bool flag usable without a value.
func (e ownEnv) IsBoolFlag() bool {
	b, ok := e.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// flagEnv is the environment variable f reads.
func flagEnv(f *flag.Flag) string {
	if o, ok := f.Value.(ownEnv); ok {
		return o.env
	}
	return envName(f.Name)
}

// stringValue is a flag.Value of a string, for ownEnv.
type stringValue struct{ p *string }

func (s stringValue) String() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}
func (s stringValue) Set(v string) error { *s.p = v; return nil }

// boolValue is a flag.Value of a bool, for ownEnv.
type boolValue struct{ p *bool }

func (b boolValue) String() string {
	if b.p == nil || !*b.p {
		return "false"
	}
	return "true"
}
func (b boolValue) Set(v string) error {
	x, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	*b.p = x
	return nil
}
func (b boolValue) IsBoolFlag() bool { return true }

// parseFlags parses args, then fills every flag not given on the command
// line from its environment variable, then from the --config file, if the
// command takes one (config.go).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(flagEnv(f)); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%w: %s=%q: %v", errUsage, flagEnv(f), v, serr)
			}
			set[f.Name] = true
		}
	})
	if err != nil {
		return err
	}
	if f := fs.Lookup("config"); f != nil {
		if c, ok := f.Value.(*configFile); ok {
			return c.load(fs, set)
		}
	}
	return nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: use debug, info, warn or error", errUsage, level)
	}
	return slog.New(newComponentHandler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}), nil)), nil
}

// servePprof serves Go's profiler (net/http/pprof) on addr, when it is set,
// for as long as the process runs: for operators measuring a hub or a
// gateway. Keep it on a loopback address.
func servePprof(addr string, logger *slog.Logger) error {
	if addr == "" {
		return nil
	}
	if err := checkAddr("pprof", addr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("profiler listening", "addr", "http://"+addr+"/debug/pprof/")
	return nil
}

// secretUsage explains --secret wherever it is taken.
const secretUsage = "the cluster's shared secret: hubs require it (Authorization: Bearer) on every API call but /healthz, /readyz and /metrics, and on Raft connections; gateways, workers and tools send it. Give every hub and gateway the same (default: none, and hubs warn)"

// adminTokenUsage explains --admin-token wherever it is taken.
const adminTokenUsage = "a token that opens the read-only admin view (GET /admin, and /v1/admin/ as Authorization: Bearer) and nothing else; the secret opens it too (default: none; without a secret either, the view is open, and in comet standalone open to this machine only)"

// splitList returns the comma-separated items of a flag, trimmed, without
// empty ones.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
