package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// The million benchmark's data set: n managed names, each with its own
// certificate, in a Badger store built once and kept on disk between runs
// (about 4 minutes and 4 GB at a million names on 2 CPUs), and again when
// it is older than maxDatasetAge.
//
// The certificates are real and parse: a leaf per name, signed with ECDSA
// P-256 by a benchmark intermediate (P-256 key), which an RSA benchmark
// root signs. What makes a million of them cheap is that every leaf shares
// one key pair and is the same template with the name and the serial
// changed in place, so a leaf costs one ECDSA signature. A record holds a
// 2-certificate chain of about 3,000 bytes of PEM and a 241-byte PKCS #8
// key, the size of a Let's Encrypt chain and key; an opaque extension in
// every leaf stands in for the signed certificate timestamps and policy
// text of real ones.

// benchDatasetVersion names the layout of the cached data set; change it
// when what buildDataset writes changes, so that old caches are not used.
const benchDatasetVersion = "v3" // v2: certificate records in the store's formatV2; v3: a record of one name in its name's link

// maxDatasetAge is how long a cached data set is used. Its certificates
// expire 90 days after it was built, and its names come due after 60.
const maxDatasetAge = 30 * 24 * time.Hour

// benchName returns the i-th name of the data set. Every name has the same
// length, which lets the leaves be patched in place.
func benchName(i int) string { return fmt.Sprintf("h%07d.million.test", i) }

// benchDataset is a store directory holding the data set, closed.
type benchDataset struct {
	// Dir is the Badger directory; n names, benchName(0) to
	// benchName(n-1), each with a certificate and a domain record in
	// state valid.
	Dir string
	N   int
	// Built says how the store was built, when it was (from its
	// marker file): the time it took and its size on disk.
	Built string
}

// benchCacheDir is where data sets are kept: $CERTSERVER_BENCH_CACHE, else
// bin/bench/cache in the repository (ignored by git, removed by make
// clean).
func benchCacheDir(b *testing.B) string {
	if d := os.Getenv("CERTSERVER_BENCH_CACHE"); d != "" {
		return d
	}
	d, err := filepath.Abs(filepath.Join("..", "..", "bin", "bench", "cache"))
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// loadDataset returns the cached data set of n names, building it first
// when the cache does not hold it complete.
func loadDataset(b *testing.B, n int) *benchDataset {
	b.Helper()
	base := filepath.Join(benchCacheDir(b), fmt.Sprintf("million-%s-n%d", benchDatasetVersion, n))
	ds := &benchDataset{Dir: filepath.Join(base, "store"), N: n}
	marker := filepath.Join(base, "complete")
	if fi, err := os.Stat(marker); err == nil && time.Since(fi.ModTime()) < maxDatasetAge {
		m, err := os.ReadFile(marker)
		if err != nil {
			b.Fatal(err)
		}
		ds.Built = string(bytes.TrimSpace(m))
		return ds
	}
	// An incomplete build (interrupted) or an old one is started over.
	if err := os.RemoveAll(base); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Logf("building the data set of %d names in %s (once; later runs reuse it)", n, base)
	start := time.Now()
	if err := buildDataset(ds.Dir, n, time.Now()); err != nil {
		b.Fatalf("build data set: %v", err)
	}
	took := time.Since(start)
	size, err := dirSize(ds.Dir)
	if err != nil {
		b.Fatal(err)
	}
	ds.Built = fmt.Sprintf("built %s in %v, %.2f GB on disk", time.Now().UTC().Format(time.RFC3339), took.Round(time.Second), float64(size)/1e9)
	if err := os.WriteFile(marker, []byte(ds.Built+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("data set %s", ds.Built)
	return ds
}

// buildDataset writes n certificates and n domain records into a new
// store in dir. It goes through the Store interface only: PutCertificate
// from several goroutines, then AddDomains. Commits are not synced to
// disk (NoSync), which spares a million fsyncs; the store is closed, and
// so flushed, at the end.
func buildDataset(dir string, n int, now time.Time) error {
	st, err := store.OpenBadger(dir, store.BadgerOptions{Logger: slog.New(slog.DiscardHandler), NoSync: true})
	if err != nil {
		return err
	}
	gen, err := newLeafFactory(now)
	if err != nil {
		st.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	workers := max(4, 2*runtime.GOMAXPROCS(0))
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := st.PutCertificate(ctx, gen.record(i)); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	err = <-errs

	if err == nil {
		const batch = 100_000
		for from := 0; from < n && err == nil; from += batch {
			ds := make([]*store.Domain, 0, batch)
			for i := from; i < min(n, from+batch); i++ {
				ds = append(ds, gen.domain(i))
			}
			_, _, err = st.AddDomains(ctx, ds)
		}
	}
	return errors.Join(err, st.Close())
}

// leafFactory makes the data set's records.
type leafFactory struct {
	now      time.Time
	keyPEM   []byte
	interPEM []byte
	issuer   string
	// tbs is the leaf template's to-be-signed part: benchName(0) at
	// nameAt (twice: subject and SAN), serial number at serialAt.
	tbs      []byte
	nameAt   []int
	serialAt int
	sigAlg   []byte // the DER of the signature AlgorithmIdentifier
	signer   *ecdsa.PrivateKey
}

// leafPadding is the size of the opaque extension in every leaf, which
// brings the chain to about 3,000 bytes of PEM.
const leafPadding = 730

// rawCertificate is an X.509 certificate (RFC 5280 section 4.1) with its
// parts left as DER.
type rawCertificate struct {
	TBS    asn1.RawValue
	SigAlg asn1.RawValue
	Sig    asn1.BitString
}

// leafSerialLen is the length of every leaf's serial number: 16 bytes,
// the first 0x01 so that it is positive and never shorter.
const leafSerialLen = 16

func newLeafFactory(now time.Time) (*leafFactory, error) {
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	interKey, leafKey := newKey(), newKey()
	// An RSA root, as Let's Encrypt's ISRG Root X1, makes the
	// intermediate the size of theirs.
	rootKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	root := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "certserver bench root", Organization: []string{"certserver"}},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	if root, err = x509.ParseCertificate(rootDER); err != nil {
		return nil, err
	}
	inter := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "certserver bench E1", Organization: []string{"certserver"}, Country: []string{"US"}},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.AddDate(3, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
		MaxPathLenZero: true, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IssuingCertificateURL: []string{"http://x1.i.bench.invalid/"}, CRLDistributionPoints: []string{"http://x1.c.bench.invalid/"},
		PolicyIdentifiers: []asn1.ObjectIdentifier{{2, 23, 140, 1, 2, 1}},
	}
	interDER, err := x509.CreateCertificate(rand.Reader, inter, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	if inter, err = x509.ParseCertificate(interDER); err != nil {
		return nil, err
	}

	serial := make([]byte, leafSerialLen)
	serial[0] = 1
	copy(serial[1:], "certserverbench")
	sct := bytes.Repeat([]byte{0x5c}, leafPadding)
	leaf := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(serial), Subject: pkix.Name{CommonName: benchName(0)}, DNSNames: []string{benchName(0)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IssuingCertificateURL: []string{"http://e1.i.bench.invalid/"},
		CRLDistributionPoints: []string{"http://e1.c.bench.invalid/42.crl"}, PolicyIdentifiers: []asn1.ObjectIdentifier{{2, 23, 140, 1, 2, 1}},
		// A private OID, where real leaves have their SCT list
		// (1.3.6.1.4.1.11129.2.4.2), so that nothing tries to parse it.
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: sct}},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, inter, &leafKey.PublicKey, interKey)
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, err
	}
	f := &leafFactory{
		now:      now,
		keyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		interPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}),
		issuer:   inter.Subject.String(),
		tbs:      parsed.RawTBSCertificate,
		signer:   interKey,
	}
	// The signature algorithm follows the TBS in the certificate.
	var cert rawCertificate
	if _, err := asn1.Unmarshal(leafDER, &cert); err != nil {
		return nil, fmt.Errorf("leaf template: %w", err)
	}
	f.sigAlg = cert.SigAlg.FullBytes
	for from := 0; ; {
		i := bytes.Index(f.tbs[from:], []byte(benchName(0)))
		if i < 0 {
			break
		}
		f.nameAt = append(f.nameAt, from+i)
		from += i + 1
	}
	f.serialAt = bytes.Index(f.tbs, serial)
	if len(f.nameAt) != 2 || f.serialAt < 0 || bytes.Count(f.tbs, serial) != 1 {
		return nil, fmt.Errorf("leaf template: name found %d times, serial at %d", len(f.nameAt), f.serialAt)
	}
	return f, nil
}

