package pfxcheck

import (
	"bytes"
	"crypto/cipher"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/internal/testkit/certtest"
)

// TestRC2 runs RFC 2268's test vectors both ways.
func TestRC2(t *testing.T) {
	tests := []struct {
		key         string
		t1          int
		plain, want string
	}{
		{"0000000000000000", 63, "0000000000000000", "ebb773f993278eff"},
		{"ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"},
		{"3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"},
		{"88", 64, "0000000000000000", "61a8a244adacccf0"},
		{"88bca90e90875a", 64, "0000000000000000", "6ccf4308974c267f"},
		{"88bca90e90875a7f0f79c384627bafb2", 64, "0000000000000000", "1a807d272bbe5db1"},
		{"88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"},
		{"88bca90e90875a7f0f79c384627bafb216f80a6f85920584c42fceb0be255daf1e", 129, "0000000000000000", "5b78d3a43dfff1f1"},
	}
	for _, tt := range tests {
		key, _ := hex.DecodeString(tt.key)
		plain, _ := hex.DecodeString(tt.plain)
		c := newRC2Cipher(key, tt.t1)
		got := make([]byte, 8)
		c.Encrypt(got, plain)
		if hex.EncodeToString(got) != tt.want {
			t.Errorf("key %s/%d: encrypt gives %x, want %s", tt.key, tt.t1, got, tt.want)
		}
		c.Decrypt(got, got)
		if !bytes.Equal(got, plain) {
			t.Errorf("key %s/%d: decrypt gives %x, want %s", tt.key, tt.t1, got, tt.plain)
		}
	}
}

// TestEncoders: the files go-pkcs12 writes, in every encoding Key Vault,
// OpenSSL, Windows and Java use, pass, and the check saw every bag,
// including those it decrypted (RC2, 3DES, AES).
func TestEncoders(t *testing.T) {
	chain, err := certtest.NewChain(certtest.EC, "web.example")
	if err != nil {
		t.Fatal(err)
	}
	for name, enc := range map[string]*pkcs12.Encoder{
		"LegacyRC2": pkcs12.LegacyRC2, "LegacyDES": pkcs12.LegacyDES, "Modern2023": pkcs12.Modern2023, "Modern2026": pkcs12.Modern2026,
	} {
		t.Run(name, func(t *testing.T) {
			der, err := enc.Encode(chain.Leaf.Key, chain.Leaf.Cert, []*x509.Certificate{chain.Intermediate.Cert, chain.Root.Cert}, "")
			if err != nil {
				t.Fatal(err)
			}
			got, err := walk(der)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(seen{encrypted: 1, bags: 4, shrouded: 1}, got, cmp.AllowUnexported(seen{})); diff != "" {
				t.Errorf("seen (-want +got):\n%s", diff)
			}
			locked, err := enc.Encode(chain.Leaf.Key, chain.Leaf.Cert, nil, "hunter2")
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(locked); !errors.Is(err, ErrPassword) {
				t.Errorf("with a password: %v, want ErrPassword", err)
			}
		})
	}
}

const huge = 1 << 40

var (
	salt = []byte("0123456789abcdef")
	iv   = []byte("fedcba9876543210")
	// junkKey is a shrouded key's ciphertext: the check never decrypts it.
	junkKey = make([]byte, 16)
)

