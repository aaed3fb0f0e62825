package cacheserver

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/cachetest"
)

var ignoreFuncs = cmpopts.IgnoreFields(Options{}, "Now", "Logger")

// TestCompleteTwice: completing completed options changes nothing, so the
// command and New may both complete them. Before Complete existed,
// validating twice turned --max-stale=-1s (never) into the 24h default.
func TestCompleteTwice(t *testing.T) {
	for _, o := range []Options{{}, {MaxStale: -1}, {TTL: time.Minute, Cloud: mustCloud(t, "AzureChinaCloud")}} {
		once := o
		once.Complete()
		twice := once
		twice.Complete()
		if diff := cmp.Diff(once, twice, ignoreFuncs); diff != "" {
			t.Errorf("Complete of %+v, twice (-once +twice):\n%s", o, diff)
		}
		if err := once.Validate(); err != nil {
			t.Errorf("completed %+v: %v", o, err)
		}
	}
}

// TestValidateChangesNothing: Validate only reads; options that were not
// completed are refused, every problem at once.
func TestValidateChangesNothing(t *testing.T) {
	var o Options
	err := o.Validate()
	if diff := cmp.Diff(Options{}, o, ignoreFuncs); diff != "" {
		t.Errorf("Validate changed the options (-want +got):\n%s", diff)
	}
	want := "TTL 0s is not positive\nupstream timeout 0s is not positive\nreview wait 0s is not positive\nwrite timeout 0s is not positive\n" +
		"read timeout 0s is not positive\nmax concurrent requests 0 is not positive\nmax requests per namespace 0 is not positive\n" +
		"max concurrent reviews 0 is not positive\nmax entries 0 is not positive\nmax bytes 0 is not positive\nrate 0 is not positive\n" +
		"rate burst 0 is not positive\nmax answer bytes in flight 0 is under 65536\nno cloud\nno clock"
	if err == nil {
		t.Fatal("zero options accepted")
	}
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

// TestServeFlags: the command line of `kvinject cache` reaches the server
// New makes, through Complete and Validate as the command runs them.
func TestServeFlags(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		check func(t *testing.T, o Options)
	}{
		{"defaults", nil, func(t *testing.T, o Options) {
			want := Options{TTL: DefaultTTL, MaxStale: DefaultMaxStale, MaxEntries: DefaultMaxEntries, MaxBytes: DefaultMaxBytes,
				RatePerSecond: DefaultRatePerSecond, RateBurst: DefaultRateBurst, UpstreamTimeout: DefaultUpstreamTimeout,
				Cloud: mustCloud(t, spec.DefaultCloud), MaxConcurrentReviews: DefaultMaxConcurrentReviews, ReviewWait: DefaultReviewWait,
				MaxAnswerBytesInFlight: DefaultMaxAnswerBytesInFlight, WriteTimeout: DefaultWriteTimeout,
				MaxRequestsPerNamespace: DefaultMaxRequestsPerNamespace, MaxConcurrentRequests: DefaultMaxConcurrentRequests,
				ReadTimeout: DefaultReadTimeout}
			if diff := cmp.Diff(want, o, ignoreFuncs, cmpopts.IgnoreFields(Options{}, "Reviewer")); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		}},
		{"never stale", []string{"--max-stale=-1s"}, func(t *testing.T, o Options) {
			if o.MaxStale >= 0 || o.staleFor() != 0 {
				t.Errorf("--max-stale=-1s: MaxStale %v, served stale for %v; want never", o.MaxStale, o.staleFor())
			}
		}},
		{"cloud and authority", []string{"--cloud=AzureUSGovernment", "--authority-host=https://login.example.com", "--ttl=5m"}, func(t *testing.T, o Options) {
			if o.Cloud != mustCloud(t, "AzureUSGovernment") || o.AuthorityHost != "https://login.example.com" || o.TTL != 5*time.Minute {
				t.Errorf("got cloud %s, authority host %q, TTL %v", o.Cloud.Name, o.AuthorityHost, o.TTL)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultServeOptions()
			fs := flag.NewFlagSet("kvinject cache", flag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(append(tt.args, "--port=9443")); err != nil {
				t.Fatal(err)
			}
			o.Complete()
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			o.Cache.Reviewer = cachetest.NewReviewer()
			s, err := New(o.Cache)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tt.check(t, s.o)
		})
	}
}

// TestServeFlagsRefused: a bad cloud is refused by the flag itself.
func TestServeFlagsRefused(t *testing.T) {
	o := DefaultServeOptions()
	fs := flag.NewFlagSet("kvinject cache", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.AddFlags(fs)
	if err := fs.Parse([]string{"--cloud=Mars"}); err == nil {
		t.Error("--cloud=Mars accepted")
	}
}

func mustCloud(t *testing.T, name string) spec.Cloud {
	t.Helper()
	c, err := spec.LookupCloud(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
