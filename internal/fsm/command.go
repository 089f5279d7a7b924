package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/baton-dev/baton/internal/session"
	"github.com/baton-dev/baton/internal/wire"
)

// Op names an operation in a command. Append only: a log written by one version is
// applied by the next.
type Op uint8

const (
	OpHello       Op = 1 // Node, Boot, Session (to resume), NewSession, TTL
	OpAcquire     Op = 2 // Session, Seq, Token
	OpRelease     Op = 3 // Session, Seq, Token, Fence, Rec, Requeue
	OpCancel      Op = 4 // Session, Seq, Token
	OpEndSession  Op = 5 // Session, Reason
	OpDropWaiters Op = 6 // Session, Reason
	OpRestart     Op = 7
	OpUnblock     Op = 8
	OpImport      Op = 9  // Token, Fence, Rec, Grants, Releases; Time: not before (held at a crash)
	OpEpoch       Op = 10 // Seq: the epoch is at least this
	// OpTerm opens a batch: Seq is the raft term its leader decided the batch in.
	// The log applies the batch only if raft appended it in that same term
	// (Log.Apply). Leaders write it once the cluster's log version is 2
	// (OpLogVersion): a server of the version before would skip it.
	OpTerm Op = 11
	// OpLogVersion records that every server reads log version Seq: the leader
	// found them all publishing it. State.LogVersion never goes back.
	OpLogVersion Op = 12

	lastOp = OpLogVersion // the newest op this build applies
)

// LogVersion is the newest log this build reads: 2 since OpTerm and OpLogVersion.
// A server publishes it in the membership, and a leader writes what every server
// reads.
const LogVersion = 2

// Command is one operation as a replicated log carries it: with the time and the
// ids its leader chose, so that applying it anywhere gives the same result. Only
// the fields its Op names are meaningful.
type Command struct {
	Op         Op
	Time       time.Time
	Session    session.ID
	NewSession session.ID
	Seq        uint64
	Token      string
	Fence      uint64
	Rec        wire.Record
	Requeue    bool
	TTL        time.Duration
	Grants     uint64
	Releases   uint64
	Node       string
	Boot       string
	Reason     string
}

// commandVersion is the first byte of every encoded command.
const commandVersion = 1

// maxCommandString bounds a string in a command: names and reasons are short.
const maxCommandString = 1 << 10

// Append encodes c after b. Every field goes in, whatever the Op: a command is small,
// and one layout for all keeps the decoder simple.
func (c *Command) Append(b []byte) []byte {
	b = append(b, commandVersion, byte(c.Op))
	b = binary.AppendUvarint(b, uint64(c.Time.UnixNano())) // two's complement: any time round-trips
	for _, v := range [...]uint64{uint64(c.Session), uint64(c.NewSession), c.Seq, c.Fence, c.Rec.Counter, c.Rec.Waits, uint64(c.TTL), c.Grants, c.Releases} {
		b = binary.AppendUvarint(b, v)
	}
	var flags byte
	if c.Requeue {
		flags |= 1
	}
	b = append(b, flags)
	for _, s := range [...]string{c.Token, c.Node, c.Boot, c.Reason} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// ErrBadCommand is returned for bytes that are not a command this version reads.
var ErrBadCommand = errors.New("fsm: bad command")

// ErrNewerLog is returned for a command of a newer version than this build's, or
// an op it does not know: a server of a later version wrote it. Such a server must
// stop applying rather than skip it (Log.Apply): its state would part from the
// others'.
var ErrNewerLog = fmt.Errorf("%w: written by a newer version", ErrBadCommand)

// Decode reads a command encoded by Append.
func (c *Command) Decode(b []byte) error {
	d := decoder{b: b}
	switch v := d.byte(); {
	case v > commandVersion:
		return fmt.Errorf("%w: command version %d", ErrNewerLog, v)
	case v != commandVersion:
		return fmt.Errorf("%w: version %d", ErrBadCommand, v)
	}
	c.Op = Op(d.byte())
	c.Time = time.Unix(0, int64(d.uvarint())).UTC()
	u := [9]uint64{}
	for i := range u {
		u[i] = d.uvarint()
	}
	c.Session, c.NewSession, c.Seq, c.Fence = session.ID(u[0]), session.ID(u[1]), u[2], u[3]
	c.Rec, c.TTL, c.Grants, c.Releases = wire.Record{Counter: u[4], Waits: u[5]}, time.Duration(u[6]), u[7], u[8]
	c.Requeue = d.byte()&1 != 0
	c.Token, c.Node, c.Boot, c.Reason = d.string(), d.string(), d.string(), d.string()
	if d.err != nil || len(d.b) != 0 {
		return fmt.Errorf("%w: %d bytes, malformed", ErrBadCommand, len(b))
	}
	return nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = ErrBadCommand
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > maxCommandString || n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// Apply carries out a command: the one entry point of a replicated log. Its effects
// are added as the operation's are.
func (st *State[C]) Apply(c *Command) error {
	switch c.Op {
	case OpHello:
		st.Hello(c.Node, c.Boot, c.Session, c.NewSession, c.TTL, c.Time)
	case OpAcquire:
		st.Acquire(c.Session, c.Seq, c.Token, c.Time)
	case OpRelease:
		st.Release(c.Session, c.Seq, c.Token, c.Fence, c.Rec, c.Requeue, c.Time)
	case OpCancel:
		st.Cancel(c.Session, c.Seq, c.Token, c.Time)
	case OpEndSession:
		st.EndSession(c.Session, c.Reason, c.Time)
	case OpDropWaiters:
		st.DropWaiters(c.Session, c.Reason, c.Time)
	case OpRestart:
		st.Restart()
	case OpUnblock:
		st.Unblock(c.Time)
	case OpImport:
		st.Import(c.Token, c.Fence, c.Rec, c.Grants, c.Releases, c.Time)
	case OpEpoch:
		st.Epoch = max(st.Epoch, c.Seq)
	case OpTerm: // checked by the log before the batch is applied
	case OpLogVersion:
		st.LogVersion = max(st.LogVersion, int(c.Seq))
	default:
		if c.Op > lastOp {
			return fmt.Errorf("%w: op %d", ErrNewerLog, c.Op)
		}
		return fmt.Errorf("%w: op %d", ErrBadCommand, c.Op)
	}
	return nil
}
