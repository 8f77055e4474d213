package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/wire"
)

func runCluster(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: comet cluster status|remove ...", errUsage)
	}
	var api, secret, tlsCA string
	var asJSON bool
	sub := args[0]
	switch sub {
	case "status":
		fs := newFlagSet("cluster status", "comet cluster status --api ADDR [--json]", stderr)
		fs.StringVar(&api, "api", "127.0.0.1:7101", "API address of any hub (host:port, or https://host:port)")
		fs.StringVar(&tlsCA, "tls-ca", "", tlsCAClientUsage)
		fs.BoolVar(&asJSON, "json", false, "print the raw JSON of GET /v1/cluster")
		fs.StringVar(&secret, "secret", "", "the cluster's shared secret, when its hubs have one")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		api, tlsConfig, err := hubClientTLS("api", api, tlsCA)
		if err != nil {
			return err
		}
		return clusterStatus(api, secret, tlsConfig, asJSON, stdout)
	case "remove":
		fs := newFlagSet("cluster remove", "comet cluster remove --api ADDR ID", stderr)
		fs.StringVar(&api, "api", "127.0.0.1:7101", "API address of any hub (host:port, or https://host:port)")
		fs.StringVar(&tlsCA, "tls-ca", "", tlsCAClientUsage)
		fs.StringVar(&secret, "secret", "", "the cluster's shared secret, when its hubs have one")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return fmt.Errorf("%w: comet cluster remove --api ADDR ID", errUsage)
		}
		api, tlsConfig, err := hubClientTLS("api", api, tlsCA)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		client := hubapi.NewClient(20*time.Second, 2)
		client.Secret = secret
		if tlsConfig != nil {
			client.SetTLS(tlsConfig)
		}
		if err := client.Post(ctx, api, "/v1/cluster/remove", wire.RemoveRequest{ID: fs.Arg(0)}, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s\n", fs.Arg(0))
		return nil
	default:
		return fmt.Errorf("%w: unknown cluster command %q (status, remove)", errUsage, sub)
	}
}

func clusterStatus(api, secret string, tlsConfig *tls.Config, asJSON bool, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st wire.ClusterStatus
	client := hubapi.NewClient(5*time.Second, 2)
	client.Secret = secret
	if tlsConfig != nil {
		client.SetTLS(tlsConfig)
	}
	if err := client.Get(ctx, api, "/v1/cluster", &st); err != nil {
		return fmt.Errorf("cluster status from %s: %w", api, err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(stdout, "leader: %s   term: %d   asked: %s (%s)\n\n", leader, st.Term, st.ID, api)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT\tAPI\tSTATE\tVOTER\tAPPLIED\tCOMMIT\tVERSION\tNOTE")
	for _, n := range st.Nodes {
		voter := "yes"
		if !n.Voter {
			voter = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", n.ID, n.Raft, orDash(n.API), n.State, voter, n.Applied, n.Commit, orDash(n.Version), n.Error)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
