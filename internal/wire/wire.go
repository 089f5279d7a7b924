// Package wire is baton's token protocol: length-prefixed, versioned binary frames.
//
// A connection opens with the server's Challenge (magic, version, nonce); the client
// answers with Hello (its node name, boot id, session to resume, TTL, and an HMAC of
// the nonce when the cluster has a key); the server answers Welcome or Error. After
// that every frame is [uint32 big-endian length][op byte][body]. Requests carry a
// sequence number that the reply echoes. Every decoder bounds what it reads: frame
// size, string lengths, list lengths. Nothing from the network is trusted.
package wire

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Magic opens the Challenge and Hello frames so that a stray protocol is spotted at once.
const Magic = "BATN"

// Version is the protocol version this build speaks. A peer with another is refused.
// 2: Welcome says whether the session outlives the server's process (Durable).
const Version = 2

// Limits on what a peer may send.
const (
	MaxFrame     = 16 << 10 // bytes in one frame's body, op included
	MaxName      = 128      // bytes in a token or node name
	MaxText      = 512      // bytes in an error message
	MaxListItems = 1024     // entries in a list inside a frame
	NonceSize    = 16
	MACSize      = 32
)

// MAC is how a client proves it holds the cluster key: HMAC-SHA256 over the
// server's challenge nonce, the node name and the boot id.
func MAC(key, nonce []byte, node, bootID string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(nonce)
	m.Write([]byte(node))
	m.Write([]byte{0})
	m.Write([]byte(bootID))
	return m.Sum(nil)
}

// Op is a frame type. Append only: values are on the wire.
type Op uint8

const (
	OpChallenge    Op = 1  // S→C: magic, version, nonce, epoch
	OpHello        Op = 2  // C→S: magic, version, node, boot id, resume session, ttl, mac
	OpWelcome      Op = 3  // S→C: session, ttl, epoch, resumed, held and waiting requests
	OpAcquire      Op = 4  // C→S: seq, token
	OpQueued       Op = 5  // S→C: seq, token, position (reserved: servers no longer send it)
	OpGrant        Op = 6  // S→C: seq, token, fence, record
	OpRelease      Op = 7  // C→S: seq, token, fence, record
	OpReleased     Op = 8  // S→C: seq, token, fence
	OpCancel       Op = 9  // C→S: seq of the acquire to give up, token
	OpCancelled    Op = 10 // S→C: seq, token, reason
	OpKeepalive    Op = 11 // C→S: seq
	OpKeepaliveAck Op = 12 // S→C: seq, epoch
	OpRevoked      Op = 13 // S→C: token, fence, reason
	OpError        Op = 14 // S→C: seq, code, message
	OpGoodbye      Op = 15 // C→S: end my session now, I hold nothing I want to keep
	OpClosing      Op = 16 // S→C: the server closes this connection but keeps the session (restart)
	// OpRequeue releases a held token and queues again for it under the same seq, in
	// one frame: a client that takes a token in a loop sends one frame per turn, not
	// two. Its Released answer is held back and rides with the next frame the
	// connection gets (normally the Grant of that seq), so the server writes once per
	// handoff as well. A refused release is answered at once with an Error of that seq,
	// and then nothing is queued.
	OpRequeue Op = 17 // C→S: seq, token, fence, record
	opEnd     Op = 18 // one past the last op
)