// record returns the certificate record of the i-th name.
func (f *leafFactory) record(i int) *store.Certificate {
	name := benchName(i)
	tbs := bytes.Clone(f.tbs)
	for _, at := range f.nameAt {
		copy(tbs[at:], name)
	}
	serial := tbs[f.serialAt : f.serialAt+leafSerialLen]
	binary.BigEndian.PutUint64(serial[leafSerialLen-8:], uint64(i)+1)
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, f.signer, digest[:])
	if err != nil {
		panic(err)
	}
	der, err := asn1.Marshal(rawCertificate{
		TBS:    asn1.RawValue{FullBytes: tbs},
		SigAlg: asn1.RawValue{FullBytes: f.sigAlg},
		Sig:    asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		panic(err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, f.interPEM...)
	notAfter := f.now.Add(90 * 24 * time.Hour)
	return &store.Certificate{
		ID: name, Names: []string{name}, ChainPEM: chain, KeyPEM: f.keyPEM,
		NotBefore: f.now.Add(-time.Hour), NotAfter: notAfter,
		Issuer: f.issuer, Serial: new(big.Int).SetBytes(serial).Text(16), KeyType: "ecdsa-p256",
		Source: store.SourceACME, Origin: "https://acme.bench.invalid/directory",
		RenewAt: notAfter.Add(-30 * 24 * time.Hour), StoredAt: f.now,
	}
}

// domain returns the management record of the i-th name: valid, served
// by its certificate, next looked at when the certificate is due,
// spread over a month.
func (f *leafFactory) domain(i int) *store.Domain {
	return &store.Domain{
		Name: benchName(i), State: store.StateValid, CertID: benchName(i), Source: "api",
		NextAttempt: f.now.Add(60*24*time.Hour + time.Duration(i%1_000_000)*(30*24*time.Hour/1_000_000)),
		AddedAt:     f.now, UpdatedAt: f.now,
	}
}

// dirSize returns the bytes in the files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	return n, err
}
