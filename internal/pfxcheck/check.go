// Package pfxcheck bounds the work a PKCS#12 file asks of its decoder
// before the decoder runs. A PKCS#12 file sets its own key-derivation
// counts (the MAC's, the encrypted contents', each shrouded key's), and a
// decoder runs them without a deadline: one count of 2^40 is days of CPU.
//
// Check reads the file as software.sslmate.com/src/go-pkcs12 reads it, with
// the same ASN.1 types, and finds every parameter set the decoder would
// derive a key from: the MAC (PKCS#12 or PBMAC1), each encrypted content's
// algorithm (PKCS#12 PBE or PBES2 with PBKDF2), and the algorithm of each
// shrouded key bag, also those inside encrypted contents, which it
// decrypts itself with the empty password after bounding their own count.
// What it cannot read or cannot look into, it refuses: a count it has not
// seen is not bounded.
package pfxcheck

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
)

// MaxIterations bounds each key derivation of a PKCS#12 file: Key Vault,
// OpenSSL and Windows use about 2,000, Java 10,000.
const MaxIterations = 200_000

// maxContents is what go-pkcs12's DecodeChain accepts in the authenticated
// safe (it refuses more before decrypting any).
const maxContents = 2

// LimitError is a key derivation over MaxIterations.
type LimitError struct {
	Where      string // "the MAC", "an encrypted content", "a shrouded key"
	Iterations int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s asks for %d key-derivation iterations, more than %d", e.Where, e.Iterations, MaxIterations)
}

// StructureError is a part of the file the check cannot read, so cannot
// bound. It names the part, never a byte of the file.
type StructureError struct{ What string }

func (e *StructureError) Error() string { return "cannot check " + e.What }

// ErrPassword is encrypted content that does not decrypt with the empty
// password: the file has a password (or is damaged), and the check cannot
// see the shrouded keys inside.
var ErrPassword = errors.New("encrypted content does not decrypt with the empty password")

// Check returns nil when every key derivation the decoder may run on der
// is bounded by MaxIterations; else a *LimitError, a *StructureError or
// ErrPassword. Its own work is bounded the same way: at most maxContents
// decryptions with two candidate passwords each.
func Check(der []byte) error {
	_, err := walk(der)
	return err
}

// seen counts what a walk read, for tests.
type seen struct {
	encrypted, bags, shrouded int
}

func walk(der []byte) (seen, error) {
	var s seen
	var pfx pfxPdu
	if err := unmarshal(der, &pfx); err != nil {
		return s, &StructureError{"the file: it is not a DER PKCS#12 PFX"}
	}
	if !pfx.AuthSafe.ContentType.Equal(oidDataContentType) {
		return s, &StructureError{"the authenticated safe: it is not of type data"}
	}
	// As the decoder: the [0] content's own contents, whatever its tag.
	var content asn1.RawValue
	if err := unmarshal(pfx.AuthSafe.Content.Bytes, &content); err != nil {
		return s, &StructureError{"the authenticated safe's content"}
	}
	if len(pfx.MacData.Mac.Algorithm.Algorithm) != 0 {
		if err := checkMAC(&pfx.MacData); err != nil {
			return s, err
		}
	}
	var safe []contentInfo
	if err := unmarshal(content.Bytes, &safe); err != nil {
		return s, &StructureError{"the authenticated safe: it is not a sequence of contents"}
	}
	if len(safe) > maxContents {
		return s, &StructureError{fmt.Sprintf("the authenticated safe: it has %d contents, more than %d", len(safe), maxContents)}
	}
	for _, ci := range safe {
		switch {
		case ci.ContentType.Equal(oidDataContentType):
			var data []byte
			if err := unmarshal(ci.Content.Bytes, &data); err != nil {
				return s, &StructureError{"a content of type data"}
			}
			var bags []safeBag
			if err := unmarshal(data, &bags); err != nil {
				return s, &StructureError{"a content of type data: it is not a sequence of bags"}
			}
			if err := checkBags(bags, &s); err != nil {
				return s, err
			}
		case ci.ContentType.Equal(oidEncryptedDataContentType):
			s.encrypted++
			if err := checkEncrypted(ci, &s); err != nil {
				return s, err
			}
		default:
			return s, &StructureError{"a content of the authenticated safe: neither data nor encryptedData"}
		}
	}
	return s, nil
}

// checkMAC bounds the MAC's derivation: PBMAC1's PBKDF2 parameters, or
// the PKCS#12 MAC's iterations.
func checkMAC(m *macData) error {
	if m.Mac.Algorithm.Algorithm.Equal(oidPBMAC1) {
		var p pbmac1Params
		if err := unmarshal(m.Mac.Algorithm.Parameters.FullBytes, &p); err != nil {
			return &StructureError{"the MAC's PBMAC1 parameters"}
		}
		return checkPBKDF2(p.Kdf, "the MAC")
	}
	if int64(m.Iterations) > MaxIterations {
		return &LimitError{"the MAC", int64(m.Iterations)}
	}
	return nil
}

