package replica_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/replica"
)

// staleNames is the name service of a cluster whose servers advertise host names
// ("n0:port"), as baton's do: a name is dialled at 127.0.0.1 and the port raft
// names, unless the test made it resolve elsewhere, as a membership that has not
// yet seen a server move keeps its old address, which another server may have
// taken meanwhile.
type staleNames struct {
	mu     sync.Mutex
	moved  map[string]string // host name -> the address it resolves to
	stale  string            // the host name whose dials are watched
	dialed chan struct{}     // a connection to stale's address was made (closed once)
	once   sync.Once
}

func (s *staleNames) dial(ctx context.Context, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	to, moved := s.moved[host]
	watched := host == s.stale
	s.mu.Unlock()
	if !moved {
		to = net.JoinHostPort("127.0.0.1", port)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", to)
	if err == nil && watched {
		s.once.Do(func() { close(s.dialed) })
	}
	return c, err
}

func (s *staleNames) resolve(host, addr string, watch bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.moved[host] = addr
	if watch {
		s.stale = host
	} else if s.stale == host {
		s.stale = ""
	}
}

func loopback(t *testing.T, nd *replica.Node) string {
	t.Helper()
	_, port, err := net.SplitHostPort(nd.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// Servers recreated in a deployment can swap addresses, and a membership keeps a
// server's old address for a while: the leader then dials one follower's name and
// reaches the other. The server reached refuses a connection meant for another
// (the opening), so the leader dials again and reaches the right one once the name
// resolves to it. Were it answered, raft would keep that connection: the follower
// meant would never hear the leader again, and this test fails at its catch-up.
func TestARaftConnectionReachesOnlyTheServerItIsMeantFor(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "keyed"}[keyed], func(t *testing.T) {
			names := &staleNames{moved: map[string]string{}, dialed: make(chan struct{})}
			refusals := make(chan string, 64) // "id reason"
			c := newCluster(t, 3, true, func(cfg *replica.Config) {
				id := cfg.ID
				cfg.Advertise = id + ":0"
				cfg.Dial = names.dial
				if keyed {
					cfg.Keys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
				}
				cfg.Hooks.Refused = func(_, reason string, _ error) {
					select {
					case refusals <- id + " " + reason:
					default:
					}
				}
			})
			want := cmds("before", 5)
			for _, cmd := range want {
				c.apply(cmd)
			}
			c.checkSame(want)
			leader := c.waitLeader(electionBound)
			other, moved := (leader+1)%3, (leader+2)%3
			movedID := c.nodes[moved].ID()

			// The follower's server goes away; its name resolves to the other
			// follower's address, which the leader dials.
			c.close(moved)
			names.resolve(movedID, loopback(t, c.nodes[other]), true)
			select {
			case <-names.dialed:
			case <-time.After(electionBound):
				t.Fatalf("the leader did not dial %s within %s", movedID, electionBound)
			}
			more := cmds("while-moving", 5)
			for _, cmd := range more {
				c.apply(cmd)
			}
			want = append(want, more...)

			// It comes back at a new address, which its name now resolves to.
			c.cfgs[moved].BindAddr, c.cfgs[moved].ID = "127.0.0.1:0", ""
			c.open(moved)
			names.resolve(movedID, loopback(t, c.nodes[moved]), false)
			after := cmds("after", 5)
			for _, cmd := range after {
				c.apply(cmd)
			}
			c.checkSame(append(want, after...))

			wantRefusal := c.nodes[other].ID() + " " + replica.ReasonMisrouted
			for {
				select {
				case r := <-refusals:
					if r == wantRefusal {
						return
					}
					t.Logf("refusal: %s", r)
					continue
				default:
				}
				t.Fatalf("no refusal %q reported (Hooks.Refused)", wantRefusal)
			}
		})
	}
}
