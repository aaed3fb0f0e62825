package main

import (
	"context"
	"testing"

	"github.com/kvinject/kvinject/webhook"
)

type staticSA struct{}

func (staticSA) GetServiceAccount(_ context.Context, namespace, name string) (webhook.ServiceAccount, error) {
	return webhook.ServiceAccount{Namespace: namespace, Name: name,
		Annotations: map[string]string{"azure.workload.identity/client-id": benchClientID}}, nil
}

// BenchmarkMutate prices kvinject's own work on the benchmark's pod:
// go test ./test/bench/admission -run - -bench Mutate -benchmem
func BenchmarkMutate(b *testing.B) {
	o := webhook.DefaultOptions()
	o.AgentImage, o.TenantID = "ghcr.io/kvinject/kvinject:bench", benchTenant
	o.Complete()
	if err := o.Validate(); err != nil {
		b.Fatal(err)
	}
	pod := benchPod(0, optInKvinject)
	pod.Namespace = benchNamespace
	sa, _ := staticSA{}.GetServiceAccount(context.Background(), benchNamespace, benchSA)
	b.ReportAllocs()
	for b.Loop() {
		if err := webhook.Mutate(pod.DeepCopy(), sa, &o); err != nil {
			b.Fatal(err)
		}
	}
}
