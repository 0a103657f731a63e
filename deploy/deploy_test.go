// Package deploy holds no code: its test checks the systemd unit and the
// sample configuration shipped next to it.
package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// unit is a parsed systemd unit file: section -> key -> values, one per
// assignment, in order.
type unit map[string]map[string][]string

// parseUnit reads the subset of the systemd unit syntax the shipped unit
// uses: sections, key=value lines, comments. Line continuations and
// quoting are not needed and are refused.
func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			continue
		case strings.HasSuffix(line, "\\"):
			t.Fatalf("%s:%d: line continuation: keep the unit simple enough for this test", path, n)
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: %q is not key=value inside a section", path, n, line)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// last returns the value of the last assignment of key, which is what
// systemd uses for single-valued settings.
func (u unit) last(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// TestUnitHardening checks that the unit keeps every hardening setting it
// promises. It checks the file, not a running service: this test cannot
// start systemd (systemd-analyze verify and security do the rest; see
// ROLLOUT.md).
func TestUnitHardening(t *testing.T) {
	u := parseUnit(t, "certserver.service")
	tests := []struct {
		desc  string
		key   string
		want  string
		multi bool // the value lists items whose order does not matter
	}{
		{desc: "a dedicated user", key: "User", want: "certserver"},
		{desc: "nginx's group reaches the socket", key: "Group", want: "www-data"},
		{desc: "no privilege gain", key: "NoNewPrivileges", want: "yes"},
		{desc: "no capability at all", key: "CapabilityBoundingSet", want: ""},
		{desc: "no ambient capability", key: "AmbientCapabilities", want: ""},
		{desc: "read-only system", key: "ProtectSystem", want: "strict"},
		{desc: "no home directories", key: "ProtectHome", want: "yes"},
		{desc: "private /tmp", key: "PrivateTmp", want: "yes"},
		{desc: "no devices", key: "PrivateDevices", want: "yes"},
		{desc: "state directory", key: "StateDirectory", want: "certserver"},
		{desc: "state kept private", key: "StateDirectoryMode", want: "0700"},
		{desc: "runtime directory", key: "RuntimeDirectory", want: "certserver"},
		{desc: "runtime directory for nginx's group only", key: "RuntimeDirectoryMode", want: "0750"},
		{desc: "configuration directory", key: "ConfigurationDirectory", want: "certserver"},
		{desc: "files private by default", key: "UMask", want: "0077"},
		{desc: "system call allow list", key: "SystemCallFilter", want: "@system-service"},
		{desc: "refused calls fail, not kill", key: "SystemCallErrorNumber", want: "EPERM"},
		{desc: "native calls only", key: "SystemCallArchitectures", want: "native"},
		{desc: "address families", key: "RestrictAddressFamilies", want: "AF_UNIX AF_INET AF_INET6", multi: true},
		{desc: "no W+X memory", key: "MemoryDenyWriteExecute", want: "yes"},
		{desc: "fixed personality", key: "LockPersonality", want: "yes"},
		{desc: "no namespaces", key: "RestrictNamespaces", want: "yes"},
		{desc: "no realtime", key: "RestrictRealtime", want: "yes"},
		{desc: "no set-id files", key: "RestrictSUIDSGID", want: "yes"},
		{desc: "kernel tunables", key: "ProtectKernelTunables", want: "yes"},
		{desc: "kernel modules", key: "ProtectKernelModules", want: "yes"},
		{desc: "kernel log", key: "ProtectKernelLogs", want: "yes"},
		{desc: "control groups", key: "ProtectControlGroups", want: "yes"},
		{desc: "clock", key: "ProtectClock", want: "yes"},
		{desc: "host name", key: "ProtectHostname", want: "yes"},
		{desc: "other processes", key: "ProtectProc", want: "invisible"},
		{desc: "restarts on failure", key: "Restart", want: "on-failure"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, ok := u.last("Service", tc.key)
			if !ok {
				t.Fatalf("[Service] %s is not set", tc.key)
			}
			if tc.multi {
				g, w := strings.Fields(got), strings.Fields(tc.want)
				slices.Sort(g)
				slices.Sort(w)
				if !slices.Equal(g, w) {
					t.Errorf("[Service] %s=%s, want %s", tc.key, got, tc.want)
				}
				return
			}
			if got != tc.want {
				t.Errorf("[Service] %s=%s, want %s", tc.key, got, tc.want)
			}
		})
	}
	for _, key := range []string{"PermissionsStartOnly", "DynamicUser", "SupplementaryGroups"} {
		if vs := u["Service"][key]; len(vs) > 0 {
			t.Errorf("[Service] %s=%v: the unit's privilege model does not use it", key, vs)
		}
	}
	if got, _ := u.last("Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%s, want multi-user.target", got)
	}
}

// sampleConfig is the part of certserver.toml the unit depends on.
type sampleConfig struct {
	Store struct {
		Path string `toml:"path"`
	} `toml:"store"`
	Certs struct {
		Socket      string `toml:"socket"`
		SocketMode  string `toml:"socket_mode"`
		SocketGroup string `toml:"socket_group"`
	} `toml:"certs"`
	Admin struct {
		TokenFile string `toml:"token_file"`
	} `toml:"admin"`
}

// TestUnitMatchesSampleConfig checks that the sample configuration puts
// everything where the unit lets the service write and read, and gives the
// socket to the group the unit runs as.
func TestUnitMatchesSampleConfig(t *testing.T) {
	u := parseUnit(t, "certserver.service")
	var c sampleConfig
	if _, err := toml.DecodeFile("certserver.toml", &c); err != nil {
		t.Fatal(err)
	}
	get := func(key string) string {
		v, ok := u.last("Service", key)
		if !ok {
			t.Fatalf("[Service] %s is not set", key)
		}
		return v
	}
	state, runtime, conf := get("StateDirectory"), get("RuntimeDirectory"), get("ConfigurationDirectory")
	exec := strings.Fields(get("ExecStart"))
	i := slices.Index(exec, "--config")
	if i < 0 || i+1 >= len(exec) {
		t.Fatalf("ExecStart=%v has no --config FILE", exec)
	}
	tests := []struct {
		desc      string
		got, want string
	}{
		{desc: "the store is the state directory", got: c.Store.Path, want: filepath.Join("/var/lib", state)},
		{desc: "the socket is in the runtime directory", got: filepath.Dir(c.Certs.Socket), want: filepath.Join("/run", runtime)},
		{desc: "the socket goes to the unit's group", got: c.Certs.SocketGroup, want: get("Group")},
		{desc: "the socket is for user and group only", got: c.Certs.SocketMode, want: "0660"},
		{desc: "the token is in the configuration directory", got: filepath.Dir(c.Admin.TokenFile), want: filepath.Join("/etc", conf)},
		{desc: "serve reads the configuration directory", got: exec[i+1], want: filepath.Join("/etc", conf, "certserver.toml")},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("%q, want %q", tc.got, tc.want)
			}
		})
	}
}
