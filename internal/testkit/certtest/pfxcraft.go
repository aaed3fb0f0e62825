package certtest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
)

// PKCS#12 files put together piece by piece (RFC 7292), for tests of what a
// file can make its decoder do: each function returns the DER of one
// structure, so that a test builds any file, well formed or hostile, from
// readable parts rather than from a binary blob.

// OIDs of the parts.
var (
	OIDData                = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	OIDEncryptedData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	OIDShroudedKeyBag      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	OIDPBEWithSHA3DES      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 3}
	OIDPBEWithSHA128RC2    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 5}
	OIDPBEWithSHA40RC2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 6}
	OIDPBES2               = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	OIDPBKDF2              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	OIDPBMAC1              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
	OIDHmacWithSHA256      = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	OIDAES256CBC           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	OIDSHA256              = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	OIDSHA1                = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidX509CertificateType = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	oidCertBag             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
)

// OctetSalt is a salt as RFC 8018 writes it: an OCTET STRING.
func OctetSalt(b []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagOctetString, Bytes: b}
}

// ContextSalt is a salt under the context-specific tag [4]: not an OCTET
// STRING, though a decoder that compares only the tag number takes it for
// one.
func ContextSalt(b []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: asn1.TagOctetString, Bytes: b}
}

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic("certtest: " + err.Error()) // the types below always marshal
	}
	return b
}

func params(v any) asn1.RawValue { return asn1.RawValue{FullBytes: mustMarshal(v)} }

// explicit0 is inner under the explicit tag [0] (a RawValue's FullBytes
// would be written without it).
func explicit0(inner []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}
}

// PBEAlg is a PKCS#12 PBE algorithm (OIDPBEWithSHA3DES, ...) with its salt
// and iteration count.
func PBEAlg(oid asn1.ObjectIdentifier, salt []byte, iterations int64) pkix.AlgorithmIdentifier {
	return pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: params(struct {
		Salt       []byte
		Iterations int64
	}{salt, iterations})}
}

type pbkdf2Params struct {
	Salt       asn1.RawValue
	Iterations int64
	KeyLength  int                      `asn1:"optional"`
	Prf        pkix.AlgorithmIdentifier `asn1:"optional"`
}

func pbkdf2Alg(salt asn1.RawValue, iterations int64, keyLength int) pkix.AlgorithmIdentifier {
	return pkix.AlgorithmIdentifier{Algorithm: OIDPBKDF2, Parameters: params(pbkdf2Params{
		Salt: salt, Iterations: iterations, KeyLength: keyLength,
		Prf: pkix.AlgorithmIdentifier{Algorithm: OIDHmacWithSHA256, Parameters: asn1.NullRawValue},
	})}
}

// PBES2Alg is PBES2: PBKDF2 with HMAC-SHA-256, then AES-256-CBC with iv.
func PBES2Alg(salt asn1.RawValue, iterations int64, iv []byte) pkix.AlgorithmIdentifier {
	return pkix.AlgorithmIdentifier{Algorithm: OIDPBES2, Parameters: params(struct {
		Kdf, EncryptionScheme pkix.AlgorithmIdentifier
	}{pbkdf2Alg(salt, iterations, 0), pkix.AlgorithmIdentifier{Algorithm: OIDAES256CBC, Parameters: params(iv)}})}
}

// EncryptPBES2 encrypts plain as PBES2Alg(OctetSalt(salt), iterations, iv)
// does under the empty password.
func EncryptPBES2(plain, salt []byte, iterations int, iv []byte) []byte {
	key, err := pbkdf2.Key(sha256.New, "", salt, iterations, 32)
	if err != nil {
		panic("certtest: " + err.Error())
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("certtest: " + err.Error())
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	out := append(append([]byte{}, plain...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, out)
	return out
}

// PBMAC1Alg is a PBMAC1 MAC algorithm: PBKDF2 with HMAC-SHA-256 and a
// 32-byte key, then HMAC-SHA-256.
func PBMAC1Alg(salt asn1.RawValue, iterations int64) pkix.AlgorithmIdentifier {
	return pkix.AlgorithmIdentifier{Algorithm: OIDPBMAC1, Parameters: params(struct {
		Kdf, MacAlg pkix.AlgorithmIdentifier
	}{pbkdf2Alg(salt, iterations, 32), pkix.AlgorithmIdentifier{Algorithm: OIDHmacWithSHA256, Parameters: asn1.NullRawValue}})}
}

// MacData is a PFX's MAC: the algorithm, a digest, the salt and the count.
func MacData(alg pkix.AlgorithmIdentifier, digest, salt []byte, iterations int64) []byte {
	return mustMarshal(struct {
		Mac struct {
			Algorithm pkix.AlgorithmIdentifier
			Digest    []byte
		}
		MacSalt    []byte
		Iterations int64
	}{Mac: struct {
		Algorithm pkix.AlgorithmIdentifier
		Digest    []byte
	}{alg, digest}, MacSalt: salt, Iterations: iterations})
}

type safeBag struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// ShroudedKeyBag is a pkcs8ShroudedKeyBag whose EncryptedPrivateKeyInfo
// has the algorithm and the encrypted bytes.
func ShroudedKeyBag(alg pkix.AlgorithmIdentifier, encrypted []byte) []byte {
	info := mustMarshal(struct {
		Algorithm     pkix.AlgorithmIdentifier
		EncryptedData []byte
	}{alg, encrypted})
	return mustMarshal(safeBag{ID: OIDShroudedKeyBag, Value: explicit0(info)})
}

// CertBag is a certBag holding one DER certificate.
func CertBag(der []byte) []byte {
	v := mustMarshal(struct {
		ID   asn1.ObjectIdentifier
		Data []byte `asn1:"tag:0,explicit"`
	}{oidX509CertificateType, der})
	return mustMarshal(safeBag{ID: oidCertBag, Value: explicit0(v)})
}

// SafeContents is a SEQUENCE of bags.
func SafeContents(bags ...[]byte) []byte {
	return mustMarshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: bytes.Join(bags, nil)})
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue
}

// DataContent is a ContentInfo of type data holding safeContents.
func DataContent(safeContents []byte) []byte {
	return mustMarshal(contentInfo{OIDData, explicit0(mustMarshal(safeContents))})
}

// EncryptedContent is a ContentInfo of type encryptedData: version 0, the
// algorithm and the ciphertext.
func EncryptedContent(alg pkix.AlgorithmIdentifier, ciphertext []byte) []byte {
	ed := mustMarshal(struct {
		Version int
		Info    struct {
			ContentType asn1.ObjectIdentifier
			Alg         pkix.AlgorithmIdentifier
			Encrypted   []byte `asn1:"tag:0,optional"`
		}
	}{Info: struct {
		ContentType asn1.ObjectIdentifier
		Alg         pkix.AlgorithmIdentifier
		Encrypted   []byte `asn1:"tag:0,optional"`
	}{OIDData, alg, ciphertext}})
	return mustMarshal(contentInfo{OIDEncryptedData, explicit0(ed)})
}

// AssemblePFX is a version 3 PFX whose authenticated safe holds contents,
// with macData (MacData's DER) or, when nil, without a MAC, which a
// decoder accepts for the empty password.
func AssemblePFX(macData []byte, contents ...[]byte) []byte {
	authSafe := mustMarshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: bytes.Join(contents, nil)})
	body := [][]byte{mustMarshal(3), mustMarshal(contentInfo{OIDData, explicit0(mustMarshal(authSafe))})}
	if macData != nil {
		body = append(body, macData)
	}
	return mustMarshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: bytes.Join(body, nil)})
}