func (o Op) String() string {
	names := [...]string{"invalid", "challenge", "hello", "welcome", "acquire", "queued", "grant",
		"release", "released", "cancel", "cancelled", "keepalive", "keepalive_ack", "revoked",
		"error", "goodbye", "closing", "requeue"}
	if int(o) < len(names) {
		return names[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Code is the reason carried by an Error frame. Append only.
type Code uint8

const (
	CodeInternal       Code = 1
	CodeBadFrame       Code = 2 // the frame could not be parsed
	CodeVersion        Code = 3 // protocol version not spoken here
	CodeAuth           Code = 4 // hello's MAC did not verify
	CodeStaleFence     Code = 5 // release with a fence that is not the token's current one
	CodeNotHeld        Code = 6 // release of a token this session does not hold
	CodeSessionExpired Code = 7 // the session has ended; open a new one
	CodeTooMany        Code = 8 // too many tokens or requests
	CodeBadName        Code = 9 // empty or oversized token name
	CodeDuplicate      Code = 10
	CodeUnexpected     Code = 11 // a frame not valid in this state
	// CodeOutcomeUnknown answers a release sent again whose first answer the server
	// no longer remembers: it may or may not have been applied, and is not applied now.
	CodeOutcomeUnknown Code = 12
	// CodeNotLeader answers a hello sent to a server that is not the raft leader. Its
	// Text is the leader's token address (host:port), or empty while no leader is
	// known; the client dials it only if it is a server it knows.
	CodeNotLeader Code = 13
)

func (c Code) String() string {
	names := [...]string{"unknown", "internal", "bad_frame", "version", "auth", "stale_fence",
		"not_held", "session_expired", "too_many", "bad_name", "duplicate", "unexpected", "outcome_unknown", "not_leader"}
	if int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// Record is the shared resource a token guards: the seed program's counter and waiting counter.
type Record struct {
	Counter uint64 // critical sections completed: holders write it on release
	Waits   uint64 // requests that found the token taken and had to queue: the server keeps it
}

// Held names a token a resumed session holds, with the acquire it answered.
type Held struct {
	Seq   uint64
	Token string
	Fence uint64
	Rec   Record
}

// Waiting names an acquire a resumed session still has in a queue.
type Waiting struct {
	Seq   uint64
	Token string
}

// Frame is one decoded frame. Only the fields of its Op are meaningful; a flat struct
// keeps decoding free of allocation per frame type.
type Frame struct {
	Op      Op
	Seq     uint64
	Token   string
	Fence   uint64
	Rec     Record
	Epoch   uint64
	Session uint64
	TTLms   uint64
	Pos     uint64
	Code    Code
	Text    string // error message, cancel or revoke reason, node name in hello
	BootID  string
	Version uint8
	Resumed bool
	// Durable (welcome): the session is kept in a raft log, so it outlives the
	// server's process: a connection the server's side ends without notice (it
	// crashed, or lost the leadership) does not end the session.
	Durable bool
	Nonce   []byte
	MAC     []byte
	Held    []Held
	Waiting []Waiting
}

// Errors a decoder returns; each maps to a bounded protocol-error reason.
var (
	ErrFrameTooLarge = errors.New("wire: frame too large")
	ErrBadFrame      = errors.New("wire: malformed frame")
	ErrBadMagic      = errors.New("wire: not the baton protocol")
	ErrVersion       = errors.New("wire: unsupported protocol version")
	ErrUnknownOp     = errors.New("wire: unknown op")
)

// Reason maps a decode error to the label used in baton_protocol_errors_total.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		return "frame_too_large"
	case errors.Is(err, ErrBadMagic):
		return "bad_magic"
	case errors.Is(err, ErrVersion):
		return "version"
	case errors.Is(err, ErrUnknownOp):
		return "unknown_op"
	case errors.Is(err, ErrBadFrame):
		return "bad_frame"
	}
	return "io"
}

// Writer encodes frames into a buffered stream. Not safe for concurrent use.
type Writer struct {
	w *bufio.Writer
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	// 4 KiB: a burst of small frames still leaves in one write, and ten thousand idle
	// connections do not each hold 32 KiB. A larger frame passes through bufio.
	return &Writer{w: bufio.NewWriterSize(w, 4<<10)}
}

// Write buffers f. Call Flush to send.
func (w *Writer) Write(f *Frame) error {
	// Encoded straight into the buffer's free space when it fits (bufio's
	// documented way), not into a scratch buffer and copied.
	b := Append(w.w.AvailableBuffer(), f)
	_, err := w.w.Write(b)
	return err
}

// Flush sends what is buffered.
func (w *Writer) Flush() error { return w.w.Flush() }

// Buffered reports the bytes waiting for Flush.
func (w *Writer) Buffered() int { return w.w.Buffered() }

// Append appends f's encoding, length prefix included, to b.
func Append(b []byte, f *Frame) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, byte(f.Op))
	switch f.Op {
	case OpAcquire:
		b = appendSeqToken(b, f)
	case OpGrant, OpRelease, OpRequeue:
		b = appendSeqToken(b, f)
		b = binary.AppendUvarint(b, f.Fence)
		b = appendRecord(b, f.Rec)
	case OpReleased:
		b = appendSeqToken(b, f)
		b = binary.AppendUvarint(b, f.Fence)
	default:
		b = appendOther(b, f)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// appendOther encodes the body of the frames that are not on the hot path. Apart,
// and not inlined, so that Append's stack frame stays small: the server encodes
// grants on a reader's goroutine whose stack is cold when many connections take
// turns.
//
//go:noinline
func appendOther(b []byte, f *Frame) []byte {
	switch f.Op {
	case OpChallenge:
		b = append(b, Magic...)
		b = append(b, f.Version)
		b = appendBytes(b, f.Nonce)
		b = binary.AppendUvarint(b, f.Epoch)
	case OpHello:
		b = append(b, Magic...)
		b = append(b, f.Version)
		b = appendString(b, f.Text)
		b = appendString(b, f.BootID)
		b = binary.AppendUvarint(b, f.Session)
		b = binary.AppendUvarint(b, f.TTLms)
		b = appendBytes(b, f.MAC)
	case OpWelcome:
		b = binary.AppendUvarint(b, f.Session)
		b = binary.AppendUvarint(b, f.TTLms)
		b = binary.AppendUvarint(b, f.Epoch)
		b = appendBool(b, f.Resumed)
		b = binary.AppendUvarint(b, uint64(len(f.Held)))
		for _, h := range f.Held {
			b = binary.AppendUvarint(b, h.Seq)
			b = appendString(b, h.Token)
			b = binary.AppendUvarint(b, h.Fence)
			b = appendRecord(b, h.Rec)
		}
		b = binary.AppendUvarint(b, uint64(len(f.Waiting)))
		for _, w := range f.Waiting {
			b = binary.AppendUvarint(b, w.Seq)
			b = appendString(b, w.Token)
		}
		b = appendBool(b, f.Durable)
	case OpQueued:
		b = appendSeqToken(b, f)
		b = binary.AppendUvarint(b, f.Pos)
	case OpCancel:
		b = appendSeqToken(b, f)
	case OpCancelled:
		b = appendSeqToken(b, f)
		b = appendString(b, f.Text)
	case OpKeepalive:
		b = binary.AppendUvarint(b, f.Seq)
	case OpKeepaliveAck:
		b = binary.AppendUvarint(b, f.Seq)
		b = binary.AppendUvarint(b, f.Epoch)
	case OpRevoked:
		b = appendString(b, f.Token)
		b = binary.AppendUvarint(b, f.Fence)
		b = appendString(b, f.Text)
	case OpError:
		b = binary.AppendUvarint(b, f.Seq)
		b = append(b, byte(f.Code))
		b = appendString(b, f.Text)
	case OpGoodbye, OpClosing:
	}
	return b
}

// appendSeqToken encodes the request a frame is about, which most ops start with.
func appendSeqToken(b []byte, f *Frame) []byte {
	b = binary.AppendUvarint(b, f.Seq)
	return appendString(b, f.Token)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendRecord(b []byte, r Record) []byte {
	b = binary.AppendUvarint(b, r.Counter)
	return binary.AppendUvarint(b, r.Waits)
}

// Reader decodes frames from a stream, reusing its buffer.
type Reader struct {
	src   io.Reader
	r     *bufio.Reader // nil while detached
	hdr   [4]byte       // here, not on the stack: passed to an io.Reader it would escape
	buf   []byte
	names internTable
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return NewReaderSize(r, 4<<10) }

// NewReaderSize returns a Reader on r that reads size bytes at a time: small for a
// server with many mostly idle connections. A larger frame is read whole anyway.
func NewReaderSize(r io.Reader, size int) *Reader {
	return &Reader{src: r, r: bufio.NewReaderSize(r, size), buf: make([]byte, 0, 64)}
}

// Buffered reports the bytes read from the stream but not yet decoded.
func (r *Reader) Buffered() int {
	if r.r == nil {
		return 0
	}
	return r.r.Buffered()
}

// Complete reports whether a whole frame is buffered, so that Read will not touch
// the stream: a caller can skip arming a read deadline.
func (r *Reader) Complete() bool {
	if r.r == nil || r.r.Buffered() < 4 {
		return false
	}
	hdr, _ := r.r.Peek(4)
	return r.r.Buffered()-4 >= int(binary.BigEndian.Uint32(hdr))
}

// Wait returns once a byte of the next frame has arrived, without consuming it: a
// timeout here (a read deadline) leaves the Reader at a frame boundary.
func (r *Reader) Wait() error {
	r.attach()
	_, err := r.r.Peek(1)
	return err
}

// Detach gives the read buffer back to a pool while the stream is quiet: an idle
// connection then holds none. Only at a frame boundary with nothing buffered; the
// next Read or Wait takes a buffer again.
func (r *Reader) Detach() {
	if r.r == nil || r.r.Buffered() != 0 || r.r.Size() != SmallReaderSize {
		return
	}
	r.r.Reset(nil)
	readers.Put(r.r)
	r.r = nil
}

func (r *Reader) attach() {
	if r.r == nil {
		r.r = readers.Get().(*bufio.Reader)
		r.r.Reset(r.src)
	}
}

// SmallReaderSize is the read buffer a server with many mostly idle connections
// uses; Detach pools readers of this size.
const SmallReaderSize = 512

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, SmallReaderSize) }}

