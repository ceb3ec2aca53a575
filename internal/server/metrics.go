package server

import (
	"context"
	"strconv"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	requests         *prometheus.HistogramVec
	heartbeats       *prometheus.CounterVec
	controllerErrors prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ferry_api_request_duration_seconds",
			Help:    "Latency of API requests by method, route and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "route", "code"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_server_heartbeats_total",
			Help: "Agent heartbeats handled, by result.",
		}, []string{"result"}),
		controllerErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_controller_reconcile_errors_total",
			Help: "Errors of the controllers' reconcile passes on this server.",
		}),
	}
	reg.MustRegister(m.requests, m.heartbeats, m.controllerErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{s: s})
	return m
}

func (m *metrics) observe(method, route string, code int, d time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Observe(d.Seconds())
}

// stateCollector reads node and instance counts from etcd at scrape time,
// so every server reports the same truth whether or not it leads.
type stateCollector struct{ s *Server }

var (
	nodesDesc     = prometheus.NewDesc("ferry_nodes", "Nodes by state.", []string{"state"}, nil)
	instancesDesc = prometheus.NewDesc("ferry_instances", "Instances by phase.", []string{"phase"}, nil)
	leaderDesc    = prometheus.NewDesc("ferry_server_is_leader", "1 if this server runs the controllers.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- nodesDesc
	ch <- instancesDesc
	ch <- leaderDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	leader := 0.0
	if c.s.IsLeader() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(leaderDesc, prometheus.GaugeValue, leader)
	if nodes, _, err := c.s.store.Nodes.List(ctx); err == nil {
		alive, _, err := c.s.store.AliveNodes(ctx)
		if err == nil {
			counts := map[api.NodeState]int{api.NodeReady: 0, api.NodeNotReady: 0}
			for _, n := range nodes {
				if alive[n.Name] {
					counts[api.NodeReady]++
				} else {
					counts[api.NodeNotReady]++
				}
			}
			for st, n := range counts {
				ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(n), string(st))
			}
		}
	}
	if insts, _, err := c.s.store.Instances.List(ctx); err == nil {
		counts := map[api.Phase]int{}
		for _, p := range api.Phases {
			counts[p] = 0
		}
		for _, in := range insts {
			counts[in.Status.Phase]++
		}
		for p, n := range counts {
			ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(n), string(p))
		}
	}
}
