package cacheserver

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestVictimKeepsStaleValueAfterAttacker: one namespace's requests cannot
// push another's values out of the store. Past the TTL, during an outage,
// the victim still gets its stale value after the attacker's requests.
func TestVictimKeepsStaleValueAfterAttacker(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*Options)
	}{
		{"by entries", func(o *Options) { o.MaxEntries = 6 }},
		{"by bytes", func(o *Options) { o.MaxBytes = 6 * 1400 }}, // 6 entries of about 1.3 KB
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, tt.mutate)
			var names []string
			for i := range 10 {
				name := fmt.Sprintf("batch-%d", i)
				if _, err := env.emu.SetSecret(vaultName, name, fmt.Sprintf("%01000d", i), ""); err != nil {
					t.Fatal(err)
				}
				names = append(names, name)
			}
			if _, err := env.emu.SetSecret(vaultName, "db-password", dbPassword+fmt.Sprintf("%0990d", 0), ""); err != nil {
				t.Fatal(err)
			}
			victim, attacker := env.token(t, "web"), env.tokenIn(t, "batch", "loader")
			wantOK(t, env.post(t, victim, request("db-password")))
			// The attacker's namespace asks for ten values, five at a time,
			// all more recent than the victim's one.
			for i := 0; i < len(names); i += 5 {
				wantOK(t, env.post(t, attacker, request(names[i:i+5]...)))
			}
			env.down.Store(true)
			env.clock.Advance(time.Hour + time.Minute)
			got := brief(env.post(t, victim, request("db-password")))
			if len(got) == 1 && len(got[0].Value) > len(dbPassword) {
				got[0].Value = got[0].Value[:len(dbPassword)]
			}
			if diff := cmp.Diff([]seen{{Name: "db-password", Value: dbPassword, Stale: true, Age: 3660}}, got); diff != "" {
				t.Errorf("the victim during an outage, after the attacker's requests (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStoreEvictsLargestNamespace: the namespace holding the most loses
// its least recently used entry; a namespace under its share loses none.
func TestStoreEvictsLargestNamespace(t *testing.T) {
	s := newStore(4, 1<<20, nil)
	put := func(ns, name string) {
		s.put(entry{key: entryKey{identityKey: identityKey{Subject: "system:serviceaccount:" + ns + ":sa"}, Name: name}, value: "v"})
	}
	has := func(ns, name string) bool {
		_, ok := s.get(entryKey{identityKey: identityKey{Subject: "system:serviceaccount:" + ns + ":sa"}, Name: name})
		return ok
	}
	put("a", "a1")
	put("b", "b1")
	put("b", "b2")
	put("b", "b3")
	put("b", "b4") // five: b, holding four, loses b1
	put("c", "c1") // five: b, holding three, loses b2
	got := []bool{has("a", "a1"), has("b", "b1"), has("b", "b2"), has("b", "b3"), has("b", "b4"), has("c", "c1")}
	if diff := cmp.Diff([]bool{true, false, false, true, true, true}, got); diff != "" {
		t.Errorf("a1 b1 b2 b3 b4 c1 held (-want +got):\n%s", diff)
	}
}
