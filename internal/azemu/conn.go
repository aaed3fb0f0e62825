package azemu

import (
	"bufio"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// emuConn wraps every client connection the emulator terminates TLS on
// (tunnelled through CONNECT or accepted in direct mode). It applies the
// connection-latency and bandwidth knobs below TLS, so the limits act on
// real wire bytes, counts those bytes, and can be reset (RST) on demand.
type emuConn struct {
	net.Conn
	e      *Emulator
	tcp    *net.TCPConn // for SO_LINGER=0 resets; nil if not TCP
	br     *bufio.Reader
	target string // CONNECT host name; "" in direct mode
	vault  string // direct mode: the vault this listener serves
	first  sync.Once
	rd, wr pacer
	closed atomic.Bool
}

// chunk bounds how many bytes go through the pacer at once, so a limited
// link delivers data smoothly instead of in one late burst.
const chunk = 1024

func (c *emuConn) Read(p []byte) (int, error) {
	c.first.Do(func() {
		// A new connection costs a round trip before the TLS handshake can
		// proceed; charge it when the client's first bytes arrive.
		if d := c.e.knobs().ConnLatency; d > 0 {
			time.Sleep(d)
		}
	})
	bps := c.e.knobs().BandwidthBPS
	if bps > 0 && len(p) > chunk {
		p = p[:chunk]
	}
	var n int
	var err error
	if c.br != nil && c.br.Buffered() > 0 {
		n, err = c.br.Read(p)
	} else {
		n, err = c.Conn.Read(p)
	}
	if n > 0 {
		c.e.stats.connBytesIn.Add(int64(n))
		c.rd.wait(n, bps)
	}
	return n, err
}

func (c *emuConn) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		bps := c.e.knobs().BandwidthBPS
		n := len(p)
		if bps > 0 && n > chunk {
			n = chunk
		}
		c.wr.wait(n, bps)
		w, err := c.Conn.Write(p[:n])
		total += w
		c.e.stats.connBytesOut.Add(int64(w))
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

// reset aborts the connection with a TCP RST, which clients see as
// "connection reset by peer", the way a flaky middlebox fails.
func (c *emuConn) reset() {
	if c.tcp != nil {
		_ = c.tcp.SetLinger(0)
	}
	_ = c.Close()
}

func (c *emuConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// pacer spaces out bytes to respect a bits-per-second budget.
type pacer struct {
	mu   sync.Mutex
	next time.Time
}

func (p *pacer) wait(n int, bps int64) {
	if bps <= 0 || n <= 0 {
		return
	}
	d := time.Duration(int64(n) * 8 * int64(time.Second) / bps)
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(d)
	until := p.next
	p.mu.Unlock()
	if s := time.Until(until); s > 0 {
		time.Sleep(s)
	}
}

// chanListener feeds hijacked CONNECT tunnels to the inner TLS server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (l *chanListener) push(ctx context.Context, c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-ctx.Done():
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// directListener wraps accepted TCP connections in emuConn.
type directListener struct {
	net.Listener
	e     *Emulator
	vault string
}

func (l *directListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.e.stats.connections.Add(1)
	tc, _ := c.(*net.TCPConn)
	return &emuConn{Conn: c, e: l.e, tcp: tc, vault: l.vault}, nil
}