// Read decodes the next frame into f, overwriting it. Token names are interned so
// that a steady stream of frames for the same tokens allocates nothing.
func (r *Reader) Read(f *Frame) error {
	r.attach()
	if r.r.Buffered() >= 4 {
		// The usual case, a whole frame already buffered: decode it where it lies,
		// without copying it out first (the copy touched one more buffer per frame).
		hdr, _ := r.r.Peek(4)
		if n := binary.BigEndian.Uint32(hdr); n != 0 && n <= MaxFrame && r.r.Buffered()-4 >= int(n) {
			whole, _ := r.r.Peek(4 + int(n))
			err := decode(whole[4:], f, &r.names)
			_, _ = r.r.Discard(4 + int(n))
			return err
		}
	}
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if n > MaxFrame {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFrame)
	}
	if n == 0 {
		return fmt.Errorf("%w: empty frame", ErrBadFrame)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	body := r.buf[:n]
	if _, err := io.ReadFull(r.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return decode(body, f, &r.names)
}

// Decode decodes one frame body (op byte first, no length prefix). It is the fuzz target.
func Decode(body []byte, f *Frame) error { return decode(body, f, nil) }

func decode(body []byte, f *Frame, names *internTable) error {
	*f = Frame{Held: f.Held[:0], Waiting: f.Waiting[:0]}
	d := decoder{b: body, names: names}
	f.Op = Op(d.byte())
	switch f.Op {
	case OpChallenge:
		d.magic()
		f.Version = d.version()
		f.Nonce = d.bytes(NonceSize)
		f.Epoch = d.uvarint()
	case OpHello:
		d.magic()
		f.Version = d.version()
		f.Text = d.string(MaxName)
		f.BootID = d.string(MaxName)
		f.Session = d.uvarint()
		f.TTLms = d.uvarint()
		f.MAC = d.bytes(MACSize)
	case OpWelcome:
		f.Session = d.uvarint()
		f.TTLms = d.uvarint()
		f.Epoch = d.uvarint()
		f.Resumed = d.bool()
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			f.Held = append(f.Held, Held{Seq: d.uvarint(), Token: d.name(), Fence: d.uvarint(), Rec: d.record()})
		}
		n = d.count()
		for i := 0; i < n && d.err == nil; i++ {
			f.Waiting = append(f.Waiting, Waiting{Seq: d.uvarint(), Token: d.name()})
		}
		f.Durable = d.bool()
	case OpAcquire, OpCancel:
		f.Seq = d.uvarint()
		f.Token = d.name()
	case OpQueued:
		f.Seq = d.uvarint()
		f.Token = d.name()
		f.Pos = d.uvarint()
	case OpGrant, OpRelease, OpRequeue:
		f.Seq = d.uvarint()
		f.Token = d.name()
		f.Fence = d.uvarint()
		f.Rec = d.record()
	case OpReleased:
		f.Seq = d.uvarint()
		f.Token = d.name()
		f.Fence = d.uvarint()
	case OpCancelled:
		f.Seq = d.uvarint()
		f.Token = d.name()
		f.Text = d.string(MaxText)
	case OpKeepalive:
		f.Seq = d.uvarint()
	case OpKeepaliveAck:
		f.Seq = d.uvarint()
		f.Epoch = d.uvarint()
	case OpRevoked:
		f.Token = d.name()
		f.Fence = d.uvarint()
		f.Text = d.string(MaxText)
	case OpError:
		f.Seq = d.uvarint()
		f.Code = Code(d.byte())
		f.Text = d.string(MaxText)
	case OpGoodbye, OpClosing:
	default:
		if d.err == nil {
			return fmt.Errorf("%w: %d", ErrUnknownOp, uint8(f.Op))
		}
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes after %s", ErrBadFrame, len(d.b), f.Op)
	}
	return nil
}

