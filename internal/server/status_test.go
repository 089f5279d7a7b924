package server

import (
	"testing"
	"time"
)

func TestForgetPrunesOldGoneMembers(t *testing.T) {
	now := time.Unix(10000, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	members := func() []MemberStatus {
		return []MemberStatus{
			{Name: "server", State: "alive", Since: ago(time.Hour)},
			{Name: "client-1", State: "alive", Since: ago(time.Hour)},
			{Name: "client-2", State: "left", Since: ago(6 * time.Minute)},
			{Name: "client-3", State: "dead", Since: ago(10 * time.Minute)},
			{Name: "client-4", State: "left", Since: ago(time.Minute)},
			{Name: "client-5", State: "dead", Since: ago(4 * time.Minute)},
		}
	}
	st := Status{Members: members()}
	forget(&st, 5*time.Minute, now)
	var names []string
	for _, m := range st.Members {
		names = append(names, m.Name)
	}
	if got, want := len(st.Members), 4; got != want || st.MembersForgotten != 2 || st.ForgetAfter != "5m0s" {
		t.Fatalf("kept %v, forgotten %d (%s); want 4 kept, 2 forgotten after 5m0s", names, st.MembersForgotten, st.ForgetAfter)
	}
	for _, n := range names {
		if n == "client-2" || n == "client-3" {
			t.Fatalf("kept %s, gone more than 5m ago", n)
		}
	}
	st = Status{Members: members()}
	forget(&st, 0, now)
	if len(st.Members) != 6 || st.MembersForgotten != 0 {
		t.Fatalf("with 0: kept %d, forgotten %d; want all kept", len(st.Members), st.MembersForgotten)
	}
}
