//go:build !linux

package server

// parker is Linux-only (epoll); elsewhere every connection keeps its reader.
type parker struct{}

func newParker(*Server) (*parker, error) { return nil, nil }

func (p *parker) park(*conn) bool { return false }
func (p *parker) unpark(*conn)    {}
func (p *parker) run()            {}
