package main

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/comethq/comet/internal/buildinfo"
)

// componentHandler joins the "component" attributes of nested loggers into
// one: a broker's logger (component=broker) whose router adds
// component=router logs component=broker.router, where the first was, not
// the key twice; the same name twice (a package adding the component its
// caller already gave) is said once.
type componentHandler struct {
	base  slog.Handler        // the handler before attrs (groups applied)
	attrs []slog.Attr         // the attributes since, components joined
	inner func() slog.Handler // base with attrs, made once
}

func newComponentHandler(base slog.Handler, attrs []slog.Attr) *componentHandler {
	return &componentHandler{base: base, attrs: attrs, inner: sync.OnceValue(func() slog.Handler {
		if len(attrs) == 0 {
			return base
		}
		return base.WithAttrs(attrs)
	})}
}

func (h *componentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.base.Enabled(ctx, l)
}

func (h *componentHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	merged := slices.Clone(h.attrs)
	for _, a := range attrs {
		i := slices.IndexFunc(merged, func(m slog.Attr) bool { return m.Key == "component" })
		if a.Key != "component" || i < 0 {
			merged = append(merged, a)
			continue
		}
		if c, v := merged[i].Value.String(), a.Value.String(); c != v && !strings.HasSuffix(c, "."+v) {
			merged[i] = slog.String("component", c+"."+v)
		}
	}
	return newComponentHandler(h.base, merged)
}

func (h *componentHandler) WithGroup(name string) slog.Handler {
	return newComponentHandler(h.inner().WithGroup(name), nil)
}

func (h *componentHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.inner().Handle(ctx, r)
}

// readyCheckEvery is how often announceReady checks, and readySlow when it
// says what the process still waits for.
const (
	readyCheckEvery = 50 * time.Millisecond
	readySlow       = 10 * time.Second
)

// announceReady logs msg with args(), once, at INFO, as soon as ready
// returns nil: the one line that says the process is ready, and where. If it is
// not ready after readySlow, it says why (INFO too: a hub waits for the
// others to start, a gateway for the hubs). It gives up when ctx ends (the
// process stops) or stop is called; stop returns once the watcher has.
func announceReady(ctx context.Context, logger *slog.Logger, ready func(context.Context) error, msg string, args func() []any) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(readyCheckEvery)
		defer tick.Stop()
		start, told := time.Now(), false
		for {
			err := ready(ctx)
			if err == nil {
				logger.Info(msg, append(args(), "version", buildinfo.Get().Version)...)
				return
			}
			if !told && time.Since(start) >= readySlow {
				logger.Info("not ready yet", "waiting", time.Since(start).Round(time.Second), "reason", err)
				told = true
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}
