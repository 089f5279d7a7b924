package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/cluster"
)

// view is what the worker sees of its way to the server at one moment.
type view struct {
	connected  bool   // the client has a session with a server
	serverAddr string // the token address the worker dials (Worker.server), "" if none is known
	leads      bool   // that server says in the cluster that it leads
	members    int    // members alive, this node included
	joinErr    error  // the last join of the seeds failed with this
	dialErr    error  // the last connect to the server failed with this
	seeds      string // BATON_JOIN, for the messages
}

// diagnosis is why the worker has no session, in words a user can act on.
type diagnosis struct {
	cause string // short and stable: "join:key", "no-server", "refused", ...
	msg   string
	err   error
}

// diagnose reads a view for the likely reason the worker is not connected; the zero
// diagnosis when it is.
func diagnose(v view) diagnosis {
	switch {
	case v.connected:
		return diagnosis{}
	case v.serverAddr == "" && v.joinErr != nil:
		d := diagnosis{cause: "join:" + cluster.JoinCause(v.joinErr), err: v.joinErr}
		switch cluster.JoinCause(v.joinErr) {
		case cluster.CauseKey:
			d.msg = "cannot join the cluster: the seeds refuse this node's gossip; BATON_CLUSTER_KEY likely differs from the server's, or is set on one side only"
		case cluster.CauseLabel:
			d.msg = "cannot join the cluster: the seeds close the connection; BATON_CLUSTER_LABEL likely differs from the server's"
		case cluster.CauseVersion:
			d.msg = "cannot join the cluster: memberlist protocol versions differ; run the same baton version everywhere"
		case cluster.CauseUnreachable:
			d.msg = "cannot join the cluster: no seed in BATON_JOIN (" + v.seeds + ") answers; is the server up and BATON_JOIN right?"
		default:
			d.msg = "cannot join the cluster through BATON_JOIN (" + v.seeds + ")"
			// A seed that answers, but not in memberlist's protocol: its first byte
			// is no gossip message type. The token port answers so.
			if strings.Contains(v.joinErr.Error(), "invalid msgType") {
				d.cause = "join:not-gossip"
				d.msg += ": a seed answers, but not as a gossip port; is that the gossip port (BATON_GOSSIP_PORT, 7946), not the token port (7000)?"
			}
		}
		return d
	case v.serverAddr == "" && v.members > 1:
		return diagnosis{cause: "no-server",
			msg: "in the cluster, but no member is a server: is the server running (or restarting)?"}
	case v.serverAddr == "":
		return diagnosis{cause: "alone", msg: "no server in the cluster yet: the seeds in BATON_JOIN (" + v.seeds + ") have not been reached"}
	case v.dialErr != nil && errors.Is(v.dialErr, baton.ErrNotLeader):
		// Not a mistake in the configuration: the servers are choosing a leader, or
		// this node's view of which one leads is behind theirs.
		if v.leads {
			return diagnosis{cause: "not-leader", err: v.dialErr,
				msg: "the server at " + v.serverAddr + " says in the cluster that it leads, but answers not_leader: a change of leader has not settled"}
		}
		return diagnosis{cause: "no-leader", err: v.dialErr,
			msg: "the servers answer not_leader and none says in the cluster that it leads: an election is under way, or too few servers are up to elect one"}
	case v.dialErr != nil && errors.Is(v.dialErr, baton.ErrRefused):
		d := diagnosis{cause: "refused", err: v.dialErr, msg: "the server refuses this client"}
		switch {
		case strings.Contains(v.dialErr.Error(), ": auth:"):
			d.cause, d.msg = "refused:auth", "the server refuses this client's proof of the cluster key: BATON_CLUSTER_KEY differs from the server's"
		case strings.Contains(v.dialErr.Error(), ": version:"):
			d.cause, d.msg = "refused:version", "the server does not speak this client's protocol version: run the same baton version on both"
		}
		return d
	case v.dialErr != nil:
		return diagnosis{cause: "dial", err: v.dialErr,
			msg: "found the server at " + v.serverAddr + " in the cluster, but cannot connect to its token port"}
	}
	return diagnosis{cause: "connecting", msg: "connecting to the server at " + v.serverAddr}
}

// doctor turns diagnoses over time into log lines: nothing while connected; INFO
// when it starts looking; WARN once a cause has lasted grace, and again only when the
// cause changes or after the worker was connected in between. A healthy start, which
// finds its server within a second or two, logs no warning.
type doctor struct {
	log   *slog.Logger
	grace time.Duration

	cur     diagnosis
	since   time.Time // when cur began
	warned  string    // the cause last warned about since the last connection
	looking bool      // the INFO line for this disconnection was written
}

// observe takes a diagnosis made at now and logs what is due; it returns the
// diagnosis for /status.
func (d *doctor) observe(now time.Time, g diagnosis) diagnosis {
	if g.cause == "" {
		if d.warned != "" {
			d.log.Info("connected: the earlier problem is gone", "was", d.warned)
		}
		d.cur, d.warned, d.looking = g, "", false
		return g
	}
	if !d.looking {
		d.log.Info("looking for the server", "cause", g.cause)
		d.looking = true
	}
	if g.cause != d.cur.cause {
		d.cur, d.since = g, now
	}
	d.cur.err = g.err
	if now.Sub(d.since) >= d.grace && d.warned != g.cause {
		attrs := []any{"cause", g.cause, "for", now.Sub(d.since).Round(time.Second)}
		if g.err != nil {
			attrs = append(attrs, "err", oneLine(g.err))
		}
		d.log.Warn(g.msg, attrs...)
		d.warned = g.cause
	}
	return d.cur
}

// oneLine is err's text on one line: memberlist's joins fail with a multierror
// ("1 error occurred:\n\t* failed to join ...").
func oneLine(err error) string {
	s := strings.TrimPrefix(err.Error(), "1 error occurred:\n\t* ")
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n\t* ", "; ")), " ")
}

// dialWatch is the slog.Handler the worker gives the client package: it passes every
// record on, but the package's "connect failed" lines at DEBUG: the doctor, told of
// each failure by Config.OnConnect, says once, at WARN, what they mean.
type dialWatch struct {
	next slog.Handler
}

func (h *dialWatch) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *dialWatch) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "connect failed") && r.Level > slog.LevelDebug {
		demoted := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool { demoted.AddAttrs(a); return true })
		r = demoted
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *dialWatch) WithAttrs(as []slog.Attr) slog.Handler {
	return &dialWatch{next: h.next.WithAttrs(as)}
}

func (h *dialWatch) WithGroup(name string) slog.Handler {
	return &dialWatch{next: h.next.WithGroup(name)}
}
