package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// buildVersion is set at link time: -ldflags "-X main.buildVersion=v1.2.3".
var buildVersion = ""

// version returns the release version, else the module version or VCS
// revision the binary was built from.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}

const versionHelp = `
Prints the version of certserver and the Go version it was built with.

Example:
  certserver version
`

func runVersion(_ context.Context, e *env, args []string) int {
	fs := newFlagSet("version", "", versionHelp)
	rest, code, ok := fs.parse(e, args)
	if !ok {
		return code
	}
	if len(rest) > 0 {
		return usageError(e, "version", "unexpected argument %q", rest[0])
	}
	fmt.Fprintf(e.stdout, "certserver %s (%s %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
