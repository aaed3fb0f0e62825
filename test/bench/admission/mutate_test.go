package main

import (
	"context"
	"testing"

	"github.com/kvinject/kvinject/webhook"
)

// BenchmarkMutate prices kvinject's own work on the benchmark's pod:
// go test ./test/bench/admission -run - -bench Mutate -benchmem
func BenchmarkMutate(b *testing.B) {
	o := webhook.DefaultOptions()
	o.AgentImage, o.TenantID = "ghcr.io/kvinject/kvinject:bench", benchTenant
	if err := o.Validate(); err != nil {
		b.Fatal(err)
	}
	pod := benchPod(0)
	pod.Namespace = benchNamespace
	sa, _ := staticSA{}.GetServiceAccount(context.Background(), benchNamespace, benchSA)
	b.ReportAllocs()
	for b.Loop() {
		if err := webhook.Mutate(pod.DeepCopy(), sa, &o); err != nil {
			b.Fatal(err)
		}
	}
}
