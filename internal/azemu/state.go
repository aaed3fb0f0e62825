package azemu

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// state is the live directory and vault content, mutable at run time.
// Keys are lower-cased: GUIDs, vault and secret names are case-insensitive
// in Azure.
type state struct {
	mu         sync.RWMutex
	tenants    map[string]Tenant
	identities map[string]Identity
	vaults     map[string]*vaultState
}

type vaultState struct {
	name, tenant, cloud string
	roles               map[string]map[string]bool // client id -> role -> true
	secrets             map[string]*secretState
}

type secretState struct {
	name     string
	versions []*versionState // oldest first
}

type versionState struct {
	SecretVersion
	created, updated int64
}

func (s *state) load(c Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tenants = map[string]Tenant{}
	s.identities = map[string]Identity{}
	s.vaults = map[string]*vaultState{}
	for _, t := range c.Tenants {
		s.tenants[strings.ToLower(t.ID)] = t
	}
	for _, id := range c.Identities {
		s.identities[strings.ToLower(id.ClientID)] = cloneIdentity(id)
	}
	now := time.Now().Unix()
	for _, v := range c.Vaults {
		vs := &vaultState{
			name:    strings.ToLower(v.Name),
			tenant:  strings.ToLower(v.Tenant),
			cloud:   cloudOrDefault(v.Cloud),
			roles:   map[string]map[string]bool{},
			secrets: map[string]*secretState{},
		}
		for _, ra := range v.RoleAssignments {
			k := strings.ToLower(ra.ClientID)
			if vs.roles[k] == nil {
				vs.roles[k] = map[string]bool{}
			}
			vs.roles[k][ra.Role] = true
		}
		for _, sec := range v.Secrets {
			ss := &secretState{name: sec.Name}
			for i, sv := range sec.Versions {
				sv.Tags = maps.Clone(sv.Tags)
				if sv.Version == "" {
					sv.Version = newVersionID()
				}
				// Older versions get older timestamps, so "created" orders
				// like the configured list.
				ts := now - int64(len(sec.Versions)-i)
				ss.versions = append(ss.versions, &versionState{SecretVersion: sv, created: ts, updated: ts})
			}
			vs.secrets[strings.ToLower(sec.Name)] = ss
		}
		s.vaults[vs.name] = vs
	}
	return nil
}

func cloneIdentity(id Identity) Identity {
	id.FederatedCredentials = slices.Clone(id.FederatedCredentials)
	for i := range id.FederatedCredentials {
		id.FederatedCredentials[i].Audiences = slices.Clone(id.FederatedCredentials[i].Audiences)
	}
	return id
}

func enabled(sv SecretVersion) bool { return sv.Enabled == nil || *sv.Enabled }

// SetSecret adds a new enabled version to a secret (creating the secret if
// needed) and returns its version id.
func (e *Emulator) SetSecret(vault, name, value, contentType string) (string, error) {
	return e.AddSecretVersion(vault, name, SecretVersion{Value: value, ContentType: contentType})
}

// AddSecretVersion adds sv as the latest version of a secret (creating the
// secret if needed) and returns its version id, generated when empty.
func (e *Emulator) AddSecretVersion(vault, name string, sv SecretVersion) (string, error) {
	if !secretRE.MatchString(name) {
		return "", fmt.Errorf("%w: secret name %q", ErrInvalidConfig, name)
	}
	if sv.Version == "" {
		sv.Version = newVersionID()
	} else if !versionRE.MatchString(sv.Version) {
		return "", fmt.Errorf("%w: version %q must be 32 lowercase hex digits", ErrInvalidConfig, sv.Version)
	}
	if ct, _, _ := strings.Cut(sv.ContentType, ";"); sv.Certificate && ct != "application/x-pkcs12" && ct != "application/x-pem-file" {
		return "", fmt.Errorf("%w: a certificate's secret has content type application/x-pkcs12 or application/x-pem-file, not %q", ErrInvalidConfig, sv.ContentType)
	}
	sv.Tags = maps.Clone(sv.Tags)
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	v, ok := e.state.vaults[strings.ToLower(vault)]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownVault, vault)
	}
	s := v.secrets[strings.ToLower(name)]
	if s == nil {
		s = &secretState{name: name}
		v.secrets[strings.ToLower(name)] = s
	}
	now := time.Now().Unix()
	s.versions = append(s.versions, &versionState{SecretVersion: sv, created: now, updated: now})
	return sv.Version, nil
}

