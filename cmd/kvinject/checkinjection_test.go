package main

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kvinject/kvinject/webhook"
)

// The checked pod is one the webhook injects, and only an injected answer passes.
func TestCheckInjection(t *testing.T) {
	o := webhook.DefaultOptions()
	o.AgentImage = "kvinject:test"
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		mutate  bool
		wantErr string
	}{
		{name: "injected", mutate: true},
		{name: "not injected", wantErr: "no annotation kvinject.io/status: injected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			var dryRun bool
			client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				dryRun = len(a.(k8stesting.CreateActionImpl).CreateOptions.DryRun) == 1
				pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
				if tc.mutate {
					if err := webhook.Mutate(pod, webhook.ServiceAccount{Namespace: pod.Namespace, Name: "default"}, &o); err != nil {
						t.Fatalf("the webhook denies the checked pod: %v", err)
					}
				}
				return true, pod, nil
			})
			err := checkInjection(context.Background(), client, "apps")
			if !dryRun {
				t.Error("the pod was not created as a dry run")
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
