package renewer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/certserver/certserver/store"
)

// generatable reports whether the renewer can generate keys of type k.
func generatable(k store.KeyType) bool {
	switch k {
	case store.KeyECDSAP256, store.KeyECDSAP384, store.KeyRSA2048, store.KeyRSA4096:
		return true
	}
	return false
}

// generateKey returns a new private key of type k.
func generateKey(k store.KeyType) (crypto.Signer, error) {
	switch k {
	case store.KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case store.KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case store.KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case store.KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("unknown key type %q", k)
}

// encodeKey returns key as a PKCS #8 "PRIVATE KEY" PEM block.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
