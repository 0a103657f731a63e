package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver/api"
)

// importItem is one certificate to import: where it was found and, once
// loaded, its PEM chain and key, or why they could not be read.
type importItem struct {
	// path is what the report shows: a certbot lineage directory or a file.
	path   string
	source string
	kind   importKind
	// keyFile is the key file of a kindPair item.
	keyFile string
	// live and name, for a lineage found in a live/ directory, are that
	// directory, open while the walk that yields the item runs, and the
	// lineage's name in it: load opens its files from there.
	live  *liveDir
	name  string
	chain []byte
	key   []byte
	// err is set when the item could not be found or its files read.
	err error
}

// importKind says how an item's files are read.
type importKind int

const (
	kindLineage importKind = iota // a certbot lineage: fullchain.pem and privkey.pem
	kindBundle                    // one PEM file holding the chain and the key
	kindPair                      // a chain file and a key file (--cert, --key)
)

// lineageChunk is how many directory entries of live/ are read at a time.
const lineageChunk = 1024

// walkImports calls yield with each item a command-line PATH holds, not
// yet loaded, and returns false as soon as yield does:
//
//   - a certbot configuration directory (it has live/): one item per
//     lineage directory in live/, README and other files skipped, in the
//     order the directory lists them;
//   - a certbot lineage directory (it has fullchain.pem): one item;
//   - a file: one item, its certificate blocks the chain and its private
//     key block the key.
//
// live/ is read lineageChunk entries at a time, so a tree of any size
// costs the same memory. Paths are made absolute. An unreadable path is an
// item with err set.
func walkImports(path string, yield func(importItem) bool) bool {
	abs, err := filepath.Abs(path)
	if err == nil {
		path = abs
	}
	fi, err := os.Stat(path)
	if err != nil {
		return yield(importItem{path: path, err: err})
	}
	if !fi.IsDir() {
		return yield(importItem{path: path, source: api.SourceImport, kind: kindBundle})
	}
	live := filepath.Join(path, "live")
	if st, err := os.Stat(live); err == nil && st.IsDir() {
		n, stopped := 0, false
		err := lineageDirs(live, func(f *liveDir, name string) bool {
			n++
			stopped = !yield(importItem{path: filepath.Join(live, name), source: api.SourceCertbot, kind: kindLineage, live: f, name: name})
			return !stopped
		})
		switch {
		case stopped:
			return false
		case err != nil:
			return yield(importItem{path: live, err: err})
		case n == 0:
			return yield(importItem{path: live, err: errors.New("no certificate lineages in it")})
		}
		return true
	}
	if _, err := os.Lstat(filepath.Join(path, "fullchain.pem")); err == nil {
		return yield(importItem{path: path, source: api.SourceCertbot, kind: kindLineage})
	}
	return yield(importItem{path: path, err: errors.New("not a certbot directory (no live/) nor a lineage (no fullchain.pem)")})
}

// countImports returns how many items walkImports yields for path,
// reading directory entries only.
func countImports(path string) int {
	n := 0
	walkImports(path, func(importItem) bool { n++; return true })
	return n
}

// liveDir is a certbot live/ directory, open.
type liveDir struct {
	f *os.File
	// shortReadEnds says that a read of a regular file under it that
	// returns less than asked has reached the end of the file (see
	// shortReadEnds).
	shortReadEnds bool
	// atimeRefused says that an open of a file under it with O_NOATIME
	// was refused (the files are not the import's own): readSmallFile
	// opens the others without it.
	atimeRefused bool
}

// lineageDirs calls fn with live, open, and the name of each directory in
// it (following symbolic links), reading live a chunk at a time, until fn
// returns false.
func lineageDirs(live string, fn func(dir *liveDir, name string) bool) error {
	f, err := os.Open(live)
	if err != nil {
		return err
	}
	defer f.Close()
	dir := &liveDir{f: f, shortReadEnds: shortReadEnds(f)}
	for {
		entries, err := f.ReadDir(lineageChunk)
		for _, ent := range entries {
			p := filepath.Join(live, ent.Name())
			// Lineages are directories; certbot keeps a README beside them.
			isDir := ent.IsDir()
			if ent.Type()&fs.ModeSymlink != 0 {
				st, err := os.Stat(p)
				isDir = err == nil && st.IsDir()
			}
			if isDir && !fn(dir, ent.Name()) {
				return nil
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && len(entries) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// pairItem is the item of a chain file and a key file given separately.
func pairItem(certFile, keyFile string) importItem {
	if abs, err := filepath.Abs(certFile); err == nil {
		certFile = abs
	}
	return importItem{path: certFile, source: api.SourceImport, kind: kindPair, keyFile: keyFile}
}

// load reads the item's files, unless finding it failed: a lineage's
// fullchain.pem and privkey.pem (following certbot's symbolic links into
// archive/), a bundle's blocks, or a pair's two files. A lineage's files
// are read through scratch, a buffer load may grow and reuse.
func (it *importItem) load(scratch *[]byte) {
	if it.err != nil {
		return
	}
	switch it.kind {
	case kindLineage:
		read := func(file string) ([]byte, error) {
			if it.live == nil {
				return readSmallFile(nil, "", filepath.Join(it.path, file), scratch)
			}
			return readSmallFile(it.live, it.name+"/"+file, filepath.Join(it.path, file), scratch)
		}
		it.chain, it.err = read("fullchain.pem")
		if it.err == nil {
			it.key, it.err = read("privkey.pem")
		}
		it.live = nil // closed once the walk is over
	case kindBundle:
		b, err := os.ReadFile(it.path)
		if err != nil {
			it.err = err
			return
		}
		it.chain, it.key = splitPEM(b)
		if len(it.key) == 0 && len(it.chain) > 0 {
			it.err = fmt.Errorf("no private key in the file; give the key with --cert FILE --key FILE")
		}
	case kindPair:
		it.chain, it.err = os.ReadFile(it.path)
		if it.err == nil {
			it.key, it.err = os.ReadFile(it.keyFile)
		}
	}
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
