package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// cluster is the system under test: one server on loopback with a state directory,
// and the workers, each dialing it through its own proxy. A process that exits
// without being killed or told to is restarted (and check 8 reports it).
type cluster struct {
	cfg        runConfig
	h          *history
	ps         *procs
	store      *fencedStore
	tokenAddr  string
	httpAddr   string
	adminToken string
	stateDir   string
	hc         *http.Client

	mu         sync.Mutex // guards server, serverInst, ending and each slot's cur, inst
	server     *proc
	serverInst int
	workers    []*workerSlot
	ending     bool // no more restarts: the run is stopping
}

type workerSlot struct {
	idx     int
	name    string
	proxy   *proxy
	cur     *proc
	inst    int
	started chan struct{} // closed when cur's first session is up
}

// freePort returns a loopback TCP port free now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (c *cluster) serverEnv() []string {
	return []string{
		"BATON_NODE_NAME=chaos-server",
		"BATON_TOKEN_ADDR=" + c.tokenAddr,
		"BATON_HTTP_ADDR=" + c.httpAddr,
		"BATON_GOSSIP_BIND=127.0.0.1",
		"BATON_GOSSIP_PORT=0",
		"BATON_ADVERTISE=127.0.0.1",
		"BATON_SESSION_TTL=" + c.cfg.TTL.String(),
		"BATON_STATE_DIR=" + c.stateDir,
		"BATON_ADMIN_TOKEN=" + c.adminToken,
		"BATON_LOG_FORMAT=json",
		"BATON_LOG_LEVEL=info",
	}
}

// startServer starts a server process on the state directory.
func (c *cluster) startServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.serverInst++
	p, err := c.ps.start("server", c.serverInst, c.cfg.ServerBin, nil, c.serverEnv(), nil)
	if err != nil {
		return err
	}
	c.server = p
	return nil
}

func (c *cluster) currentServer() *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.server
}

// waitReady waits until the server answers /readyz, at most d.
func (c *cluster) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		resp, err := c.hc.Get("http://" + c.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready within %s: %v", d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling with a deadline
		}
	}
}

// startWorker starts worker i's next process.
func (c *cluster) startWorker(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.workers[i]
	s.inst++
	inst := s.inst
	started := make(chan struct{})
	var once sync.Once
	args := []string{"-name", s.name, "-inst", strconv.Itoa(inst), "-addr", s.proxy.addr(), "-store", c.store.URL(),
		"-seed", strconv.FormatUint(c.cfg.Seed*1000+uint64(i), 10),
		"-hold-min", c.cfg.HoldMin.String(), "-hold-max", c.cfg.HoldMax.String(),
		"-think-max", c.cfg.ThinkMax.String(), "-requeue", strconv.FormatFloat(c.cfg.Requeue, 'f', -1, 64),
		"-acquire-timeout", c.cfg.AcquireTimeout.String()}
	if c.cfg.Sabotage {
		args = append(args, "-sabotage")
	}
	read := func(r io.Reader) {
		c.h.readEvents(r, s.name, inst, func(e event.Event) {
			if e.Kind == event.Start {
				once.Do(func() { close(started) })
			}
		})
	}
	p, err := c.ps.start(s.name, inst, c.cfg.WorkerBin, args, nil, read)
	if err != nil {
		return err
	}
	s.cur, s.started = p, started
	return nil
}

func (c *cluster) worker(i int) (*proc, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.workers[i].cur, c.workers[i].started
}

func (c *cluster) workerIndex(name string) int {
	for i, s := range c.workers {
		if s.name == name {
			return i
		}
	}
	return -1
}

// onExit restarts a process that ended on its own while the run goes on.
func (c *cluster) onExit(p *proc, expected bool) {
	c.mu.Lock()
	restart := !expected && !c.ending
	c.mu.Unlock()
	if !restart {
		return
	}
	go func() {
		time.Sleep(100 * time.Millisecond) // do not spin on a process that dies at once
		if p.name == "server" {
			_ = c.startServer()
		} else if i := c.workerIndex(p.name); i >= 0 {
			_ = c.startWorker(i)
		}
	}()
}

// closeConnections is POST /admin/close-connections.
func (c *cluster) closeConnections() error {
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.httpAddr+"/admin/close-connections", nil)
	req.Header.Set("Authorization", "Bearer "+c.adminToken)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("close-connections: %s", resp.Status)
	}
	return nil
}

// tokenStatus is the part of the server's /status the checker reads.
type tokenStatus struct {
	Name     string `json:"name"`
	Fence    uint64 `json:"fence"`
	Holder   string `json:"holder"`
	Counter  uint64 `json:"counter"`
	Grants   uint64 `json:"grants"`
	Releases uint64 `json:"releases"`
}

func (c *cluster) status(token string) (tokenStatus, error) {
	resp, err := c.hc.Get("http://" + c.httpAddr + "/status")
	if err != nil {
		return tokenStatus{}, err
	}
	defer resp.Body.Close()
	var st struct {
		Tokens []tokenStatus `json:"tokens"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return tokenStatus{}, err
	}
	for _, t := range st.Tokens {
		if t.Name == token {
			return t, nil
		}
	}
	return tokenStatus{}, fmt.Errorf("token %q not in /status", token)
}