// checkBags bounds the shrouded keys among bags; the decoder derives a key
// for no other bag.
func checkBags(bags []safeBag, s *seen) error {
	for _, bag := range bags {
		s.bags++
		if !bag.ID.Equal(oidPKCS8ShroudedKeyBag) {
			continue
		}
		s.shrouded++
		var info encryptedPrivateKeyInfo
		if err := unmarshal(bag.Value.Bytes, &info); err != nil {
			return &StructureError{"a shrouded key bag"}
		}
		if _, err := boundedCipher(info.Algorithm, "a shrouded key"); err != nil {
			return err
		}
	}
	return nil
}

// checkEncrypted bounds an encrypted content's own derivation, decrypts it
// with each password the decoder may use, and checks the bags of every
// plaintext that reads as bags.
func checkEncrypted(ci contentInfo, s *seen) error {
	var ed encryptedData
	if err := unmarshal(ci.Content.Bytes, &ed); err != nil || ed.Version != 0 {
		return &StructureError{"an encrypted content"}
	}
	eci := ed.EncryptedContentInfo
	c, err := boundedCipher(eci.ContentEncryptionAlgorithm, "an encrypted content")
	if err != nil {
		return err
	}
	read := 0
	for _, password := range c.passwords() {
		plain, ok := c.decrypt(password, eci.EncryptedContent)
		if !ok {
			continue
		}
		var bags []safeBag
		if unmarshal(plain, &bags) != nil {
			continue
		}
		read++
		if err := checkBags(bags, s); err != nil {
			return err
		}
	}
	if read == 0 {
		return ErrPassword
	}
	return nil
}

// pbeCipher is a bounded, readable PBE algorithm: PKCS#12 PBE or PBES2.
type pbeCipher struct {
	pkcs12 *pkcs12PBE // nil for PBES2
	salt   []byte
	iter   int
	// PBES2:
	prf    func() hash.Hash
	keyLen int
	iv     []byte
}

// boundedCipher reads a PBE algorithm identifier the way the decoder does
// and refuses a count over MaxIterations, or parameters it cannot read.
func boundedCipher(alg pkix.AlgorithmIdentifier, where string) (*pbeCipher, error) {
	if alg.Algorithm.Equal(oidPBES2) {
		var p pbes2Params
		if err := unmarshal(alg.Parameters.FullBytes, &p); err != nil {
			return nil, &StructureError{"the PBES2 parameters of " + where}
		}
		if err := checkPBKDF2(p.Kdf, where); err != nil {
			return nil, err
		}
		var kp pbkdf2Params
		_ = unmarshal(p.Kdf.Parameters.FullBytes, &kp) // checkPBKDF2 read it
		c := &pbeCipher{iter: kp.Iterations, salt: kp.Salt.Bytes, iv: p.EncryptionScheme.Parameters.Bytes}
		if kp.Salt.Tag != asn1.TagOctetString {
			return nil, &StructureError{"the PBKDF2 salt of " + where + ": it is not an OCTET STRING"}
		}
		var ok bool
		if c.prf, ok = prfOf(kp.Prf.Algorithm); !ok {
			return nil, &StructureError{"the PBKDF2 pseudorandom function of " + where}
		}
		switch {
		case p.EncryptionScheme.Algorithm.Equal(oidAES128CBC):
			c.keyLen = 16
		case p.EncryptionScheme.Algorithm.Equal(oidAES192CBC):
			c.keyLen = 24
		case p.EncryptionScheme.Algorithm.Equal(oidAES256CBC):
			c.keyLen = 32
		default:
			return nil, &StructureError{"the PBES2 encryption scheme of " + where}
		}
		return c, nil
	}
	kind := pkcs12PBEs[alg.Algorithm.String()]
	if kind == nil {
		return nil, &StructureError{"the encryption algorithm of " + where}
	}
	var p pbeParams
	if err := unmarshal(alg.Parameters.FullBytes, &p); err != nil {
		return nil, &StructureError{"the PBE parameters of " + where}
	}
	if int64(p.Iterations) > MaxIterations {
		return nil, &LimitError{where, int64(p.Iterations)}
	}
	return &pbeCipher{pkcs12: kind, salt: p.Salt, iter: p.Iterations}, nil
}