// encryptPKCS12 encrypts plain as a PKCS#12 PBE algorithm does under the
// empty password (the BMPString's two zero bytes).
func encryptPKCS12(t *testing.T, oid asn1.ObjectIdentifier, plain []byte, iterations int) []byte {
	kind := pkcs12PBEs[oid.String()]
	key := pkcs12KDF(salt, []byte{0, 0}, iterations, 1, kind.keyLen)
	ivb := pkcs12KDF(salt, []byte{0, 0}, iterations, 2, 8)
	block, err := kind.create(key)
	if err != nil {
		t.Fatal(err)
	}
	pad := 8 - len(plain)%8
	out := append(append([]byte{}, plain...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, ivb).CryptBlocks(out, out)
	return out
}

// TestCrafted: files built piece by piece. Every count over the bound is
// refused wherever it hides; what the check cannot read or see into is
// refused too.
func TestCrafted(t *testing.T) {
	costlyKey := certtest.ShroudedKeyBag(certtest.PBEAlg(certtest.OIDPBEWithSHA3DES, salt, huge), junkKey)
	okKey := certtest.ShroudedKeyBag(certtest.PBEAlg(certtest.OIDPBEWithSHA3DES, salt, 2048), junkKey)
	inside := func(oid asn1.ObjectIdentifier, bags ...[]byte) []byte {
		return certtest.AssemblePFX(nil, certtest.EncryptedContent(certtest.PBEAlg(oid, salt, 2048), encryptPKCS12(t, oid, certtest.SafeContents(bags...), 2048)))
	}
	insidePBES2 := func(bags ...[]byte) []byte {
		return certtest.AssemblePFX(nil, certtest.EncryptedContent(certtest.PBES2Alg(certtest.OctetSalt(salt), 2048, iv),
			certtest.EncryptPBES2(certtest.SafeContents(bags...), salt, 2048, iv)))
	}
	data := func(bags ...[]byte) []byte { return certtest.DataContent(certtest.SafeContents(bags...)) }
	tests := []struct {
		name string
		der  []byte
		want error // nil, a *LimitError, a *StructureError (any) or ErrPassword
	}{
		{"bounded key in data", certtest.AssemblePFX(nil, data(okKey)), nil},
		{"bounded key inside 3DES", inside(certtest.OIDPBEWithSHA3DES, okKey), nil},
		{"costly key in data", certtest.AssemblePFX(nil, data(costlyKey)), &LimitError{"a shrouded key", huge}},
		{"costly key inside 3DES", inside(certtest.OIDPBEWithSHA3DES, okKey, costlyKey), &LimitError{"a shrouded key", huge}},
		{"costly key inside 40-bit RC2", inside(certtest.OIDPBEWithSHA40RC2, costlyKey), &LimitError{"a shrouded key", huge}},
		{"costly key inside 128-bit RC2", inside(certtest.OIDPBEWithSHA128RC2, costlyKey), &LimitError{"a shrouded key", huge}},
		{"costly key inside PBES2", insidePBES2(costlyKey), &LimitError{"a shrouded key", huge}},
		{"costly key in the second content", certtest.AssemblePFX(nil, data(okKey), insidePBES2Content(costlyKey)), &LimitError{"a shrouded key", huge}},
		{"PBES2 key, context-tagged salt", certtest.AssemblePFX(nil, data(certtest.ShroudedKeyBag(certtest.PBES2Alg(certtest.ContextSalt(salt), huge, iv), junkKey))),
			&LimitError{"a shrouded key", huge}},
		{"PBES2 key, context-tagged salt, bounded", certtest.AssemblePFX(nil, data(certtest.ShroudedKeyBag(certtest.PBES2Alg(certtest.ContextSalt(salt), 2048, iv), junkKey))), nil},
		{"costly encrypted content", certtest.AssemblePFX(nil, certtest.EncryptedContent(certtest.PBEAlg(certtest.OIDPBEWithSHA40RC2, salt, huge), junkKey)),
			&LimitError{"an encrypted content", huge}},
		{"costly PBES2 content, context-tagged salt", certtest.AssemblePFX(nil, certtest.EncryptedContent(certtest.PBES2Alg(certtest.ContextSalt(salt), huge, iv), junkKey)),
			&LimitError{"an encrypted content", huge}},
		{"costly MAC", certtest.AssemblePFX(certtest.MacData(pkix.AlgorithmIdentifier{Algorithm: certtest.OIDSHA256}, make([]byte, 32), salt, huge), data()),
			&LimitError{"the MAC", huge}},
		{"costly PBMAC1, context-tagged salt", certtest.AssemblePFX(certtest.MacData(certtest.PBMAC1Alg(certtest.ContextSalt(salt), huge), make([]byte, 32), salt, 1), data()),
			&LimitError{"the MAC", huge}},
		{"bounded PBMAC1", certtest.AssemblePFX(certtest.MacData(certtest.PBMAC1Alg(certtest.OctetSalt(salt), 2048), make([]byte, 32), salt, 1), data()), nil},
		{"unknown content encryption", certtest.AssemblePFX(nil, certtest.EncryptedContent(pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 3, 4}}, junkKey)),
			&StructureError{}},
		{"unknown key encryption", certtest.AssemblePFX(nil, data(certtest.ShroudedKeyBag(pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 3, 4}}, junkKey))),
			&StructureError{}},
		{"content that does not decrypt", certtest.AssemblePFX(nil, certtest.EncryptedContent(certtest.PBEAlg(certtest.OIDPBEWithSHA3DES, salt, 2048), make([]byte, 32))),
			ErrPassword},
		{"three contents", certtest.AssemblePFX(nil, data(), data(), data()), &StructureError{}},
		{"not DER", []byte("\x30\x82\x01\x00 this is not PKCS#12"), &StructureError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Now()
			err := Check(tt.der)
			if d := time.Since(t0); d > 5*time.Second {
				t.Errorf("the check took %v", d)
			}
			var se *StructureError
			switch want := tt.want.(type) {
			case nil:
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
			case *StructureError:
				if !errors.As(err, &se) {
					t.Errorf("got %v, want a *StructureError", err)
				}
			case *LimitError:
				var le *LimitError
				if !errors.As(err, &le) || *le != *want {
					t.Errorf("got %v, want %v", err, want)
				}
			default:
				if !errors.Is(err, want) {
					t.Errorf("got %v, want %v", err, want)
				}
			}
		})
	}
}

func insidePBES2Content(bags ...[]byte) []byte {
	return certtest.EncryptedContent(certtest.PBES2Alg(certtest.OctetSalt(salt), 2048, iv),
		certtest.EncryptPBES2(certtest.SafeContents(bags...), salt, 2048, iv))
}

// FuzzCheck: any bytes. The check never panics and, when it passes a file,
// the decoder's work on it is bounded: the decoder runs here, so a count
// that slipped through would stall the fuzzer.
func FuzzCheck(f *testing.F) {
	chain, err := certtest.NewChain(certtest.EC, "web.example")
	if err != nil {
		f.Fatal(err)
	}
	for _, enc := range []*pkcs12.Encoder{pkcs12.LegacyRC2, pkcs12.LegacyDES, pkcs12.Modern2023, pkcs12.Modern2026} {
		der, err := enc.Encode(chain.Leaf.Key, chain.Leaf.Cert, nil, "")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	key := certtest.ShroudedKeyBag(certtest.PBES2Alg(certtest.ContextSalt(salt), 300_000, iv), junkKey)
	f.Add(certtest.AssemblePFX(nil, certtest.DataContent(certtest.SafeContents(key))))
	f.Add(certtest.AssemblePFX(nil, insidePBES2Content(key)))
	f.Add(certtest.AssemblePFX(certtest.MacData(certtest.PBMAC1Alg(certtest.ContextSalt(salt), 300_000), make([]byte, 32), salt, 1), certtest.DataContent(certtest.SafeContents())))
	f.Fuzz(func(t *testing.T, der []byte) {
		if len(der) > 64<<10 {
			return // the agent refuses larger bundles before the check
		}
		if Check(der) != nil {
			return
		}
		_, _, _, _ = pkcs12.DecodeChain(der, "")
	})
}
