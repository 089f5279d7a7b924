// Package nodename names a node for people and for the cluster: BATON_NODE_NAME when
// set, else the name of the container it runs in, else the hostname. In a Compose
// deployment the container's name ("server-2", "client-3") is also stable: a
// container recreated for the same replica gets the same one, so a server keeps its
// raft identity and its state directory across recreation.
package nodename

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Default is this container's name (see containerName), else the hostname, else
// fallback.
func Default(fallback string) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return fallback
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n := containerName(ctx, dnsResolver{}, h); n != "" {
		return n
	}
	return h
}

// resolver is what containerName asks: dnsResolver, or a fake in tests.
type resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// containerName names this node after its container, for people: Docker gives a
// container its id as hostname, but its embedded DNS answers a reverse lookup of the
// container's address with "<project>-client-3.<network>." (Compose v2) or
// "<project>_client_3.<network>." (v1). The name kept is the service and replica,
// "client-3"; any other reverse name is kept whole up to its first dot. "" when the
// lookups fail or give nothing better than the hostname.
func containerName(ctx context.Context, r resolver, hostname string) string {
	addrs, err := r.LookupHost(ctx, hostname)
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip == nil || ip.IsLoopback() {
			continue
		}
		names, err := r.LookupAddr(ctx, a)
		if err != nil || len(names) == 0 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(names[0], "."), ".")
		parts := strings.FieldsFunc(name, func(r rune) bool { return r == '-' || r == '_' })
		if n := len(parts); n >= 3 && isDigits(parts[n-1]) {
			name = parts[n-2] + "-" + parts[n-1]
		}
		if name == "" || name == hostname {
			return ""
		}
		return name
	}
	return ""
}

// dnsResolver finds addresses as the system does, but asks the DNS servers of
// /etc/resolv.conf for reverse names directly: Go's resolver would answer from
// /etc/hosts, where Docker writes the container's id.
type dnsResolver struct{}

func (dnsResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	return net.DefaultResolver.LookupHost(ctx, host)
}

func (dnsResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, err
	}
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, err
	}
	q := new(dns.Msg)
	q.SetQuestion(arpa, dns.TypePTR)
	c := &dns.Client{Timeout: time.Second}
	for _, srv := range conf.Servers {
		in, _, err := c.ExchangeContext(ctx, q, net.JoinHostPort(srv, conf.Port))
		if err != nil || in.Rcode != dns.RcodeSuccess {
			continue
		}
		var names []string
		for _, rr := range in.Answer {
			if ptr, ok := rr.(*dns.PTR); ok {
				names = append(names, ptr.Ptr)
			}
		}
		if len(names) > 0 {
			return names, nil
		}
	}
	return nil, errors.New("no PTR record for " + addr)
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
