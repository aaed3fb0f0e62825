package azemu

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// Cloud names, as used by kvinject's --cloud flag.
const (
	CloudPublic       = "AzurePublicCloud"
	CloudChina        = "AzureChinaCloud"
	CloudUSGovernment = "AzureUSGovernment"
)

// Role names understood by the emulated Key Vault RBAC.
const (
	RoleSecretsUser    = "Key Vault Secrets User"
	RoleSecretsOfficer = "Key Vault Secrets Officer"
	RoleAdministrator  = "Key Vault Administrator"
	RoleReader         = "Key Vault Reader"
)

// DefaultFederatedAudience is the only audience Entra ID accepts for
// federated credentials by default.
const DefaultFederatedAudience = "api://AzureADTokenExchange"

// Config is the directory and vault content the emulator serves. It loads
// from YAML or JSON (LoadConfig) and can be built directly in Go tests.
type Config struct {
	Tenants    []Tenant   `json:"tenants"`
	Identities []Identity `json:"identities,omitempty"`
	Vaults     []Vault    `json:"vaults,omitempty"`
	// IssuerTrust says which CAs to trust when fetching OIDC discovery and
	// JWKS documents from federated-credential issuers (e.g. a
	// kube-apiserver's CA). System roots are always trusted too.
	IssuerTrust IssuerTrust `json:"issuerTrust,omitempty"`
}

// Tenant is an Entra ID tenant (directory).
type Tenant struct {
	ID          string `json:"id"`
	DisplayName string `json:"displayName,omitempty"`
}

// Identity is an application registration or user-assigned managed
// identity that a workload signs in as.
type Identity struct {
	ClientID             string                `json:"clientID"`
	Tenant               string                `json:"tenant"`
	DisplayName          string                `json:"displayName,omitempty"`
	FederatedCredentials []FederatedCredential `json:"federatedCredentials,omitempty"`
}

// FederatedCredential trusts tokens from an external issuer. Issuer and
// Subject are compared exactly, like Entra ID. Audiences defaults to
// [DefaultFederatedAudience].
type FederatedCredential struct {
	Name      string   `json:"name"`
	Issuer    string   `json:"issuer"`
	Subject   string   `json:"subject"`
	Audiences []string `json:"audiences,omitempty"`
}

// Vault is a Key Vault in RBAC permission mode.
type Vault struct {
	Name string `json:"name"`
	// Tenant is the vault's tenant; tokens from other tenants are refused.
	Tenant string `json:"tenant"`
	// Cloud selects the DNS suffix and token audience; default
	// CloudPublic.
	Cloud           string           `json:"cloud,omitempty"`
	RoleAssignments []RoleAssignment `json:"roleAssignments,omitempty"`
	Secrets         []Secret         `json:"secrets,omitempty"`
}

// RoleAssignment grants a role on the whole vault to an identity.
type RoleAssignment struct {
	ClientID string `json:"clientID"`
	Role     string `json:"role"`
}

// Secret is a named secret with its versions, oldest first: the last
// enabled-or-not version is the "latest" one, as in Key Vault.
type Secret struct {
	Name     string          `json:"name"`
	Versions []SecretVersion `json:"versions"`
}

// SecretVersion is one version of a secret.
type SecretVersion struct {
	// Version is 32 lowercase hex digits; generated when empty.
	Version     string            `json:"version,omitempty"`
	Value       string            `json:"value"`
	ContentType string            `json:"contentType,omitempty"`
	Enabled     *bool             `json:"enabled,omitempty"` // default true
	Tags        map[string]string `json:"tags,omitempty"`
	// NotBefore and Expires are optional Unix times (attributes nbf, exp).
	NotBefore *int64 `json:"nbf,omitempty"`
	Expires   *int64 `json:"exp,omitempty"`
	// Certificate makes this the secret behind a certificate object, as
	// az keyvault certificate import leaves it: Value is the whole
	// certificate with its key, ContentType application/x-pkcs12 (base64)
	// or application/x-pem-file, and Key Vault answers with managed true
	// and the certificate key's kid.
	Certificate bool `json:"certificate,omitempty"`
}

// IssuerTrust lists extra CAs for reaching https issuers.
type IssuerTrust struct {
	// CAFile is a PEM bundle path.
	CAFile string `json:"caFile,omitempty"`
	// CAPEM is an inline PEM bundle.
	CAPEM string `json:"caPEM,omitempty"`
}

// ErrInvalidConfig wraps every configuration validation failure.
var ErrInvalidConfig = errors.New("azemu: invalid config")

// LoadConfig reads a YAML or JSON config file. Unknown fields are errors,
// so a typo does not silently drop a role assignment.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("azemu: read config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses YAML or JSON and validates it.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

