package azemu

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// accessClaims are the claims of an emulator access token: a v1.0 app-only
// token shaped like Entra ID's, signed ES256 with a per-process key, so the
// Key Vault side can verify it without shared state and a restarted
// emulator rejects old tokens (clients then re-authenticate).
type accessClaims struct {
	Aud      string `json:"aud"`
	Iss      string `json:"iss"`
	Iat      int64  `json:"iat"`
	Nbf      int64  `json:"nbf"`
	Exp      int64  `json:"exp"`
	AppID    string `json:"appid"`
	AppIDACR string `json:"appidacr"`
	IDP      string `json:"idp"`
	IDType   string `json:"idtyp"`
	OID      string `json:"oid"`
	Sub      string `json:"sub"`
	TID      string `json:"tid"`
	UTI      string `json:"uti"`
	Ver      string `json:"ver"`
}

// objectID derives a stable service-principal object id from a client
// id, so logs and RBAC messages show the same oid across restarts.
func objectID(clientID string) string {
	s := sha256.Sum256([]byte("azemu-oid:" + strings.ToLower(clientID)))
	b := s[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (e *Emulator) mintAccessToken(tenant, clientID, resource string, lifetime time.Duration) (string, error) {
	now := time.Now()
	var uti [12]byte
	_, _ = rand.Read(uti[:])
	sts := "https://sts.windows.net/" + tenant + "/"
	c := accessClaims{
		Aud: strings.TrimSuffix(resource, "/"), Iss: sts, IDP: sts,
		Iat: now.Unix(), Nbf: now.Unix() - 300, Exp: now.Add(lifetime).Unix(),
		AppID: clientID, AppIDACR: "2", IDType: "app",
		OID: objectID(clientID), Sub: objectID(clientID), TID: tenant,
		UTI: base64.RawURLEncoding.EncodeToString(uti[:]), Ver: "1.0",
	}
	hb, err := json.Marshal(map[string]string{"typ": "JWT", "alg": "ES256", "kid": "azemu"})
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	d := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, e.tokKey, d[:])
	if err != nil {
		return "", fmt.Errorf("azemu: sign token: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

var (
	errTokenInvalid = errors.New("token is not valid")
	errTokenExpired = errors.New("token expired")
)

// verifyAccessToken checks the signature and lifetime; audience and tenant
// are checked by the caller, which knows the vault.
func (e *Emulator) verifyAccessToken(tok string) (*accessClaims, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errTokenInvalid
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, errTokenInvalid
	}
	d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(&e.tokKey.PublicKey, d[:], r, s) {
		return nil, errTokenInvalid
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errTokenInvalid
	}
	var c accessClaims
	if err := json.Unmarshal(cb, &c); err != nil {
		return nil, errTokenInvalid
	}
	now := time.Now().Unix()
	if now >= c.Exp || now < c.Nbf {
		return &c, errTokenExpired
	}
	return &c, nil
}
