package main

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/certserver/certserver/certserver"
)

// likelyNginxUsers are the users nginx's worker processes run as on the
// common systems: www-data (Debian, Ubuntu), nginx (RHEL, Alpine, the
// nginx.org packages) and nobody (nginx's built-in default).
var likelyNginxUsers = []string{"www-data", "nginx", "nobody"}

// stockNginxConf is the nginx.conf of a distribution's nginx package,
// where serve looks for the user directive.
const stockNginxConf = "/etc/nginx/nginx.conf"

// userDirective matches nginx's top-level "user NAME [GROUP];".
var userDirective = regexp.MustCompile(`(?m)^\s*user\s+([^\s;]+)`)

// nginxConfUser returns the user the nginx.conf at path names in its user
// directive, or "" when it has none or cannot be read. It reads the one
// file only: the cheap guess serve makes at start; doctor asks nginx.
func nginxConfUser(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	m := userDirective.FindSubmatch(b)
	if m == nil {
		return ""
	}
	return string(m[1])
}

// account is a user with the groups its processes get (the primary group
// and the supplementary ones, as initgroups gives nginx's workers).
type account struct {
	name  string
	group string // the primary group's name
	uid   int
	gids  []int
}

// lookupAccount finds a user by name or numeric ID; group, when not "",
// replaces the primary group (nginx's "user NAME GROUP;").
func lookupAccount(name, group string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, err
	}
	a := &account{name: u.Username, group: groupNameOf(u.Gid)}
	if a.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("user %s: unexpected uid %q", name, u.Uid)
	}
	ids, err := u.GroupIds()
	if err != nil {
		ids = []string{u.Gid}
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, err
		}
		ids = append(ids, g.Gid)
		a.group = g.Name
	}
	for _, s := range append(ids, u.Gid) {
		if id, err := strconv.Atoi(s); err == nil && !slices.Contains(a.gids, id) {
			a.gids = append(a.gids, id)
		}
	}
	return a, nil
}

// groupNameOf returns the name of the group with ID gid, or gid.
func groupNameOf(gid string) string {
	if g, err := user.LookupGroupId(gid); err == nil {
		return g.Name
	}
	return gid
}

// may reports whether the account gets the permission bits want (4 read,
// 2 write, 1 execute/search) on a file of owner uid, group gid and mode,
// by the Unix rule: the owner's bits if it owns the file, else the
// group's if it is in the group, else the others'. root may do anything.
func (a *account) may(uid, gid int, mode fs.FileMode, want fs.FileMode) bool {
	perm := mode.Perm()
	switch {
	case a.uid == 0:
		return true
	case a.uid == uid:
		return perm>>6&want == want
	case slices.Contains(a.gids, gid):
		return perm>>3&want == want
	default:
		return perm&want == want
	}
}

// groupName returns the name of group gid, or the number.
func groupName(gid int) string { return groupNameOf(strconv.Itoa(gid)) }

// userName returns the name of user uid, or the number.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// socketWarning is what serve logs when nginx's workers are unlikely to
// reach the certificate socket.
type socketWarning struct {
	msg   string
	attrs []any
}

// socketGroupWarning decides whether the unix socket c describes is one
// that none of the users nginx's workers are likely to run as can connect
// to: given to a group none of them is in (socket_group, default the
// group certserver runs as), with no write permission for others
// (socket_mode, default and when 0 certserver.DefaultSocketMode). The
// users are the one nginxConf's user directive names, else
// likelyNginxUsers; those that do not exist here are left out, and when
// none exists there is nothing to say. It returns nil when there is no
// reason to warn.
func socketGroupWarning(c certsConfig, nginxConf string) *socketWarning {
	if c.Socket == "" {
		return nil
	}
	gid := os.Getegid()
	if c.SocketGroup != "" {
		g, err := certserver.LookupGroup(c.SocketGroup)
		if err != nil {
			return nil // listening fails with the reason
		}
		gid = g
	}
	candidates := likelyNginxUsers
	if u := nginxConfUser(nginxConf); u != "" {
		candidates = []string{u}
	}
	mode := fs.FileMode(c.SocketMode)
	if mode == 0 {
		mode = certserver.DefaultSocketMode // what the endpoint applies
	}
	var found []*account
	for _, name := range candidates {
		a, err := lookupAccount(name, "")
		if err != nil {
			continue
		}
		// connect(2) on a unix socket needs write permission only.
		if a.may(os.Geteuid(), gid, mode, 0o2) {
			return nil
		}
		found = append(found, a)
	}
	if len(found) == 0 {
		return nil
	}
	var names []string
	for _, a := range found {
		names = append(names, a.name)
	}
	fix := fmt.Sprintf(`socket_group = %q in [certs], and run certserver in that group (systemd: Group=%s)`,
		found[0].group, found[0].group)
	return &socketWarning{
		msg: "nginx's workers are unlikely to be able to connect to the certificate socket: every name would get nginx's fallback certificate",
		attrs: []any{"socket", c.Socket, "socket_group", groupName(gid), "socket_mode", fileMode(mode).String(),
			"users_checked", strings.Join(names, ","), "fix", fix},
	}
}