// checkPBKDF2 bounds a PBKDF2 algorithm identifier's count, whatever its
// salt holds.
func checkPBKDF2(kdf pkix.AlgorithmIdentifier, where string) error {
	if !kdf.Algorithm.Equal(oidPBKDF2) {
		return &StructureError{"the key-derivation function of " + where + ": it is not PBKDF2"}
	}
	var p pbkdf2Params
	if err := unmarshal(kdf.Parameters.FullBytes, &p); err != nil {
		return &StructureError{"the PBKDF2 parameters of " + where}
	}
	if int64(p.Iterations) > MaxIterations {
		return &LimitError{where, int64(p.Iterations)}
	}
	return nil
}

func prfOf(oid asn1.ObjectIdentifier) (func() hash.Hash, bool) {
	switch {
	case oid == nil, oid.Equal(oidHmacWithSHA1):
		return sha1.New, true
	case oid.Equal(oidHmacWithSHA256):
		return sha256.New, true
	case oid.Equal(oidHmacWithSHA512):
		return sha512.New, true
	}
	return nil, false
}

// passwords are those the decoder may decrypt with, for an empty password:
// the BMPString's two zero bytes, or none (when the MAC was made so);
// PBES2 takes the password as UTF-8, empty either way.
func (c *pbeCipher) passwords() [][]byte {
	if c.pkcs12 == nil {
		return [][]byte{nil}
	}
	return [][]byte{{0, 0}, nil}
}

// decrypt decrypts and unpads as the decoder does.
func (c *pbeCipher) decrypt(password, data []byte) ([]byte, bool) {
	var (
		block cipher.Block
		iv    []byte
		err   error
	)
	if c.pkcs12 != nil {
		key := pkcs12KDF(c.salt, password, c.iter, 1, c.pkcs12.keyLen)
		iv = pkcs12KDF(c.salt, password, c.iter, 2, 8)
		block, err = c.pkcs12.create(key)
	} else {
		var key []byte
		if key, err = pbkdf2.Key(c.prf, string(password), c.salt, max(c.iter, 1), c.keyLen); err == nil {
			block, err = aes.NewCipher(key)
		}
		iv = c.iv
	}
	if err != nil || len(iv) != block.BlockSize() || len(data) == 0 || len(data)%block.BlockSize() != 0 {
		return nil, false
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, data)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > block.BlockSize() || !bytes.Equal(out[len(out)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, false
	}
	return out[:len(out)-pad], true
}

// pkcs12PBE is one of PKCS#12's own PBE algorithms (RFC 7292 appendix C).
type pkcs12PBE struct {
	keyLen int
	create func(key []byte) (cipher.Block, error)
}

var pkcs12PBEs = map[string]*pkcs12PBE{
	oidPBEWithSHAAnd3KeyTripleDESCBC.String(): {24, des.NewTripleDESCipher},
	oidPBEWithSHAAnd128BitRC2CBC.String():     {16, newRC2},
	oidPBEWithSHAAnd40BitRC2CBC.String():      {5, newRC2},
}

func newRC2(key []byte) (cipher.Block, error) { return newRC2Cipher(key, len(key)*8), nil }

// pkcs12KDF is RFC 7292 appendix B.2 with SHA-1 (u = 20, v = 64 bytes),
// as PKCS#12's PBE algorithms use it.
func pkcs12KDF(salt, password []byte, r int, id byte, size int) []byte {
	const u, v = sha1.Size, 64
	d := bytes.Repeat([]byte{id}, v)
	i := append(fill(salt, v), fill(password, v)...)
	var out []byte
	for len(out) < size {
		h := sha1.New()
		h.Write(d)
		h.Write(i)
		a := h.Sum(nil)
		for j := 1; j < r; j++ {
			sum := sha1.Sum(a)
			a = sum[:]
		}
		out = append(out, a...)
		if len(out) >= size {
			break
		}
		b := fill(a, v)
		for blk := 0; blk+v <= len(i); blk += v {
			carry := 1 // I_j = (I_j + B + 1) mod 2^(8v)
			for k := v - 1; k >= 0; k-- {
				sum := int(i[blk+k]) + int(b[k]) + carry
				i[blk+k], carry = byte(sum), sum>>8
			}
		}
	}
	return out[:size]
}

// fill repeats p to the next multiple of v bytes; empty stays empty.
func fill(p []byte, v int) []byte {
	if len(p) == 0 {
		return nil
	}
	n := v * ((len(p) + v - 1) / v)
	return bytes.Repeat(p, (n+len(p)-1)/len(p))[:n]
}

// unmarshal is asn1.Unmarshal refusing trailing data, as the decoder's.
func unmarshal(in []byte, out any) error {
	rest, err := asn1.Unmarshal(in, out)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("trailing data")
	}
	return nil
}
