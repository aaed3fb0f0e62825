package spec

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Cloud is an Azure cloud: where Entra ID answers and which host suffix its
// vaults have.
type Cloud struct {
	Name          string
	AuthorityHost string // with a trailing slash, as AZURE_AUTHORITY_HOST
	VaultSuffix   string // "vault.azure.net": vaults are https://NAME.<suffix>
}

// The clouds kvinject knows, by the names azure-sdk and az use.
var clouds = map[string]Cloud{
	"AzurePublicCloud":  {Name: "AzurePublicCloud", AuthorityHost: "https://login.microsoftonline.com/", VaultSuffix: "vault.azure.net"},
	"AzureChinaCloud":   {Name: "AzureChinaCloud", AuthorityHost: "https://login.chinacloudapi.cn/", VaultSuffix: "vault.azure.cn"},
	"AzureUSGovernment": {Name: "AzureUSGovernment", AuthorityHost: "https://login.microsoftonline.us/", VaultSuffix: "vault.usgovcloudapi.net"},
}

// DefaultCloud is the public cloud.
const DefaultCloud = "AzurePublicCloud"

// LookupCloud returns the cloud of that name.
func LookupCloud(name string) (Cloud, error) {
	c, ok := clouds[name]
	if !ok {
		return Cloud{}, fmt.Errorf("unknown cloud %q (want one of %s)", name, strings.Join(CloudNames(), ", "))
	}
	return c, nil
}

// Set makes c the cloud of that name. A *Cloud is a flag.Value: every
// program's --cloud reads a name this one way.
func (c *Cloud) Set(name string) error {
	v, err := LookupCloud(name)
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// String is the cloud's name; empty for none.
func (c *Cloud) String() string {
	if c == nil {
		return ""
	}
	return c.Name
}

// CloudUsage is the help of a --cloud flag.
func CloudUsage() string { return "Azure cloud: " + strings.Join(CloudNames(), ", ") }

// PublicCloud is the default cloud.
func PublicCloud() Cloud { return clouds[DefaultCloud] }

// CloudNames lists the known clouds, sorted.
func CloudNames() []string {
	names := make([]string, 0, len(clouds))
	for n := range clouds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ParseAuthorityHost checks an Entra ID authority host and returns it
// ending in "/", as azidentity wants it; empty is the cloud's. The webhook,
// the agent, the cache and the credential provider all read one with it,
// so that a value one of them accepts is accepted by all: the webhook
// cannot admit pods whose agent then refuses to start. A value with a user
// (and so perhaps a password) is refused without being quoted.
func ParseAuthorityHost(raw string, cloud Cloud) (string, error) {
	if raw == "" {
		return cloud.AuthorityHost, nil
	}
	if strings.Contains(raw, "@") {
		return "", fmt.Errorf("must not carry a user or password (the value is not shown): an https URL like %s", cloud.AuthorityHost)
	}
	u, err := url.Parse(raw)
	if err != nil || !strings.HasPrefix(raw, "https://") || u.Host == "" || u.User != nil || strings.ContainsAny(raw, "?#") {
		return "", fmt.Errorf("%q must be an https URL with a host and no user, query or fragment, like %s", raw, cloud.AuthorityHost)
	}
	if !strings.HasSuffix(raw, "/") {
		raw += "/"
	}
	return raw, nil
}
