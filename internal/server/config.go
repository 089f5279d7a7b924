package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/nodename"
)

// Config is the server's whole configuration. main reads it from the environment
// with envconfig (prefix BATON_); tests build it directly.
type Config struct {
	TokenAddr         string        `envconfig:"TOKEN_ADDR" default:":7000" desc:"token protocol listen address"`
	HTTPAddr          string        `envconfig:"HTTP_ADDR" default:":8080" desc:"HTTP listen address: metrics, health, status, admin"`
	GossipPort        int           `envconfig:"GOSSIP_PORT" default:"7946" desc:"memberlist port (TCP and UDP); 0 picks a free one"`
	GossipBind        string        `envconfig:"GOSSIP_BIND" default:"0.0.0.0" desc:"memberlist bind address"`
	Advertise         string        `envconfig:"ADVERTISE" desc:"address other nodes reach this one at (default: memberlist picks)"`
	Join              []string      `envconfig:"JOIN" desc:"memberlist seeds, comma-separated (optional on the server)"`
	NodeName          string        `envconfig:"NODE_NAME" desc:"memberlist node name, and a replicated server's raft id (default: the container's name, else the hostname)"`
	SessionTTL        time.Duration `envconfig:"SESSION_TTL" default:"5s" desc:"how long a session lives without a keepalive; a frozen or cut-off holder loses the token after it"`
	StateDir          string        `envconfig:"STATE_DIR" desc:"directory for the raft log of the state (tokens, sessions, epoch); empty keeps state in memory. With BATON_BOOTSTRAP_EXPECT above 1, each server uses its own subdirectory, named after it"`
	BootstrapExpect   int           `envconfig:"BOOTSTRAP_EXPECT" default:"1" desc:"with BATON_STATE_DIR: how many servers replicate the state; the first election waits until this many have found each other through BATON_JOIN (1: a server alone)"`
	RaftPort          int           `envconfig:"RAFT_PORT" default:"7001" desc:"with BATON_BOOTSTRAP_EXPECT above 1: the raft port servers replicate on (TCP); 0 picks a free one"`
	RaftAdvertisePort int           `envconfig:"RAFT_ADVERTISE_PORT" default:"0" desc:"with BATON_BOOTSTRAP_EXPECT above 1: the raft port the other servers dial, where a NAT or port mapping puts BATON_RAFT_PORT elsewhere; 0 is BATON_RAFT_PORT"`
	RaftKey           string        `envconfig:"RAFT_KEY" desc:"with BATON_BOOTSTRAP_EXPECT above 1: base64 of 16, 24 or 32 bytes that only the servers hold: raft is TLS between them; empty takes BATON_CLUSTER_KEY, which clients hold too; old,new while it changes"`
	RaftTimeout       time.Duration `envconfig:"RAFT_TIMEOUT" default:"300ms" desc:"with BATON_BOOTSTRAP_EXPECT above 1: how long a follower waits to hear from the leader before it stands for election; raise it where a loaded host's pauses cause elections with no fault"`
	AdminToken        string        `envconfig:"ADMIN_TOKEN" desc:"bearer token for POST /admin/*; empty refuses every admin call"`
	ClusterKey        string        `envconfig:"CLUSTER_KEY" desc:"base64 of 16, 24 or 32 bytes: encrypts gossip, authenticates token clients, and makes raft TLS between the servers that hold it; old,new while it changes"`
	ClusterLabel      string        `envconfig:"CLUSTER_LABEL" default:"baton" desc:"memberlist label: deployments on one network with different labels ignore each other"`
	LogLevel          string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat         string        `envconfig:"LOG_FORMAT" default:"json" desc:"json or text"`
	MaxTokens         int           `envconfig:"MAX_TOKENS" default:"1024" desc:"most distinct token names the server will track"`
	MaxConns          int           `envconfig:"MAX_CONNS" default:"16384" desc:"most simultaneous token connections"`
	HandshakeTimeout  time.Duration `envconfig:"HANDSHAKE_TIMEOUT" default:"5s" desc:"time a new connection has to say hello"`
	MaxFrameRate      int           `envconfig:"MAX_FRAME_RATE" default:"50000" desc:"frames per second one connection may send before it is cut off"`
	ForgetAfter       time.Duration `envconfig:"FORGET_AFTER" default:"5m" desc:"members that left or died this long ago are counted, not listed, in /status and the page; 0 lists them all"`

	// LocalGossip uses loopback memberlist timings (tests).
	LocalGossip bool `ignored:"true"`
	// RaftDial, when set, dials raft peers in place of TCP (tests that cut a server
	// off): peer is the raft id dialled, addr where the membership says it is.
	RaftDial func(ctx context.Context, peer, addr string) (net.Conn, error) `ignored:"true"`
	// RaftConnBefore makes the server's raft connections those of a version before
	// replica.ConnVersion (tests of an upgrade): it publishes no rc, opens no
	// connection and refuses none for lacking an opening.
	RaftConnBefore bool `ignored:"true"`
}

