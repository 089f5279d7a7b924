package replica_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/baton-dev/baton/internal/replica"
)

// counter is a state machine that adds each command's number to a total.
type counter struct {
	mu    sync.Mutex // guards total, read by Total on other goroutines
	total uint64
}

func (c *counter) Apply(entries []replica.Entry) []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]any, len(entries))
	for i, e := range entries {
		if len(e.Cmd) != 8 {
			out[i] = fmt.Errorf("bad command: %d bytes", len(e.Cmd)) // answered, not applied
			continue
		}
		c.total += binary.BigEndian.Uint64(e.Cmd)
		out[i] = c.total
	}
	return out
}

func (c *counter) Snapshot() (io.WriterTo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.NewReader(fmt.Sprint(c.total)), nil // a copy: written later
}

func (c *counter) Restore(r io.Reader) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := fmt.Fscan(r, &c.total)
	return err
}

// A single server keeping its state in memory: bootstrap it alone, wait until it
// leads, and apply commands through the log.
func Example() {
	cfg := replica.DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0" // Dir empty: in-memory stores
	cfg.Bootstrap = true
	node, err := replica.Open(cfg, &counter{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := node.WaitLeader(ctx); err != nil {
		fmt.Println(err)
		return
	}
	for _, n := range []uint64{2, 3} {
		total, err := node.Apply(ctx, binary.BigEndian.AppendUint64(nil, n))
		fmt.Println(total, err)
	}
	// Output:
	// 2 <nil>
	// 5 <nil>
}
