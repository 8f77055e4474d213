package broker

import (
	"errors"
	"net/http"
	"time"

	"github.com/comethq/comet/internal/buildinfo"
	"github.com/comethq/comet/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the hub's Prometheus metrics, in a registry of the Service's
// own (so that several services can live in one test process).
type metrics struct {
	reg          *prometheus.Registry
	publishes    *prometheus.CounterVec
	publishTime  prometheus.Histogram
	batchMsgs    prometheus.Histogram
	batchBytes   prometheus.Histogram
	publishOK    prometheus.Counter
	publishError prometheus.Counter
	// The router's (router.go).
	busRequests      *prometheus.CounterVec
	busEventsDropped prometheus.Counter
}

func newMetrics(s *Service) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.publishes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "comet_publish_total", Help: "Publishes answered by this hub, by result.",
	}, []string{"result"})
	m.publishOK = m.publishes.WithLabelValues("ok")
	m.publishError = m.publishes.WithLabelValues("error")
	m.publishTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "comet_publish_duration_seconds",
		Help:    "Time from receiving a publish to its acknowledgement.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	})
	m.batchMsgs = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "comet_batch_messages", Help: "Messages per Raft entry proposed by this hub.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12),
	})
	m.batchBytes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "comet_batch_bytes", Help: "Bytes of messages per Raft entry proposed by this hub.",
		Buckets: prometheus.ExponentialBuckets(64, 4, 10),
	})
	m.busRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "comet_bus_requests_total", Help: "Worker requests routed by this hub, by result (ok, error, not_found, timeout, unavailable).",
	}, []string{"result"})
	m.busEventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "comet_bus_events_dropped_total", Help: "Connection events not queued for a worker too slow to take them.",
	})
	node := s.node
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		m.publishes, m.publishTime, m.batchMsgs, m.batchBytes,
		m.busRequests, m.busEventsDropped,
		gauge("comet_bus_workers", "Worker sessions attached to this hub's router.", func() float64 { w, _ := s.router.counts(); return float64(w) }),
		gauge("comet_bus_gateways", "Gateway sessions attached to this hub's router.", func() float64 { _, g := s.router.counts(); return float64(g) }),
		buildinfo.Collector(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gauge("comet_raft_commit_index", "Raft commit index.", func() float64 { return float64(node.Indexes().Commit) }),
		gauge("comet_raft_applied_index", "Raft index applied to the channel log.", func() float64 { return float64(node.Indexes().Applied) }),
		gauge("comet_raft_last_index", "Last index in the Raft log.", func() float64 { return float64(node.Indexes().Last) }),
		gauge("comet_raft_term", "Raft term.", func() float64 { return float64(node.Indexes().Term) }),
		gauge("comet_raft_leader", "1 when this hub is the leader.", func() float64 {
			if node.IsLeader() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "comet_raft_leader_changes_total", Help: "Leader changes seen by this hub.",
		}, func() float64 { return float64(node.LeaderChanges()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "comet_messages_applied_total", Help: "Messages applied to this hub's channel log since it started (every hub applies every message stored).",
		}, func() float64 {
			if s.cfg.Stream == nil {
				return 0
			}
			return float64(s.cfg.Stream.act.count())
		}),
		gauge("comet_log_bytes", "Size of the channel log file.", func() float64 { return float64(s.log.Size()) }),
		gauge("comet_log_ids", "Publish ids held for idempotency (the last 10 minutes of ids).", func() float64 { return float64(s.log.HeldIDs()) }),
		gauge("comet_log_max_ids", "The most publish ids held (0: no limit); past it publishes with new ids are refused, unavailable.", func() float64 { return float64(s.log.MaxIDs()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "comet_log_ids_refused_total", Help: "Publishes with a new id refused because comet_log_max_ids ids were held (applied on this hub since it started).",
		}, func() float64 { return float64(s.log.RefusedIDs()) }),
		gauge("comet_log_no_space", "1 while the channel log cannot commit for want of disk space: applying waits and, as leader, this hub refuses publishes.", func() float64 {
			return b2f(errors.Is(s.log.Fault(), log.ErrNoSpace))
		}),
		gauge("comet_log_corrupt", "1 once damage was found in the channel log file: this hub serves none of it until rebuilt.", func() float64 {
			return b2f(errors.Is(s.log.Fault(), log.ErrCorrupt))
		}),
	)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) observePublish(start time.Time, err error) {
	if err != nil {
		m.publishError.Inc()
		return
	}
	m.publishOK.Inc()
	m.publishTime.Observe(time.Since(start).Seconds())
}

func (m *metrics) observeBatch(n, size int) {
	m.batchMsgs.Observe(float64(n))
	m.batchBytes.Observe(float64(size))
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
