package agent

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg             *prometheus.Registry
	heartbeats      *prometheus.CounterVec
	heartbeatOK     prometheus.Counter
	heartbeatError  prometheus.Counter
	reconcileErrors prometheus.Counter
	vms             prometheus.Gauge
	lastAck         prometheus.Gauge
	fences          prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_agent_heartbeats_total",
			Help: "Heartbeats sent to the server, by result (ok: acknowledged; error: failed or timed out).",
		}, []string{"result"}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_agent_reconcile_errors_total",
			Help: "Failed driver actions (start, stop, destroy, persisting a handle) while reconciling instances.",
		}),
		vms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_agent_vms",
			Help: "VMs running on this node as far as the agent knows.",
		}),
		lastAck: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_agent_last_heartbeat_ack_timestamp_seconds",
			Help: "Unix time at which the last acknowledged heartbeat was sent.",
		}),
		fences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_agent_self_fences_total",
			Help: "Times the agent killed its VMs and froze their disks because the control plane stopped acknowledging its heartbeats.",
		}),
	}
	m.heartbeatOK = m.heartbeats.WithLabelValues("ok")
	m.heartbeatError = m.heartbeats.WithLabelValues("error")
	m.reg.MustRegister(m.heartbeats, m.reconcileErrors, m.vms, m.lastAck, m.fences,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// metricsServer returns the server of /metrics and /healthz.
func (a *Agent) metricsServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}
