package raft

import (
	"context"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends hashicorp/raft's hclog output to slog. It is the one
// place where the two logging worlds meet.
type hclogAdapter struct {
	l    *slog.Logger
	name string
	args []interface{}
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHclog(l *slog.Logger) hclog.Logger { return &hclogAdapter{l: l} }

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...interface{}) {
	lv := slogLevel(level)
	if lv == slog.LevelWarn && msg == "heartbeat timeout reached, starting election" && argValue(args, "last-leader-id") == "" {
		// No leader known: the first election after a start (or after a
		// leader stepped down, which said so itself). Every healthy start
		// has one; a leader lost is still a warning.
		lv = slog.LevelInfo
	}
	if !a.l.Enabled(context.Background(), lv) {
		return
	}
	a.l.Log(context.Background(), lv, msg, formatArgs(args)...)
}

// argValue returns the value of key in hclog's key, value, ... args, as a
// string ("" when absent).
func argValue(args []interface{}, key string) string {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == key {
			return fmt.Sprint(args[i+1])
		}
	}
	return ""
}

// formatArgs formats the values hclog formats itself: hclog.Fmt("%+v", x)
// (an hclog.Format), which slog would print as the list it is
// ("[%+v [...]]"). It also renames raft's key "node" ("entering candidate
// state" node="Node at ... [Candidate]") to "raft-node": the hub's logger
// has node=ID already.
func formatArgs(args []interface{}) []interface{} {
	var out []interface{} // a copy, once one is changed: the caller's stays as it was
	for i, v := range args {
		if i%2 == 0 {
			if k, ok := v.(string); ok && k == "node" {
				if out == nil {
					out = append([]interface{}(nil), args...)
				}
				out[i] = "raft-node"
			}
			continue
		}
		f, ok := v.(hclog.Format)
		if !ok || len(f) == 0 {
			continue
		}
		if out == nil {
			out = append([]interface{}(nil), args...)
		}
		if format, ok := f[0].(string); ok {
			out[i] = fmt.Sprintf(format, f[1:]...)
		} else {
			out[i] = fmt.Sprint(f...)
		}
	}
	if out == nil {
		return args
	}
	return out
}

func (a *hclogAdapter) Trace(msg string, args ...interface{}) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...interface{}) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...interface{})  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...interface{})  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...interface{}) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) IsTrace() bool                         { return false }
func (a *hclogAdapter) IsDebug() bool {
	return a.l.Enabled(context.Background(), slog.LevelDebug)
}
func (a *hclogAdapter) IsInfo() bool               { return a.l.Enabled(context.Background(), slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool               { return a.l.Enabled(context.Background(), slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool              { return a.l.Enabled(context.Background(), slog.LevelError) }
func (a *hclogAdapter) ImpliedArgs() []interface{} { return a.args }
func (a *hclogAdapter) Name() string               { return a.name }
func (a *hclogAdapter) SetLevel(hclog.Level)       {}
func (a *hclogAdapter) GetLevel() hclog.Level      { return hclog.Info }
func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{l: a.l, name: name, args: a.args}
}
func (a *hclogAdapter) With(args ...interface{}) hclog.Logger {
	return &hclogAdapter{l: a.l.With(args...), name: a.name, args: append(append([]interface{}{}, a.args...), args...)}
}
func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return &hclogAdapter{l: a.l, name: name, args: a.args}
}
func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *stdlog.Logger {
	return stdlog.New(a.StandardWriter(nil), "", 0)
}
func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		a.l.Info(string(p))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
