package gateway

import (
	"net/http"

	"github.com/comethq/comet/internal/buildinfo"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg            *prometheus.Registry
	connections    *prometheus.GaugeVec
	subscriptions  prometheus.Gauge
	channels       prometheus.Gauge
	frames         *prometheus.CounterVec
	framesSent     prometheus.Counter
	delivered      prometheus.Counter
	slowConsumers  prometheus.Counter
	writeTimeouts  prometheus.Counter
	publishes      *prometheus.CounterVec
	publishesOK    prometheus.Counter // publishes by "ok" and "error", looked up once
	publishesErr   prometheus.Counter
	publishTime    prometheus.Histogram
	replayed       *prometheus.CounterVec
	resyncs        prometheus.Counter
	upstreamErrors prometheus.Counter
	upstreamIndex  prometheus.Gauge
	authFailures   *prometheus.CounterVec
	requests       *prometheus.CounterVec
	requestTime    prometheus.Histogram
	directMessages prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.connections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "comet_gateway_connections", Help: "Open client connections, by transport.",
	}, []string{"transport"})
	m.subscriptions = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "comet_gateway_subscriptions", Help: "Subscriptions of all connections.",
	})
	m.channels = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "comet_gateway_channels", Help: "Channels followed (with subscribers, or lingering).",
	})
	m.frames = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "comet_gateway_frames_received_total", Help: "Client frames received, by op (invalid: refused).",
	}, []string{"op"})
	m.framesSent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "comet_gateway_frames_sent_total", Help: "Server frames written (each holds one or more objects).",
	})
	m.delivered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "comet_gateway_objects_sent_total", Help: "Server objects (messages, acks, ...) written to clients.",
	})
	m.slowConsumers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "comet_gateway_slow_consumers_total", Help: "Connections closed because their queue overflowed.",
	})
	m.writeTimeouts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "comet_gateway_write_timeouts_total", Help: "Connections closed because a write to them waited longer than the write timeout.",
	})
	m.publishes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "comet_gateway_publishes_total", Help: "Client publishes answered, by result.",
	}, []string{"result"})
	m.publishesOK, m.publishesErr = m.publishes.WithLabelValues("ok"), m.publishes.WithLabelValues("error")
	m.publishTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "comet_gateway_publish_duration_seconds", Help: "Client publish to ack.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	})
	m.replayed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "comet_gateway_replayed_total", Help: "Messages replayed to resuming clients, by source (cache, hub).",
	}, []string{"source"})
	m.resyncs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "comet_gateway_channel_syncs_total", Help: "Channel syncs with the hubs (first subscriber, or a gap in the stream).",
	})
	m.upstreamErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "comet_gateway_stream_errors_total", Help: "Commit stream failures (the gateway moves to another hub).",
	})
	m.upstreamIndex = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "comet_gateway_stream_index", Help: "Last Raft index seen on the commit stream.",
	})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "comet_gateway_auth_failures_total", Help: "Connections refused or cut off for their token, by reason (missing, invalid, expired, no_key).",
	}, []string{"reason"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "comet_gateway_requests_total", Help: "Client requests answered, by result (ok, or the error code).",
	}, []string{"result"})
	m.requestTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "comet_gateway_request_duration_seconds", Help: "Client request to response.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	})
	m.directMessages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "comet_gateway_direct_messages_total", Help: "Messages sent to one connection by workers.",
	})
	m.reg.MustRegister(m.authFailures, m.requests, m.requestTime, m.directMessages,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "comet_gateway_deliveries_total", Help: "Channel messages queued to subscribers (live and replayed).",
		}, func() float64 { return float64(s.delivered.Load()) }))
	m.reg.MustRegister(m.connections, m.subscriptions, m.channels, m.frames, m.framesSent, m.delivered,
		m.slowConsumers, m.writeTimeouts, m.publishes, m.publishTime, m.replayed, m.resyncs, m.upstreamErrors, m.upstreamIndex,
		buildinfo.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
