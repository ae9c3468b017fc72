package main

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"

	"github.com/grebpf/grebpf/internal/config"
	"github.com/grebpf/grebpf/loader"
	"github.com/grebpf/grebpf/maps"
)

// snapshot is what one scrape reports, read by run's loop.
type snapshot struct {
	state   loader.State
	err     error
	probes  map[string]probe
	linkUp  map[string]bool
	wanMTU  int
	reloads map[string]uint64
	// programs are the data plane's programs' run statistics, when the
	// kernel keeps them.
	programs map[string]loader.ProgramRuns
}

func (d *daemon) snapshot() snapshot {
	s := snapshot{probes: map[string]probe{}, linkUp: map[string]bool{}, reloads: map[string]uint64{}}
	s.state, s.err = d.g.state()
	for name, p := range d.probes {
		s.probes[name] = *p
	}
	for k, v := range d.reloads {
		s.reloads[k] = v
	}
	for _, t := range s.state.Tunnels {
		if l, err := netlink.LinkByIndex(int(t.Link.Ifindex)); err == nil {
			s.linkUp[t.Name] = l.Attrs().Flags&net.FlagUp != 0
		}
	}
	if l, err := netlink.LinkByName(s.state.Device); err == nil {
		s.wanMTU = l.Attrs().MTU
	}
	if s.err == nil && s.state.Mode != config.ModeKernel && (d.o.progStats || loader.StatsEnabled()) {
		if progs, err := loader.ProgramStats(d.ns); err == nil {
			s.programs = progs
		} else {
			d.log.Debug("program statistics not read", "error", err)
		}
	}
	return s
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	rxPacketsDesc = desc("grebpf_tunnel_rx_packets_total", "Packets the data plane decapsulated from the tunnel.", "tunnel")
	rxBytesDesc   = desc("grebpf_tunnel_rx_bytes_total", "Inner bytes the data plane decapsulated from the tunnel.", "tunnel")
	txPacketsDesc = desc("grebpf_tunnel_tx_packets_total", "Packets the data plane encapsulated into the tunnel.", "tunnel")
	txBytesDesc   = desc("grebpf_tunnel_tx_bytes_total", "Inner bytes the data plane encapsulated into the tunnel.", "tunnel")
	upDesc        = desc("grebpf_tunnel_up", "1 when the tunnel's peer answers probes (without probes: when its interface is up), else 0.", "tunnel")
	pathMTUDesc   = desc("grebpf_tunnel_path_mtu", "Outer path MTU towards the peer: learned from ICMP, else the WAN device's MTU.", "tunnel")
	probesDesc    = desc("grebpf_tunnel_probes_sent_total", "Health probes (ICMP echoes to the peer address) sent through the tunnel.", "tunnel")
	answersDesc   = desc("grebpf_tunnel_probes_answered_total", "Health probes answered in time.", "tunnel")
	packetsDesc   = desc("grebpf_packets_total", "Packets the data plane dropped or passed to the kernel, by reason.", "reason", "action")
	reloadsDesc   = desc("grebpf_reloads_total", "Reloads (SIGHUP or a kernel change a new attach fixes), by result.", "result")
	attachedDesc  = desc("grebpf_attached", "1 while a data plane is attached in the namespace, else 0.")
	progRunsDesc  = desc("grebpf_program_runs_total", "Runs of the data plane's BPF programs, every instance summed, while the kernel counts them (kernel.bpf_stats_enabled, or run --prog-stats).", "program")
	progTimeDesc  = desc("grebpf_program_run_seconds_total", "Time the data plane's BPF programs ran, every instance summed, while the kernel counts it.", "program")
)

// metricsCollector reads a snapshot per scrape, so the figures are those
// of the moment, as the counters' own.
type metricsCollector struct{ d *daemon }

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{rxPacketsDesc, rxBytesDesc, txPacketsDesc, txBytesDesc, upDesc, pathMTUDesc, probesDesc, answersDesc, packetsDesc, reloadsDesc, attachedDesc, progRunsDesc, progTimeDesc} {
		ch <- d
	}
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.d.ask(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(attachedDesc, err)
		return
	}
	for result, n := range s.reloads {
		ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(n), result)
	}
	if s.err != nil {
		ch <- prometheus.MustNewConstMetric(attachedDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(attachedDesc, prometheus.GaugeValue, 1)
	for _, t := range s.state.Tunnels {
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), t.Name)
		}
		counter(rxPacketsDesc, t.RxPackets)
		counter(rxBytesDesc, t.RxBytes)
		counter(txPacketsDesc, t.TxPackets)
		counter(txBytesDesc, t.TxBytes)
		up := s.linkUp[t.Name]
		if p, ok := s.probes[t.Name]; ok {
			up = p.state == healthUp
			counter(probesDesc, p.sent)
			counter(answersDesc, p.answered)
		}
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, boolValue(up), t.Name)
		mtu := float64(t.PathMTU)
		if mtu == 0 {
			mtu = float64(s.wanMTU)
		}
		ch <- prometheus.MustNewConstMetric(pathMTUDesc, prometheus.GaugeValue, mtu, t.Name)
	}
	for r := maps.Reason(1); int(r) < len(s.state.Reasons); r++ {
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(s.state.Reasons[r]), maps.ReasonName(r), reasonAction(r))
	}
	for name, p := range s.programs {
		ch <- prometheus.MustNewConstMetric(progRunsDesc, prometheus.CounterValue, float64(p.Runs), name)
		ch <- prometheus.MustNewConstMetric(progTimeDesc, prometheus.CounterValue, p.Runtime.Seconds(), name)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves /metrics (grebpf's, the Go runtime's and the
// process's) and /healthz (200 while run's loop answers and a data plane
// is attached).
func (d *daemon) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metricsCollector{d}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		s, err := d.ask(r.Context())
		if err == nil {
			err = s.err
		}
		if err != nil {
			http.Error(w, oneLine(err), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}