// DeleteSecret deletes a secret with all its versions, as az keyvault
// secret delete does: from then on Key Vault answers 404 SecretNotFound for
// it (the soft-deleted secret is not readable).
func (e *Emulator) DeleteSecret(vault, name string) error {
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	v, ok := e.state.vaults[strings.ToLower(vault)]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownVault, vault)
	}
	if v.secrets[strings.ToLower(name)] == nil {
		return fmt.Errorf("%w: %q", ErrUnknownSecret, name)
	}
	delete(v.secrets, strings.ToLower(name))
	return nil
}

// SetSecretEnabled enables or disables one version ("" for the latest).
func (e *Emulator) SetSecretEnabled(vault, name, version string, on bool) error {
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	v, ok := e.state.vaults[strings.ToLower(vault)]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownVault, vault)
	}
	s := v.secrets[strings.ToLower(name)]
	if s == nil || len(s.versions) == 0 {
		return fmt.Errorf("%w: %q", ErrUnknownSecret, name)
	}
	vs := s.versions[len(s.versions)-1]
	if version != "" {
		vs = nil
		for _, x := range s.versions {
			if x.Version == strings.ToLower(version) {
				vs = x
			}
		}
		if vs == nil {
			return fmt.Errorf("%w: %q version %q", ErrUnknownSecret, name, version)
		}
	}
	vs.Enabled = &on
	vs.updated = time.Now().Unix()
	return nil
}

// AddIdentity adds or replaces an identity.
func (e *Emulator) AddIdentity(id Identity) error {
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	c := Config{Identities: []Identity{id}}
	for _, t := range e.state.tenants {
		c.Tenants = append(c.Tenants, t)
	}
	if err := c.Validate(); err != nil {
		return err
	}
	e.state.identities[strings.ToLower(id.ClientID)] = cloneIdentity(id)
	return nil
}

// RemoveIdentity deletes an identity; its tokens already issued stay valid
// until they expire, as in Entra ID.
func (e *Emulator) RemoveIdentity(clientID string) error {
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	k := strings.ToLower(clientID)
	if _, ok := e.state.identities[k]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownIdentity, clientID)
	}
	delete(e.state.identities, k)
	return nil
}

// AddFederatedCredential adds or replaces (by name) a federated credential.
func (e *Emulator) AddFederatedCredential(clientID string, fc FederatedCredential) error {
	if err := fc.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	fc.Audiences = slices.Clone(fc.Audiences)
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	k := strings.ToLower(clientID)
	id, ok := e.state.identities[k]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownIdentity, clientID)
	}
	id.FederatedCredentials = slices.DeleteFunc(slices.Clone(id.FederatedCredentials), func(x FederatedCredential) bool { return x.Name == fc.Name })
	id.FederatedCredentials = append(id.FederatedCredentials, fc)
	e.state.identities[k] = id
	return nil
}

// RemoveFederatedCredential deletes a federated credential by name.
func (e *Emulator) RemoveFederatedCredential(clientID, name string) error {
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	k := strings.ToLower(clientID)
	id, ok := e.state.identities[k]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownIdentity, clientID)
	}
	n := len(id.FederatedCredentials)
	id.FederatedCredentials = slices.DeleteFunc(slices.Clone(id.FederatedCredentials), func(x FederatedCredential) bool { return x.Name == name })
	if len(id.FederatedCredentials) == n {
		return fmt.Errorf("%w: %q has no federated credential %q", ErrUnknownIdentity, clientID, name)
	}
	e.state.identities[k] = id
	return nil
}

// AssignRole grants role on vault to clientID.
func (e *Emulator) AssignRole(vault, clientID, role string) error {
	if _, ok := roleActions(role); !ok {
		return fmt.Errorf("%w: unknown role %q", ErrInvalidConfig, role)
	}
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	v, ok := e.state.vaults[strings.ToLower(vault)]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownVault, vault)
	}
	k := strings.ToLower(clientID)
	if v.roles[k] == nil {
		v.roles[k] = map[string]bool{}
	}
	v.roles[k][role] = true
	return nil
}

// UnassignRole removes role on vault from clientID (no error if absent).
func (e *Emulator) UnassignRole(vault, clientID, role string) error {
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	v, ok := e.state.vaults[strings.ToLower(vault)]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownVault, vault)
	}
	delete(v.roles[strings.ToLower(clientID)], role)
	return nil
}

// allowed reports whether clientID may perform action on the vault.
// Callers hold e.state.mu.
func (v *vaultState) allowed(clientID, action string) bool {
	for role := range v.roles[strings.ToLower(clientID)] {
		if acts, _ := roleActions(role); slices.Contains(acts, action) {
			return true
		}
	}
	return false
}
