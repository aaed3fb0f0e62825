package spec

import (
	"fmt"
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

// CloudNames lists the known clouds, sorted.
func CloudNames() []string {
	names := make([]string, 0, len(clouds))
	for n := range clouds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
