package webhookserver

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kvinject/kvinject/webhook"
)

// ClusterServiceAccounts reads ServiceAccounts' metadata from the manager's
// cache and, when the cache has not seen one yet, directly from the API
// server: a pod can arrive right after its ServiceAccount was created.
type ClusterServiceAccounts struct {
	Cache client.Reader
	Live  client.Reader
}

// GetServiceAccount implements ServiceAccountGetter.
func (c ClusterServiceAccounts) GetServiceAccount(ctx context.Context, namespace, name string) (webhook.ServiceAccount, error) {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	obj := newServiceAccountMetadata()
	err := c.Cache.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && c.Live != nil {
		err = c.Live.Get(ctx, key, obj)
	}
	switch {
	case apierrors.IsNotFound(err):
		return webhook.ServiceAccount{Namespace: namespace, Name: name}, nil
	case err != nil:
		return webhook.ServiceAccount{}, err
	}
	return webhook.ServiceAccount{Namespace: namespace, Name: name, Annotations: obj.Annotations}, nil
}

// newServiceAccountMetadata is what the webhook caches of ServiceAccounts:
// metadata only, since it needs nothing else.
func newServiceAccountMetadata() *metav1.PartialObjectMetadata {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	return obj
}
