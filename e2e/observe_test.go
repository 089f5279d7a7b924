//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

// noDataOK lists panels that may be empty in a healthy run, and why.
var noDataOK = map[string]string{
	"Current holder": "the token is free between a release and the next grant",
}

// 9a. Every dashboard expression runs against the deployment's Prometheus while the
// clients work, and every panel has data.
func scenarioDashboardData(d *deployment, _ time.Time) {
	dash := loadDashboard(d.t)
	var figures []string
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		var has bool
		d.eventually(60*time.Second, fmt.Sprintf("data for panel %q", p.Title), func() bool {
			has = false
			for _, tg := range p.Targets {
				res, err := d.promQuery(grafanaVars(tg.Expr), "")
				if err != nil {
					d.fatalf("panel %q: %q: %v", p.Title, tg.Expr, err)
				}
				if len(res) > 0 {
					has = true
					for _, v := range res {
						figures = append(figures, fmt.Sprintf("%s = %.4g", p.Title, v))
						break
					}
				}
			}
			_, optional := noDataOK[p.Title]
			return has || optional
		})
	}
	for _, f := range []string{"Grants per second", "Wait time p50 / p95 / p99", "Members by state"} {
		for _, line := range figures {
			if strings.HasPrefix(line, f) {
				d.t.Logf("dashboard: %s", line)
				break
			}
		}
	}
	d.t.Logf("%d panels checked against Prometheus", len(dash.Panels))
}

// chromium finds Debian's chromium (or another Chrome) for the browser test.
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// 9b. The status page in real headless Chromium, from a follower's host port: it
// loads, lists the clients, changes when the holder changes (the follower applies
// the leader's log), and reads at a phone's and a laptop's width without scrolling
// sideways.
func scenarioStatusPage(d *deployment, _ time.Time) {
	path := chromium()
	if path == "" {
		d.fatalf("no chromium: install Debian's chromium package (make e2e does)")
	}
	clients := len(d.containers("client"))
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(412, 915), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	// A follower's page, at its host port: it shows the replicated state.
	lead, _, err := d.leader()
	if err != nil {
		d.fatalf("%v", err)
	}
	var page string
	for node, url := range d.published() {
		if node != lead.Raft.ID {
			page = url
		}
	}
	start := time.Now()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(page+"/")); err != nil {
		d.fatalf("load the status page: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.WaitVisible("#members tbody tr")); err != nil {
		d.fatalf("status page never listed members: %v", err)
	}
	d.t.Logf("status page loaded in %s", time.Since(start).Round(time.Millisecond))
	aliveClients := `[...document.querySelectorAll("#members tbody tr")].filter(r => r.cells[1].textContent == "client" && r.cells[2].textContent == "alive").length`
	d.eventually(30*time.Second, fmt.Sprintf("the page to list %d alive clients", clients), func() bool {
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](aliveClients))
		return err == nil && rows >= clients
	})
	holderCell := `(h => h.children[1].textContent + " " + h.children[2].textContent)(document.querySelector("#tokens .token .head"))`
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](holderCell))
	if err != nil {
		d.fatalf("%v", err)
	}
	var now string
	d.eventually(20*time.Second, "the page to show a new holder and fence", func() bool {
		now, err = chromedp.Run(ctx, chromedp.Evaluate[string](holderCell))
		return err == nil && now != first
	})
	d.t.Logf("page showed holder/fence %q, then %q", first, now)
	// At a phone's width and a laptop's, the page reads without scrolling sideways:
	// a long queue wraps, narrow screens drop the address and detail columns. The
	// captures are kept to be looked at.
	for _, size := range []struct {
		name string
		w, h int64
	}{{"phone", 412, 915}, {"1280", 1280, 800}} {
		if _, err := chromedp.Run(ctx, chromedp.EmulateViewport(size.w, size.h)); err != nil {
			d.fatalf("%v", err)
		}
		if _, err := chromedp.Run(ctx, chromedp.WaitVisible("#members tbody tr")); err != nil {
			d.fatalf("%v", err)
		}
		overflow, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`))
		if err != nil {
			d.fatalf("%v", err)
		}
		if overflow > 0 {
			d.errorf("status page at %s (%d px) scrolls sideways by %d px", size.name, size.w, overflow)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 gives PNG, less JPEG
		if err != nil {
			d.fatalf("%v", err)
		}
		out, _ := filepath.Abs(filepath.Join("out", "status-page-"+size.name+".png"))
		_ = os.MkdirAll(filepath.Dir(out), 0o755)
		if err := os.WriteFile(out, png, 0o644); err != nil {
			d.fatalf("%v", err)
		}
		d.t.Logf("screenshot at %s: %s (%d bytes)", size.name, out, len(png))
	}
}
