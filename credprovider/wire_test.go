package credprovider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

// plantedToken stands for a token in tests of the wire format.
const plantedToken = "header.payload-planted-token.signature"

// TestRequestMatchesKubelet encodes what the kubelet sends with its own v1
// type and decodes it with DecodeRequest.
func TestRequestMatchesKubelet(t *testing.T) {
	sent := kubeletv1.CredentialProviderRequest{
		TypeMeta:                  metav1.TypeMeta{APIVersion: kubeletv1.SchemeGroupVersion.String(), Kind: "CredentialProviderRequest"},
		Image:                     "mirror.example.com:5000/team/app",
		ServiceAccountToken:       plantedToken,
		ServiceAccountAnnotations: map[string]string{"azure.workload.identity/client-id": "x", "kvinject.io/pull-secret": "y"},
	}
	data, err := json.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := Request{APIVersion: APIVersion, Kind: KindRequest, Image: sent.Image, ServiceAccountToken: plantedToken,
		ServiceAccountAnnotations: sent.ServiceAccountAnnotations}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

// TestGoldenRequestsMatchKubelet: every golden request decodes strictly
// into the kubelet's type, so the files are what a kubelet can send.
func TestGoldenRequestsMatchKubelet(t *testing.T) {
	files, err := filepath.Glob("testdata/*.request.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden requests: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		var r kubeletv1.CredentialProviderRequest
		if err := dec.Decode(&r); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestResponseMatchesKubelet: every field of the kubelet's response type
// round-trips through Response, and back.
func TestResponseMatchesKubelet(t *testing.T) {
	want := kubeletv1.CredentialProviderResponse{
		TypeMeta:      metav1.TypeMeta{APIVersion: kubeletv1.SchemeGroupVersion.String(), Kind: "CredentialProviderResponse"},
		CacheKeyType:  kubeletv1.RegistryPluginCacheKeyType,
		CacheDuration: &metav1.Duration{Duration: 90 * time.Second},
		Auth:          map[string]kubeletv1.AuthConfig{"*.example.com:5000/team": {Username: "u", Password: "p"}},
	}
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var ours Response
	if err := dec.Decode(&ours); err != nil {
		t.Fatalf("Response does not read the kubelet's response: %v", err)
	}
	var b bytes.Buffer
	if err := ours.Encode(&b); err != nil {
		t.Fatal(err)
	}
	dec = json.NewDecoder(&b)
	dec.DisallowUnknownFields()
	var got kubeletv1.CredentialProviderResponse
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("the kubelet's type does not read Response: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if CacheKeyImage != string(kubeletv1.ImagePluginCacheKeyType) || CacheKeyRegistry != string(kubeletv1.RegistryPluginCacheKeyType) ||
		CacheKeyGlobal != string(kubeletv1.GlobalPluginCacheKeyType) {
		t.Error("the cache key types differ from the kubelet's")
	}
}

func TestDecodeRequest(t *testing.T) {
	valid := `{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"r.example.com/a","serviceAccountToken":"` + plantedToken + `"`
	tests := []struct {
		name, in string
		wantErr  string
	}{
		{"valid", valid + `}`, ""},
		{"unknown fields of a newer kubelet", valid + `,"newField":{"x":1}}`, ""},
		{"not JSON", `{"serviceAccountToken":"` + plantedToken + `"`, "bad CredentialProviderRequest: stdin is not a JSON object of CredentialProviderRequest fields (63 bytes)"},
		{"wrong type", `{"image":7,"serviceAccountToken":"` + plantedToken + `"}`, "bad CredentialProviderRequest: stdin is not a JSON object of CredentialProviderRequest fields (74 bytes)"},
		{"v1beta1", strings.Replace(valid, `/v1"`, `/v1beta1"`, 1) + `}`, `bad CredentialProviderRequest: got apiVersion "credentialprovider.kubelet.k8s.io/v1beta1" kind "CredentialProviderRequest", want credentialprovider.kubelet.k8s.io/v1 CredentialProviderRequest: set apiVersion: credentialprovider.kubelet.k8s.io/v1 for this provider in the kubelet's CredentialProviderConfig`},
		{"wrong kind", strings.Replace(valid, `"CredentialProviderRequest"`, `"CredentialProviderResponse"`, 1) + `}`, `bad CredentialProviderRequest: got apiVersion "credentialprovider.kubelet.k8s.io/v1" kind "CredentialProviderResponse", want credentialprovider.kubelet.k8s.io/v1 CredentialProviderRequest: set apiVersion: credentialprovider.kubelet.k8s.io/v1 for this provider in the kubelet's CredentialProviderConfig`},
		{"no image", strings.Replace(valid, `"r.example.com/a"`, `""`, 1) + `}`, "bad CredentialProviderRequest: no image"},
		{"too big", valid + `,"pad":"` + strings.Repeat("x", MaxRequestBytes) + `"}`, fmt.Sprintf("bad CredentialProviderRequest: more than %d bytes on stdin", MaxRequestBytes)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeRequest(strings.NewReader(tt.in))
			got := ""
			if err != nil {
				got = err.Error()
				if !errors.Is(err, ErrRequest) {
					t.Errorf("error %v is not ErrRequest", err)
				}
			} else if req.ServiceAccountToken != plantedToken {
				t.Errorf("token not decoded")
			}
			if diff := cmp.Diff(tt.wantErr, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRequestFormatting: no format verb prints the token.
func TestRequestFormatting(t *testing.T) {
	r := Request{APIVersion: APIVersion, Kind: KindRequest, Image: "r.example.com/a", ServiceAccountToken: plantedToken}
	a := AuthConfig{Username: "u", Password: "planted-password"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, r); strings.Contains(s, plantedToken) {
			t.Errorf("%s of a Request prints the token: %s", verb, s)
		}
		if s := fmt.Sprintf(verb, a); strings.Contains(s, "planted-password") {
			t.Errorf("%s of an AuthConfig prints the password: %s", verb, s)
		}
	}
}

// FuzzRequest: DecodeRequest never panics, never quotes the input in an
// error (it holds the token), and a request it accepts encodes and decodes
// to itself.
func FuzzRequest(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.request.json")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(bytes.ReplaceAll(b, []byte("TOKEN apps:"), []byte(plantedToken)))
		}
	}
	f.Add([]byte(`{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"x","serviceAccountToken":"` + plantedToken + `"}`))
	f.Add([]byte(`{"serviceAccountToken":"` + plantedToken + `",}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(bytes.NewReader(data))
		if err != nil {
			if strings.Contains(err.Error(), plantedToken) {
				t.Fatalf("error quotes the token: %v", err)
			}
			return
		}
		if req.APIVersion != APIVersion || req.Kind != KindRequest || req.Image == "" {
			t.Fatalf("accepted %v", req)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeRequest(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("re-encoded request refused: %v", err)
		}
		if diff := cmp.Diff(req, back, cmp.Comparer(func(a, b map[string]string) bool { return cmp.Equal(a, b) || len(a)+len(b) == 0 })); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
