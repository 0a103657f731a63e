package renewer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// KeyType is the type of a certificate's private key, named as in
// store.Certificate.KeyType.
type KeyType string

// The key types the renewer generates.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyECDSAP384 KeyType = "ecdsa-p384"
	KeyRSA2048   KeyType = "rsa2048"
	KeyRSA4096   KeyType = "rsa4096"
)

// valid reports whether the renewer can generate keys of type k.
func (k KeyType) valid() bool {
	switch k {
	case KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA4096:
		return true
	}
	return false
}

// generateKey returns a new private key of type k.
func generateKey(k KeyType) (crypto.Signer, error) {
	switch k {
	case KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("unknown key type %q", k)
}

// keyTypeOf names the type of key, "" when it is none of KeyType's.
func keyTypeOf(key crypto.Signer) KeyType {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyECDSAP256
		case elliptic.P384():
			return KeyECDSAP384
		}
	case *rsa.PrivateKey:
		switch k.N.BitLen() {
		case 2048:
			return KeyRSA2048
		case 4096:
			return KeyRSA4096
		}
	}
	return ""
}

// encodeKey returns key as a PKCS #8 "PRIVATE KEY" PEM block.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// decodeKey parses the first private key PEM block of data: PKCS #8,
// SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY"). Other blocks
// before it (such as "EC PARAMETERS") are skipped.
func decodeKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("decode key: no private key block")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("decode key: %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("decode key: unsupported key type %T", key)
		}
		return signer, nil
	}
}
