package cacheserver

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestCreatedTravelsWithTheValue: the answer carries Key Vault's created
// time of the version it serves, read, from memory and stale alike, so
// that an agent can tell a rotated-out version from the current one.
func TestCreatedTravelsWithTheValue(t *testing.T) {
	env := newTestEnv(t, nil)
	before := time.Now().Unix()
	version, err := env.emu.SetSecret(vaultName, "db-password", "rotated-value", "")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().Unix()
	tok := env.token(t, "web")
	read := env.post(t, tok, request("db-password"))
	wantOK(t, read)
	env.clock.Advance(time.Minute)
	hit := env.post(t, tok, request("db-password"))
	wantOK(t, hit)
	env.down.Store(true)
	env.clock.Advance(2 * time.Hour)
	stale := env.post(t, tok, request("db-password"))
	wantOK(t, stale)

	type got struct {
		Version string
		Stale   bool
		Created int64
	}
	r := read.resp.Secrets[0]
	if r.Created < before || r.Created > after {
		t.Errorf("created %d, want the rotation's time, within [%d, %d]", r.Created, before, after)
	}
	want := []got{{version, false, r.Created}, {version, false, r.Created}, {version, true, r.Created}}
	var gotAll []got
	for _, a := range []answer{read, hit, stale} {
		s := a.resp.Secrets[0]
		gotAll = append(gotAll, got{s.Version, s.Stale, s.Created})
	}
	if diff := cmp.Diff(want, gotAll); diff != "" {
		t.Errorf("read, hit and stale answers (-want +got):\n%s", diff)
	}
}
