// Package buildinfo exports baton_build_info, the conventional always-1 gauge whose
// labels say which build is running.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is the module version and VCS revision this binary was built from.
func Version() (version, revision string) {
	version, revision = "(devel)", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	return version, revision
}

// Register adds baton_build_info{binary,version,revision,goversion} to reg.
func Register(reg prometheus.Registerer, binary string) {
	version, revision := Version()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"binary": binary, "version": version, "revision": revision, "goversion": runtime.Version()}})
	g.Set(1)
	reg.MustRegister(g)
}
