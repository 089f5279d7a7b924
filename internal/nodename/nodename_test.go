package nodename

import (
	"context"
	"errors"
	"testing"
)

type fakeResolver struct {
	hosts map[string][]string
	addrs map[string][]string
}

func (f fakeResolver) LookupHost(_ context.Context, h string) ([]string, error) {
	if a, ok := f.hosts[h]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func (f fakeResolver) LookupAddr(_ context.Context, a string) ([]string, error) {
	if n, ok := f.addrs[a]; ok {
		return n, nil
	}
	return nil, errors.New("no PTR")
}

func TestContainerName(t *testing.T) {
	const id = "873d4d360dd3"
	for _, tc := range []struct {
		name  string
		hosts []string
		ptr   map[string][]string
		want  string
	}{
		{"compose v2", []string{"172.18.0.5"}, map[string][]string{"172.18.0.5": {"baton-client-3.baton_default."}}, "client-3"},
		{"compose v1", []string{"172.18.0.5"}, map[string][]string{"172.18.0.5": {"baton_client_12.baton_default."}}, "client-12"},
		{"project with dashes", []string{"10.0.0.9"}, map[string][]string{"10.0.0.9": {"my-app-client-1.my-app_default."}}, "client-1"},
		{"plain host", []string{"192.168.1.4"}, map[string][]string{"192.168.1.4": {"build7.example.com."}}, "build7"},
		{"loopback only", []string{"127.0.1.1"}, map[string][]string{"127.0.1.1": {"localhost."}}, ""},
		{"no reverse name", []string{"172.18.0.5"}, nil, ""},
		{"hostname unknown", nil, nil, ""},
		{"reverse name is the hostname", []string{"172.18.0.5"}, map[string][]string{"172.18.0.5": {id + "."}}, ""},
		{"first address without PTR", []string{"172.18.0.5", "172.19.0.2"}, map[string][]string{"172.19.0.2": {"p-client-2.net."}}, "client-2"},
	} {
		r := fakeResolver{hosts: map[string][]string{}, addrs: tc.ptr}
		if tc.hosts != nil {
			r.hosts[id] = tc.hosts
		}
		if got := containerName(context.Background(), r, id); got != tc.want {
			t.Errorf("%s: containerName = %q, want %q", tc.name, got, tc.want)
		}
	}
}