// DefaultConfig is the configuration envconfig's defaults give, for tests and tools.
func DefaultConfig() Config {
	return Config{TokenAddr: ":7000", HTTPAddr: ":8080", GossipPort: 7946, GossipBind: "0.0.0.0",
		SessionTTL: 5 * time.Second, BootstrapExpect: 1, RaftPort: 7001, RaftTimeout: 300 * time.Millisecond,
		ClusterLabel: "baton", LogLevel: "info", LogFormat: "json",
		MaxTokens: 1024, MaxConns: 16384, HandshakeTimeout: 5 * time.Second, MaxFrameRate: 50000,
		ForgetAfter: 5 * time.Minute}
}

// Validate checks c and names the variable at fault.
func (c *Config) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.TokenAddr); err != nil {
		bad("BATON_TOKEN_ADDR must be host:port, got %q", c.TokenAddr)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("BATON_HTTP_ADDR must be host:port, got %q", c.HTTPAddr)
	}
	if c.GossipPort < 0 || c.GossipPort > 65535 {
		bad("BATON_GOSSIP_PORT must be 0..65535, got %d", c.GossipPort)
	}
	if c.BootstrapExpect < 1 {
		bad("BATON_BOOTSTRAP_EXPECT must be at least 1, got %d", c.BootstrapExpect)
	}
	if c.BootstrapExpect > 1 && c.StateDir == "" {
		bad("BATON_BOOTSTRAP_EXPECT=%d needs BATON_STATE_DIR: servers replicate a durable state", c.BootstrapExpect)
	}
	if c.RaftPort < 0 || c.RaftPort > 65535 {
		bad("BATON_RAFT_PORT must be 0..65535, got %d", c.RaftPort)
	}
	switch {
	case c.RaftAdvertisePort < 0 || c.RaftAdvertisePort > 65535:
		bad("BATON_RAFT_ADVERTISE_PORT must be 0..65535, got %d", c.RaftAdvertisePort)
	case c.RaftAdvertisePort > 0 && c.RaftPort == 0:
		bad("BATON_RAFT_ADVERTISE_PORT=%d needs a fixed BATON_RAFT_PORT (got 0: a port picked at start, which nothing can map to)", c.RaftAdvertisePort)
	}
	if c.RaftTimeout < 50*time.Millisecond || c.RaftTimeout > time.Minute {
		bad("BATON_RAFT_TIMEOUT must be between 50ms and 1m, got %s", c.RaftTimeout)
	}
	if c.SessionTTL < 100*time.Millisecond {
		bad("BATON_SESSION_TTL must be at least 100ms, got %s", c.SessionTTL)
	}
	if _, err := cluster.ParseKeys("BATON_CLUSTER_KEY", c.ClusterKey); err != nil {
		bad("%v", err)
	}
	if _, err := cluster.ParseKeys("BATON_RAFT_KEY", c.RaftKey); err != nil {
		bad("%v", err)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		bad("BATON_LOG_LEVEL: %v", err)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("BATON_LOG_FORMAT must be json or text, got %q", c.LogFormat)
	}
	if c.MaxTokens < 1 {
		bad("BATON_MAX_TOKENS must be > 0, got %d", c.MaxTokens)
	}
	if c.MaxConns < 1 {
		bad("BATON_MAX_CONNS must be > 0, got %d", c.MaxConns)
	}
	if c.HandshakeTimeout <= 0 {
		bad("BATON_HANDSHAKE_TIMEOUT must be > 0, got %s", c.HandshakeTimeout)
	}
	if c.ForgetAfter < 0 {
		bad("BATON_FORGET_AFTER must be >= 0, got %s", c.ForgetAfter)
	}
	if c.MaxFrameRate < 1 {
		bad("BATON_MAX_FRAME_RATE must be > 0, got %d", c.MaxFrameRate)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration: %s", strings.Join(errs, "; "))
	}
	return nil
}

// raftAdvertisePort is the raft port the other servers dial: BATON_RAFT_ADVERTISE_PORT,
// else BATON_RAFT_PORT (0: the port bound at start). It goes into raft's own address
// and, through it, into the membership's meta (cluster.Meta.RaftPort).
func (c *Config) raftAdvertisePort() int {
	if c.RaftAdvertisePort > 0 {
		return c.RaftAdvertisePort
	}
	return c.RaftPort
}

func (c *Config) nodeName() string {
	if c.NodeName != "" {
		return c.NodeName
	}
	return nodename.Default("baton-server")
}

// Logging returns BATON_LOG_LEVEL and BATON_LOG_FORMAT (cli.LogConfig).
func (c *Config) Logging() (level, format string) { return c.LogLevel, c.LogFormat }

// ParseLevel reads a BATON_LOG_LEVEL value.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}
