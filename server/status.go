package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/baton-dev/baton/internal/cli"
	"github.com/baton-dev/baton/internal/server"
)

// statusCommand prints the server's state as the original program's status screen:
// works inside the container (docker compose exec server /server status).
func statusCommand(args []string) int {
	url := statusURL(args, envOr("BATON_HTTP_ADDR", ":8080"))
	body, err := cli.Get(context.Background(), url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baton status:", err)
		return 1
	}
	var st server.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintln(os.Stderr, "baton status: bad answer from", url+":", err)
		return 1
	}
	printStatus(os.Stdout, &st)
	return 0
}

// statusURL is the /status URL of the server args name: a URL (http://host:port), a
// bare host:port or host (http:// is implied), or ":port" on this host; with no
// argument, this host's listen address httpAddr (BATON_HTTP_ADDR).
func statusURL(args []string, httpAddr string) string {
	if len(args) == 0 || args[0] == "" {
		return cli.LocalURL(httpAddr, "/status")
	}
	base := strings.TrimSuffix(args[0], "/")
	switch {
	case strings.HasPrefix(base, ":"):
		return cli.LocalURL(base, "/status")
	case !strings.Contains(base, "://"):
		base = "http://" + base
	}
	return base + "/status"
}

func printStatus(out io.Writer, st *server.Status) {
	fmt.Fprintf(out, "baton  node %s  epoch %d  session ttl %s\n", st.Node, st.Epoch, st.TTL)
	if r := st.Raft; r != nil {
		fmt.Fprintf(out, "raft   %s  term %d  leader %s  servers", r.State, r.Term, orDash(r.Leader))
		for _, sv := range r.Servers {
			fmt.Fprintf(out, " %s", sv.ID)
		}
		if r.State != "leader" {
			fmt.Fprint(out, "  (the tokens as committed; the leader's page is live)")
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOKEN\tHOLDER\tFENCE\tHELD FOR\tCOUNTER\tWAITS\tGRANTS\tQUEUE")
	holds := map[string][]string{}
	for _, t := range st.Tokens {
		holder := t.Holder
		if holder == "" {
			holder = "-"
		} else {
			holds[t.Holder] = append(holds[t.Holder], t.Name)
		}
		queue := strings.Join(t.Queue, " ")
		if queue == "" {
			queue = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%s\n", t.Name, holder, t.Fence, t.HeldFor, t.Counter, t.Waits, t.Grants, queue)
	}
	tw.Flush()
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tSTATE\tADDR\tGRANTS\tWAITS\tHOLDS\tSESSION")
	sessions := map[string]server.SessionStatus{}
	for _, s := range st.Sessions {
		sessions[s.Node] = s
	}
	for _, m := range st.Members {
		sess, grants, waits := "-", "-", "-"
		if s, ok := sessions[m.Name]; ok {
			switch {
			case s.ExpiresIn == "": // a follower: the deadlines are the leader's
				sess = "open"
			case s.Connected:
				sess = "expires in " + s.ExpiresIn
			default:
				sess = "expires in " + s.ExpiresIn + " (detached)"
			}
			grants, waits = fmt.Sprint(s.Grants), fmt.Sprint(s.Waited)
		}
		h := strings.Join(holds[m.Name], ",")
		if h == "" {
			h = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Role, m.State, m.Addr, grants, waits, h, sess)
	}
	tw.Flush()
	if st.MembersForgotten > 0 {
		fmt.Fprintf(out, "(%d more left or died over %s ago)\n", st.MembersForgotten, st.ForgetAfter)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