type decoder struct {
	b     []byte
	err   error
	names *internTable
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrBadFrame}, args...)...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("short frame")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad bool")
	return false
}

func (d *decoder) raw(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.fail("field of %d bytes, limit %d", n, limit)
		return nil
	}
	if uint64(len(d.b)) < n {
		d.fail("short frame")
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) bytes(limit int) []byte {
	p := d.raw(limit)
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

func (d *decoder) string(limit int) string { return string(d.raw(limit)) }

func (d *decoder) name() string {
	p := d.raw(MaxName)
	if d.names != nil {
		return d.names.intern(p)
	}
	return string(p)
}

func (d *decoder) count() int {
	n := d.uvarint()
	if n > MaxListItems {
		d.fail("list of %d items, limit %d", n, MaxListItems)
		return 0
	}
	return int(n)
}

func (d *decoder) record() Record { return Record{Counter: d.uvarint(), Waits: d.uvarint()} }

func (d *decoder) magic() {
	if d.err != nil {
		return
	}
	if len(d.b) < len(Magic) || string(d.b[:len(Magic)]) != Magic {
		d.err = ErrBadMagic
		return
	}
	d.b = d.b[len(Magic):]
}

func (d *decoder) version() uint8 {
	v := d.byte()
	if d.err == nil && v != Version {
		d.err = fmt.Errorf("%w: peer speaks %d, this build %d", ErrVersion, v, Version)
	}
	return v
}

// internTable remembers the last few names a connection used so that decoding a
// name it has seen before allocates nothing. Bounded: a peer cycling through names
// only evicts entries.
type internTable struct {
	names [8]string
	next  int
}

func (t *internTable) intern(p []byte) string {
	for _, s := range t.names {
		if s == string(p) { // the compiler does not allocate for this comparison
			return s
		}
	}
	s := string(p)
	t.names[t.next] = s
	t.next = (t.next + 1) % len(t.names)
	return s
}
