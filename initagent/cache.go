package initagent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// askCache reads ids from the cache into results. It returns the ids to
// read from Azure directly: all of them when the cache cannot answer, and
// those it had no answer from Azure for; none when the spec requires the
// cache, whose failures are then problems.
func (a *Agent) askCache(ctx context.Context, c *keyvault.CacheClient, ids []spec.SecretID, results map[spec.SecretID]*fetchResult) (direct []spec.SecretID, problems []keyvault.Problem) {
	log := a.o.Logger
	required := a.o.Spec.Cache.Required
	t0 := time.Now()
	answers, err := c.Read(ctx, ids)
	if err == nil {
		answers = a.askAgain(ctx, c, ids, answers)
	}
	if err != nil {
		if required {
			return nil, a.cacheProblems(c, err, ids)
		}
		kv := []any{"cache", c.Host(), "reason", err.Error()}
		var cu *keyvault.CacheUnavailableError
		if errors.As(err, &cu) && cu.Reason != "" {
			kv = append(kv, "refusal", cu.Reason)
		}
		log.Info("the cache did not answer: reading from Azure directly", kv...)
		return ids, nil
	}
	served, stale := 0, 0
	for i, id := range ids {
		r := answers[i]
		if r.Error != nil {
			ce := &keyvault.CacheSecretError{Answer: *r.Error}
			if ce.Outage() && !required {
				log.Info("the cache has no value: reading it from Azure directly", "vault", keyvault.Host(id.Vault), "name", id.Name,
					"status", ce.Answer.Status, "code", ce.Answer.Code, "reason", ce.Answer.Cause)
				direct = append(direct, id)
				continue
			}
			results[id] = &fetchResult{err: ce, at: &keyvault.Attempts{}}
			continue
		}
		served++
		s := keyvault.Secret{Value: r.Value, Version: r.Version, ContentType: r.ContentType}
		if r.Created > 0 {
			s.Created = time.Unix(r.Created, 0)
		}
		results[id] = &fetchResult{secret: s, at: &keyvault.Attempts{}}
		if r.Stale {
			stale++
			log.Info("the cache served a stale value: it could not reach Azure to renew it", "vault", keyvault.Host(id.Vault), "name", id.Name,
				"version", r.Version, "ageSeconds", r.AgeSeconds)
		} else {
			log.V(a.fetchLogV).Info("fetched secret", "vault", keyvault.Host(id.Vault), "name", id.Name, "version", r.Version,
				"bytes", len(r.Value), "from", "cache", "ageSeconds", r.AgeSeconds)
		}
	}
	log.V(a.fetchLogV).Info("asked the cache", "cache", c.Host(), "secrets", len(ids), "served", served, "stale", stale,
		"direct", len(direct), "durationMs", time.Since(t0).Milliseconds())
	a.fromCache.served += served
	a.fromCache.stale += stale
	return direct, nil
}

// askAgain asks the cache once more, on a new connection, for the secrets
// it had no value for because it could not reach Azure. Each replica of
// the cache holds what it read itself, and the Service sends a new
// connection to any replica: one that never read a secret has nothing to
// serve during an outage while another still holds the value. Without it
// a pod that drew such a replica read Azure directly, failing for as long
// as the outage lasted.
func (a *Agent) askAgain(ctx context.Context, c *keyvault.CacheClient, ids []spec.SecretID, answers []cacheapi.Result) []cacheapi.Result {
	var again []spec.SecretID
	var at []int
	for i, r := range answers {
		if r.Error != nil && (&keyvault.CacheSecretError{Answer: *r.Error}).Outage() {
			again, at = append(again, ids[i]), append(at, i)
		}
	}
	if len(again) == 0 {
		return answers
	}
	c.CloseIdle()
	more, err := c.Read(ctx, again)
	if err != nil {
		a.o.Logger.Info("asked the cache again on a new connection: no answer", "secrets", len(again), "reason", err.Error())
		return answers
	}
	got := 0
	for j, r := range more {
		if r.Error == nil {
			answers[at[j]] = r
			got++
		}
	}
	a.o.Logger.Info("asked the cache again on a new connection, as another replica may hold what this one could not read",
		"secrets", len(again), "served", got)
	return answers
}

// cacheProblems is a required cache that did not answer, said once per
// vault it kept from reading.
func (a *Agent) cacheProblems(c *keyvault.CacheClient, err error, ids []spec.SecretID) []keyvault.Problem {
	fix := fmt.Sprintf("the pod requires the cache (%s: %q): check that it runs (kubectl -n kvinject-system get pods -l app.kubernetes.io/component=cache) "+
		"and that the pod's namespace may reach it; or set %s: %q to read from Azure directly when the cache cannot answer",
		spec.AnnotationCache, spec.CacheRequired, spec.AnnotationCache, spec.CacheOn)
	var cu *keyvault.CacheUnavailableError
	if errors.As(err, &cu) && cu.Status == http.StatusUnauthorized {
		fix = "the cache accepts only a live token of a running pod for the audience " + spec.TokenAudience +
			": check the pod's projected token (the cache's log names the exact reason)"
	}
	var problems []keyvault.Problem
	for _, v := range distinctVaults(ids) {
		problems = append(problems, keyvault.Problem{Vault: v, Secret: secretsOf(ids, v), Cause: err.Error(), Fix: fix})
	}
	return problems
}
