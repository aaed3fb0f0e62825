package azemu_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/azemu"
)

func TestGetSecret(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f := newFixture(t)
			c := f.client(t, m)
			ctx := testCtx(t)

			resp, err := c.GetSecret(ctx, pgSecret, "", nil)
			if err != nil {
				t.Fatalf("GetSecret: %v", err)
			}
			type got struct {
				Value, ContentType, Name string
				VersionLen               int
				Enabled                  bool
				Tags                     map[string]string
			}
			g := got{Value: *resp.Value, ContentType: *resp.ContentType, Name: resp.ID.Name(), VersionLen: len(resp.ID.Version()), Enabled: *resp.Attributes.Enabled, Tags: map[string]string{}}
			for k, v := range resp.Tags {
				g.Tags[k] = *v
			}
			want := got{Value: pgValue, ContentType: "application/json", Name: pgSecret, VersionLen: 32, Enabled: true, Tags: map[string]string{"app": "pg"}}
			if diff := cmp.Diff(want, g); diff != "" {
				t.Errorf("latest secret (-want +got):\n%s", diff)
			}
			if m == proxyMode && !strings.HasPrefix(string(*resp.ID), "https://homelab-kv.vault.azure.net/secrets/app-pgsql/") {
				t.Errorf("id = %s, want the real vault URL", *resp.ID)
			}

			old, err := c.GetSecret(ctx, pgSecret, "0123456789abcdef0123456789abcdef", nil)
			if err != nil {
				t.Fatalf("GetSecret(version): %v", err)
			}
			if diff := cmp.Diff("old-password", *old.Value); diff != "" {
				t.Errorf("old version (-want +got):\n%s", diff)
			}

			st := f.emu.Stats()
			wantClasses := map[azemu.Class]int64{azemu.ClassKVChallenge: 1, azemu.ClassToken: 1, azemu.ClassKVGet: 2, azemu.ClassOIDCMetadata: 1}
			if m == proxyMode {
				// Instance discovery may be asked more than once.
				if st.Classes[azemu.ClassInstanceDiscovery].Requests < 1 {
					t.Errorf("no instance discovery in proxy mode: %+v", st.Classes)
				}
			}
			gotClasses := map[azemu.Class]int64{}
			for k := range wantClasses {
				gotClasses[k] = st.Classes[k].Requests
			}
			if diff := cmp.Diff(wantClasses, gotClasses); diff != "" {
				t.Errorf("request counts (-want +got):\n%s", diff)
			}
		})
	}
}
