package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/certserver/certserver/certserver/client"
)

// checkSocketAccess checks that nginx's workers can connect to the unix
// socket: search permission on every directory above it and write
// permission on the socket itself.
func (d *doctor) checkSocketAccess() {
	socket := d.cfg.Certs.Socket
	if socket == "" {
		d.add("socket access", checkOK, fmt.Sprintf("the certificate endpoint is %s, not a unix socket", d.cfg.Certs.Listen), "")
		return
	}
	if d.workers == nil {
		d.add("socket access", checkSkip, "needs the worker user", "")
		return
	}
	w := d.workers
	group := w.group
	// Every directory from the root down.
	var dirs []string
	for dir := filepath.Dir(socket); ; dir = filepath.Dir(dir) {
		dirs = append([]string{dir}, dirs...)
		if dir == "/" || dir == "." {
			break
		}
	}
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			d.add("socket access", checkFail, fmt.Sprintf("%s does not exist: serve is not running (it creates the socket and its directory)", dir),
				"start certserver: systemctl start certserver (or certserver serve --config "+d.cfgPath+")")
			return
		}
		if err != nil {
			d.add("socket access", checkFail, err.Error(), "")
			return
		}
		uid, gid := statOwner(fi)
		if !w.may(uid, gid, fi.Mode(), 0o1) {
			d.add("socket access", checkFail,
				fmt.Sprintf("nginx's workers (%s) cannot enter %s (owner %s, group %s, mode %#o)", w.name, dir, userName(uid), groupName(gid), fi.Mode().Perm()),
				fmt.Sprintf("chgrp %s %s && chmod g+x %s (systemd makes /run/certserver with Group= of certserver.service: Group=%s)", group, dir, dir, group))
			return
		}
	}
	fi, err := os.Stat(socket)
	if errors.Is(err, fs.ErrNotExist) {
		d.add("socket access", checkFail, fmt.Sprintf("no socket at %s: serve is not running, or listens elsewhere", socket),
			"start certserver: systemctl start certserver (or certserver serve --config "+d.cfgPath+")")
		return
	}
	if err != nil {
		d.add("socket access", checkFail, err.Error(), "")
		return
	}
	if fi.Mode().Type() != fs.ModeSocket {
		d.add("socket access", checkFail, fmt.Sprintf("%s is not a socket", socket), "remove it and restart certserver")
		return
	}
	uid, gid := statOwner(fi)
	found := fmt.Sprintf("%s (owner %s, group %s, mode %#o)", socket, userName(uid), groupName(gid), fi.Mode().Perm())
	if w.may(uid, gid, fi.Mode(), 0o6) {
		d.add("socket access", checkOK, fmt.Sprintf("nginx's workers (%s) can connect to %s", w.name, found), "")
		return
	}
	if w.may(uid, gid, fs.FileMode(0o660), 0o6) {
		// In the group: the mode is what keeps them out.
		d.add("socket access", checkFail, fmt.Sprintf("nginx's workers (%s) are in the socket's group but cannot write to %s", w.name, found),
			d.configFix("certs", "socket_mode", `"0660"`))
		return
	}
	d.add("socket access", checkFail,
		fmt.Sprintf("nginx's workers (%s) cannot connect to %s: they are not in its group; every name gets the fallback certificate", w.name, found),
		d.configFix("certs", "socket_group", fmt.Sprintf("%q", group))+
			fmt.Sprintf(" (certserver must be in that group too: Group=%s in certserver.service)", group))
}

