package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionOfACheckoutBuild builds certserver with `go build` in a git
// checkout made of this tree (a copy, committed at a known time, since
// the toolchain stamps no VCS information in a git worktree) and checks
// that `certserver version` prints the stamped module version, commit,
// commit time and Go version, and "(modified)" once the checkout has
// uncommitted changes.
func TestVersionOfACheckoutBuild(t *testing.T) {
	for _, tool := range []string{"git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to build a stamped binary: %v", tool, err)
		}
	}
	root := moduleRoot(t)
	dir := t.TempDir()
	files := strings.Fields(runIn(t, root, nil, "git", "ls-files", "--cached", "--others", "--exclude-standard"))
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitEnv := []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
		"GIT_AUTHOR_DATE=2026-03-04T05:06:07Z", "GIT_COMMITTER_DATE=2026-03-04T05:06:07Z", "GIT_CONFIG_GLOBAL=/dev/null"}
	runIn(t, dir, gitEnv, "git", "init", "--quiet")
	runIn(t, dir, gitEnv, "git", "add", "--all")
	runIn(t, dir, gitEnv, "git", "commit", "--quiet", "--no-gpg-sign", "-m", "version test")
	rev := strings.TrimSpace(runIn(t, dir, gitEnv, "git", "rev-parse", "HEAD"))
	goVersion := strings.TrimSpace(runIn(t, dir, nil, "go", "env", "GOVERSION"))

	// GOFLAGS may say -buildvcs=false (it does on some build machines);
	// the flag on the command line wins.
	build := func() string {
		bin := filepath.Join(dir, "certserver-bin")
		runIn(t, dir, []string{"GOFLAGS=", "GOWORK=off"}, "go", "build", "-buildvcs=true", "-o", bin, "./cmd/certserver")
		return runIn(t, dir, nil, bin, "version")
	}
	out := build()
	want := []string{
		"certserver v0.0.0-20260304050607-" + rev[:12] + "\n",
		"commit     " + rev + "\n",
		"committed  2026-03-04T05:06:07Z\n",
		"go         " + goVersion + " ",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("version output does not contain %q:\n%s", w, out)
		}
	}

	// Uncommitted changes are said.
	if err := os.WriteFile(filepath.Join(dir, "cmd/certserver/zz_dirty.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = build()
	for _, w := range []string{"certserver v0.0.0-20260304050607-" + rev[:12] + "+dirty\n", "commit     " + rev + " (modified)\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("modified checkout: version output does not contain %q:\n%s", w, out)
		}
	}
}

// moduleRoot returns the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// runIn runs a command in dir with env added to the process's, and
// returns its standard output, failing the test when it fails.
func runIn(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
