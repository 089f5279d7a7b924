package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func sample() []Frame {
	return []Frame{
		{Op: OpChallenge, Version: Version, Nonce: bytes.Repeat([]byte{7}, NonceSize), Epoch: 3},
		{Op: OpHello, Version: Version, Text: "client-1", BootID: "b00t", Session: 42, TTLms: 5000, MAC: bytes.Repeat([]byte{1}, MACSize)},
		{Op: OpWelcome, Session: 42, TTLms: 5000, Epoch: 9, Resumed: true, Durable: true,
			Held:    []Held{{Seq: 4, Token: "counter", Fence: 17, Rec: Record{Counter: 16, Waits: 3}}},
			Waiting: []Waiting{{Seq: 5, Token: "other"}}},
		{Op: OpAcquire, Seq: 1, Token: "counter"},
		{Op: OpQueued, Seq: 1, Token: "counter", Pos: 3},
		{Op: OpGrant, Seq: 1, Token: "counter", Fence: 1 << 40, Rec: Record{Counter: 99, Waits: 12}},
		{Op: OpRelease, Seq: 2, Token: "counter", Fence: 1 << 40, Rec: Record{Counter: 100}},
		{Op: OpReleased, Seq: 2, Token: "counter", Fence: 1 << 40},
		{Op: OpCancel, Seq: 3, Token: "counter"},
		{Op: OpCancelled, Seq: 3, Token: "counter", Text: "member_dead"},
		{Op: OpKeepalive, Seq: 4},
		{Op: OpKeepaliveAck, Seq: 4, Epoch: 2},
		{Op: OpRevoked, Token: "counter", Fence: 8, Text: "expired"},
		{Op: OpError, Seq: 9, Code: CodeStaleFence, Text: "stale"},
		{Op: OpGoodbye},
		{Op: OpClosing},
		{Op: OpRequeue, Seq: 10, Token: "counter", Fence: 1 << 40, Rec: Record{Counter: 101}},
	}
}

func TestRoundTripEveryOp(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i := range sample() {
		f := sample()[i]
		if err := w.Write(&f); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	for _, want := range sample() {
		var got Frame
		if err := r.Read(&got); err != nil {
			t.Fatalf("read %s: %v", want.Op, err)
		}
		if got.Held == nil {
			got.Held = want.Held[:0:0]
		}
		if len(got.Held) == 0 && len(want.Held) == 0 {
			got.Held, want.Held = nil, nil
		}
		if len(got.Waiting) == 0 && len(want.Waiting) == 0 {
			got.Waiting, want.Waiting = nil, nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", want.Op, got, want)
		}
	}
}

func frameBytes(body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(b, body...)
}

func TestHostileFramesAreRefusedWithAReason(t *testing.T) {
	hello := Append(nil, &Frame{Op: OpHello, Version: Version, Text: "n"})[4:]
	wrongVersion := append([]byte{}, hello...)
	wrongVersion[1+len(Magic)] = Version + 1
	cases := []struct {
		name   string
		stream []byte
		reason string
	}{
		{"oversized", binary.BigEndian.AppendUint32(nil, MaxFrame+1), "frame_too_large"},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff}, "frame_too_large"},
		{"empty", frameBytes(nil), "bad_frame"},
		{"unknown op", frameBytes([]byte{200}), "unknown_op"},
		{"bad magic", frameBytes(append([]byte{byte(OpHello)}, "HTTP/1.1"...)), "bad_magic"},
		{"wrong version", frameBytes(wrongVersion), "version"},
		{"truncated varint", frameBytes([]byte{byte(OpAcquire), 0x80}), "bad_frame"},
		{"name too long", frameBytes(append([]byte{byte(OpAcquire), 1, 200, 1}, strings.Repeat("x", 200)...)), "bad_frame"},
		{"string past end", frameBytes([]byte{byte(OpAcquire), 1, 50, 'a'}), "bad_frame"},
		{"trailing bytes", frameBytes([]byte{byte(OpKeepalive), 1, 0}), "bad_frame"},
		{"list too long", frameBytes(append([]byte{byte(OpWelcome), 1, 1, 1, 0}, binary.AppendUvarint(nil, MaxListItems+1)...)), "bad_frame"},
		{"bad bool", frameBytes([]byte{byte(OpWelcome), 1, 1, 1, 7, 0, 0}), "bad_frame"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var f Frame
			err := NewReader(bytes.NewReader(tc.stream)).Read(&f)
			if err == nil {
				t.Fatalf("decoded %+v, want an error", f)
			}
			if got := Reason(err); got != tc.reason {
				t.Errorf("reason %q (%v), want %q", got, err, tc.reason)
			}
		})
	}
}

func TestShortStreamIsUnexpectedEOF(t *testing.T) {
	full := Append(nil, &Frame{Op: OpAcquire, Seq: 1, Token: "counter"})
	var f Frame
	err := NewReader(bytes.NewReader(full[:len(full)-2])).Read(&f)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want unexpected EOF", err)
	}
}

// The steady-state path of a connection: reading and writing acquire, grant and
// release frames for a token it has seen allocates nothing.
func TestSteadyStateCodecDoesNotAllocate(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	frames := []Frame{{Op: OpAcquire, Seq: 1, Token: "counter"}, {Op: OpGrant, Seq: 1, Token: "counter", Fence: 5},
		{Op: OpRelease, Seq: 2, Token: "counter", Fence: 5, Rec: Record{Counter: 9}}}
	for i := 0; i < 2000; i++ {
		_ = w.Write(&frames[i%3])
	}
	_ = w.Flush()
	r := NewReader(bytes.NewReader(buf.Bytes()))
	var f Frame
	_ = r.Read(&f) // first sight of the name interns it
	out := NewWriter(io.Discard)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := r.Read(&f); err != nil {
			t.Fatal(err)
		}
		_ = out.Write(&frames[1])
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per frame read+write, want 0", allocs)
	}
}

func BenchmarkCodec(b *testing.B) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	grant := Frame{Op: OpGrant, Seq: 1, Token: "counter", Fence: 5, Rec: Record{Counter: 3, Waits: 1}}
	for i := 0; i < b.N; i++ {
		_ = w.Write(&grant)
	}
	_ = w.Flush()
	r := NewReader(bytes.NewReader(buf.Bytes()))
	var f Frame
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Read(&f); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecode: no input may panic the decoder, and whatever decodes re-encodes to a
// body that decodes to the same frame.
func FuzzDecode(f *testing.F) {
	for _, fr := range sample() {
		f.Add(Append(nil, &fr)[4:])
	}
	f.Add([]byte{})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > MaxFrame {
			return
		}
		var fr Frame
		if err := Decode(body, &fr); err != nil {
			if Reason(err) == "io" {
				t.Fatalf("decode error without a reason: %v", err)
			}
			return
		}
		again := Append(nil, &fr)[4:]
		var fr2 Frame
		if err := Decode(again, &fr2); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", fr.Op, err)
		}
		if !reflect.DeepEqual(normal(fr), normal(fr2)) {
			t.Fatalf("round trip changed the frame:\n%+v\n%+v", fr, fr2)
		}
	})
}

func normal(f Frame) Frame {
	if len(f.Held) == 0 {
		f.Held = nil
	}
	if len(f.Waiting) == 0 {
		f.Waiting = nil
	}
	if len(f.Nonce) == 0 {
		f.Nonce = nil
	}
	if len(f.MAC) == 0 {
		f.MAC = nil
	}
	return f
}
