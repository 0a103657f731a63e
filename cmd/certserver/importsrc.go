package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver/api"
)

// importItem is one certificate to import: where it was found and its PEM
// chain and key, or why they could not be read.
type importItem struct {
	// path is what the report shows: a certbot lineage directory or a file.
	path   string
	source string
	chain  []byte
	key    []byte
	// err is set when the files could not be read.
	err error
}

// findImports turns a command-line PATH into the items it holds:
//
//   - a certbot configuration directory (it has live/): one item per
//     lineage directory in live/, README and other files skipped;
//   - a certbot lineage directory (it has fullchain.pem): one item;
//   - a file: one item, its certificate blocks the chain and its private
//     key block the key.
//
// Paths are made absolute. An unreadable path is an item with err set.
func findImports(path string) []importItem {
	abs, err := filepath.Abs(path)
	if err == nil {
		path = abs
	}
	fi, err := os.Stat(path)
	if err != nil {
		return []importItem{{path: path, err: err}}
	}
	if !fi.IsDir() {
		return []importItem{readBundle(path)}
	}
	live := filepath.Join(path, "live")
	if st, err := os.Stat(live); err == nil && st.IsDir() {
		entries, err := os.ReadDir(live)
		if err != nil {
			return []importItem{{path: live, err: err}}
		}
		var items []importItem
		for _, ent := range entries {
			p := filepath.Join(live, ent.Name())
			// Lineages are directories; certbot keeps a README beside them.
			if st, err := os.Stat(p); err != nil || !st.IsDir() {
				continue
			}
			items = append(items, readLineage(p))
		}
		if len(items) == 0 {
			return []importItem{{path: live, err: errors.New("no certificate lineages in it")}}
		}
		return items
	}
	if _, err := os.Lstat(filepath.Join(path, "fullchain.pem")); err == nil {
		return []importItem{readLineage(path)}
	}
	return []importItem{{path: path, err: errors.New("not a certbot directory (no live/) nor a lineage (no fullchain.pem)")}}
}

// readLineage reads a certbot lineage: fullchain.pem and privkey.pem,
// following certbot's symbolic links into archive/.
func readLineage(dir string) importItem {
	it := importItem{path: dir, source: api.SourceCertbot}
	it.chain, it.err = os.ReadFile(filepath.Join(dir, "fullchain.pem"))
	if it.err == nil {
		it.key, it.err = os.ReadFile(filepath.Join(dir, "privkey.pem"))
	}
	return it
}

// readBundle reads a PEM file holding a chain and its key.
func readBundle(path string) importItem {
	it := importItem{path: path, source: api.SourceImport}
	b, err := os.ReadFile(path)
	if err != nil {
		it.err = err
		return it
	}
	it.chain, it.key = splitPEM(b)
	if len(it.key) == 0 && len(it.chain) > 0 {
		it.err = fmt.Errorf("no private key in the file; give the key with --cert FILE --key FILE")
	}
	return it
}

// readPair reads a chain file and a key file given separately.
func readPair(certFile, keyFile string) importItem {
	if abs, err := filepath.Abs(certFile); err == nil {
		certFile = abs
	}
	it := importItem{path: certFile, source: api.SourceImport}
	it.chain, it.err = os.ReadFile(certFile)
	if it.err == nil {
		it.key, it.err = os.ReadFile(keyFile)
	}
	return it
}

// splitPEM separates the private key blocks of a PEM file from the others.
// Text outside blocks is dropped.
func splitPEM(b []byte) (chain, key []byte) {
	var c, k bytes.Buffer
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			pem.Encode(&k, block)
		} else {
			pem.Encode(&c, block)
		}
	}
	return c.Bytes(), k.Bytes()
}

// peekLeaf returns the first name and the expiry of the first certificate
// in chain, for reporting an item that did not pass the checks; zero values
// when there is no parsable certificate.
func peekLeaf(chain []byte) (string, time.Time) {
	for {
		var block *pem.Block
		block, chain = pem.Decode(chain)
		if block == nil {
			return "", time.Time{}
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return "", time.Time{}
		}
		if len(leaf.DNSNames) > 0 {
			return leaf.DNSNames[0], leaf.NotAfter
		}
		return leaf.Subject.CommonName, leaf.NotAfter
	}
}

// unreadable says why an item could not be read, without Go's wrapping.
func unreadable(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}
