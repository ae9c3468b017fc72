package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/grebpf/grebpf/loader"
)

// Tunnel health states.
const (
	healthProbing = "probing" // no answer yet, not yet missed enough
	healthUp      = "up"
	healthDown    = "down"
)

// probe watches one tunnel with ICMP echoes to its peer address, sent
// through the tunnel interface. An echo crosses everything a packet does
// (our encap, the WAN, the peer's decap, its stack, its encap, our decap)
// and any GRE peer with an address answers it, ip_gre with no setup; a
// Cisco keepalive instead needs the peer to forward a packet from its own
// address, which Linux refuses as a martian.
type probe struct {
	tunnel   string
	peer     netip.Addr
	conn     *net.IPConn
	id       uint16
	seq      uint16
	waiting  bool // the last echo sent has had no answer
	missed   int
	state    string
	sent     uint64
	answered uint64
}

type probeReply struct {
	p   *probe
	seq uint16
}

// startProbes opens a probe for each tunnel with a peer address, keeping
// what the last probes knew of tunnels of the same name.
func (d *daemon) startProbes() error {
	old := d.probes
	d.probes = map[string]*probe{}
	defer func() {
		for _, p := range old {
			p.conn.Close()
		}
	}()
	if d.interval == 0 {
		d.writeHealth()
		return nil
	}
	for i, t := range d.router.Tunnels {
		if t.Peer == "" {
			continue
		}
		peer, err := netip.ParseAddr(t.Peer)
		if err != nil {
			continue // validated by attach
		}
		name := t.Name
		if name == "" {
			name = "gre1"
		}
		conn, err := echoSocket(name)
		if err != nil {
			return fmt.Errorf("probe tunnel %s: %w", name, err)
		}
		p := &probe{tunnel: name, peer: peer, conn: conn, id: uint16(os.Getpid()+i) & 0xffff, state: healthProbing}
		if was, ok := old[name]; ok {
			p.state, p.missed, p.sent, p.answered, p.seq = was.state, was.missed, was.sent, was.answered, was.seq
		}
		d.probes[name] = p
		go p.read(d.replies)
	}
	d.writeHealth()
	return nil
}

func (d *daemon) stopProbes() {
	for _, p := range d.probes {
		p.conn.Close()
	}
}

// echoSocket is a raw ICMP socket bound to the tunnel interface: echoes
// leave through it whatever the routes say, and only what arrives through
// it is read.
func echoSocket(dev string) (*net.IPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	c, err := lc.ListenPacket(context.Background(), "ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, err
	}
	return c.(*net.IPConn), nil
}

func (p *probe) read(replies chan<- probeReply) {
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || uint16(echo.ID) != p.id {
			continue
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(p.peer.AsSlice()) {
			continue
		}
		replies <- probeReply{p, uint16(echo.Seq)}
	}
}

// probeRound counts the last echo of each tunnel missed if no answer
// came, changes states, and sends the next echoes.
func (d *daemon) probeRound() {
	changed := false
	for _, p := range d.probes {
		if p.waiting {
			p.missed++
			if p.missed >= d.misses && p.state != healthDown {
				d.log.Warn("tunnel down", "tunnel", p.tunnel, "peer", p.peer, "missed", p.missed)
				p.state = healthDown
				changed = true
			}
		}
		p.seq++
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(p.id), Seq: int(p.seq), Data: []byte("grebpf health")}}
		b, _ := msg.Marshal(nil)
		if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: p.peer.AsSlice()}); err != nil {
			d.log.Debug("probe not sent", "tunnel", p.tunnel, "error", err)
		}
		p.sent++
		p.waiting = true
	}
	if changed {
		d.healthChanged()
	}
}

func (d *daemon) answered(r probeReply) {
	p := r.p
	if d.probes[p.tunnel] != p || r.seq != p.seq || !p.waiting {
		return // a late answer, or from probes replaced by a reload
	}
	p.waiting, p.missed = false, 0
	p.answered++
	if p.state != healthUp {
		d.log.Info("tunnel up", "tunnel", p.tunnel, "peer", p.peer, "was", p.state)
		p.state = healthUp
		d.healthChanged()
	}
}

func (d *daemon) healthChanged() {
	d.writeHealth()
	if err := d.applyWithdrawal(); err != nil {
		d.log.Error("routes not changed with the tunnels' health", "error", oneLine(err))
	}
}

func (d *daemon) writeHealth() {
	h := map[string]string{}
	for name, p := range d.probes {
		h[name] = p.state
	}
	if err := loader.WriteHealth(d.ns, h); err != nil {
		d.log.Error("health not shared with show and stats", "error", err)
	}
}

// applyWithdrawal puts the routes of the tunnels that are down out of the
// kernel, and the others in, when withdraw is on.
func (d *daemon) applyWithdrawal() error {
	if !d.withdraw {
		return nil
	}
	down := map[string]bool{}
	for name, p := range d.probes {
		if p.state == healthDown {
			down[name] = true
		}
	}
	if err := loader.RoutesFor(d.ns, d.router, down); err != nil {
		return err
	}
	for name := range down {
		d.log.Info("routes withdrawn", "tunnel", name)
	}
	return nil
}
