package cli

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// loadSpec has a field of each kind envconfig converts.
type loadSpec struct {
	SessionTTL time.Duration   `envconfig:"SESSION_TTL" default:"5s"`
	MaxConns   int             `envconfig:"MAX_CONNS"`
	Port       uint16          `envconfig:"PORT"`
	Local      bool            `envconfig:"LOCAL"`
	Ratio      float64         `envconfig:"RATIO"`
	Ports      []int           `envconfig:"PORTS"`
	Waits      []time.Duration `envconfig:"WAITS"`
	Weights    map[string]int  `envconfig:"WEIGHTS"`
	LogLevel   string          `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat  string          `envconfig:"LOG_FORMAT" default:"json"`
}

func (s *loadSpec) Logging() (level, format string) { return s.LogLevel, s.LogFormat }

func (s *loadSpec) Validate() error {
	switch {
	case s.SessionTTL <= 0:
		return errors.New("BATON_SESSION_TTL must be > 0, got " + s.SessionTTL.String())
	case s.LogFormat != "json" && s.LogFormat != "text":
		return errors.New("BATON_LOG_FORMAT must be json or text, got " + s.LogFormat)
	}
	return nil
}

// A value envconfig cannot convert is reported as the variable, the value and how
// to write it, not as envconfig's reflection of the struct.
func TestLoadExplainsParseErrors(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{"BATON_SESSION_TTL", "5", `BATON_SESSION_TTL="5": not a duration; write it with a unit, like 5s or 200ms`},
		{"BATON_SESSION_TTL", "five", `BATON_SESSION_TTL="five": not a duration; write it with a unit`},
		{"BATON_MAX_CONNS", "1k", `BATON_MAX_CONNS="1k": not a whole number; write it in digits, like 3`},
		{"BATON_MAX_CONNS", "99999999999999999999", `BATON_MAX_CONNS="99999999999999999999": out of range for int`},
		{"BATON_PORT", "-1", `BATON_PORT="-1": not a whole number of 0 or more`},
		{"BATON_PORT", "70000", `BATON_PORT="70000": out of range for uint16`},
		{"BATON_LOCAL", "yes", `BATON_LOCAL="yes": not a bool; write true or false`},
		{"BATON_RATIO", "half", `BATON_RATIO="half": not a number; write it like 0.5`},
		{"BATON_PORTS", "7000;7001", `BATON_PORTS="7000;7001": "7000;7001" is not a whole number; write a comma-separated list, like 1,2,3`},
		{"BATON_PORTS", "7000,x", `BATON_PORTS="7000,x": "x" is not a whole number; write a comma-separated list`},
		{"BATON_WAITS", "1s,2", `BATON_WAITS="1s,2": an item is not a duration; write a comma-separated list, like 5s,200ms`},
		{"BATON_WEIGHTS", "a=1", `BATON_WEIGHTS="a=1": not a list of key:value pairs; write it like a:1,b:2`},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.key, tc.value)
			err := Load(&loadSpec{})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Load: %v\nwant: %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "envconfig") {
				t.Errorf("Load: %v: names envconfig, not just the variable", err)
			}
		})
	}
}

// Configure fails alike for a value that does not parse and for one that parses
// but Validate refuses: Start exits 2 for both.
func TestConfigure(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{"BATON_SESSION_TTL", "5", `BATON_SESSION_TTL="5": not a duration`},
		{"BATON_SESSION_TTL", "-5s", "BATON_SESSION_TTL must be > 0, got -5s"},
		{"BATON_LOG_FORMAT", "yaml", "BATON_LOG_FORMAT must be json or text, got yaml"},
		{"BATON_LOG_LEVEL", "loud", "BATON_LOG_LEVEL: "},
		{"BATON_LOG_LEVEL", "debug", ""},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.key, tc.value)
			level, err := Configure(&loadSpec{})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Configure: %v", err)
			case tc.want == "" && level == nil:
				t.Fatal("Configure: no level")
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Configure: %v, want %q", err, tc.want)
			}
		})
	}
}

// The binaries' path, in a child process (Start exits): a value that does not parse
// and one out of bounds both exit 2 with one plain line on stderr, no JSON log.
func TestStartExitsTwoForABadEnvironment(t *testing.T) {
	if os.Getenv("CLI_TEST_START") == "1" {
		os.Args = os.Args[:1]
		Start("test", "/healthz", &loadSpec{})
		os.Exit(0)
	}
	for _, tc := range []struct{ key, value, want string }{
		{"BATON_SESSION_TTL", "5", `baton: BATON_SESSION_TTL="5": not a duration; write it with a unit, like 5s or 200ms`},
		{"BATON_SESSION_TTL", "-5s", "baton: BATON_SESSION_TTL must be > 0, got -5s"},
		{"BATON_LOG_FORMAT", "yaml", "baton: BATON_LOG_FORMAT must be json or text, got yaml"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestStartExitsTwoForABadEnvironment$")
			cmd.Env = append(os.Environ(), "CLI_TEST_START=1", tc.key+"="+tc.value)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Errorf("exit: %v, want status 2", err)
			}
			if got := strings.TrimSpace(stderr.String()); got != tc.want {
				t.Errorf("stderr:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}