// checkFallback checks the ssl_certificate of every server with the hook:
// nginx serves it when certserver has nothing for a name.
func (d *doctor) checkFallback() {
	if len(d.servers) == 0 {
		d.add("fallback cert", checkSkip, "no server {} with the hook", "")
		return
	}
	fix := fmt.Sprintf("certserver fallback-cert --out %s (or point ssl_certificate and ssl_certificate_key at a certificate of your own)", "/etc/certserver")
	var problems []string
	var fixes []string
	var oks []string
	for _, s := range d.servers {
		if s.cert == nil || len(s.cert.args) == 0 || s.key == nil || len(s.key.args) == 0 {
			problems = append(problems, fmt.Sprintf("server at %s has no ssl_certificate and ssl_certificate_key", s.block.where()))
			fixes = append(fixes, s.block.where()+": add ssl_certificate /etc/certserver/fallback.crt; ssl_certificate_key /etc/certserver/fallback.key; then "+fix)
			continue
		}
		crt, key := d.nginxPath(s.cert.args[0]), d.nginxPath(s.key.args[0])
		if strings.Contains(crt, "$") {
			oks = append(oks, fmt.Sprintf("%s (a variable: not checked)", crt))
			continue
		}
		leaf, err := loadFallback(crt, key)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s (%s): %v", crt, s.cert.where(), err))
			fixes = append(fixes, s.cert.where()+": "+fix)
			continue
		}
		if now := d.e.now(); now.After(leaf.NotAfter) {
			problems = append(problems, fmt.Sprintf("%s (%s) expired on %s", crt, s.cert.where(), leaf.NotAfter.Format("2006-01-02")))
			fixes = append(fixes, s.cert.where()+": "+fix)
			continue
		}
		oks = append(oks, fmt.Sprintf("%s until %s", crt, leaf.NotAfter.Format("2006-01-02")))
	}
	if len(problems) > 0 {
		d.add("fallback cert", checkFail, strings.Join(problems, "; "), strings.Join(fixes, "; "))
		return
	}
	d.add("fallback cert", checkOK, strings.Join(oks, ", "), "")
}

// nginxPath resolves a path in nginx's configuration: relative ones are
// relative to the directory of the main configuration file.
func (d *doctor) nginxPath(p string) string {
	if filepath.IsAbs(p) || strings.HasPrefix(p, "data:") || len(d.conf) == 0 {
		return p
	}
	return filepath.Join(filepath.Dir(d.conf[0].file), p)
}

// loadFallback reads a certificate and its key and returns the leaf.
func loadFallback(crt, key string) (*x509.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %w", pe.Path, pe.Err)
		}
		return nil, err
	}
	return x509.ParseCertificate(pair.Certificate[0])
}

// checkHandshake makes a TLS handshake through nginx for a name
// certserver holds a certificate for, and compares the certificate nginx
// serves with the one the certificate endpoint hands out.
func (d *doctor) checkHandshake(ctx context.Context) {
	if len(d.servers) == 0 && d.https == "" {
		d.add("handshake", checkSkip, "no server {} with the hook", "")
		return
	}
	addr := d.https
	if addr == "" {
		for _, s := range d.servers {
			for _, l := range s.listens {
				if a := loopbackOf(l.args[0]); a != "" {
					addr = a
					break
				}
			}
			if addr != "" {
				break
			}
		}
	}
	if addr == "" {
		d.add("handshake", checkWarn, "no listen ... ssl in the servers with the hook: not checked", "give nginx's TLS address with --https host:port")
		return
	}
	names := []string{d.name}
	if d.name == "" {
		var err error
		if names, err = d.candidateNames(ctx); err != nil {
			d.add("handshake", checkWarn, fmt.Sprintf("no name to try: %v", err), "certserver domains add NAME (or import its certificate), or give a name with --name NAME")
			return
		}
	}
	var name string
	var stored *x509.Certificate
	var err error
	for _, name = range names {
		if stored, err = d.storedLeaf(ctx, name); err == nil {
			break
		}
	}
	if err != nil {
		d.add("handshake", checkFail, fmt.Sprintf("the certificate endpoint (%s) has no certificate for %s: %v", d.socketEndpoint(), strings.Join(names, ", "), err),
			"is certserver serve running with this configuration? (systemctl status certserver)")
		return
	}
	served, err := handshakeLeaf(ctx, addr, name)
	if err != nil {
		d.add("handshake", checkFail, fmt.Sprintf("TLS handshake with nginx at %s for %s: %v", addr, name, err), "is nginx running? (systemctl status nginx; nginx's error log)")
		return
	}
	if bytes.Equal(served.Raw, stored.Raw) {
		d.add("handshake", checkOK, fmt.Sprintf("nginx at %s serves %s the certificate certserver holds (serial %x, until %s)",
			addr, name, stored.SerialNumber, stored.NotAfter.Format("2006-01-02")), "")
		return
	}
	what := fmt.Sprintf("another certificate (subject %q, serial %x)", served.Subject.CommonName, served.SerialNumber)
	for _, s := range d.servers {
		if s.cert == nil || len(s.cert.args) == 0 || s.key == nil || len(s.key.args) == 0 {
			continue
		}
		if fb, err := loadFallback(d.nginxPath(s.cert.args[0]), d.nginxPath(s.key.args[0])); err == nil && bytes.Equal(fb.Raw, served.Raw) {
			what = "its fallback certificate " + s.cert.args[0]
		}
	}
	d.add("handshake", checkFail, fmt.Sprintf("nginx at %s serves %s %s, not the certificate certserver holds (serial %x)", addr, name, what, stored.SerialNumber),
		"see the failures above, and nginx's error log (lines with \"certserver\") for why the Lua module got no certificate")
}

