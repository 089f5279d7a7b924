package cli_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/baton-dev/baton/internal/cli"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

// deployFiles are where BATON_ variables are read besides the binaries: compose,
// the Makefile and Dockerfiles, the deploy scripts and manifests, the CI entry, and
// the e2e, chaos and bench harnesses that drive them (paths from the module root).
var deployFiles = []string{"docker-compose.yml", "Makefile", "Dockerfile.server", "Dockerfile.client",
	"deploy", "e2e", ".ci", "chaos", "bench"}

// DeployVars is exactly the BATON_ names the deployment files read that neither
// binary does: one missing gives a shell that exports it for compose a false
// "unknown variable" warning; one extra hides a misspelling of a real variable.
func TestDeployVarsMatchTheDeploymentFiles(t *testing.T) {
	binaries := map[string]bool{}
	for _, k := range append(cli.Known(&server.Config{}), cli.Known(&worker.Config{})...) {
		binaries[k] = true
	}
	name := regexp.MustCompile(`BATON_[A-Z0-9_]*[A-Z0-9]`)
	read := map[string]string{} // name -> a file that reads it
	for _, root := range deployFiles {
		err := filepath.WalkDir(filepath.Join("..", "..", root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, n := range name.FindAllString(string(b), -1) {
				if _, ok := read[n]; !ok {
					read[n] = path
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for n, file := range read {
		if !binaries[n] && !slices.Contains(cli.DeployVars, n) {
			t.Errorf("%s (read in %s) is read by neither binary and missing from DeployVars", n, file)
		}
	}
	for _, n := range cli.DeployVars {
		if _, ok := read[n]; !ok {
			t.Errorf("DeployVars lists %s, which no deployment file reads", n)
		}
		if binaries[n] {
			t.Errorf("DeployVars lists %s, which a binary reads", n)
		}
	}
}
