package main

import "testing"

func TestStatusURL(t *testing.T) {
	for _, tc := range []struct {
		args []string
		addr string
		want string
	}{
		{nil, ":8080", "http://127.0.0.1:8080/status"},
		{nil, "10.0.0.2:9000", "http://10.0.0.2:9000/status"},
		{[]string{"127.0.0.1:38081"}, ":8080", "http://127.0.0.1:38081/status"},
		{[]string{"server-2:8080/"}, ":8080", "http://server-2:8080/status"},
		{[]string{"localhost"}, ":8080", "http://localhost/status"},
		{[]string{"[::1]:8081"}, ":8080", "http://[::1]:8081/status"},
		{[]string{":8081"}, ":8080", "http://127.0.0.1:8081/status"},
		{[]string{"http://127.0.0.1:8081"}, ":8080", "http://127.0.0.1:8081/status"},
		{[]string{"https://baton.example/"}, ":8080", "https://baton.example/status"},
	} {
		if got := statusURL(tc.args, tc.addr); got != tc.want {
			t.Errorf("statusURL(%q, %q) = %q, want %q", tc.args, tc.addr, got, tc.want)
		}
	}
}
