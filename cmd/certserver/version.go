package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// buildVersion is set at link time: -ldflags "-X main.buildVersion=v1.2.3".
var buildVersion = ""

// build describes the binary, from what the Go toolchain stamped into it
// (debug.ReadBuildInfo): `go build` in a git checkout records the module
// version (a pseudo-version from the commit, "+dirty" with uncommitted
// changes), the commit and its time, unless -buildvcs=false.
type build struct {
	Version  string // buildVersion, else the main module's version; "(devel)" when unknown
	Revision string // the commit, "" when not recorded
	Modified bool   // the checkout had uncommitted changes
	Time     string // the commit's time, RFC 3339; "" when not recorded
	Go       string // the Go version and platform
}

// readBuild returns what the binary knows of its build.
func readBuild() build {
	b := build{Version: "(devel)", Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if v := bi.Main.Version; v != "" {
			b.Version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			case "vcs.time":
				b.Time = s.Value
			}
		}
	}
	if buildVersion != "" {
		b.Version = buildVersion
	}
	return b
}

// version returns the one-word version the logs carry: the release or
// module version, else the short commit.
func version() string {
	b := readBuild()
	if b.Version != "(devel)" || b.Revision == "" {
		return b.Version
	}
	rev := b.Revision[:min(12, len(b.Revision))]
	if b.Modified {
		rev += "-dirty"
	}
	return "devel-" + rev
}

const versionHelp = `
Prints the version of certserver, the commit it was built from (with
"(modified)" when the checkout had uncommitted changes) and that commit's
time, and the Go version and platform. The commit is recorded by 'go build'
in a git checkout; it is missing from a build with -buildvcs=false or from
outside a checkout.

Example:
  certserver version
`

func runVersion(_ context.Context, e *env, args []string) int {
	fs := newFlagSet("version", "", versionHelp)
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	b := readBuild()
	var w strings.Builder
	fmt.Fprintf(&w, "certserver %s\n", b.Version)
	switch {
	case b.Revision == "":
		fmt.Fprint(&w, "commit     unknown (built with -buildvcs=false or outside a git checkout)\n")
	case b.Modified:
		fmt.Fprintf(&w, "commit     %s (modified)\n", b.Revision)
	default:
		fmt.Fprintf(&w, "commit     %s\n", b.Revision)
	}
	if b.Time != "" {
		fmt.Fprintf(&w, "committed  %s\n", b.Time)
	}
	fmt.Fprintf(&w, "go         %s\n", b.Go)
	fmt.Fprint(e.stdout, w.String())
	return exitOK
}
