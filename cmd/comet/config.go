package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/wire"
	"go.yaml.in/yaml/v3"
)

// configFile is the --config flag: a YAML file of settings. Its keys are
// the command's flag names; gateways (and the standalone) also take
// `channels`, the channel rules (auth.Rule), and hubs (and the standalone)
// `namespaces` (wire.Namespace):
//
//	listen: 127.0.0.1:8080
//	allowed-origins: [https://app.example.com]
//	token-hmac-secret: ...
//	channels:
//	  - {match: "public:*", subscribe: anyone, publish: users}
//	  - {match: "user:{sub}:*", subscribe: users, publish: none}
//	namespaces:
//	  - {name: chat, max_messages: 1000, max_age: 1h, publish: subscribers}
//
// A flag on the command line wins over the environment, which wins over the
// file, which wins over the default.
type configFile struct {
	path     string
	channels []auth.Rule
	// namespaces is nil unless the file has the key.
	namespaces []wire.Namespace
	// takes: the keys other than flags this command takes (channels,
	// namespaces).
	takes map[string]bool
}

func (c *configFile) String() string { return c.path }
func (c *configFile) Set(p string) error {
	c.path = p
	return nil
}

// addConfigFlag registers --config on fs; keys are the keys other than
// flags that the command takes: "channels" (the channel rules),
// "namespaces".
func addConfigFlag(fs *flag.FlagSet, keys ...string) *configFile {
	c := &configFile{takes: map[string]bool{}}
	plus := ""
	for _, k := range keys {
		c.takes[k] = true
		plus += ", plus " + map[string]string{"channels": "channels (the channel rules)", "namespaces": "namespaces"}[k]
	}
	fs.Var(c, "config", "a YAML file of settings: its keys are these flags' names"+plus+
		"; the command line and the environment win over it")
	return c
}

// load reads the file and sets every flag that neither the command line
// nor the environment set (set names those).
func (c *configFile) load(fs *flag.FlagSet, set map[string]bool) error {
	if c.path == "" {
		return nil
	}
	raw, err := os.ReadFile(c.path)
	if err != nil {
		return fmt.Errorf("%w: --config: %v", errUsage, err)
	}
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%w: --config %s: not YAML: %v", errUsage, c.path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		node := doc[key]
		where := fmt.Sprintf("--config %s, line %d: %s", c.path, node.Line, key)
		if key == "channels" && c.takes[key] {
			rules, err := decodeRules(&node)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", errUsage, where, err)
			}
			c.channels = rules
			continue
		}
		if key == "namespaces" && c.takes[key] {
			list, err := decodeNamespaces(&node)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", errUsage, where, err)
			}
			c.namespaces = list
			continue
		}
		f := fs.Lookup(key)
		if f == nil || key == "config" {
			return fmt.Errorf("%w: %s: unknown setting (it takes the names of the flags in --help)", errUsage, where)
		}
		if set[key] {
			continue
		}
		v, err := scalarValue(&node)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", errUsage, where, err)
		}
		if err := fs.Set(key, v); err != nil {
			return fmt.Errorf("%w: %s: %v", errUsage, where, err)
		}
	}
	return nil
}

// scalarValue is a flag's value from YAML: a scalar as written, or a list
// of scalars joined with commas (for the comma-separated flags).
func scalarValue(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value, nil
	case yaml.SequenceNode:
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return "", errors.New("a list of plain values is expected")
			}
			items = append(items, item.Value)
		}
		return strings.Join(items, ","), nil
	default:
		return "", errors.New("a plain value (or a list of them) is expected")
	}
}

// decodeRules reads the channels list strictly: unknown fields are errors.
func decodeRules(n *yaml.Node) ([]auth.Rule, error) {
	var rules []auth.Rule
	if err := decodeStrict(n, &rules); err != nil {
		return nil, fmt.Errorf("want a list of {match, subscribe, publish}: %v", err)
	}
	if _, err := auth.NewPolicy(rules); err != nil {
		return nil, err
	}
	return rules, nil
}

// decodeStrict decodes n into out, refusing keys out does not have.
func decodeStrict[T any](n *yaml.Node, out *T) error {
	raw, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// decodeNamespaces reads the namespaces of a config file.
func decodeNamespaces(n *yaml.Node) ([]wire.Namespace, error) {
	list := []wire.Namespace{}
	if err := decodeStrict(n, &list); err != nil {
		return nil, fmt.Errorf("want a list of {name, max_messages, max_age, max_message_bytes, publish, history, personal}: %v", err)
	}
	if err := wire.CheckNamespaces(list); err != nil {
		return nil, err
	}
	return list, nil
}

// parseRules parses --channel-rules: "pattern=subscribe/publish,...", e.g.
// "public:*=anyone/users,user:{sub}:*=users/none".
func parseRules(s string) ([]auth.Rule, error) {
	var rules []auth.Rule
	for _, part := range splitList(s) {
		pat, who, ok := strings.Cut(part, "=")
		sub, pub, ok2 := strings.Cut(who, "/")
		if !ok || !ok2 || pat == "" {
			return nil, fmt.Errorf("%w: --channel-rules: %s is not pattern=subscribe/publish (each anyone, users or none)", errUsage, strconv.Quote(part))
		}
		rules = append(rules, auth.Rule{Match: pat, Subscribe: sub, Publish: pub})
	}
	if _, err := auth.NewPolicy(rules); err != nil {
		return nil, fmt.Errorf("%w: --channel-rules: %v", errUsage, err)
	}
	return rules, nil
}