// loopbackOf returns the address to reach an nginx listen address from
// this host: "443" and "*:443" on 127.0.0.1, "[::]:443" on [::1]; "" for
// a unix socket.
func loopbackOf(listen string) string {
	if strings.HasPrefix(listen, "unix:") {
		return ""
	}
	if !strings.Contains(listen, ":") || strings.HasPrefix(listen, "*:") {
		_, port, _ := strings.Cut(listen, ":")
		if port == "" {
			port = listen
		}
		return net.JoinHostPort("127.0.0.1", port)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	switch host {
	case "0.0.0.0", "*":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// candidateNames asks the admin API for names to try the handshake
// with: a valid one if there is any, else the first few managed names
// (one may hold an imported certificate while it waits for the renewer).
func (d *doctor) candidateNames(ctx context.Context) ([]string, error) {
	cl, err := d.af.client(d.e)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, *d.af.timeout)
	defer cancel()
	for _, opts := range []client.ListOptions{{States: []string{"valid"}, Limit: 1}, {Limit: 20}} {
		list, err := cl.Domains(ctx, opts)
		if err != nil {
			return nil, explain(cl, err)
		}
		if len(list.Domains) > 0 {
			var names []string
			for _, dom := range list.Domains {
				names = append(names, dom.Name)
			}
			return names, nil
		}
	}
	return nil, errors.New("the admin API lists no name")
}

// storedLeaf asks the certificate endpoint for name, as nginx does, and
// returns the leaf it answers.
func (d *doctor) storedLeaf(ctx context.Context, name string) (*x509.Certificate, error) {
	endpoint := d.socketEndpoint()
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var nd net.Dialer
		if p := plainUnixSocket(endpoint); p != "" {
			return nd.DialContext(ctx, "unix", p)
		}
		return nd.DialContext(ctx, "tcp", endpoint)
	}
	hc := &http.Client{Timeout: handshakeTimeout, Transport: &http.Transport{DialContext: dial}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://certserver/v1/certs/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("it answers %s", resp.Status)
	}
	for rest := body; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, errors.New("its answer holds no certificate")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// handshakeLeaf makes a TLS handshake with addr for name and returns the
// leaf certificate served. It does not verify the chain: the point is
// which certificate nginx picks.
func handshakeLeaf(ctx context.Context, addr, name string) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	dialer := &tls.Dialer{Config: &tls.Config{ServerName: name, InsecureSkipVerify: true}} //nolint:gosec // compared, not trusted
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("no certificate served")
	}
	return certs[0], nil
}