var (
	guidRE      = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	vaultNameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$`)
	secretRE    = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)
	versionRE   = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// Validate checks the config the way Azure would have refused to create
// it: GUIDs, vault and secret names, https issuers, known roles and clouds,
// references to existing tenants.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	tenants := map[string]bool{}
	for _, t := range c.Tenants {
		if !guidRE.MatchString(t.ID) {
			bad("tenant %q: id must be a GUID", t.ID)
		}
		tenants[strings.ToLower(t.ID)] = true
	}
	clients := map[string]bool{}
	for _, id := range c.Identities {
		errs = append(errs, id.validate(tenants, clients)...)
	}
	vaults := map[string]bool{}
	for _, v := range c.Vaults {
		errs = append(errs, v.validate(tenants, vaults)...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

// validate checks an identity against the tenants, and records its client
// id in clients, which must not hold it yet.
func (id Identity) validate(tenants, clients map[string]bool) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !guidRE.MatchString(id.ClientID) {
		bad("identity %q: clientID must be a GUID", id.ClientID)
	}
	if clients[strings.ToLower(id.ClientID)] {
		bad("identity %q: duplicate clientID", id.ClientID)
	}
	clients[strings.ToLower(id.ClientID)] = true
	if !tenants[strings.ToLower(id.Tenant)] {
		bad("identity %q: unknown tenant %q", id.ClientID, id.Tenant)
	}
	for _, fc := range id.FederatedCredentials {
		if err := fc.validate(); err != nil {
			bad("identity %q: %w", id.ClientID, err)
		}
	}
	return errs
}

// validate checks a vault against the tenants, and records its name in
// vaults, which must not hold it yet.
func (v Vault) validate(tenants, vaults map[string]bool) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !vaultNameRE.MatchString(v.Name) {
		bad("vault %q: name must be 3-24 letters, digits and dashes, starting with a letter", v.Name)
	}
	if vaults[strings.ToLower(v.Name)] {
		bad("vault %q: duplicate name", v.Name)
	}
	vaults[strings.ToLower(v.Name)] = true
	if !tenants[strings.ToLower(v.Tenant)] {
		bad("vault %q: unknown tenant %q", v.Name, v.Tenant)
	}
	if _, ok := cloudFor(cloudOrDefault(v.Cloud)); !ok {
		bad("vault %q: unknown cloud %q (want %s, %s or %s)", v.Name, v.Cloud, CloudPublic, CloudChina, CloudUSGovernment)
	}
	for _, ra := range v.RoleAssignments {
		if _, ok := roleActions(ra.Role); !ok {
			bad("vault %q: unknown role %q", v.Name, ra.Role)
		}
		if !guidRE.MatchString(ra.ClientID) {
			bad("vault %q: role assignment clientID %q must be a GUID", v.Name, ra.ClientID)
		}
	}
	names := map[string]bool{}
	for _, s := range v.Secrets {
		if !secretRE.MatchString(s.Name) {
			bad("vault %q: secret name %q must be 1-127 letters, digits and dashes", v.Name, s.Name)
		}
		if names[strings.ToLower(s.Name)] {
			bad("vault %q: duplicate secret %q", v.Name, s.Name)
		}
		names[strings.ToLower(s.Name)] = true
		for _, sv := range s.Versions {
			if sv.Version != "" && !versionRE.MatchString(sv.Version) {
				bad("vault %q: secret %q: version %q must be 32 lowercase hex digits", v.Name, s.Name, sv.Version)
			}
		}
	}
	return errs
}

func (fc FederatedCredential) validate() error {
	u, err := url.Parse(fc.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("federated credential %q: issuer %q must be an https URL", fc.Name, fc.Issuer)
	}
	if fc.Subject == "" {
		return fmt.Errorf("federated credential %q: subject is required", fc.Name)
	}
	return nil
}

func (fc FederatedCredential) audiences() []string {
	if len(fc.Audiences) == 0 {
		return []string{DefaultFederatedAudience}
	}
	return fc.Audiences
}

// cloudInfo holds per-cloud host names.
type cloudInfo struct {
	loginHost   string // authority host
	vaultSuffix string // DNS suffix, with leading dot
	resource    string // token audience
	challengeAS string // authorization in the challenge (without tenant)
}

// cloudNames lists the supported clouds. Functions, not package maps, keep
// these tables immutable.
func cloudNames() []string { return []string{CloudPublic, CloudChina, CloudUSGovernment} }

func cloudFor(name string) (cloudInfo, bool) {
	switch name {
	case CloudPublic:
		return cloudInfo{"login.microsoftonline.com", ".vault.azure.net", "https://vault.azure.net", "https://login.windows.net"}, true
	case CloudChina:
		return cloudInfo{"login.chinacloudapi.cn", ".vault.azure.cn", "https://vault.azure.cn", "https://login.chinacloudapi.cn"}, true
	case CloudUSGovernment:
		return cloudInfo{"login.microsoftonline.us", ".vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net", "https://login.microsoftonline.us"}, true
	}
	return cloudInfo{}, false
}

// mustCloud is for names already validated.
func mustCloud(name string) cloudInfo {
	c, _ := cloudFor(name)
	return c
}

func cloudOrDefault(c string) string {
	if c == "" {
		return CloudPublic
	}
	return c
}

// roleActions returns the data actions a role grants on secrets.
func roleActions(role string) ([]string, bool) {
	switch role {
	case RoleSecretsUser:
		return []string{actionGetSecret, actionReadMetadata}, true
	case RoleSecretsOfficer, RoleAdministrator:
		return []string{actionGetSecret, actionReadMetadata, actionSetSecret}, true
	case RoleReader:
		return []string{actionReadMetadata}, true
	}
	return nil, false
}

const (
	actionGetSecret    = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
	actionReadMetadata = "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
	actionSetSecret    = "Microsoft.KeyVault/vaults/secrets/setSecret/action"
)

// newVersionID returns 32 lowercase hex digits, the shape of a Key Vault
// secret version.
func newVersionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
