package initagent

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// Check prints what Run would fetch and write, and the identity it would
// use, without any network access. Identity problems are printed as
// warnings: --check also runs outside the pod.
func (a *Agent) Check() error {
	o, id := a.o, a.identity
	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	pf := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }

	pf("spec %s is valid: %d file(s) into %s (seen by containers %s at %s)\n", o.Spec.Version, len(o.Spec.Files), o.Dir,
		orAll(o.Spec.Containers), o.Spec.MountPath)
	discovery := "instance discovery on"
	if id.KnownCloud() {
		discovery = "instance discovery skipped"
	}
	pf("cloud %s: authority %s (%s), Key Vault token scope %s\n", o.Cloud.Name, id.AuthorityHost, discovery, keyvault.Scope(o.Cloud))
	pf("identity: client id %s, tenant %s, token file %s\n", orUnset(id.ClientID), orUnset(id.TenantID), id.TokenFile)
	if tc, err := keyvault.ReadTokenClaims(id.TokenFile); err == nil {
		pf("token: %s\n", tc)
	} else {
		pf("token: not readable here (%s)\n", firstLine(err.Error()))
	}
	for _, p := range identityProblems(id, o.Spec, o.Env) {
		pf("warning: %s\n", spaces.ReplaceAllString(p, " "))
	}

	ids := o.Spec.SecretIDs()
	pf("\nwould fetch %d secret version(s), at most %d at a time, within %v:\n", len(ids), o.Concurrency, o.Timeout)
	pf("  VAULT\tSECRET\tVERSION\n")
	for _, sid := range ids {
		v := sid.Version
		if v == "" {
			v = "latest"
		}
		pf("  %s\t%s\t%s\n", keyvault.Host(sid.Vault), sid.Name, v)
	}

	pf("\nwould write %d file(s) into %s, all or none:\n", len(o.Spec.Files), o.Dir)
	pf("  FILE\tMODE\tCONTENT\n")
	for _, f := range o.Spec.Files {
		if f.Secret != nil {
			pf("  %s\t%s\t%s\n", f.Name, f.Mode, describeRef(*f.Secret))
			continue
		}
		args := make([]string, 0, len(f.Refs))
		for k := range f.Refs {
			args = append(args, k)
		}
		sort.Strings(args)
		pf("  %s\t%s\ttemplate (%d lines) reading %d reference(s)\n", f.Name, f.Mode, strings.Count(f.Template, "\n")+1, len(args))
		for _, k := range args {
			pf("  \t\t  secret %s -> %s\n", strconv.Quote(k), describeRef(f.Refs[k]))
		}
	}
	return w.Flush()
}

func describeRef(r spec.Ref) string {
	s := keyvault.Host(r.Vault) + " " + r.Name
	if r.Version != "" {
		s += "/" + r.Version
	}
	if r.Path == "" {
		return s + " (whole value)"
	}
	return s + " property " + r.Path
}

func orUnset(s string) string {
	if s == "" {
		return "(not set)"
	}
	return s
}

func orAll(cs []string) string {
	if len(cs) == 0 {
		return "(all)"
	}
	return strings.Join(cs, ",")
}

// spaces are what a warning line must not break on.
var spaces = regexp.MustCompile(`[\r\n\t]+`)
