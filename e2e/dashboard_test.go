package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

const datasourceUID = "baton-prometheus"

type dashboard struct {
	UID         string  `json:"uid"`
	Title       string  `json:"title"`
	Panels      []panel `json:"panels"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
}

// perServer are the server metrics every server reports alike, or that only the
// leader reports but two servers may both report for a moment (a hand-over): a
// panel takes their max across servers, never their sum, and never the raw series
// (three lines, or a line that jumps between servers).
var perServer = map[string]string{
	"baton_fence":                     "the leader's",
	"baton_counter":                   "the leader's",
	"baton_waits":                     "the leader's",
	"baton_queue_length":              "the leader's",
	"baton_holder":                    "the leader's",
	"baton_releases_total":            "the leader's",
	"baton_epoch":                     "replicated: every server's",
	"baton_members":                   "each server's own view",
	"baton_raft_leader_changes_total": "each server counts every change it sees",
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "dashboards", "baton.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	return d
}

// grafanaVars stands Grafana's macros in for Prometheus, as Grafana does at query time.
func grafanaVars(expr string) string {
	return strings.NewReplacer("$__rate_interval", "1m", "$__interval", "15s", "$__range", "5m").Replace(expr)
}

// The dashboard file: every panel reads the provisioned datasource by its fixed uid,
// every expression parses as PromQL, the layout fits Grafana's 24-column grid.
func TestDashboardIsWellFormed(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "baton" || d.Title != "baton" {
		t.Errorf("dashboard uid %q title %q, want baton and baton", d.UID, d.Title)
	}
	ids := map[int]bool{}
	exprs := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 {
			t.Errorf("panel %q does not fit the grid: %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != datasourceUID {
			t.Errorf("panel %q uses datasource %q, want %q", p.Title, p.Datasource.UID, datasourceUID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			if tg.Datasource.UID != datasourceUID {
				t.Errorf("panel %q target uses datasource %q", p.Title, tg.Datasource.UID)
			}
			checkExpr(t, "panel "+p.Title, tg.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		exprs++
		checkExpr(t, "annotation "+a.Name, a.Expr)
	}
	t.Logf("%d panels, %d expressions parse", len(d.Panels), exprs)
}

// checkExpr parses a dashboard expression and checks that it reads every metric of
// perServer through a max.
func checkExpr(t *testing.T, where, expr string) {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVars(expr))
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return
	}
	parser.Inspect(e, func(n parser.Node, path []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		why, ok := perServer[vs.Name]
		if !ok {
			return nil
		}
		var agg *parser.AggregateExpr
		for _, p := range path {
			if a, ok := p.(*parser.AggregateExpr); ok {
				agg = a
			}
		}
		if agg == nil || agg.Op != parser.MAX {
			t.Errorf("%s: %q reads %s (%s on each of three servers) without max across them", where, expr, vs.Name, why)
		}
		return nil
	})
}

// The provisioning files carry what Grafana needs, and agree with the compose file:
// the datasource's uid and URL, the dashboard provider's path where compose mounts
// the dashboards, the home dashboard inside it.
func TestGrafanaProvisioningMatchesCompose(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, URL, Access string
			IsDefault                    bool `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	readYAML(t, "../deploy/grafana/provisioning/datasources/prometheus.yml", &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 {
		t.Fatalf("datasources file: %+v", ds)
	}
	if d := ds.Datasources[0]; d.UID != datasourceUID || d.Type != "prometheus" || d.URL != "http://prometheus:9090" || !d.IsDefault {
		t.Errorf("datasource %+v: want uid %s, type prometheus, url http://prometheus:9090, default", d, datasourceUID)
	}
	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Type string
			Options    struct{ Path string } `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "../deploy/grafana/provisioning/dashboards/baton.yml", &prov)
	if prov.APIVersion != 1 || len(prov.Providers) != 1 || prov.Providers[0].Type != "file" {
		t.Fatalf("dashboard providers: %+v", prov)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	readYAML(t, "../docker-compose.yml", &compose)
	g := compose.Services["grafana"]
	mounts := map[string]string{}
	for _, v := range g.Volumes {
		f := strings.Split(v, ":")
		mounts[f[1]] = f[0]
	}
	path := prov.Providers[0].Options.Path
	if mounts[path] != "./deploy/grafana/dashboards" {
		t.Errorf("provider reads %s, but compose mounts %q there", path, mounts[path])
	}
	if mounts["/etc/grafana/provisioning"] != "./deploy/grafana/provisioning" {
		t.Errorf("compose does not mount the provisioning folder: %v", mounts)
	}
	home := g.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
	if filepath.Dir(home) != path {
		t.Errorf("home dashboard %s is not in the provisioned folder %s", home, path)
	}
	if _, err := os.Stat(filepath.Join("..", "deploy", "grafana", "dashboards", filepath.Base(home))); err != nil {
		t.Errorf("home dashboard file: %v", err)
	}
	if g.Environment["GF_AUTH_ANONYMOUS_ENABLED"] != "true" || g.Environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] != "Viewer" {
		t.Errorf("grafana is not set up for anonymous viewers: %v", g.Environment)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
